"""Rational-quadratic splines: edges at exactly +-B, linear tails, huge inputs, gradients there."""

import math

import pytest
import torch

from invertible.transforms import rational_quadratic_spline as rqs

from .perturb import perturb

B = 2.0
K = 6


def _params(n: int, dtype: torch.dtype, seed: int = 0, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(n, 3 * K - 1, generator=g, dtype=torch.float64)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("inverse", [False, True])
def test_bounds_tails_and_huge_inputs_have_finite_values_and_gradients(dtype, inverse):
    big = 1e30 if dtype == torch.float32 else 1e300
    x = torch.tensor([-big, -1e30, -1e6, -B - 1e-3, -B, -B + 1e-6, 0.0, B - 1e-6, B, B + 1e-3, 1e6, 1e30, big], dtype=dtype)
    x.requires_grad_(True)
    params = _params(len(x), dtype).requires_grad_(True)
    y, lad = rqs(x, params, B, inverse=inverse)
    assert torch.isfinite(y).all() and torch.isfinite(lad).all()
    (y.sum() + lad.sum()).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(params.grad).all()
    tails = x.detach().abs() > B
    assert torch.equal(y[tails], x.detach()[tails]) and (lad[tails] == 0).all()
    edges = x.detach().abs() == B
    torch.testing.assert_close(y[edges].detach(), x.detach()[edges])
    assert (x.grad[tails] == 1).all()


def test_spline_is_monotone_continuous_and_its_logdet_is_the_derivative():
    torch.manual_seed(0)
    x = torch.linspace(-B - 1, B + 1, 2001, dtype=torch.float64)
    params = _params(1, torch.float64).expand(len(x), -1)
    y, lad = rqs(x, params, B)
    assert (y[1:] > y[:-1]).all()
    near = torch.tensor([-B - 1e-9, -B + 1e-9, B - 1e-9, B + 1e-9], dtype=torch.float64)
    y_near, _ = rqs(near, params[:4], B)
    torch.testing.assert_close(y_near, near, atol=1e-6, rtol=0)  # continuous into the tails
    xg = x.clone().requires_grad_(True)
    dy = torch.autograd.grad(rqs(xg, params, B)[0].sum(), xg)[0]
    torch.testing.assert_close(lad, dy.log())
    back, lad_inv = rqs(y, params, B, inverse=True)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(lad_inv, -lad)


def test_zero_parameters_give_the_identity():
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    y, lad = rqs(x, torch.zeros(101, 3 * K - 1, dtype=torch.float64), B)
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(lad, torch.zeros_like(x))


def test_bad_parameter_count_is_rejected():
    with pytest.raises(ValueError, match="3K - 1"):
        rqs(torch.zeros(3), torch.zeros(3, 7), B)


@pytest.mark.parametrize("inverse", [False, True])
def test_one_bin_is_the_identity_and_spline_layers_refuse_it(inverse):
    """K = 1: one bin from (-B, -B) to (B, B) with unit end slopes, the identity for any parameters."""
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    y, lad = rqs(x, 3.0 * torch.randn(101, 2, dtype=torch.float64), B, inverse=inverse)
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(lad, torch.zeros_like(x))
    from invertible.models import build

    for kind in ("autoregressive", "coupling"):
        with pytest.raises(ValueError, match=r"bins >= 2 \(one bin is the identity\)"):
            build("nsf", features=3, bins=1, kind=kind)


def _knots(params: torch.Tensor, bound: float, floor: float = 1e-3):
    """The knots and knot derivatives the parameters stand for: softmax bin sizes and softplus slopes, with floors."""
    k = (params.shape[-1] + 1) // 3
    w_raw, h_raw, d_raw = params[..., :k], params[..., k : 2 * k], params[..., 2 * k :]

    def edges(raw: torch.Tensor) -> torch.Tensor:
        sizes = floor + (1 - floor * k) * torch.softmax(raw, -1)  # fractions of [-B, B], summing to 1
        return torch.cat([torch.zeros_like(sizes[..., :1]), sizes.cumsum(-1)], -1) * 2 * bound - bound

    xs, ys = edges(w_raw), edges(h_raw)
    # softplus shifted to give 1 at a raw value of 0, on top of the floor
    inner = floor + torch.nn.functional.softplus(d_raw + torch.tensor(1.0 - floor, dtype=params.dtype).expm1().log())
    ones = torch.ones_like(inner[..., :1])
    return xs, ys, torch.cat([ones, inner, ones], -1)


def test_the_spline_passes_through_its_knots_with_their_derivatives():
    """Widths, heights and derivatives come in that order: ``y(x^k) = y^k`` and ``y'(x^k) = d^k`` at every knot."""
    params = _params(1, torch.float64, seed=3)[0]
    params[2 * K] = -40.0  # a raw derivative far below the floor: the slope there is the floor itself
    xs, ys, ds = _knots(params, B)
    assert ds[1] > 1e-3 and ds[1] < 1e-3 + 1e-12
    x = xs.clone().requires_grad_(True)
    y, lad = rqs(x, params.expand(K + 1, -1), B)
    torch.testing.assert_close(y.detach(), ys)
    torch.testing.assert_close(lad.detach(), ds.log())
    (slope,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(slope, ds)
    back, lad_inv = rqs(ys, params.expand(K + 1, -1), B, inverse=True)
    torch.testing.assert_close(back, xs)
    torch.testing.assert_close(lad_inv, -ds.log())


def test_the_spline_between_knots_is_the_rational_quadratic():
    """At the middle of bin ``k`` (``theta = 1/2``) the value is Gregory & Delbourgo's interpolant."""
    params = _params(1, torch.float64, seed=4)[0]
    xs, ys, ds = _knots(params, B)
    mid = (xs[:-1] + xs[1:]) / 2
    w, h = xs[1:] - xs[:-1], ys[1:] - ys[:-1]
    s = h / w
    expected = ys[:-1] + h * (s / 4 + ds[:-1] / 4) / (s + (ds[1:] + ds[:-1] - 2 * s) / 4)
    y, _ = rqs(mid, params.expand(K, -1), B)
    torch.testing.assert_close(y, expected)


def _split_layer_case(kind: str):
    from invertible.transforms import MaskedRQSAutoregressive, RQSCoupling, alternating_mask

    torch.manual_seed(0)
    if kind == "autoregressive":
        layer = MaskedRQSAutoregressive(3, hidden=(12,), order="reverse", bins=4, bound=1.5).double()
    else:
        layer = RQSCoupling(alternating_mask(4), hidden=(12,), bins=4, bound=1.5).double()
    perturb(layer, 0.5)
    return layer


@pytest.mark.parametrize("kind", ["autoregressive", "coupling"])
def test_spline_layers_apply_each_coordinates_own_parameters_on_their_bound(kind):
    """Coordinate ``i`` goes through the spline of the parameters ``out[:, :, i]`` of the conditioner, on ``[-bound, bound]``."""
    layer = _split_layer_case(kind)
    g = torch.Generator().manual_seed(1)
    x = 1.2 * torch.randn(64, 3 if kind == "autoregressive" else 4, generator=g, dtype=torch.float64)
    z, ladj = layer(x)
    if kind == "autoregressive":
        given, moved, params = x, torch.arange(3), layer.net(x)
    else:
        given, moved = x[:, layer.identity_idx], layer.transform_idx
        params = layer.conditioner(given).unflatten(1, (layer.params_per_dim, -1))
    expected_ladj = torch.zeros(64, dtype=torch.float64)
    for j, i in enumerate(moved.tolist()):
        y_i, lad_i = rqs(x[:, i], params[:, :, j], 1.5)
        torch.testing.assert_close(z[:, i], y_i)
        expected_ladj += lad_i
    torch.testing.assert_close(ladj, expected_ladj)
    tails = x.abs() > 1.5
    assert tails[:, moved].any() and (~tails[:, moved]).any()  # both the spline and the tails were exercised
    assert torch.equal(z[tails], x[tails])


@pytest.mark.parametrize("features", [4, 20])  # below and above the width where the features are flattened
@pytest.mark.parametrize("inverse", [False, True])
def test_parameters_along_axis_minus_two_give_the_same_map_as_along_the_last(inverse, features):
    """``dim=-2`` reads ``params (batch, 3K - 1, D)`` for ``x (batch, D)``, the layers' layout: the same
    spline, value and gradient, as ``dim=-1`` on the transposed parameters."""
    g = torch.Generator().manual_seed(3)
    params = (2.0 * torch.randn(5, 3 * K - 1, features, generator=g, dtype=torch.float64)).requires_grad_(True)
    x = torch.linspace(-B - 0.5, B + 0.5, 5 * features, dtype=torch.float64).reshape(5, features)
    y_last, lad_last = rqs(x, params.transpose(1, 2), B, inverse=inverse)
    (g_last,) = torch.autograd.grad((y_last * lad_last).sum(), params)
    y_mid, lad_mid = rqs(x, params, B, inverse=inverse, dim=-2)
    (g_mid,) = torch.autograd.grad((y_mid * lad_mid).sum(), params)
    assert y_mid.shape == lad_mid.shape == x.shape
    torch.testing.assert_close(y_mid, y_last, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lad_mid, lad_last, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_mid, g_last, rtol=1e-10, atol=1e-12)


def test_parameter_axis_other_than_the_last_two_is_refused():
    with pytest.raises(ValueError, match="dim -1 or -2, got dim=0"):
        rqs(torch.zeros(3), torch.zeros(3 * K - 1, 3), B, dim=0)


@pytest.mark.parametrize("x_shape, params_shape, dim", [((4, 3), (4, 3 * K - 1, 5), -2), ((4, 3), (4, 3, 3 * K - 1), -2),
                                                         ((4,), (3 * K - 1,), -1), ((4, 2), (4, 3 * K - 1), -1)])
def test_parameters_that_do_not_fit_x_are_refused_by_name(x_shape, params_shape, dim):
    """Not a shape error from inside torch (or a broadcast): ``params`` is ``x``'s shape with the parameter axis added."""
    with pytest.raises(ValueError, match=r"do not fit x of shape"):
        rqs(torch.zeros(x_shape), torch.zeros(params_shape), B, dim=dim)


def _preimage_error(dtype: torch.dtype, scale: float, seed: int = 0) -> float:
    """The inverse in ``dtype`` of a float64 spline value, against the exact preimage: the largest error in units
    of what rounding alone allows there, ``eps (|y| + 1) / slope + eps (|x| + 1)`` (a flat bin leaves ``x``
    ill-determined, a steep one pins it)."""
    g = torch.Generator().manual_seed(seed)
    params = scale * torch.randn(20000, 3 * K - 1, generator=g, dtype=torch.float64)
    x = 2 * B * torch.rand(20000, generator=g, dtype=torch.float64) - B
    y, lad = rqs(x, params, B)
    back, _ = rqs(y.to(dtype), params.to(dtype), B, inverse=True)
    eps = torch.finfo(dtype).eps
    allowed = eps * (y.abs() + 1) / lad.exp() + eps * (x.abs() + 1)
    return float(((back.double() - x).abs() / allowed).max())


@pytest.mark.parametrize("dtype, scale", [(torch.float32, 1e4), (torch.float32, 1e6), (torch.float32, 1e8),
                                          (torch.float64, 1e4), (torch.float64, 1e6), (torch.float64, 1e8),
                                          (torch.float64, 1e12)])
def test_inverse_of_steep_and_flat_bins_is_as_accurate_as_the_precision_allows(dtype, scale):
    """Large raw parameters (near-empty bins, slopes from the floor to ~scale): the quadratic's root was taken as
    ``2c / (-b - sqrt(b^2 - 4ac))`` for either sign of ``b``; for ``b < 0`` (a large ``y - y^k`` under a large
    ``d^{k+1}``) that cancels, and the preimage was off by 4e4 to 1e7 of those units here; the root of the
    right form for each sign stays below 7e3 (the quadratic's own coefficients carry rounding errors)."""
    assert _preimage_error(dtype, scale) < 1e4


@pytest.mark.parametrize("dtype, scale", [(torch.float32, 1e8), (torch.float32, 1e15), (torch.float64, 1e20),
                                          (torch.float64, 1e100)])
def test_inverse_with_huge_raw_parameters_finds_the_preimage_with_finite_gradients(dtype, scale):
    """Raw parameters as a conditioner gives them for inputs of that size (a far-tail coordinate of an NSF feeds
    the next layers' networks): the inverse is the preimage and its gradients are finite. Before, the cancelling
    root gave ``-inf``, clamped to the wrong end of the bin, with NaN gradients from raw 1e8 in float32 and 1e20
    in float64; dividing the quadratic by ``s + d^k + d^{k+1}`` also keeps ``b^2`` in range."""
    g = torch.Generator().manual_seed(1)
    params = (scale * torch.randn(512, 3 * K - 1, generator=g, dtype=torch.float64)).to(dtype).requires_grad_(True)
    y = torch.cat([torch.linspace(-B, B, 448, dtype=dtype), torch.tensor([B, -B, 1e30, -1e30], dtype=dtype).repeat(16)])
    back, lad = rqs(y, params, B, inverse=True)
    assert torch.isfinite(back).all() and torch.isfinite(lad).all()
    assert _preimage_error(dtype, scale) < 1e4
    (grad,) = torch.autograd.grad(back.sum() + lad.sum(), params)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("kind", ["autoregressive", "coupling"])
@pytest.mark.parametrize("dtype, big", [(torch.float32, 1e6), (torch.float32, 1e15), (torch.float64, 1e15),
                                        (torch.float64, 1e30)])
def test_nsf_inverse_has_finite_gradients_with_one_coordinate_far_in_the_tail(kind, dtype, big):
    """A latent coordinate of ``1e30`` passes the splines as the identity but reaches the other coordinates'
    conditioners, whose raw parameters are then of that order: sampling's inverse gave NaN gradients (here in
    float32 at 1e15 and in float64 at 1e30)."""
    from invertible.models import build

    torch.manual_seed(0)
    flow = build("nsf", features=4, layers=3, hidden=[16, 16], bins=8, kind=kind).to(dtype)
    perturb(flow, 0.5)
    for j in range(4):
        z = torch.tensor([[0.3, -0.2, 0.5, 0.1]], dtype=dtype)
        z[0, j] = big
        z.requires_grad_(True)
        x, ladj = flow.transform.inverse(z)
        assert torch.isfinite(x).all() and torch.isfinite(ladj).all()
        grads = torch.autograd.grad(x.sum() + ladj.sum(), [z, *flow.parameters()], allow_unused=True)
        assert all(torch.isfinite(gr).all() for gr in grads if gr is not None), f"coordinate {j}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("steep", [1e4, 1e8, 1e16])
def test_log_det_next_to_a_steep_upper_knot_is_exact(dtype, steep):
    """Two equal bins on ``[-3, 3]`` meeting at ``(0, 0)`` with slope ``d`` there (unit slopes at the ends). In the
    left bin ``y = -3 + 3 theta / (1 + (d - 1) theta r)`` with ``r = 1 - theta``, so at ``y = -1.5``
    ``(d - 1) r^2 - (d + 1) r + 1 = 0``, and the slope is ``(d theta^2 + 2 theta r + r^2) / (1 + (d - 1) theta r)^2``
    (about ``d / 4``). ``r`` was taken as ``1 - theta``, which rounds to 0 once ``r ~ 1/d`` is below ``eps``: the
    log-det came out ``log d``, 1.39 nats off (float32 from ``d ~ 1e8``, float64 from ``d ~ 1e16``; 0.05 nats at
    ``d = 1e6`` in float32)."""
    shift = math.log(math.expm1(1 - 1e-3))  # raw value v gives the derivative 1e-3 + softplus(v + shift)
    params = torch.tensor([[0.0, 0.0, 0.0, 0.0, steep - shift]], dtype=dtype)
    d = 1e-3 + steep  # softplus(steep) is steep to float precision
    r = 2 / ((d + 1) + math.sqrt((d + 1) ** 2 - 4 * (d - 1)))  # the small root, without cancellation
    theta = 1 - r
    log_slope = math.log(d * theta**2 + 2 * theta * r + r**2) - 2 * math.log(1 + (d - 1) * theta * r)
    x, lad = rqs(torch.tensor([-1.5], dtype=dtype), params, 3.0, inverse=True)
    assert x.item() == pytest.approx(-3 * r, abs=4 * torch.finfo(dtype).eps)
    assert lad.item() == pytest.approx(-log_slope, abs=1e-5)
    y, forward_lad = rqs(torch.tensor([-3 * r], dtype=dtype), params, 3.0)
    assert forward_lad.item() == pytest.approx(log_slope, abs=1e-5)
    assert y.item() == pytest.approx(-1.5, abs=1e-5)
