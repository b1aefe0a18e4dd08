"""The built-in 2-D toys: shapes, seeding, and the exact densities against quadrature and their own samplers."""

from __future__ import annotations

import math

import pytest
import torch

from invertible.data import available, load
from invertible.data.toy import TOY_LOG_PROBS, TOY_SAMPLERS

TOYS = ["moons", "circles", "8gaussians", "checkerboard", "pinwheel", "2spirals", "rings", "swissroll"]
EXACT = sorted(TOY_LOG_PROBS)

# midpoint grid on [-L, L]^2 (spacing 0.02: at least 4 points per standard deviation of the sharpest toy)
L, H = 6.0, 0.02
_c = torch.arange(-L + H / 2, L, H, dtype=torch.float64)
GRID = torch.stack(torch.meshgrid(_c, _c, indexing="ij"), -1).reshape(-1, 2)


def test_all_toys_registered() -> None:
    assert set(TOYS) <= set(available())
    assert {"checkerboard", "8gaussians", "rings"} <= set(EXACT)


@pytest.mark.parametrize("name", TOYS)
def test_splits_shapes_and_seeding(name: str) -> None:
    b = load(name, seed=3, n_train=300, n_val=20, n_test=50)
    assert b.train.shape == (300, 2) and b.val.shape == (20, 2) and b.test.shape == (50, 2)
    assert b.train.dtype == torch.float32 and torch.isfinite(b.train).all()
    assert b.event_shape == (2,) and b.context_features is None
    again = load(name, seed=3, n_train=300, n_val=20, n_test=50)
    assert torch.equal(again.train, b.train) and torch.equal(again.test, b.test)
    other = load(name, seed=4, n_train=300, n_val=20, n_test=50)
    assert not torch.equal(other.train, b.train)
    assert torch.equal(b.sampler(64, 7), b.sampler(64, 7)) and not torch.equal(b.sampler(64, 7), b.sampler(64, 8))
    assert (b.log_prob is not None) == (name in EXACT)
    # the data have the spread of the FFJORD toys: within a few units of the origin
    assert 0.5 < b.train.std(0).min() and b.train.abs().max() < 8


@pytest.mark.parametrize("name", EXACT)
def test_exact_density_integrates_to_one(name: str) -> None:
    p = TOY_LOG_PROBS[name](GRID).exp()
    assert abs(float(p.sum() * H * H) - 1.0) < 2e-3


@pytest.mark.parametrize("name", EXACT)
def test_exact_density_matches_its_sampler(name: str) -> None:
    """Histogram of 100k samples vs the density integrated over each bin; and E[log p] vs its quadrature."""
    log_prob = TOY_LOG_PROBS[name]
    x = TOY_SAMPLERS[name](100_000, torch.Generator().manual_seed(0))
    bins = 24  # bins of width 0.5 on [-6, 6]^2, each holding 25 x 25 grid cells
    p_grid = log_prob(GRID).exp().reshape(600, 600) * H * H
    expected = p_grid.reshape(bins, 25, bins, 25).sum((1, 3)).flatten()
    idx = ((x + L) / (2 * L / bins)).floor().long().clamp(0, bins - 1)
    counts = torch.bincount(idx[:, 0] * bins + idx[:, 1], minlength=bins * bins).double()
    tv = 0.5 * (counts / len(x) - expected).abs().sum()
    assert tv < 0.02, f"total variation between samples and density: {tv:.4f}"

    lp = log_prob(x)
    assert torch.isfinite(lp).all(), "a sample fell where the density is zero"
    p = log_prob(GRID).exp()
    neg_entropy = float((p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum() * H * H)
    se = float(lp.std()) / math.sqrt(len(lp))
    assert abs(float(lp.mean()) - neg_entropy) < 4 * se + 1e-3


def test_known_values() -> None:
    cb = TOY_LOG_PROBS["checkerboard"]
    pts = torch.tensor([[1.0, 1.0], [-3.0, -3.0], [1.0, -1.0], [3.0, 1.0], [4.5, 0.0]], dtype=torch.float64)
    expected = torch.tensor([-math.log(32), -math.log(32), -math.inf, -math.inf, -math.inf], dtype=torch.float64)
    assert torch.equal(cb(pts), expected)
    # 8gaussians: at a centre the density is dominated by one component of std 0.5/1.414
    centre = torch.tensor([[4 / 1.414, 0.0]], dtype=torch.float64)
    sd = 0.5 / 1.414
    assert torch.allclose(TOY_LOG_PROBS["8gaussians"](centre), torch.tensor([-math.log(8 * 2 * math.pi * sd**2)], dtype=torch.float64))


def test_checkerboard_samples_rounded_onto_an_edge_stay_on_the_support() -> None:
    """The float32 splits are drawn in float64: a point within half an ulp of its square's edge lands on it."""
    cb = TOY_LOG_PROBS["checkerboard"]
    edges = torch.tensor([[4.0, 3.080374240875244], [2.0, 0.5], [0.0, 0.0], [-4.0, -4.0], [4.0, 1.0], [0.0, 4.5]])
    expected = torch.tensor([-math.log(32)] * 4 + [-math.inf] * 2)
    assert torch.equal(cb(edges), expected)
    b = load("checkerboard", seed=1956)  # its test split holds (4.0, 3.0803742)
    assert all(torch.isfinite(b.log_prob(getattr(b, s))).all() for s in ("train", "val", "test"))


@pytest.mark.parametrize("options", [{"n_train": 0}, {"n_test": -1}, {"n_val": 2.5}, {"size": 10}])
def test_bad_options(options: dict) -> None:
    with pytest.raises(ValueError):
        load("moons", **options)
