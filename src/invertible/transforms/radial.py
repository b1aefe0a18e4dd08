"""Radial flow: ``g(z) = z + beta (z - z0) / (alpha + |z - z0|)``.

Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015, Sec. 4.1
and Appendix A.2. As for :class:`~invertible.transforms.Planar`, the closed-form
generative map ``g`` is this transform's ``inverse`` and ``g^{-1}`` its ``forward``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import Transform
from .amortized import ContextParameters
from .stable import log_add, log_softplus

__all__ = ["Radial"]


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
    ``z = z0 + (y - z0) / (1 + beta / (alpha + r))``.

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
    float, and keeps ``g(z0) = z0`` rather than ``0 / 0``. ``|z - z0|`` is computed
    scaled by the largest coordinate, so it does not overflow before the coordinates do.

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

    @staticmethod
    def _radius(d: Tensor) -> Tensor:
        """``|d|`` over the last dimension, as ``m |d / m|`` with ``m = max |d_i|`` (no overflow of ``d_i^2``)."""
        m = d.abs().amax(-1, keepdim=True)
        m = torch.where(m > 0, m, 1.0)
        return m * (d / m).norm(dim=-1, keepdim=True)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z0, alpha, beta, s, log_alpha, log_s = self._coefficients(context)
        d = z - z0
        r = self._radius(d)
        y = z + beta * (d / (alpha + r).clamp_min(torch.finfo(r.dtype).tiny))
        return y, self._logdet(r, alpha, beta, log_alpha, log_s)

    def forward(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z0, alpha, beta, s, log_alpha, log_s = self._coefficients(context)
        tiny = torch.finfo(y.dtype).tiny
        d = y - z0
        ry = self._radius(d)
        p = s - ry
        q = p.abs() + torch.hypot(p, 2.0 * alpha.sqrt() * ry.sqrt())
        r = torch.where(p >= 0, 2.0 * alpha * ry / q.clamp_min(tiny), 0.5 * q)
        z = z0 + d / (s + r).clamp_min(tiny) * (alpha + r)  # d / (1 + beta h), without cancellation or overflow
        return z, -self._logdet(r, alpha, beta, log_alpha, log_s)
