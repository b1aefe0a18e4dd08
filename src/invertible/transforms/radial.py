"""Radial flow: ``g(z) = z + beta (z - z0) / (alpha + |z - z0|)``.

Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015, Sec. 4.1
and Appendix A.2. As for :class:`~invertible.transforms.Planar`, the closed-form
generative map ``g`` is this transform's ``inverse`` and ``g^{-1}`` its ``forward``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import Transform
from .amortized import ContextParameters
from .shapes import check_last
from .stable import log_add, log_softplus

__all__ = ["Radial"]

_LOG2 = math.log(2.0)


def _sqrt(x: Tensor, half_log_x: Tensor | None = None) -> Tensor:
    """``sqrt(x)`` for ``x >= 0`` with a finite gradient: ``sqrt``'s slope is infinite at 0, and ``0 * inf`` is NaN.

    Below the smallest normal float it is ``exp(half_log_x)`` if ``log(x) / 2`` is given (``x`` underflowed
    but its logarithm did not), else 0 with gradient 0 (the root's gradient terms that use it carry a factor
    ``sqrt(x)`` there).
    """
    normal = x >= torch.finfo(x.dtype).tiny
    below = torch.zeros_like(x) if half_log_x is None else half_log_x.exp()
    return torch.where(normal, torch.where(normal, x, 1.0).sqrt(), below)


class Radial(Transform):
    """One radial layer, free or amortised (per-sample ``z0, alpha, beta`` from the context).

    ``g(z) = z + beta h(alpha, r) (z - z0)`` with ``h = 1 / (alpha + r)``, ``r = |z - z0|``;
    ``log|det dg/dz| = (D - 1) log(1 + beta h) + log(1 + beta h + beta h'(r) r)``
    ``= (D - 1) log(1 + beta h) + log(1 + beta alpha h^2)``.
    Invertibility needs ``beta >= -alpha``: ``alpha = softplus(a)``,
    ``beta = -alpha + softplus(b)``.

    ``forward(y)`` inverts ``g`` by solving for the radius: ``|y - z0| = r (1 + beta / (alpha + r))``
    is the quadratic ``r^2 + p r - alpha |y - z0| = 0``, ``p = alpha + beta - |y - z0|``, whose
    non-negative root is taken in its cancellation-free form, ``r = 2 alpha |y - z0| / q`` for
    ``p >= 0`` and ``r = q / 2`` otherwise, with ``q = |p| + sqrt(p^2 + 4 alpha |y - z0|) > 0``
    (both branches finite, so neither puts a NaN into the other's gradient); then
    ``z = z0 + (y - z0) / (1 + beta / (alpha + r))``. ``sqrt(4 alpha |y - z0|)`` is taken as
    ``2 sqrt(alpha) sqrt(|y - z0|)`` (no overflow), each ``sqrt`` with a finite gradient at 0 (at the
    centre, and where ``alpha`` underflows, when ``sqrt(alpha)`` comes from ``log alpha``).

    Extreme parameters. With ``s = softplus(b) = alpha + beta``,
    ``1 + beta h = (s + r) / (alpha + r)`` and
    ``1 + beta alpha h^2 = (r (r + 2 alpha) + alpha s) / (alpha + r)^2``, sums of non-negative
    terms: where ``1 + beta h`` or ``1 + beta alpha h^2`` would cancel (below 1/2, as
    ``beta -> -alpha`` near ``z0``) or overflow, the log-det takes these forms, from
    ``log alpha`` and ``log s`` (:func:`~invertible.transforms.stable.log_softplus`)
    summed in log space, so it stays finite for all finite parameters. ``alpha``
    and ``s`` may underflow to 0 (``a`` or ``b`` below about -87 in float32, -708 in
    float64); ``alpha + r`` and ``s + r`` are then floored at the smallest normal float
    in the map itself, which changes ``g`` only at distances from ``z0`` below that
    float, and keeps ``g(z0) = z0`` rather than ``0 / 0``. Where ``alpha`` underflows,
    ``forward``'s root ``r = alpha 2 |y - z0| / q`` underflows with it inside the ball
    ``|y - z0| < s``, although the log-det there depends on ``r / alpha``; that log-det is
    taken from ``log r = log alpha + log(2 |y - z0| / q)`` with every sum in log space.
    ``|z - z0|`` is computed scaled by the largest coordinate, so it does not overflow
    before the coordinates do.

    Args:
        features: dimension ``D`` of the vectors.
        context_features: size of the context that amortises the parameters (``None``: free).
    """

    def __init__(self, features: int, context_features: int | None = None):
        super().__init__()
        if features < 1:
            raise ValueError(f"features must be positive, got {features}")
        self.features = features
        self.params = ContextParameters(
            {"z0": torch.randn(features), "alpha": torch.randn(1), "beta": torch.randn(1)},
            context_features,
        )

    def _coefficients(self, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(z0, alpha, beta, s, log alpha, log s)`` with ``s = alpha + beta = softplus(b)``."""
        p = self.params(context)
        alpha = F.softplus(p["alpha"])
        s = F.softplus(p["beta"])
        return p["z0"], alpha, s - alpha, s, log_softplus(p["alpha"]), log_softplus(p["beta"])

    def _logdet(self, r: Tensor, alpha: Tensor, beta: Tensor, log_alpha: Tensor, log_s: Tensor) -> Tensor:
        """``(D - 1) log(1 + beta h) + log(1 + beta alpha h^2)``: each term by ``log1p`` where that is
        exact to rounding, else from its non-negative form in log space (see the class)."""
        den = alpha + r
        normal = den >= torch.finfo(r.dtype).tiny
        h = 1.0 / torch.where(normal, den, 1.0)
        log_den = log_add(r, log_alpha)  # log(alpha + r)

        def term(x: Tensor, log_form: Tensor) -> Tensor:
            direct = normal & (x >= -0.5) & torch.isfinite(x)
            return torch.where(direct, torch.log1p(torch.where(direct, x, 0.0)), log_form)

        t1 = term(beta * h, log_add(r, log_s) - log_den)
        t2 = term(beta * alpha * h * h, log_add(r * (r + 2.0 * alpha), log_alpha + log_s) - 2.0 * log_den)
        return ((self.features - 1) * t1 + t2).squeeze(-1)

    def _log_space_logdet(self, log_r: Tensor, log_alpha: Tensor, log_s: Tensor) -> Tensor:
        """The log-det from ``log r``, ``log alpha`` and ``log s`` alone: ``(D - 1) log((s + r) / (alpha + r))
        + log((r (r + 2 alpha) + alpha s) / (alpha + r)^2)``, every sum in log space."""
        log_den = torch.logaddexp(log_alpha, log_r)  # log(alpha + r)
        t1 = torch.logaddexp(log_s, log_r) - log_den
        log_r_r2a = log_r + torch.logaddexp(log_r, log_alpha + _LOG2)  # log(r (r + 2 alpha))
        t2 = torch.logaddexp(log_r_r2a, log_alpha + log_s) - 2.0 * log_den
        return ((self.features - 1) * t1 + t2).squeeze(-1)

    @staticmethod
    def _log_root(p: Tensor, q: Tensor, ry: Tensor, log_alpha: Tensor) -> Tensor:
        """``log r`` of :meth:`forward`'s root without its underflow: ``log alpha + log(2 |y - z0| / q)``
        for ``p >= 0`` (``-inf`` at the centre), ``log(q / 2)`` otherwise."""
        inside = (p >= 0) & (ry > 0)
        tiny = torch.finfo(q.dtype).tiny
        ratio = torch.log(torch.where(inside, ry, 1.0)) - torch.log(torch.where(inside, q, 1.0).clamp_min(tiny))
        outside = torch.log(torch.where(p < 0, 0.5 * q, 1.0))
        return torch.where(p < 0, outside, torch.where(inside, log_alpha + _LOG2 + ratio, -math.inf))

    @staticmethod
    def _radius(d: Tensor) -> Tensor:
        """``|d|`` over the last dimension, as ``m |d / m|`` with ``m = max |d_i|`` (no overflow of ``d_i^2``)."""
        m = d.abs().amax(-1, keepdim=True)
        m = torch.where(m > 0, m, 1.0)
        return m * (d / m).norm(dim=-1, keepdim=True)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_last(z, self.features, "Radial")  # its parameters would broadcast over another width
        z0, alpha, beta, _, log_alpha, log_s = self._coefficients(context)
        d = z - z0
        r = self._radius(d)
        y = z + beta * (d / (alpha + r).clamp_min(torch.finfo(r.dtype).tiny))
        return y, self._logdet(r, alpha, beta, log_alpha, log_s)

    def forward(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_last(y, self.features, "Radial")
        z0, alpha, beta, s, log_alpha, log_s = self._coefficients(context)
        tiny = torch.finfo(y.dtype).tiny
        d = y - z0
        ry = self._radius(d)
        p = s - ry
        q = p.abs() + torch.hypot(p, 2.0 * _sqrt(alpha, 0.5 * log_alpha) * _sqrt(ry))
        r = torch.where(p >= 0, 2.0 * alpha * ry / q.clamp_min(tiny), 0.5 * q)
        z = z0 + d / (s + r).clamp_min(tiny) * (alpha + r)  # d / (1 + beta h), without cancellation or overflow
        ladj = torch.where(
            (alpha >= tiny).squeeze(-1),
            self._logdet(r, alpha, beta, log_alpha, log_s),
            self._log_space_logdet(self._log_root(p, q, ry, log_alpha), log_alpha, log_s),
        )
        return z, -ladj
