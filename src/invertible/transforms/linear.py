"""Learnable linear bijections ``z = W x + b``.

Costs are stated per layer for ``d`` features: the determinant and inverse of a
dense ``W`` cost ``O(d^3)``; a parameterisation with a triangular factorisation
brings both down to ``O(d)`` and ``O(d^2)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core import Transform

__all__ = ["LULinear"]


class LULinear(Transform):
    """``z = W x + b`` with ``W = P L (U + diag(s))`` (Glow's LU parameterisation, Kingma & Dhariwal 2018).

    ``P`` is a fixed permutation, ``L`` unit lower triangular, ``U`` strictly
    upper triangular and ``s`` a diagonal stored as ``sign(s)`` (fixed) and
    ``log|s|`` (learned), so ``log|det W| = sum log|s|`` costs ``O(d)`` and the
    inverse is two triangular solves, ``O(d^2)``. Starts at a random rotation
    (as Glow does), so every layer mixes all features from the first step.
    """

    def __init__(self, features: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(features, features, generator=g))
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        self.register_buffer("permutation", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(features, features), -1))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_abs_s = nn.Parameter(torch.log(torch.abs(s)))
        self.bias = nn.Parameter(torch.zeros(features))

    def _factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.lower.shape[0], dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_abs_s))
        return lower, upper

    def weight(self) -> Tensor:
        """The dense matrix ``W = P L U``."""
        lower, upper = self._factors()
        return self.permutation @ lower @ upper

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z = x @ self.weight().T + self.bias
        return z, self.log_abs_s.sum().expand(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        lower, upper = self._factors()
        # x = U^{-1} L^{-1} P^T (z - b), solved on row vectors: x^T = (z - b)^T P L^{-T} U^{-T}.
        y = (z - self.bias) @ self.permutation
        y = torch.linalg.solve_triangular(lower, y.T, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper, y, upper=True).T
        return x, -self.log_abs_s.sum().expand(z.shape[0])
