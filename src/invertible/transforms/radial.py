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

    def _coefficients(self, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        p = self.params(context)
        alpha = F.softplus(p["alpha"])
        beta = F.softplus(p["beta"]) - alpha
        return p["z0"], alpha, beta

    def _logdet(self, r: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
        h = 1.0 / (alpha + r)
        return ((self.features - 1) * torch.log1p(beta * h) + torch.log1p(beta * alpha * h * h)).squeeze(-1)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z0, alpha, beta = self._coefficients(context)
        d = z - z0
        r = d.norm(dim=-1, keepdim=True)
        y = z + beta * d / (alpha + r)
        return y, self._logdet(r, alpha, beta)

    def forward(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z0, alpha, beta = self._coefficients(context)
        d = y - z0
        ry = d.norm(dim=-1, keepdim=True)
        p = alpha + beta - ry
        q = p.abs() + torch.sqrt(p * p + 4.0 * alpha * ry)
        r = torch.where(p >= 0, 2.0 * alpha * ry / q, 0.5 * q)
        z = z0 + d / (1.0 + beta / (alpha + r))
        return z, -self._logdet(r, alpha, beta)
