"""Bad preset options fail when the preset is built, with a message naming the option, not at the first forward pass."""

from __future__ import annotations

import math

import pytest

from invertible.models import available, build, get


def _size(name: str) -> dict:
    return {"event_shape": [4, 8, 8]} if name == "glow" else {"features": 4}


@pytest.mark.parametrize("context_features", [0, -1])
@pytest.mark.parametrize("name", available())
def test_a_context_of_no_features_is_refused_by_every_preset(name: str, context_features: int) -> None:
    """``context_features=0`` built a conditional flow that no context could feed (an error only at log_prob);
    ``-1`` failed inside torch ("Trying to create tensor with negative dimension")."""
    for make in (lambda: build(name, **_size(name), context_features=context_features),
                 lambda: get(name)(**_size(name), context_features=context_features)):
        with pytest.raises(ValueError, match=rf"context_features must be None \(unconditional\) or an integer >= 1, got {context_features}"):
            make()


@pytest.mark.parametrize("kind", ["autoregressive", "coupling"])
def test_nsf_refuses_an_infinite_bound(kind: str) -> None:
    """``-m bound=.inf`` built a spline whose knots are all infinite: NaN loss at step 1, reported as divergence."""
    with pytest.raises(ValueError, match="finite bound > 0, got bins=8, bound=inf"):
        build("nsf", features=4, kind=kind, bound=math.inf)
