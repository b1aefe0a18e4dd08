"""Rational-quadratic splines: edges at exactly +-B, linear tails, huge inputs, gradients there."""

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
