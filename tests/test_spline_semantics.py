"""What the neural spline flow computes, against computations of its own: the rational-quadratic spline and the bases.

- the spline of Durkan et al. (2019), Eq. 4 (value) and Eq. 5 (derivative), at random points of every bin, from knots
  built here from the parameters; the inverse against bisection of that reference;
- the floors ``min_bin_width``, ``min_bin_height`` and ``min_derivative`` when they are not the defaults (each its own),
  and the checks that refuse floors no ``K`` bins can meet;
- the spline layers' check of the bound, and floors outside their range refused;
- a conditional NSF of either form reading its context, and an autoregressive spline's random hidden degrees;
- the coupling NSF's masks (alternating, or random halves from the seed) and the preset's size errors;
- the base distributions of the NSF presets: standard normal, diagonal normal and standard logistic densities per
  coordinate summed over the event (vectors and images), their samplers (the logistic's to its extreme uniforms), a
  one-component mixture, and the names.
"""

from __future__ import annotations

import math

import pytest
import torch

from invertible.distributions import BASES, DiagonalNormal, MixtureOfGaussians, StandardLogistic, StandardNormal, build_base
from invertible.transforms import MaskedRQSAutoregressive, RQSCoupling, alternating_mask
from invertible.transforms import rational_quadratic_spline as rqs

B = 2.5
K = 5


def _reference_knots(params: torch.Tensor, bound: float, min_w: float, min_h: float, min_d: float):
    """Knots ``x^0 < ... < x^K`` and ``y^k``, and slopes ``d^0 .. d^K`` (``d^0 = d^K = 1``), from one parameter vector.

    Bin ``k`` gets the fraction ``min + (1 - K min) softmax(raw)_k`` of ``[-B, B]``; an interior slope is
    ``min_d + softplus(raw + c)`` with ``c`` chosen so that a raw 0 gives slope 1.
    """
    k = (params.numel() + 1) // 3
    raw_w, raw_h, raw_d = params[:k], params[k : 2 * k], params[2 * k :]

    def edges(raw: torch.Tensor, floor: float) -> torch.Tensor:
        frac = floor + (1 - k * floor) * torch.exp(raw - raw.max()) / torch.exp(raw - raw.max()).sum()
        return torch.tensor([-bound + 2 * bound * float(frac[:i].sum()) for i in range(k + 1)], dtype=params.dtype)

    c = math.log(math.exp(1.0 - min_d) - 1.0)
    slopes = [1.0] + [min_d + math.log1p(math.exp(float(r) + c)) for r in raw_d] + [1.0]
    return edges(raw_w, min_w), edges(raw_h, min_h), torch.tensor(slopes, dtype=params.dtype)


def _reference_spline(x: float, xs: torch.Tensor, ys: torch.Tensor, ds: torch.Tensor) -> tuple[float, float]:
    """Durkan et al. Eq. 4 and 5 in bin ``k`` with ``x^k <= x <= x^{k+1}``: ``(y, dy/dx)``; the identity outside."""
    if x < float(xs[0]) or x > float(xs[-1]):
        return x, 1.0
    k = max(i for i in range(len(xs) - 1) if float(xs[i]) <= x)
    w, h = float(xs[k + 1] - xs[k]), float(ys[k + 1] - ys[k])
    s, d0, d1 = h / w, float(ds[k]), float(ds[k + 1])
    xi = (x - float(xs[k])) / w
    denom = s + (d1 + d0 - 2 * s) * xi * (1 - xi)
    y = float(ys[k]) + h * (s * xi**2 + d0 * xi * (1 - xi)) / denom
    slope = s**2 * (d1 * xi**2 + 2 * s * xi * (1 - xi) + d0 * (1 - xi) ** 2) / denom**2
    return y, slope


def _params(seed: int, k: int = K, scale: float = 1.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(3 * k - 1, generator=g, dtype=torch.float64)


FLOORS = [(1e-3, 1e-3, 1e-3), (0.05, 0.02, 0.3)]


@pytest.mark.parametrize("floors", FLOORS, ids=["default_floors", "own_floors"])
def test_spline_values_and_slopes_are_eq_4_and_5_at_random_points_of_every_bin(floors) -> None:
    params = _params(0)
    xs, ys, ds = _reference_knots(params, B, *floors)
    g = torch.Generator().manual_seed(1)
    theta = torch.rand(K, 7, generator=g, dtype=torch.float64)
    x = (xs[:-1, None] + theta * (xs[1:] - xs[:-1])[:, None]).flatten()
    x = torch.cat([x, torch.tensor([-B - 0.7, B + 0.2], dtype=torch.float64)])
    expected = torch.tensor([_reference_spline(float(v), xs, ys, ds) for v in x], dtype=torch.float64)
    kw = dict(min_bin_width=floors[0], min_bin_height=floors[1], min_derivative=floors[2])
    y, lad = rqs(x, params.expand(len(x), -1), B, **kw)
    torch.testing.assert_close(y, expected[:, 0])
    torch.testing.assert_close(lad, expected[:, 1].log())


@pytest.mark.parametrize("floors", FLOORS, ids=["default_floors", "own_floors"])
def test_spline_inverse_is_the_bisection_of_the_reference_spline(floors) -> None:
    params = _params(2)
    xs, ys, ds = _reference_knots(params, B, *floors)
    y = torch.linspace(-B - 0.5, B + 0.5, 41, dtype=torch.float64)

    def bisect(target: float) -> float:
        lo, hi = -B - 1.0, B + 1.0
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if _reference_spline(mid, xs, ys, ds)[0] < target else (lo, mid)
        return (lo + hi) / 2

    expected_x = torch.tensor([bisect(float(v)) for v in y], dtype=torch.float64)
    expected_lad = -torch.tensor([_reference_spline(float(v), xs, ys, ds)[1] for v in expected_x], dtype=torch.float64).log()
    kw = dict(min_bin_width=floors[0], min_bin_height=floors[1], min_derivative=floors[2])
    x, lad = rqs(y, params.expand(len(y), -1), B, inverse=True, **kw)
    torch.testing.assert_close(x, expected_x, atol=1e-10, rtol=0)
    torch.testing.assert_close(lad, expected_lad, atol=1e-8, rtol=0)


def test_each_floor_binds_on_its_own_quantity() -> None:
    """Raw values of -60 put bins and slopes on their floors: widths ``2B min_w``, heights ``2B min_h``, slopes ``min_d``,
    and the one large bin takes the rest of ``[-B, B]``."""
    min_w, min_h, min_d = 0.04, 0.1, 0.25
    params = torch.full((3 * K - 1,), -60.0, dtype=torch.float64)
    params[2] = 60.0  # third bin wide
    params[K + 4] = 60.0  # last bin tall
    widths = torch.full((K,), 2 * B * min_w, dtype=torch.float64)
    widths[2] = 2 * B * (1 - (K - 1) * min_w)
    heights = torch.full((K,), 2 * B * min_h, dtype=torch.float64)
    heights[4] = 2 * B * (1 - (K - 1) * min_h)
    xs = torch.cat([torch.tensor([-B], dtype=torch.float64), -B + widths.cumsum(0)])
    ys = torch.cat([torch.tensor([-B], dtype=torch.float64), -B + heights.cumsum(0)])
    slopes = torch.tensor([1.0] + [min_d] * (K - 1) + [1.0], dtype=torch.float64)
    x = xs.clone().requires_grad_(True)
    y, lad = rqs(x, params.expand(K + 1, -1), B, min_bin_width=min_w, min_bin_height=min_h, min_derivative=min_d)
    torch.testing.assert_close(y.detach(), ys)
    torch.testing.assert_close(lad.detach(), slopes.log())
    torch.testing.assert_close(torch.autograd.grad(y.sum(), x)[0], slopes)


def test_zero_raw_slopes_are_one_whatever_the_slope_floor() -> None:
    """A raw slope of 0 is slope 1 at the interior knots for any ``min_derivative``; with equal bins that is the identity."""
    params = torch.zeros(3 * K - 1, dtype=torch.float64)
    x = torch.linspace(-B - 1, B + 1, 57, dtype=torch.float64)
    for min_d in (1e-3, 0.2, 0.9):
        y, lad = rqs(x, params.expand(len(x), -1), B, min_derivative=min_d)
        torch.testing.assert_close(y, x)
        torch.testing.assert_close(lad, torch.zeros_like(x))


def test_floors_that_k_bins_can_meet_exactly_are_accepted_and_others_refused() -> None:
    """``K`` floors of ``1/K`` fill ``[-B, B]`` with equal bins whatever the raw sizes; a larger width or height floor
    (either one alone) cannot be met and is refused."""
    params = _params(3, k=4)
    knots = torch.linspace(-B, B, 5, dtype=torch.float64)
    y, _ = rqs(knots, params.expand(5, -1), B, min_bin_width=0.25, min_bin_height=0.25)
    torch.testing.assert_close(y, knots)
    x = torch.zeros(2, dtype=torch.float64)
    for kw in (dict(min_bin_width=0.3), dict(min_bin_height=0.3), dict(min_bin_width=0.3, min_bin_height=0.3)):
        with pytest.raises(ValueError, match="4 bins cannot all be at least 0.3 wide"):
            rqs(x, params.expand(2, -1), B, **kw)


@pytest.mark.parametrize("kw", [dict(min_bin_width=-0.1), dict(min_bin_height=-1e-3), dict(min_derivative=0.0),
                                dict(min_derivative=1.0), dict(min_derivative=2.0), dict(min_derivative=float("nan"))])
def test_floors_outside_their_range_are_refused(kw) -> None:
    """A negative bin floor makes bins of negative size and a slope floor outside ``(0, 1)`` has no slope-1 start:
    each is a ``ValueError`` naming the floor, not a NaN or a math domain error."""
    params = _params(3, k=4)
    with pytest.raises(ValueError, match=next(iter(kw))):
        rqs(torch.zeros(2, dtype=torch.float64), params.expand(2, -1), B, **kw)


@pytest.mark.parametrize("kind", ["coupling", "autoregressive"])
def test_conditional_nsf_reads_its_context(kind: str) -> None:
    """Both forms of a conditional NSF give a density that changes with the context, and refuse to run without it."""
    from invertible.models import build
    from tests.perturb import perturb

    flow = build("nsf", features=4, context_features=3, layers=2, hidden=[8], bins=4, kind=kind).double()
    perturb(flow)
    x = torch.randn(5, 4, dtype=torch.float64)
    c = torch.randn(2, 5, 3, dtype=torch.float64)
    assert (flow.log_prob(x, c[0]) - flow.log_prob(x, c[1])).abs().min() > 1e-6
    with pytest.raises(ValueError, match="context"):
        flow.log_prob(x)


def test_autoregressive_spline_draws_random_hidden_degrees_when_asked() -> None:
    """``random_degrees=True`` reaches the MADE: its hidden degrees are drawn, not the cycled ``1, 2, ..., D - 1, 1, ...``."""
    cycled = MaskedRQSAutoregressive(6, hidden=(32, 32)).net
    drawn = MaskedRQSAutoregressive(6, hidden=(32, 32), random_degrees=True).net
    assert torch.equal(cycled.hidden_degrees_0, torch.arange(32) % 5 + 1)
    assert not torch.equal(drawn.hidden_degrees_0, cycled.hidden_degrees_0)
    assert drawn.hidden_degrees_0.min() >= 1 and drawn.hidden_degrees_0.max() <= 5


@pytest.mark.parametrize("bins", [1000, 1001])
def test_spline_layers_refuse_bins_that_the_floors_alone_fill(bins: int) -> None:
    """Each bin is at least 1e-3 of the interval wide and high: 1001 bins were built and failed at the first pass,
    and 1000 bins trained splines whose widths and heights no network output could change."""
    for make in (lambda: RQSCoupling(alternating_mask(4), hidden=(8,), bins=bins),
                 lambda: MaskedRQSAutoregressive(3, hidden=(8,), bins=bins)):
        with pytest.raises(ValueError, match=rf"spline layers take fewer than 1000 bins .*got bins={bins}"):
            make()
    layer = MaskedRQSAutoregressive(3, hidden=(8,), bins=999)
    assert torch.isfinite(layer(torch.randn(2, 3))[1]).all()


@pytest.mark.parametrize("bound", [0.0, -1.0, float("nan"), float("inf")])
def test_spline_layers_refuse_a_bound_that_is_not_positive_and_finite(bound: float) -> None:
    """``bound=inf`` (``-m bound=.inf``) made every knot infinite: NaN at the first step, reported as divergence."""
    for make in (lambda: RQSCoupling(alternating_mask(4), hidden=(8,), bound=bound),
                 lambda: MaskedRQSAutoregressive(3, hidden=(8,), bound=bound)):
        with pytest.raises(ValueError, match="bound > 0"):
            make()
    # the function itself too: 0, -1 and NaN passed every input through unchanged as "outside", inf gave NaN
    with pytest.raises(ValueError, match=rf"finite bound > 0, got bound={bound}"):
        rqs(torch.zeros(2, dtype=torch.float64), _params(3, k=4).expand(2, -1), bound)


# ---------------------------------------------------------------- base distributions


def _normal_log_pdf(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return -((z - loc) ** 2) / (2 * scale**2) - torch.log(scale * math.sqrt(2 * math.pi))


@pytest.mark.parametrize("shape", [(3,), (2, 3, 2)], ids=["vector", "image"])
def test_standard_normal_density_sums_the_coordinates_of_the_event(shape) -> None:
    z = 2 * torch.randn(6, *shape, dtype=torch.float64)
    expected = _normal_log_pdf(z, torch.zeros(()), torch.ones((), dtype=torch.float64)).flatten(1).sum(1)
    torch.testing.assert_close(StandardNormal(shape).double().log_prob(z), expected)


def test_diagonal_normal_density_is_the_product_of_its_coordinates_normals() -> None:
    g = torch.Generator().manual_seed(0)
    base = DiagonalNormal((2, 3)).double()
    assert [n for n, _ in base.named_parameters()] == ["loc", "log_scale"]
    z = torch.randn(5, 2, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(base.log_prob(z), _normal_log_pdf(z, torch.zeros(()), torch.ones((), dtype=torch.float64)).sum((1, 2)))
    with torch.no_grad():
        base.loc.copy_(torch.randn(2, 3, generator=g, dtype=torch.float64))
        base.log_scale.copy_(0.8 * torch.randn(2, 3, generator=g, dtype=torch.float64))
    expected = _normal_log_pdf(z, base.loc.detach(), base.log_scale.detach().exp()).sum((1, 2))
    torch.testing.assert_close(base.log_prob(z), expected)


def test_diagonal_normal_samples_have_its_means_and_scales() -> None:
    base = DiagonalNormal(3).double()
    with torch.no_grad():
        base.loc.copy_(torch.tensor([2.0, -1.0, 0.0], dtype=torch.float64))
        base.log_scale.copy_(torch.tensor([0.5, -1.0, 0.0], dtype=torch.float64))
    torch.manual_seed(0)
    s = base.sample(100_000)
    assert s.shape == (100_000, 3)
    torch.testing.assert_close(s.mean(0), base.loc.detach(), atol=0.02, rtol=0)
    torch.testing.assert_close(s.std(0), base.log_scale.detach().exp(), atol=0.0, rtol=0.01)


def test_standard_normal_samples_are_standard() -> None:
    torch.manual_seed(0)
    s = StandardNormal((2, 2)).double().sample(50_000)
    assert s.shape == (50_000, 2, 2)
    torch.testing.assert_close(s.mean(0), torch.zeros(2, 2, dtype=torch.float64), atol=0.02, rtol=0)
    torch.testing.assert_close(s.std(0), torch.ones(2, 2, dtype=torch.float64), atol=0.0, rtol=0.01)


@pytest.mark.parametrize("shape", [(3,), (1, 2, 2)], ids=["vector", "image"])
def test_standard_logistic_density_is_the_logistic_pdf_per_coordinate(shape) -> None:
    """``p(z) = e^{-z} / (1 + e^{-z})^2`` in every coordinate, also far in both tails (where it is ``e^{-|z|}``)."""
    z = torch.cat([4 * torch.randn(4, *shape, dtype=torch.float64), torch.full((1, *shape), -300.0, dtype=torch.float64),
                   torch.full((1, *shape), 300.0, dtype=torch.float64)])
    per_coordinate = torch.where(z.abs() < 30, (torch.exp(-z) / (1 + torch.exp(-z)) ** 2).log(), -z.abs())
    torch.testing.assert_close(StandardLogistic(shape).double().log_prob(z), per_coordinate.flatten(1).sum(1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logistic_sampler_keeps_the_last_uniform_below_one(dtype, monkeypatch) -> None:
    """``torch.rand``'s largest value ``1 - eps/2`` is used as it is: ``z = log((1 - eps/2) / (eps/2))``, and 0 maps to
    minus that."""
    eps = torch.finfo(dtype).eps
    monkeypatch.setattr(torch, "rand", lambda *args, **kwargs: torch.tensor([[0.0, 1 - eps / 2]], dtype=dtype))
    z = StandardLogistic(2).to(dtype).rsample(1)[0].double()
    edge = math.log((1 - eps / 2) / (eps / 2))
    torch.testing.assert_close(z, torch.tensor([-edge, edge], dtype=torch.float64), atol=0, rtol=1e-6)


def test_a_one_component_mixture_is_the_standard_normal_at_the_start() -> None:
    base = MixtureOfGaussians(3, components=1).double()
    z = 3 * torch.randn(10, 3, dtype=torch.float64)
    torch.testing.assert_close(base.log_prob(z), StandardNormal(3).double().log_prob(z))


def test_a_mixture_needs_a_component() -> None:
    with pytest.raises(ValueError, match="components must be >= 1, got 0"):
        MixtureOfGaussians(2, components=0)


def test_bases_by_name() -> None:
    assert {name: type(build_base(name, 2)) for name in ("normal", "diagonal_normal", "logistic")} == {
        "normal": StandardNormal, "diagonal_normal": DiagonalNormal, "logistic": StandardLogistic}
    assert BASES["mog"] is MixtureOfGaussians
    assert list(build_base("normal", 2).parameters()) == []
    with pytest.raises(ValueError, match="unknown base distribution 'gauss'"):
        build_base("gauss", 2)


# ---------------------------------------------------------------- coupling NSF presets


def _identity_masks(flow) -> list[torch.Tensor]:
    """Each coupling layer's identity part as a boolean vector over the features."""
    masks = []
    for layer in flow.transform:
        m = torch.zeros(flow.event_shape[0], dtype=torch.bool)
        m[layer.identity_idx] = True
        masks.append(m)
    return masks


@pytest.mark.parametrize("features", [5, 6])
def test_random_coupling_masks_keep_half_the_features_and_follow_the_seed(features: int) -> None:
    """``permutation="random"``: every layer keeps ``floor(D / 2)`` features as its identity part, drawn afresh per
    layer from ``seed`` (the same seed gives the same masks, another seed others)."""
    from invertible.models import build

    def masks(seed: int) -> list[torch.Tensor]:
        flow = build("nsf", features=features, layers=6, hidden=[4], bins=3, kind="coupling",
                     permutation="random", seed=seed)
        return _identity_masks(flow)

    first = masks(0)
    assert all(int(m.sum()) == features // 2 for m in first)
    assert len({tuple(m.tolist()) for m in first}) > 1
    assert all(torch.equal(a, b) for a, b in zip(first, masks(0)))
    assert any(not torch.equal(a, b) for a, b in zip(first, masks(1)))


def test_alternating_coupling_masks_swap_halves_layer_by_layer() -> None:
    """``permutation="reverse"``: layer ``i`` keeps the features of parity ``i mod 2``, so every feature is transformed."""
    from invertible.models import build

    flow = build("nsf", features=5, layers=3, hidden=[4], bins=3, kind="coupling")
    even = torch.arange(5) % 2 == 0
    assert [m.tolist() for m in _identity_masks(flow)] == [even.tolist(), (~even).tolist(), even.tolist()]


@pytest.mark.parametrize("kw, match", [(dict(features=3, layers=0), "layers must be >= 1"),
                                       (dict(features=1, kind="coupling"), "at least 2 features"),
                                       (dict(features=3, kind="bogus"), "unknown kind")])
def test_nsf_refuses_impossible_sizes(kw, match) -> None:
    from invertible.models import build

    with pytest.raises(ValueError, match=match):
        build("nsf", hidden=[4], **kw)
