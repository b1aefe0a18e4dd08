"""The built-in 2-D toys: shapes, seeding, the exact densities against quadrature and their own samplers, and the
samplers against an independent transcription of FFJORD's ``toy_data``."""

from __future__ import annotations

import math
import re

import numpy as np
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


@pytest.mark.parametrize("seed", [0, 5])
def test_fresh_samples_do_not_replay_the_splits(seed: int) -> None:
    """``bundle.sampler(n, seed)`` with the data seed (both default to 0) drew from the splits' own stream: the
    checkerboard's first coordinates and the 8gaussians' components of the first training rows came back."""
    cb = load("checkerboard", seed=seed, n_train=2000, n_val=0, n_test=0)
    fresh = cb.sampler(2000, seed)
    assert float((fresh[:, 0] == cb.train[:, 0]).double().mean()) < 0.01
    g8 = load("8gaussians", seed=seed, n_train=2000, n_val=0, n_test=0)
    component = lambda x: torch.atan2(x[:, 1], x[:, 0]).div(math.pi / 4).round().remainder(8)  # noqa: E731
    same = float((component(g8.sampler(2000, seed)) == component(g8.train)).double().mean())
    assert abs(same - 1 / 8) < 0.05  # independent draws agree on 1 in 8 components


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


@pytest.mark.parametrize("name", EXACT)
def test_exact_densities_refuse_points_that_are_not_2d(name: str) -> None:
    """A transposed batch ``(2, n)`` or points of three coordinates are refused by name, not scored (the rings took
    the norm over every coordinate, the checkerboard the first two) or broken deep inside torch (8gaussians)."""
    log_prob = TOY_LOG_PROBS[name]
    x = TOY_SAMPLERS[name](5, torch.Generator().manual_seed(0))
    for bad in (x.T.contiguous(), torch.cat([x, x[:, :1]], 1), x[:, :1], x[0, 0]):
        with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\); got shape " + re.escape(str(tuple(bad.shape)))):
            log_prob(bad)
    with pytest.raises(TypeError, match="floating-point"):
        log_prob(torch.ones(5, 2, dtype=torch.long))
    assert log_prob(x[0]).shape == () and torch.equal(log_prob(x.reshape(5, 1, 2)), log_prob(x).reshape(5, 1))


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


@pytest.mark.parametrize("seed", [2.5, 1.0, True, "3", None, -1, 2**64])
def test_bad_seeds_are_refused_not_truncated_or_wrapped(seed) -> None:
    """``2.5`` would draw seed 2's data and ``-1`` (wrapped modulo ``2**64`` by torch) seed ``2**64 - 1``'s:
    a ``ValueError`` naming the seed instead, from ``load`` and from the bundle's sampler."""
    with pytest.raises(ValueError, match="seed must be an integer"):
        load("8gaussians", seed=seed, n_train=10, n_val=0, n_test=0)
    sampler = load("8gaussians", n_train=10, n_val=0, n_test=0).sampler
    with pytest.raises(ValueError, match="seed must be an integer"):
        sampler(5, seed)


def test_integer_seeds_of_the_whole_range_draw_their_own_data() -> None:
    b = load("8gaussians", seed=np.int64(7), n_train=10, n_val=0, n_test=0)
    assert torch.equal(b.train, load("8gaussians", seed=7, n_train=10, n_val=0, n_test=0).train)
    assert torch.equal(b.sampler(5, np.int64(3)), b.sampler(5, 3))
    assert not torch.equal(b.sampler(5, 2**64 - 1), b.sampler(5, 0))


# -- the FFJORD toys, transcribed independently ---------------------------------------------
def _ffjord_toy(name: str, n: int, rng: np.random.RandomState) -> np.ndarray:
    """``toy_data.inf_train_gen`` of the FFJORD code (and the scikit-learn makers it calls), in NumPy."""
    if name == "moons":  # make_moons(noise=0.1) * 2 + (-1, -0.2)
        t_out, t_in = np.linspace(0, np.pi, n - n // 2), np.linspace(0, np.pi, n // 2)
        x = np.vstack([np.append(np.cos(t_out), 1 - np.cos(t_in)), np.append(np.sin(t_out), 1 - np.sin(t_in) - 0.5)]).T
        return (x + rng.normal(scale=0.1, size=x.shape)) * 2 + np.array([-1, -0.2])
    if name == "circles":  # make_circles(factor=0.5, noise=0.08) * 3
        t_out, t_in = (np.linspace(0, 2 * np.pi, m, endpoint=False) for m in (n - n // 2, n // 2))
        x = np.vstack([np.append(np.cos(t_out), 0.5 * np.cos(t_in)), np.append(np.sin(t_out), 0.5 * np.sin(t_in))]).T
        return (x + rng.normal(scale=0.08, size=x.shape)) * 3
    if name == "rings":
        parts = []
        for radius in (1.0, 0.75, 0.5, 0.25):
            t = np.linspace(0, 2 * np.pi, n // 4, endpoint=False)
            parts.append(np.stack([np.cos(t), np.sin(t)], 1) * radius)
        return np.vstack(parts) * 3.0 + rng.normal(scale=0.08, size=(4 * (n // 4), 2))
    if name == "8gaussians":
        s = 1 / np.sqrt(2)
        centers = 4.0 * np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)])
        return (rng.randn(n, 2) * 0.5 + centers[rng.randint(8, size=n)]) / 1.414
    if name == "checkerboard":
        x1 = rng.rand(n) * 4 - 2
        x2 = rng.rand(n) - rng.randint(0, 2, n) * 2 + np.floor(x1) % 2
        return np.stack([x1, x2], 1) * 2
    if name == "pinwheel":
        radial_std, tangential_std, classes, rate = 0.3, 0.1, 5, 0.25
        labels = rng.randint(classes, size=n)
        features = rng.randn(n, 2) * np.array([radial_std, tangential_std])
        features[:, 0] += 1.0
        angles = labels * (2 * np.pi / classes) + rate * np.exp(features[:, 0])
        rotations = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)]).T.reshape(-1, 2, 2)
        return 2 * np.einsum("ti,tij->tj", features, rotations)
    if name == "2spirals":
        t = np.sqrt(rng.rand(n // 2, 1)) * 540 * (2 * np.pi) / 360
        dx = -np.cos(t) * t + rng.rand(n // 2, 1) * 0.5
        dy = np.sin(t) * t + rng.rand(n // 2, 1) * 0.5
        x = np.vstack((np.hstack((dx, dy)), np.hstack((-dx, -dy)))) / 3
        return x + rng.randn(*x.shape) * 0.1
    if name == "swissroll":  # make_swiss_roll(noise=1.0)[:, [0, 2]] / 5
        t = 1.5 * np.pi * (1 + 2 * rng.rand(n))
        x = np.stack([t * np.cos(t), t * np.sin(t)], 1)
        return (x + rng.randn(n, 2)) / 5
    raise KeyError(name)


def _sliced_ks(a: torch.Tensor, b: torch.Tensor, directions: int = 8) -> float:
    """The largest two-sample Kolmogorov-Smirnov distance over projections on ``directions`` angles and the radius:
    ``max |F_a - F_b|``, the extreme of the running sum of ``+1/n_a`` and ``-1/n_b`` along the pooled sorted values."""
    angles = torch.arange(directions, dtype=torch.float64) * (math.pi / directions)
    axes = torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    pooled = torch.cat([torch.cat([a @ axes.T, a.norm(dim=1, keepdim=True)], 1),
                        torch.cat([b @ axes.T, b.norm(dim=1, keepdim=True)], 1)])
    steps = np.concatenate([np.full(len(a), 1 / len(a)), np.full(len(b), -1 / len(b))])
    order = np.argsort(pooled.numpy(), axis=0)  # NumPy's sort: several times faster than torch's on the CPU here
    return float(np.abs(steps[order].cumsum(0)).max())


@pytest.mark.parametrize("name", TOYS)
def test_toys_have_the_ffjord_definitions_and_scales(name: str) -> None:
    """Our sampler against an independent transcription of FFJORD's ``toy_data`` (a different generator, so the
    two samples agree in distribution only): every 1-D projection and the radius pass a two-sample KS test."""
    n = 40_000
    ours = TOY_SAMPLERS[name](n, torch.Generator().manual_seed(0))
    theirs = torch.from_numpy(_ffjord_toy(name, n, np.random.RandomState(1)))
    assert _sliced_ks(ours, theirs) < 0.02  # 1.95 sqrt(2 / n) = 0.014 is the 0.1 % level of a single test


@pytest.mark.parametrize("name", TOYS)
def test_the_splits_are_draws_of_one_distribution(name: str) -> None:
    """Train and test come from one stream of draws: no split holds a part of the shape the others lack."""
    b = load(name, seed=0, n_train=3000, n_val=10, n_test=3000)
    assert _sliced_ks(b.train.double(), b.test.double()) < 0.06  # 0.1 % level 1.95 sqrt(2 / 3000) = 0.05
