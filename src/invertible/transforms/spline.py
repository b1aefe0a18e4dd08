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

The inverse solves a quadratic in ``theta`` (Durkan et al., Eq. 6-8), divided through
by ``s + d^k + d^{k+1}``, with the root in the form that does not cancel for the
sign of ``b``: ``2c / (-b - sqrt(b^2 - 4ac))`` for ``b >= 0``, ``(-b + sqrt(b^2 - 4ac)) / 2a``
for ``b < 0`` (the first alone lost every digit in steep bins). The end knots
are ``(-B, -B)`` and ``(B, B)`` with derivative 1, and outside ``[-B, B]`` the map
is the identity (the *linear tails*), so the whole map is a C^1 bijection of R.
The spline is evaluated on the input clamped to ``[-B, B]`` and merged with the
tails by ``torch.where``: no NaN or inf at the bounds, in the tails, or for
huge inputs, in values or gradients. (The gradients of the inverse stay finite for
raw parameters up to about 1e16 in float32 and 1e150 in float64, the sizes a
conditioner gives for inputs of that order; beyond, the square of the smallest
quadratic coefficient underflows.)
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


#: The default floor of every bin's width and height, as a fraction of the interval (the layers' floor).
_BIN_FLOOR = 1e-3


def rational_quadratic_spline(
    x: Tensor,
    params: Tensor,
    bound: float = 3.0,
    inverse: bool = False,
    min_bin_width: float = _BIN_FLOOR,
    min_bin_height: float = _BIN_FLOOR,
    min_derivative: float = 1e-3,
    dim: int = -1,
) -> tuple[Tensor, Tensor]:
    """Apply the spline (or its inverse) elementwise to ``x`` -> ``(y, log|dy/dx|)``, both shaped like ``x``.

    ``params`` holds, along its axis ``dim``, ``K`` unnormalised bin widths, ``K``
    unnormalised bin heights and ``K - 1`` unconstrained interior derivatives
    (softmax and softplus map them to valid values; the floors keep every bin and
    slope away from zero). ``dim=-1``: ``x (...,)`` with ``params (..., 3K - 1)``;
    ``dim=-2``: ``x (..., D)`` with ``params (..., 3K - 1, D)``, the layout of a
    MADE's or a coupling network's output, which the layers pass as it is (the
    softmax, cumulative sums and gathers then run along a strided axis with ``D``
    contiguous values under each, several times faster than along a short last axis).

    The floors bound the knot slopes and bin sizes, not the slope inside a bin, which can fall below
    ``min_derivative``. Where the slope is ``m``, ``y`` in a float with machine epsilon ``eps`` fixes ``x`` only to
    about ``eps (|y| + 1) / m``: a float32 round trip through a bin of slope ``3e-4`` is off by ~1e-3 in ``x``
    (float64: ~1e-11). Larger floors or float64 give tighter round trips.
    """
    if dim not in (-1, -2):
        raise ValueError(f"the spline parameters lie along dim -1 or -2, got dim={dim}")
    if params.dim() != x.dim() + 1 or params.shape[:dim] + params.shape[dim:][1:] != x.shape:
        layout = "(..., 3K - 1)" if dim == -1 else "(..., 3K - 1, D)"
        raise ValueError(f"spline parameters of shape {tuple(params.shape)} do not fit x of shape {tuple(x.shape)}: "
                         f"with dim={dim} they are x's shape with the 3K - 1 parameters inserted, {layout}")
    k = (params.shape[dim] + 1) // 3
    if 3 * k - 1 != params.shape[dim] or k < 1:
        raise ValueError(f"spline parameters must have 3K - 1 entries, got {params.shape[dim]}")
    if min_bin_width * k > 1 or min_bin_height * k > 1:
        raise ValueError(f"{k} bins cannot all be at least {max(min_bin_width, min_bin_height)} wide")
    if not (min_bin_width >= 0 and min_bin_height >= 0):
        raise ValueError(f"bin floors must be >= 0, got min_bin_width={min_bin_width}, min_bin_height={min_bin_height}")
    if not 0 < min_derivative < 1:
        # a zero raw value maps to slope 1 (the identity at init), which needs a floor below 1
        raise ValueError(f"min_derivative must lie in (0, 1), got {min_derivative}")
    if not 0 < bound < math.inf:  # 0 or NaN: every input lies outside and is passed on; inf: infinite knots, NaN
        raise ValueError(f"the spline needs a finite bound > 0, got bound={bound}")
    if dim == -1:
        x, params = x.unsqueeze(-1), params.unsqueeze(-1)
    if x.shape[-1] < _FLAT_BELOW:  # a narrow feature axis: every element side by side, (1, 3K - 1, N)
        flat = params.movedim(-2, 0).reshape(1, params.shape[-2], -1)
        y, lad = _spline(x.reshape(1, -1), flat, k, bound, inverse, min_bin_width, min_bin_height, min_derivative)
        y, lad = y.view(x.shape), lad.view(x.shape)
    else:
        y, lad = _spline(x, params, k, bound, inverse, min_bin_width, min_bin_height, min_derivative)
    return (y.squeeze(-1), lad.squeeze(-1)) if dim == -1 else (y, lad)


#: Below this many features the spline runs on ``(1, 3K - 1, batch x D)``: the per-bin operations then run along
#: ``batch x D`` contiguous values instead of a few (one copy of the parameters; see docs/autoreg.md).
_FLAT_BELOW = 16


def _spline(x: Tensor, params: Tensor, k: int, bound: float, inverse: bool, min_bin_width: float,
            min_bin_height: float, min_derivative: float) -> tuple[Tensor, Tensor]:
    """:func:`rational_quadratic_spline` on ``x (..., D)`` and ``params (..., 3K - 1, D)``."""

    def padded(inner: Tensor, first: float, last: float) -> Tensor:
        """``inner`` with ``first`` and ``last`` added at the ends of the bin axis (a pad's gradient is a view)."""
        return F.pad(F.pad(inner, (0, 0, 1, 0), value=first), (0, 0, 0, 1), value=last)

    def knots(raw: Tensor, floor: float) -> Tensor:
        """The ``K + 1`` knot positions on ``[-B, B]``; the ends are exactly ``-B`` and ``B``."""
        sizes = floor + (1 - floor * k) * F.softmax(raw, dim=-2)
        return padded(torch.cumsum(sizes, -2).narrow(-2, 0, k - 1) * (2 * bound) - bound, -bound, bound)

    w_raw, h_raw, d_raw = params.split([k, k, k - 1], -2)
    # softplus shifted so that a zero raw value gives derivative exactly 1 (identity at init)
    shift = math.log(math.expm1(1.0 - min_derivative))
    derivs = padded(min_derivative + F.softplus(d_raw + shift), 1.0, 1.0)
    cum_w, cum_h = knots(w_raw, min_bin_width), knots(h_raw, min_bin_height)

    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)
    knots_in = cum_h if inverse else cum_w
    idx = (xc.unsqueeze(-2) >= knots_in.narrow(-2, 1, k - 1)).sum(-2, keepdim=True)

    # one gather of both ends of the bin, for knots x, knots y and derivatives (fewer kernels than one gather each)
    table = torch.stack([cum_w, cum_h, derivs], -3)  # (..., 3, K + 1, D)
    ends = torch.cat([idx, idx + 1], -2).unsqueeze(-3).expand(*table.shape[:-2], 2, table.shape[-1])
    x_ends, y_ends, d_ends = torch.gather(table, -2, ends).unbind(-3)  # each (..., 2, D): lower and upper end
    (xk, xk1), (yk, yk1), (dk, dk1) = x_ends.unbind(-2), y_ends.unbind(-2), d_ends.unbind(-2)
    wk, hk = xk1 - xk, yk1 - yk
    s = hk / wk
    if inverse:
        # the root is the same for a, b, c all divided by one positive number: dividing by s + d^k + d^{k+1}
        # bounds them by about 3 |dy| + 3 h^k, so b^2 cannot overflow for any raw slope (no gradient: theta does
        # not depend on the scale)
        scale = (s + dk + dk1).detach().reciprocal()
        sn = s * scale
        curvature = ((dk + dk1) * scale - 2 * sn).unsqueeze(-2)  # the (d^{k+1} + d^k - 2 s) of the denominator, scaled
        # The bin fraction from each end at once (index 0: theta from the lower knot; index 1: 1 - theta from the
        # upper one, the bin mirrored, its slopes swapped), each the root of a quadratic in it with a, b, c for
        # d_near, the slope at its own end, and dy, the distance from that end in y. Taking 1 - theta from theta
        # rounds it to 0 where theta is within eps of 1 (next to a steep upper knot, 1 - theta ~ s / d^{k+1}), and
        # the log-det, which needs theta (1 - theta), was then off by log 4.
        hk2, sn2 = hk.unsqueeze(-2), sn.unsqueeze(-2)
        d_near = d_ends * scale.unsqueeze(-2)
        dy = torch.stack([xc - yk, yk1 - xc], -2)
        a = hk2 * (sn2 - d_near) + dy * curvature
        b = hk2 * d_near - dy * curvature
        c = -sn2 * dy
        # floored at the smallest normal float, not 0: where b^2 - 4ac rounds to 0 or below (steep bins, or the
        # clamped input of a tail), sqrt's gradient at 0 is inf, and times the clamp's 0 it was NaN
        root = torch.sqrt((b.pow(2) - 4 * a * c).clamp_min(torch.finfo(b.dtype).tiny))
        # c <= 0 < a + b = h^k s, so the root is (-b + root) / 2a = 2c / (-b - root); each form is free of
        # cancellation for one sign of b (b < 0 where dy and the far end's slope are large, and there -b - root
        # lost every digit: the root came out -inf, clamped to the wrong end of the bin, and its gradient NaN).
        # Choosing numerator and denominator before the one division keeps the unused form's inf out of the gradient.
        pos = b >= 0
        theta, rest = (torch.where(pos, 2 * c, root - b) / torch.where(pos, -b - root, 2 * a)).clamp(0, 1).unbind(-2)
    else:  # 1 - theta from the upper knot as well, for the same reason
        theta, rest = ((xc - xk) / wk).clamp(0, 1), ((xk1 - xc) / wk).clamp(0, 1)
    tt = theta * rest
    den = s + (dk1 + dk - 2 * s) * tt
    num = s.pow(2) * (dk1 * theta.pow(2) + 2 * s * tt + dk * rest.pow(2))
    lad = torch.log(num) - 2 * torch.log(den)
    if inverse:
        out, lad = theta * wk + xk, -lad
    else:
        out = yk + hk * (s * theta.pow(2) + dk * tt) / den
    y = torch.where(inside, out, x)
    return y, torch.where(inside, lad, torch.zeros_like(lad))


def _check(bins: int, bound: float) -> None:
    if bins * _BIN_FLOOR >= 1:  # the floors alone fill the interval: every bin is as wide and high as the next
        raise ValueError(f"spline layers take fewer than {round(1 / _BIN_FLOOR)} bins (each bin is at least "
                         f"{_BIN_FLOOR} of the interval wide and high, so {bins} bins leave the network no widths "
                         f"or heights to learn), got bins={bins}")
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
        y, lad = rational_quadratic_spline(x_b, params, self.bound, inverse, dim=-2)
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
        return rational_quadratic_spline(x, params, self.bound, inverse, dim=-2)
