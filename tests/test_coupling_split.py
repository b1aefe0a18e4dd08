"""A coupling's split and merge: views for interleaved and block masks, index gathers otherwise, always the same values."""

import pytest
import torch

from invertible.transforms import AffineCoupling

MASKS = [
    ([True, False, True, False], "interleaved"),
    ([False, True, False, True, False, True], "interleaved"),
    ([True, False], "interleaved"),
    ([True, True, False, False, False], "blocks"),
    ([False, False, True], "blocks"),
    ([True, False, True], None),
    ([True, False, False, True], None),
]


@pytest.mark.parametrize("mask, layout", MASKS)
def test_split_gathers_the_masked_features_and_merge_undoes_it(mask, layout):
    coupling = AffineCoupling(torch.tensor(mask), hidden=(4,))
    assert coupling._layout == layout
    x = torch.randn(7, len(mask))
    x_a, x_b = coupling._split(x)
    keep = torch.tensor(mask)
    assert torch.equal(x_a, x[:, keep]) and torch.equal(x_b, x[:, ~keep])
    assert torch.equal(coupling._merge(x_a, x_b), x)
