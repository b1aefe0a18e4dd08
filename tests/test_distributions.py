"""Base distributions: samplers that match their densities, to the float tails."""

from __future__ import annotations

import math

import pytest
import torch

from invertible.distributions import StandardLogistic


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logistic_sampler_reaches_both_tails_alike(dtype: torch.dtype, monkeypatch) -> None:
    """The extreme uniforms ``torch.rand`` can return (0 and the last grid point below 1) map to ``-z`` and ``z``."""
    eps = torch.finfo(dtype).eps
    edges = torch.tensor([[0.0, eps / 2, 1 - eps / 2]], dtype=dtype)
    monkeypatch.setattr(torch, "rand", lambda *args, **kwargs: edges)
    z = StandardLogistic((3,)).to(dtype).rsample(1)[0]
    assert torch.isfinite(z).all()
    assert z[0] == z[1] == -z[2]


def test_logistic_samples_have_the_logistic_moments() -> None:
    torch.manual_seed(0)
    z = StandardLogistic((2,)).double().rsample(200_000)
    assert abs(float(z.mean())) < 0.02
    assert float(z.var()) == pytest.approx(math.pi**2 / 3, rel=0.02)
