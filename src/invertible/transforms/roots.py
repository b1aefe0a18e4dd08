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

    ``fn(a)`` returns ``(f(a), f'(a))``. A Newton step is replaced by bisection
    when it leaves the current bracket or is longer than half the previous step
    (the safeguard of ``rtsafe``, Press et al., Numerical Recipes, Sec. 9.4),
    so the iteration always converges, quadratically near a simple root; without
    the second test Newton can cycle between the two flat tails of ``a + c tanh(a)``.
    Runs without gradients; differentiate the result by one Newton step from the
    detached root (implicit function theorem).
    """
    with torch.no_grad():
        lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
        a = 0.5 * (lo + hi)
        last = hi - lo
        eps = torch.finfo(a.dtype).eps
        for _ in range(max_iter):
            f, df = fn(a)
            lo = torch.where(f < 0, a, lo)
            hi = torch.where(f > 0, a, hi)
            dx = f / df
            step = a - dx
            ok = torch.isfinite(step) & (step >= lo) & (step <= hi) & (2 * dx.abs() <= last.abs())
            new = torch.where(ok, step, 0.5 * (lo + hi))
            last = new - a
            done = ((new - a).abs() <= 2 * eps * (1 + a.abs())) | (hi - lo <= 2 * eps * (1 + a.abs()))
            a = new
            if bool(done.all()):
                break
        return a
