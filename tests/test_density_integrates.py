"""Flow densities are normalised (quadrature in 1-D and 2-D) and agree with the flows' own samples."""

from __future__ import annotations

import math
from typing import Callable

import pytest
import torch

from invertible import Compose, Flow
from invertible.distributions import StandardNormal
from invertible.models import build
from invertible.transforms import ElementwiseAffine, LeakyReLU, Logit, LULinear, SmoothLeakyELU


def _perturbed(
    make: Callable[[], Flow], scale: float, seed: int, warm_up: Callable[..., torch.Tensor] = torch.randn
) -> Flow:
    """A float64 flow whose every parameter (zero-initialised heads included) is moved off its initial value
    (after one pass over ``warm_up`` data, drawn in the flow's domain)."""
    torch.manual_seed(seed)
    flow = make().double()
    flow.validate = True
    with torch.no_grad():
        flow.transform.train()
        flow.log_prob(warm_up(256, *flow.event_shape, dtype=torch.float64))  # ActNorm's data-dependent init
        flow.eval()
        for p in flow.parameters():
            p.add_(scale * torch.randn_like(p))
    return flow


def _grid_1d(lo: float, hi: float, n: int) -> tuple[torch.Tensor, float]:
    h = (hi - lo) / n
    return (lo + h / 2 + h * torch.arange(n, dtype=torch.float64)).unsqueeze(1), h


def _grid_2d(half: float, n: int) -> tuple[torch.Tensor, float]:
    c, h = _grid_1d(-half, half, n)
    c = c.squeeze(1)
    return torch.stack(torch.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2), h * h


def test_1d_flow_integrates_to_one() -> None:
    steps = lambda: Compose(ElementwiseAffine(1), SmoothLeakyELU(0.3), LULinear(1), LeakyReLU(0.5), ElementwiseAffine(1))  # noqa: E731
    flow = _perturbed(lambda: Flow(steps(), StandardNormal(1)), 0.5, seed=1)
    x, h = _grid_1d(-80.0, 80.0, 400_000)
    with torch.no_grad():
        mass = float(flow.log_prob(x).exp().sum() * h)
    assert abs(mass - 1) < 1e-4


def test_1d_flow_on_unit_interval_integrates_to_one() -> None:
    """Logit preprocessing: the density lives on (0, 1) and still has mass 1."""
    steps = lambda: Compose(Logit(), ElementwiseAffine(1), SmoothLeakyELU(0.4))  # noqa: E731
    flow = _perturbed(lambda: Flow(steps(), StandardNormal(1)), 0.5, seed=2, warm_up=torch.rand)
    x, h = _grid_1d(0.0, 1.0, 200_000)
    with torch.no_grad():
        mass = float(flow.log_prob(x).exp().sum() * h)
    assert abs(mass - 1) < 1e-4


# name -> (builder, half-width and points per side of the quadrature grid: wider for NICE's logistic tails)
FLOWS_2D = {
    "realnvp": (lambda: build("realnvp", features=2, layers=4, hidden=[16], actnorm=True), 10.0, 800),
    "realnvp_sigmoid": (lambda: build("realnvp", features=2, layers=3, hidden=[16, 16], scale="sigmoid"), 20.0, 1000),
    "nice": (lambda: build("nice", features=2, layers=4, hidden=[16]), 30.0, 1000),
}


@pytest.mark.parametrize("name", sorted(FLOWS_2D))
def test_2d_flow_integrates_to_one_and_matches_its_samples(name: str) -> None:
    make, half, n = FLOWS_2D[name]
    flow = _perturbed(make, 0.3, seed=0)
    grid, area = _grid_2d(half, n)
    with torch.no_grad():
        log_q = flow.log_prob(grid)
    q = log_q.exp()
    assert abs(float(q.sum() * area) - 1) < 1e-3

    # The model's own samples have the NLL its entropy predicts: E_q[-log q(x)] on samples drawn by
    # the inverse pass and scored by the forward pass, vs the entropy -int q log q by quadrature.
    torch.manual_seed(1)
    x, log_q_inverse = flow.sample_and_log_prob(20_000)
    with torch.no_grad():
        log_q_x = flow.log_prob(x)
    torch.testing.assert_close(log_q_x, log_q_inverse, atol=1e-8, rtol=1e-8)
    entropy = float(-(q * log_q).sum() * area)
    se = float(log_q_x.std()) / math.sqrt(len(x))
    assert abs(float(-log_q_x.mean()) - entropy) < 4 * se

    # and where they fall: mass of q in each of 8x8 coarse cells around the bulk vs the sample frequencies
    lo, hi = x.quantile(0.01, 0).min().item(), x.quantile(0.99, 0).max().item()
    edges = torch.linspace(lo, hi, 9, dtype=torch.float64)
    cell = lambda p: torch.bucketize(p[:, 0].contiguous(), edges) * 10 + torch.bucketize(p[:, 1].contiguous(), edges)  # noqa: E731
    freq = torch.bincount(cell(x), minlength=110).double() / len(x)
    mass = torch.bincount(cell(grid), weights=q * area, minlength=110)
    assert 0.5 * float((freq - mass).abs().sum()) < 0.03
