"""Elementwise root finding for the closed-form-free directions of planar and Sylvester flows."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["bracketed_newton", "log_sech2"]

_LOG2 = 0.6931471805599453


def log_sech2(a: Tensor) -> Tensor:
    """``log(1 - tanh(a)^2)`` without cancellation: ``2 (log 2 - |a| - softplus(-2|a|))``."""
    m = a.abs()
    return 2.0 * (_LOG2 - m - torch.nn.functional.softplus(-2.0 * m))


def bracketed_newton(
    fn: Callable[[Tensor], tuple[Tensor, Tensor]], lo: Tensor, hi: Tensor, max_iter: int = 100
) -> Tensor:
    """Root of a non-decreasing function in ``[lo, hi]``, elementwise, to float precision.

    ``fn(a)`` returns ``(f(a), f'(a))``. Newton steps that leave the current
    bracket are replaced by bisection, so the iteration always converges
    (quadratically near a simple root). Runs without gradients; differentiate
    the result by one Newton step from the detached root (implicit function theorem).
    """
    with torch.no_grad():
        lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
        a = 0.5 * (lo + hi)
        eps = torch.finfo(a.dtype).eps
        for _ in range(max_iter):
            f, df = fn(a)
            lo = torch.where(f < 0, a, lo)
            hi = torch.where(f > 0, a, hi)
            step = a - f / df
            ok = torch.isfinite(step) & (step >= lo) & (step <= hi)
            new = torch.where(ok, step, 0.5 * (lo + hi))
            done = ((new - a).abs() <= 2 * eps * (1 + a.abs())) | (hi - lo <= 2 * eps * (1 + a.abs()))
            a = new
            if bool(done.all()):
                break
        return a
