"""Numerically stable pieces of log-dets: log-space sums, ``log softplus``, ``log sech^2``, the range of ``exp``.

Each returns a finite value wherever the exact value is a finite float, for every
finite input, and has finite gradients there (infinite only where the exact
gradient itself exceeds the float range). They keep the plain formula where it is
exact to rounding, so ordinary inputs give the same numbers as the plain formula.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["log_sech2", "log_softplus", "log_add", "log1p_tanh_product", "exp_bound"]

_LOG2 = math.log(2.0)


def log_sech2(a: Tensor) -> Tensor:
    """``log(1 - tanh(a)^2)`` without cancellation: ``2 (log 2 - |a| - softplus(-2|a|))``."""
    m = a.abs()
    return 2.0 * (_LOG2 - m - F.softplus(-2.0 * m))


def log_softplus(x: Tensor) -> Tensor:
    """``log(softplus(x)) = log(log(1 + e^x))``, finite for every finite ``x``.

    ``softplus(x)`` underflows to 0 below ``x ~ -104`` (float32) or ``-745`` (float64),
    where ``log softplus(x) = x + log(1 - e^x / 2 + ...)``; below ``x = log(eps)`` that is
    ``x`` to float precision, so the result is ``x`` there and ``log(softplus(x))`` above.
    """
    cut = math.log(torch.finfo(x.dtype).eps)
    low = x < cut
    return torch.where(low, x, torch.log(F.softplus(torch.where(low, cut, x))))


def log_add(x: Tensor, log_y: Tensor, y: Tensor | None = None) -> Tensor:
    """``log(x + e^log_y)`` for ``x >= 0``, with ``y = e^log_y`` given in log space (it may underflow).

    Where ``x + y`` is at least the smallest normal float this is ``log(x + y)``
    (``y`` as passed, if it is, so callers keep their own rounding); below that,
    where ``x + y`` has lost precision or underflowed to 0, it is
    ``logaddexp(log x, log_y)`` (``log_y`` where ``x = 0``). Both branches see only
    inputs valid for them, so no NaN enters the gradient through ``torch.where``.
    """
    if y is None:
        y = log_y.exp()
    total = x + y
    normal = total >= torch.finfo(total.dtype).tiny
    positive = ~normal & (x > 0)
    small = torch.logaddexp(torch.log(torch.where(positive, x, 1.0)), log_y)
    return torch.where(normal, torch.log(torch.where(normal, total, 1.0)), torch.where(positive, small, log_y))


def log1p_tanh_product(x: Tensor, y: Tensor) -> Tensor:
    """``log(1 + tanh(x) tanh(y))``, finite for all finite ``x, y`` (the product is ``> -1``).

    ``1 + tanh(x) tanh(y)`` cancels to 0 in floating point once both ``tanh`` round to
    ``+-1`` with opposite signs (``|x|, |y| > 9`` in float32, ``> 19`` in float64). With
    ``p = e^{-2|x|}``, ``q = e^{-2|y|}`` and ``tanh|x| = (1 - p) / (1 + p)``,

        1 + tanh(x) tanh(y) = 2 (1 + p q) / ((1 + p)(1 + q))    (same signs)
                            = 2 (p + q) / ((1 + p)(1 + q))      (opposite signs),

    whose logarithm has no cancellation: ``log 2 - softplus(-2|x|) - softplus(-2|y|)``
    plus ``log1p(e^{-2(|x| + |y|)})`` or ``logaddexp(-2|x|, -2|y|)``.
    """
    ax, ay = -2.0 * x.abs(), -2.0 * y.abs()
    same = torch.log1p(torch.exp(ax + ay))
    opposite = torch.logaddexp(ax, ay)
    return _LOG2 - F.softplus(ax) - F.softplus(ay) + torch.where((x >= 0) == (y >= 0), same, opposite)


def _exp_bound(dtype: torch.dtype) -> float:
    finfo = torch.finfo(dtype)
    return math.log(finfo.max) * (1.0 - 4.0 * finfo.eps)


_EXP_BOUNDS = {dtype: _exp_bound(dtype) for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}


def exp_bound(dtype: torch.dtype) -> float:
    """A bound ``L`` just below ``log(finfo(dtype).max)``: ``exp(s)`` and ``exp(-s)`` are finite for ``|s| <= L``.

    (``log(max)`` itself rounds up in float32, where ``exp`` of it is ``inf``; the margin
    of a few ulps keeps ``exp(L)`` finite whichever ``exp`` implementation a device has.)
    A table lookup, so that ``torch.compile`` traces it as a constant.
    """
    bound = _EXP_BOUNDS.get(dtype)
    return _exp_bound(dtype) if bound is None else bound
