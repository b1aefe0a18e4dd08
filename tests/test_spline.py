"""Rational-quadratic splines: edges at exactly +-B, linear tails, huge inputs, gradients there."""

import pytest
import torch

from invertible.transforms import rational_quadratic_spline as rqs

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
