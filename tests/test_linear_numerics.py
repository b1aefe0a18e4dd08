"""The linear layers' log-dets and inverses in float32 where ``det W`` itself leaves the float range.

Against ``torch.linalg.slogdet`` in float64: weights whose determinant under- or overflows float32 (scaled rotations),
a signed permutation with a negative determinant, a nearly singular weight; ``LUConv1x1`` with a diagonal whose
product is ``exp(+-90)``, whose log-det is the exact sum of ``log|s|``; ``H W log|det W|`` for the plain 1x1
convolution.
"""

from __future__ import annotations

import math

import pytest
import torch

from invertible.transforms import BlockDiagonalLinear, FullLinear
from invertible.transforms.conv import Conv1x1, LUConv1x1

D = 6


def _rotation(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))[0]


def _nearly_singular() -> torch.Tensor:
    """A rotation times singular values from 1 down to 1e-4, times another rotation."""
    return _rotation(1) @ torch.diag(torch.logspace(0, -4, D, dtype=torch.float64)) @ _rotation(2)


WEIGHTS = {
    "det_underflows": lambda: 1e-9 * _rotation(0),  # det ~ 1e-54
    "det_overflows": lambda: 1e8 * _rotation(0),  # det ~ 1e48
    "signed_permutation": lambda: torch.eye(D, dtype=torch.float64)[[2, 0, 1, 3, 5, 4]] * torch.tensor(
        [1.0, -2.0, 1.0, 0.5, 1.0, -1.0], dtype=torch.float64
    ),
    "nearly_singular": _nearly_singular,
}


def _layer(cls, weight: torch.Tensor):
    """A ``cls`` layer with ``weight`` (``BlockDiagonalLinear`` as one block)."""
    layer = cls(D, D) if cls is BlockDiagonalLinear else cls(D)
    with torch.no_grad():
        (layer.blocks[0] if cls is BlockDiagonalLinear else layer.weight).copy_(weight)
    return layer


@pytest.mark.parametrize("cached", [False, True], ids=["train", "eval"])
@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("cls", [FullLinear, BlockDiagonalLinear, Conv1x1])
def test_float32_log_det_and_inverse_against_float64(cls, weight: str, cached: bool) -> None:
    w = WEIGHTS[weight]().float().double()  # the float32 weight, exactly
    layer = _layer(cls, w.float()).train(not cached)
    logdet = torch.linalg.slogdet(w)[1]
    x = torch.randn(4, D, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    z = x @ w.T
    with torch.no_grad():
        if cls is Conv1x1:  # the same vectors at each of 2 x 3 pixels
            out, ladj = layer(x.float()[:, :, None, None].expand(4, D, 2, 3))
            back, ladj_inv = layer.inverse(z.float()[:, :, None, None].expand(4, D, 2, 3))
            out, back, pixels = out[:, :, 1, 2], back[:, :, 1, 2], 6
        else:
            (out, ladj), (back, ladj_inv), pixels = layer(x.float()), layer.inverse(z.float()), 1
    assert ladj.dtype == torch.float32 and torch.isfinite(ladj).all()
    torch.testing.assert_close(ladj.double(), (pixels * logdet).expand(4), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(ladj_inv.double(), -(pixels * logdet).expand(4), rtol=1e-6, atol=1e-5)
    scale = z.abs().max()
    torch.testing.assert_close(out.double() / scale, z / scale, rtol=0, atol=1e-5)
    cond = torch.linalg.cond(w).item()
    torch.testing.assert_close(back.double(), x, rtol=0, atol=1e-5 * cond)


@pytest.mark.parametrize("log_s", [[30.0, 31.0, 29.0], [-30.0, -31.0, -29.0]], ids=["overflows", "underflows"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lu_conv1x1_log_det_is_the_sum_of_log_s_where_prod_s_leaves_float32(dtype, log_s: list[float]) -> None:
    layer = LUConv1x1(3).to(dtype)
    with torch.no_grad():
        layer.log_abs_s.copy_(torch.tensor(log_s))  # prod |s| = exp(+-90), beyond float32
        layer.upper.mul_(math.exp(log_s[0]))  # U = exp(+-30) times a well-conditioned matrix
    x = torch.randn(2, 3, 2, 5, dtype=dtype)
    expected = torch.tensor(sum(log_s), dtype=torch.float64)
    dense = layer.weight().detach().double()
    torch.testing.assert_close(torch.linalg.slogdet(dense)[1], expected)
    for mode in ("train", "eval"):
        getattr(layer, mode)()
        with torch.no_grad():
            z, ladj = layer(x)
            back, ladj_inv = layer.inverse(z)
        torch.testing.assert_close(ladj.double(), 10 * expected.expand(2))
        assert torch.equal(ladj_inv, -ladj)
        torch.testing.assert_close(back, x, rtol=1e-4, atol=1e-4)
