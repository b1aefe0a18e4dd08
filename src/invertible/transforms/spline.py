"""Monotonic rational-quadratic splines with linear tails, in coupling and autoregressive form.

Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", NeurIPS 2019;
the spline is Gregory & Delbourgo's monotone rational-quadratic interpolant (1982).

On ``[-B, B]`` the map is a monotone rational-quadratic spline through
``K + 1`` knots ``(x^k, y^k)`` with positive derivatives ``d^k``; in bin ``k``,
with ``s = (y^{k+1} - y^k) / (x^{k+1} - x^k)`` and ``theta = (x - x^k) / (x^{k+1} - x^k)``,

    y = y^k + (y^{k+1} - y^k) [s theta^2 + d^k theta (1 - theta)]
              / [s + (d^{k+1} + d^k - 2 s) theta (1 - theta)],

    dy/dx = s^2 [d^{k+1} theta^2 + 2 s theta (1 - theta) + d^k (1 - theta)^2]
            / [s + (d^{k+1} + d^k - 2 s) theta (1 - theta)]^2.

The inverse solves a quadratic in ``theta`` (Durkan et al., Eq. 6-8), using the
numerically stable root ``theta = 2c / (-b - sqrt(b^2 - 4ac))``. The end knots
are ``(-B, -B)`` and ``(B, B)`` with derivative 1, and outside ``[-B, B]`` the map
is the identity (the *linear tails*), so the whole map is a C^1 bijection of R.
The spline is evaluated on the input clamped to ``[-B, B]`` and merged with the
tails by ``torch.where``: no NaN or inf at the bounds, in the tails, or for
huge inputs, in values or gradients. (The gradients of the inverse overflow only
for raw parameters far beyond what networks produce, about 1e8 in float32 and
1e20 in float64, where the squared quadratic coefficients leave the float range.)
A zero parameter vector gives the identity.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .autoregressive import _Autoregressive
from .coupling import _MaskedCoupling

__all__ = ["rational_quadratic_spline", "RQSCoupling", "MaskedRQSAutoregressive"]


def rational_quadratic_spline(
    x: Tensor,
    params: Tensor,
    bound: float = 3.0,
    inverse: bool = False,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> tuple[Tensor, Tensor]:
    """Apply the spline (or its inverse) elementwise: ``x (...,)``, ``params (..., 3K - 1)`` -> ``(y, log|dy/dx|)``.

    ``params`` holds ``K`` unnormalised bin widths, ``K`` unnormalised bin heights
    and ``K - 1`` unconstrained interior derivatives (softmax and softplus map
    them to valid values; the floors keep every bin and slope away from zero).
    """
    k = (params.shape[-1] + 1) // 3
    if 3 * k - 1 != params.shape[-1] or k < 1:
        raise ValueError(f"spline parameters must have 3K - 1 entries, got {params.shape[-1]}")
    if min_bin_width * k > 1 or min_bin_height * k > 1:
        raise ValueError(f"{k} bins cannot all be at least {max(min_bin_width, min_bin_height)} wide")
    if not (min_bin_width >= 0 and min_bin_height >= 0):
        raise ValueError(f"bin floors must be >= 0, got min_bin_width={min_bin_width}, min_bin_height={min_bin_height}")
    if not 0 < min_derivative < 1:
        # a zero raw value maps to slope 1 (the identity at init), which needs a floor below 1
        raise ValueError(f"min_derivative must lie in (0, 1), got {min_derivative}")
    w_raw, h_raw, d_raw = params[..., :k], params[..., k : 2 * k], params[..., 2 * k :]

    def knots(raw: Tensor, floor: float) -> tuple[Tensor, Tensor]:
        sizes = floor + (1 - floor * k) * F.softmax(raw, dim=-1)
        edges = F.pad(torch.cumsum(sizes, -1), (1, 0)) * (2 * bound) - bound
        edges = torch.cat([edges[..., :1].clamp(-bound, -bound), edges[..., 1:-1], edges[..., -1:].clamp(bound, bound)], -1)
        return edges, edges[..., 1:] - edges[..., :-1]

    cum_w, widths = knots(w_raw, min_bin_width)
    cum_h, heights = knots(h_raw, min_bin_height)
    # softplus shifted so that a zero raw value gives derivative exactly 1 (identity at init)
    shift = math.log(math.expm1(1.0 - min_derivative))
    inner = min_derivative + F.softplus(d_raw + shift)
    ones = inner.new_ones((*inner.shape[:-1], 1))
    derivs = torch.cat([ones, inner, ones], -1)

    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)
    knots_in = cum_h if inverse else cum_w
    idx = (xc.unsqueeze(-1) >= knots_in[..., 1:-1]).sum(-1, keepdim=True)

    # one gather of every per-bin quantity (fewer kernels than one gather each)
    table = torch.stack([cum_w[..., :-1], widths, cum_h[..., :-1], heights, derivs[..., :-1], derivs[..., 1:]], -1)
    picked = torch.gather(table, -2, idx.unsqueeze(-1).expand(*idx.shape, 6)).squeeze(-2)
    xk, wk, yk, hk, dk, dk1 = picked.unbind(-1)
    s = hk / wk
    if inverse:
        dy = xc - yk
        a = hk * (s - dk) + dy * (dk1 + dk - 2 * s)
        b = hk * dk - dy * (dk1 + dk - 2 * s)
        c = -s * dy
        # floored at the smallest normal float, not 0: where b^2 - 4ac rounds to 0 or below (steep bins, or the
        # clamped input of a tail), sqrt's gradient at 0 is inf, and times the clamp's 0 it was NaN
        disc = (b.pow(2) - 4 * a * c).clamp_min(torch.finfo(b.dtype).tiny)
        theta = ((2 * c) / (-b - torch.sqrt(disc))).clamp(0, 1)
        out = theta * wk + xk
    else:
        theta = ((xc - xk) / wk).clamp(0, 1)
        tt = theta * (1 - theta)
        out = yk + hk * (s * theta.pow(2) + dk * tt) / (s + (dk1 + dk - 2 * s) * tt)
    tt = theta * (1 - theta)
    den = s + (dk1 + dk - 2 * s) * tt
    num = s.pow(2) * (dk1 * theta.pow(2) + 2 * s * tt + dk * (1 - theta).pow(2))
    lad = torch.log(num) - 2 * torch.log(den)
    if inverse:
        lad = -lad
    y = torch.where(inside, out, x)
    return y, torch.where(inside, lad, torch.zeros_like(lad))


def _check(bins: int, bound: float) -> None:
    if bins < 2 or not 0 < bound < math.inf:
        # one bin from (-B, -B) to (B, B) with unit end slopes is the identity, whatever the network says;
        # an infinite bound makes every knot infinite, so log_prob is NaN at the first step
        raise ValueError(
            f"spline layers need bins >= 2 (one bin is the identity) and a finite bound > 0, got bins={bins}, bound={bound}"
        )


class RQSCoupling(_MaskedCoupling):
    """Rational-quadratic spline coupling: ``z_b = RQS(x_b; theta(x_a))`` elementwise, ``z_a = x_a``.

    Durkan et al., "Neural Spline Flows", 2019 (RQ-NSF (C)). Both directions are
    one conditioner pass. ``bins`` spline bins on ``[-bound, bound]``, identity outside.
    """

    def __init__(self, mask: Tensor | Sequence[bool], hidden: Sequence[int] = (64, 64),
                 context_features: int | None = None, activation: str = "relu", bins: int = 8, bound: float = 3.0):
        _check(bins, bound)
        self.params_per_dim = 3 * bins - 1
        super().__init__(mask, hidden=hidden, context_features=context_features, activation=activation)
        self.bins, self.bound = bins, float(bound)

    def _element(self, x_b: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        y, lad = rational_quadratic_spline(x_b, params.transpose(1, 2), self.bound, inverse)
        return y, lad.sum(1)


class MaskedRQSAutoregressive(_Autoregressive):
    """Autoregressive rational-quadratic spline: ``z_i = RQS(x_i; theta_i(x_<i))`` (RQ-NSF (AR)).

    Durkan et al., "Neural Spline Flows", 2019, on a MADE conditioner.
    **Fast direction: ``forward`` (density) in one pass**; ``inverse`` (sampling)
    takes ``D`` sequential steps with cached hidden units, like
    :class:`MaskedAffineAutoregressive`.
    """

    def __init__(self, features: int, hidden: Sequence[int] = (64, 64), context_features: int | None = None,
                 order: str | Sequence[int] | Tensor = "default", random_degrees: bool = False,
                 activation: str = "relu", bins: int = 8, bound: float = 3.0, seed: int = 0):
        _check(bins, bound)
        self.params_per_dim = 3 * bins - 1
        super().__init__(features, hidden, context_features, order, random_degrees, activation, seed)
        self.bins, self.bound = bins, float(bound)

    def _element(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        return rational_quadratic_spline(x, params.transpose(1, 2), self.bound, inverse)
