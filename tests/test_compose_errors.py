"""Hand-assembled flows that do not fit together fail with a ``ValueError`` naming the layer and the
shapes, not a shape error from deep inside torch.

Pinned here: ``Squeeze`` and ``Reshape`` refuse inputs of other shapes.
"""

from __future__ import annotations

import re

import pytest
import torch

from invertible import transforms as T


@pytest.mark.parametrize("shape", [(5, 3), (1, 4, 4)])
def test_squeeze_refuses_what_is_not_a_batch_of_images(shape):
    got = re.escape(f"got shape {shape}")
    with pytest.raises(ValueError, match=rf"Squeeze takes a batch of images \(batch, C, H, W\), {got}"):
        T.Squeeze()(torch.randn(shape))
    with pytest.raises(ValueError, match=rf"inverse \(depth-to-space\) takes a batch of images .*{got}"):
        T.Squeeze().inverse(torch.randn(shape))


def test_reshape_refuses_events_of_another_shape_with_as_many_values():
    r = T.Reshape((1, 2, 8), (16,))
    with pytest.raises(ValueError, match=r"takes \(batch, 1, 2, 8\), got shape \(3, 1, 4, 4\)"):
        r(torch.randn(3, 1, 4, 4))
    with pytest.raises(ValueError, match=r"inverse takes \(batch, 16\), got shape \(3, 4, 4\)"):
        r.inverse(torch.randn(3, 4, 4))
