"""Learnable linear bijections ``z = W x + b`` on vectors, and what each costs.

For ``d`` features (``b`` the block size), per layer:

================  ===================  =====================  ==========================
layer             forward              inverse                log-det
================  ===================  =====================  ==========================
FullLinear        O(d^2) per sample    O(d^3) once + O(d^2)   O(d^3) (LU / slogdet)
DiagonalLinear    O(d)                 O(d)                   O(d)
TriangularLinear  O(d^2)               O(d^2) (substitution)  O(d) (the diagonal)
BlockDiagonal     O(d b)               O(d b^2) once + O(db)  O(d b^2)
LULinear          O(d^2)               O(d^2) (two solves)    O(d)
================  ===================  =====================  ==========================

Image counterparts (1x1 convolutions and a periodic spatial convolution
inverted by FFT) live in :mod:`invertible.transforms.conv`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core import Transform
from ..seeding import part_seeds, seeded_generator
from .cache import InferenceCache
from .shapes import check_event

__all__ = ["LULinear", "FullLinear", "DiagonalLinear", "TriangularLinear", "BlockDiagonalLinear"]


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
        g = seeded_generator(seed)
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
        check_event(x, self.bias.shape, "LULinear")  # a wider batch would broadcast, its log-det counted once
        z = x @ self.weight().T + self.bias
        return z, self.log_abs_s.sum().expand(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(z, self.bias.shape, "LULinear")
        lower, upper = self._factors()
        # x = U^{-1} L^{-1} P^T (z - b), solved on row vectors: x^T = (z - b)^T P L^{-T} U^{-T}.
        y = (z - self.bias) @ self.permutation
        y = torch.linalg.solve_triangular(lower, y.T, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper, y, upper=True).T
        return x, -self.log_abs_s.sum().expand(z.shape[0])


def _random_rotation(features: int, seed: int) -> Tensor:
    g = seeded_generator(seed)
    return torch.linalg.qr(torch.randn(features, features, generator=g))[0]


class FullLinear(InferenceCache, Transform):
    """``z = W x + b`` with an unconstrained dense ``W`` (starts at a random rotation).

    Forward ``O(d^2)`` per sample; ``log|det W|`` by LU (``slogdet``, in float64
    for stability) costs ``O(d^3)``, and so does the inverse matrix; both are
    cached in evaluation mode under ``torch.no_grad`` until a parameter changes.
    Invertible as long as ``W`` stays non-singular, which gradient steps do not
    guarantee (the LU-parameterised :class:`LULinear` does).
    """

    def __init__(self, features: int, seed: int = 0):
        super().__init__()
        self.weight = nn.Parameter(_random_rotation(features, seed))
        self.bias = nn.Parameter(torch.zeros(features))

    def _logdet(self) -> Tensor:
        return torch.linalg.slogdet(self.weight.double())[1].to(self.weight.dtype)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(x, self.bias.shape, "FullLinear")
        return x @ self.weight.T + self.bias, self.cached("logdet", self._logdet).expand(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(z, self.bias.shape, "FullLinear")
        w_inv = self.cached("inverse", lambda: torch.linalg.inv(self.weight))
        return (z - self.bias) @ w_inv.T, -self.cached("logdet", self._logdet).expand(z.shape[0])


class DiagonalLinear(Transform):
    """``z = exp(s) * x + b``: the diagonal member of the family; everything costs ``O(d)``.

    Equivalent to :class:`~invertible.transforms.ElementwiseAffine` on vectors,
    kept here so the linear family is complete under one naming scheme.
    """

    def __init__(self, features: int):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.bias = nn.Parameter(torch.zeros(features))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(x, self.log_scale.shape, "DiagonalLinear")
        return x * torch.exp(self.log_scale) + self.bias, self.log_scale.sum().expand(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(z, self.log_scale.shape, "DiagonalLinear")
        return (z - self.bias) * torch.exp(-self.log_scale), -self.log_scale.sum().expand(z.shape[0])


class TriangularLinear(Transform):
    """``z = T x + b`` with ``T`` lower (or upper) triangular and diagonal ``exp(s)``.

    ``log|det T| = sum s`` costs ``O(d)``; the inverse is one triangular solve
    (forward or back substitution), ``O(d^2)``. Always invertible.
    """

    def __init__(self, features: int, lower: bool = True):
        super().__init__()
        self.lower = lower
        self.off_diagonal = nn.Parameter(torch.zeros(features, features))
        self.log_diagonal = nn.Parameter(torch.zeros(features))
        self.bias = nn.Parameter(torch.zeros(features))
        mask = torch.tril(torch.ones(features, features), -1)
        self.register_buffer("mask", mask if lower else mask.T)

    def matrix(self) -> Tensor:
        """The triangular matrix ``T``."""
        return self.off_diagonal * self.mask + torch.diag(torch.exp(self.log_diagonal))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(x, self.bias.shape, "TriangularLinear")
        return x @ self.matrix().T + self.bias, self.log_diagonal.sum().expand(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(z, self.bias.shape, "TriangularLinear")
        if z.dtype != self.bias.dtype:  # the solve would return the matrix's dtype, as forward's product refuses
            raise ValueError(f"TriangularLinear holds {self.bias.dtype} parameters and got {z.dtype} values")
        x = torch.linalg.solve_triangular(self.matrix(), (z - self.bias).T, upper=not self.lower).T
        return x, -self.log_diagonal.sum().expand(z.shape[0])


class BlockDiagonalLinear(InferenceCache, Transform):
    """``z = blockdiag(W_1, ..., W_k) x + b`` with dense ``b x b`` blocks (``d = k b``).

    Forward ``O(d b)`` per sample; log-det ``sum_i log|det W_i|`` and the block
    inverses cost ``O(k b^3) = O(d b^2)`` (batched LU), cached at inference.
    Interpolates between :class:`DiagonalLinear` (``b = 1``) and
    :class:`FullLinear` (``b = d``).
    """

    def __init__(self, features: int, block_size: int, seed: int = 0):
        super().__init__()
        if block_size < 1 or features % block_size:
            raise ValueError(f"block_size must divide features={features}, got {block_size}")
        k = features // block_size
        self.blocks = nn.Parameter(torch.stack([_random_rotation(block_size, s) for s in part_seeds(seed, k)]))
        self.bias = nn.Parameter(torch.zeros(features))

    def _logdet(self) -> Tensor:
        return torch.linalg.slogdet(self.blocks.double())[1].sum().to(self.blocks.dtype)

    def _blockwise(self, x: Tensor, blocks: Tensor) -> Tensor:
        k, b, _ = blocks.shape
        return torch.einsum("kij,nkj->nki", blocks, x.reshape(x.shape[0], k, b)).reshape(x.shape[0], k * b)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(x, self.bias.shape, "BlockDiagonalLinear")  # other shapes of as many values came back flattened
        return self._blockwise(x, self.blocks) + self.bias, self.cached("logdet", self._logdet).expand(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(z, self.bias.shape, "BlockDiagonalLinear")
        inv = self.cached("inverse", lambda: torch.linalg.inv(self.blocks))
        return self._blockwise(z - self.bias, inv), -self.cached("logdet", self._logdet).expand(z.shape[0])
