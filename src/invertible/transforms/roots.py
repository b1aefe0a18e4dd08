"""Elementwise root finding for the closed-form-free directions of planar and Sylvester flows."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["bracketed_newton", "implicit_step"]


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


def implicit_step(root: Tensor, f: Tensor, df: Tensor) -> Tensor:
    """One Newton step ``root - f / df`` from a detached root: its value refines the root, its gradient
    is the implicit function theorem's ``-grad(f) / f'``.

    Where ``f'`` is below the smallest normal float (a flat point of the map, where ``f' = 0`` in
    floating point gives ``0 / 0``), the root from :func:`bracketed_newton` is already exact to its
    bracket, so the value stays ``root``; the gradient is then ``-grad(f) / tiny``, as large as floats
    allow (the exact one, ``-grad(f) / f'``, is larger still).
    """
    tiny = torch.finfo(df.dtype).tiny
    flat = df < tiny
    return root - torch.where(flat, f - f.detach(), f) / df.clamp_min(tiny)
