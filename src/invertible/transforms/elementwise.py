"""Elementwise bijections: affine scaling, invertible nonlinearities, sigmoid and logit.

Each acts on every coordinate independently, so its Jacobian is diagonal and
``log|det J| = sum_i log|f'(x_i)|``.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Transform, sum_except_batch, vmapped
from .shapes import check_event

__all__ = ["ElementwiseAffine", "LeakyReLU", "SmoothLeakyELU", "Sigmoid", "Logit"]


class ElementwiseAffine(Transform):
    """``z = x * exp(log_scale) + shift`` with one learnable scale and shift per coordinate.

    With ``shift=False`` this is NICE's diagonal scaling layer (Dinh et al. 2014,
    Section 3.3): ``log|det| = sum log_scale``.
    """

    def __init__(self, event_shape: int | Sequence[int], shift: bool = True):
        super().__init__()
        shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
        self.log_scale = nn.Parameter(torch.zeros(shape))
        self.shift = nn.Parameter(torch.zeros(shape)) if shift else None

    def _ladj(self, x: Tensor) -> Tensor:
        return self.log_scale.sum().expand(x.shape[0])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(x, self.log_scale.shape, "ElementwiseAffine")
        z = x * torch.exp(self.log_scale)
        if self.shift is not None:
            z = z + self.shift
        return z, self._ladj(x)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(z, self.log_scale.shape, "ElementwiseAffine")
        if self.shift is not None:
            z = z - self.shift
        return z * torch.exp(-self.log_scale), -self._ladj(z)


class LeakyReLU(Transform):
    """``z = x`` for ``x >= 0`` and ``z = a x`` otherwise (``a > 0``): piecewise linear, invertible."""

    def __init__(self, negative_slope: float = 0.1):
        super().__init__()
        if not negative_slope > 0:
            raise ValueError(f"negative_slope must be > 0 for invertibility, got {negative_slope}")
        self.negative_slope = float(negative_slope)
        self._log_slope = math.log(self.negative_slope)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        neg = x < 0
        z = torch.where(neg, x * self.negative_slope, x)
        return z, sum_except_batch(neg.to(x.dtype)) * self._log_slope

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        neg = z < 0
        x = torch.where(neg, z / self.negative_slope, z)
        return x, -sum_except_batch(neg.to(z.dtype)) * self._log_slope


class SmoothLeakyELU(Transform):
    """An ELU made bijective on the real line by a linear leak:

        z = x                                  for x >= 0
        z = (1 - a)(exp(x) - 1) + a x          for x < 0,   0 < a < 1.

    ``dz/dx = (1 - a) exp(x) + a`` is continuous at 0 and bounded below by
    ``a``, so the map is a C^1 bijection of R. The negative branch has no closed
    inverse; ``inverse`` solves it by Newton's method from ``x = 0``, which
    decreases monotonically to the root because the branch is convex.
    """

    def __init__(self, leak: float = 0.1, iterations: int = 60):
        super().__init__()
        if not 0 < leak < 1:
            raise ValueError(f"leak must lie in (0, 1), got {leak}")
        self.leak = float(leak)
        if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 1:
            raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
        self.iterations = int(iterations)

    def _branch(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a = self.leak
        return (1 - a) * torch.expm1(x) + a * x, (1 - a) * torch.exp(x) + a

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        neg = x < 0
        xn = torch.where(neg, x, torch.zeros_like(x))
        value, slope = self._branch(xn)
        z = torch.where(neg, value, x)
        return z, sum_except_batch(torch.log(slope))

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        neg = z < 0
        target = torch.where(neg, z, torch.zeros_like(z))
        x = torch.zeros_like(z)
        for _ in range(self.iterations):
            value, slope = self._branch(x)
            x = x - (value - target) / slope
        x = torch.where(neg, x, z)
        _, slope = self._branch(torch.where(neg, x, torch.zeros_like(x)))
        return x, -sum_except_batch(torch.log(slope))


def _checks_domain(layer: Transform, values: Tensor) -> bool:
    """Whether ``layer`` checks ``values`` against its domain now: with ``validate`` on, outside ``torch.compile``
    (a compiled graph keeps no data-dependent branch) and not on a tensor that ``torch.func.vmap`` batches."""
    return layer.validate and not torch.compiler.is_compiling() and not vmapped(values)


class Sigmoid(Transform):
    """``z = sigmoid(x)``, mapping R onto (0, 1); ``log|dz/dx| = -softplus(-x) - softplus(x)``.

    ``inverse`` raises ``ValueError`` for ``z`` outside the open interval (0, 1), as
    :class:`Logit` does: at 0 or 1 ``logit(z) = -+inf`` and the log-det is ``+inf``,
    beyond them both are NaN. The check follows :class:`Logit`'s: off with ``validate = False``,
    skipped inside ``torch.compile`` and on tensors that ``torch.func.vmap`` batches.

    ``forward`` keeps ``z`` inside (0, 1) as :meth:`Logit.inverse` does: where ``sigmoid(x)`` rounds to 0 or 1
    (``|x|`` beyond about 88 and 17 in float32) it returns the nearest float inside, which ``inverse`` takes back
    (to a finite ``x`` of the same sign), with the log-det of the unrounded map.
    """

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        finfo = torch.finfo(x.dtype)
        z = torch.sigmoid(x).clamp(finfo.tiny, 1 - finfo.eps / 2)
        return z, sum_except_batch(-F.softplus(-x) - F.softplus(x))

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        outside = ~((z > 0) & (z < 1))
        if _checks_domain(self, outside) and outside.any():
            raise ValueError(
                f"Sigmoid.inverse needs values in (0, 1); got {int(outside.sum())} outside, "
                f"e.g. {z[outside][0].item():.6g}"
            )
        x = torch.logit(z)
        return x, sum_except_batch(F.softplus(-x) + F.softplus(x))


class Logit(Transform):
    """Logit preprocessing of data in [0, 1] (RealNVP, Dinh et al. 2017, Section 4.1):

        y = alpha + (1 - 2 alpha) x,    z = log y - log(1 - y).

    ``alpha > 0`` keeps the boundary values 0 and 1 finite. The log-det
    ``log(1 - 2 alpha) - log y - log(1 - y)`` per coordinate is exact, so
    likelihoods measured after this step convert back to the data space.

    ``forward`` raises ``ValueError`` for ``x`` outside its domain ``0 < y < 1``: the open
    interval (0, 1) for ``alpha = 0`` (at 0 or 1, ``z = -+inf`` and the log-det is ``+inf``,
    whose sum with a base log-density is NaN), ``[0, 1]`` and a margin for ``alpha > 0``
    (beyond it the logarithms are NaN). The check reads the data back (a device synchronisation on a
    GPU); ``validate = False`` (:attr:`~invertible.Transform.validate`, also set by ``Flow.validate``, and
    by the training engine for batches of pixels it checked when loading them) switches it off. It skips
    itself inside ``torch.compile`` (a compiled graph keeps no data-dependent branch) and on tensors that
    ``torch.func.vmap`` batches.

    ``inverse`` keeps ``y = sigmoid(z)`` inside the domain: where it rounds to 0 or 1 (from ``|z|`` of about 17
    at the top and 88 at the bottom in float32), or, for ``alpha > 0``, comes within a few rounding units of them,
    ``y`` is the nearest such float inside ``(0, 1)``, so the point it returns maps forward to a finite ``z``
    (at most about 16.6 in float32 for ``alpha = 0``, 14.5 for ``alpha > 0``).
    """

    def __init__(self, alpha: float = 0.0):
        super().__init__()
        if not 0 <= alpha < 0.5:
            raise ValueError(f"alpha must lie in [0, 0.5), got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y = self.alpha + (1 - 2 * self.alpha) * x
        outside = ~((y > 0) & (y < 1))
        if _checks_domain(self, outside) and outside.any():
            margin = self.alpha / (1 - 2 * self.alpha)
            where = "in (0, 1)" if self.alpha == 0 else f"in [0, 1] (or up to {margin:.3g} beyond)"
            raise ValueError(
                f"Logit(alpha={self.alpha}) needs values {where}; got {int(outside.sum())} outside, "
                f"e.g. {x[outside][0].item():.6g}"
            )
        z = torch.log(y) - torch.log1p(-y)
        ladj = math.log1p(-2 * self.alpha) - torch.log(y) - torch.log1p(-y)
        return z, sum_except_batch(ladj)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        finfo = torch.finfo(z.dtype)
        # margins for the rounding of x's affine map and of forward's way back, of terms of size alpha near 0
        # and of size 1 near 1 (none for alpha = 0, where x = y)
        low, high = (finfo.tiny, finfo.eps / 2) if self.alpha == 0 else (4 * finfo.eps * self.alpha, 4 * finfo.eps)
        y = torch.sigmoid(z).clamp(low, 1 - high)
        x = (y - self.alpha) / (1 - 2 * self.alpha)
        ladj = -F.softplus(-z) - F.softplus(z) - math.log1p(-2 * self.alpha)
        return x, sum_except_batch(ladj)
