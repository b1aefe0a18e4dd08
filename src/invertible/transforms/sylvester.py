"""Sylvester flows: ``g(z) = z + Q R tanh(R~ Q^T z + b)``, orthogonal and Householder variants.

van den Berg, Hasenclever, Tomczak & Welling, "Sylvester Normalizing Flows for
Variational Inference", UAI 2018. A planar layer is the case ``M = 1``. As for
:class:`~invertible.transforms.Planar`, the closed-form generative map ``g`` is
this transform's ``inverse`` and ``g^{-1}`` (solved) its ``forward``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core import Transform
from .amortized import ContextParameters
from .roots import bracketed_newton
from .shapes import check_last
from .stable import log1p_tanh_product, log_add, log_sech2

__all__ = ["Sylvester"]

_VARIANTS = ("orthogonal", "householder")


def _matvec(m: Tensor, v: Tensor) -> Tensor:
    """``m v`` per sample: ``m`` is ``(n, M, M)`` (``n`` = 1 or the batch), ``v`` is ``(batch, M)``, or
    ``(..., batch, M)`` to reuse one matrix for several samples of the same batch element."""
    if v.dim() == 2:
        return (m * v.unsqueeze(-2)).sum(-1)  # tiny batched mat-vecs: faster than bmm on CPU
    return (v.movedim(-2, 0) @ m.transpose(-1, -2)).movedim(0, -2)


def _unit_rows(v: Tensor) -> Tensor:
    """``v / |v|`` over the last dimension, and 0 for ``v = 0``: its reflection ``I - 2 u u^T`` is the identity.

    Where ``|v|^2`` overflows or is small enough to have lost terms to underflow (``|v| < sqrt(tiny / eps)``),
    ``v`` is first divided by its largest ``|v_i|``: otherwise ``v / |v|`` is ``0 / 0 = NaN`` for
    ``|v| ~ 1e-23`` in float32 and ``v / inf = 0``, a reflection silently dropped, for ``|v| ~ 1e20``.
    """
    finfo = torch.finfo(v.dtype)
    norm = v.norm(dim=-1, keepdim=True)
    plain = torch.isfinite(norm) & (norm >= (finfo.tiny / finfo.eps) ** 0.5)
    peak = v.abs().amax(-1, keepdim=True)
    scaled = v / torch.where(peak > 0, peak, 1.0)
    scaled_norm = scaled.norm(dim=-1, keepdim=True)  # in [1, sqrt(D)], or 0 for v = 0
    rescaled = scaled / torch.where(scaled_norm > 0, scaled_norm, 1.0)
    return torch.where(plain, v / torch.where(plain, norm, 1.0), rescaled)


class Sylvester(Transform):
    """One Sylvester layer, free or amortised (per-sample ``Q, R, R~, b`` from the context).

    ``g(z) = z + A tanh(B z + b)`` with ``A = Q R`` (``D x M``), ``B = R~ Q^T``, ``Q``
    with orthonormal columns and ``R, R~`` upper triangular. Sylvester's determinant
    identity gives ``log|det dg/dz| = sum_i log(1 + sech^2(a_i) R_ii R~_ii)``,
    ``a = R~ Q^T z + b``; the diagonals are ``tanh`` of free values (as in the
    paper's code), so ``R_ii R~_ii > -1`` and ``g`` is invertible.

    Saturation: once ``tanh`` of the diagonals rounds to ``+-1`` with opposite signs
    (values beyond ~9 in float32, ~19 in float64), ``R_ii R~_ii`` is ``-1`` in floating
    point and ``1 + sech^2(a_i) R_ii R~_ii`` cancels to 0 at ``a_i = 0``. Where
    ``sech^2(a_i) R_ii R~_ii < -1/2`` the term is therefore evaluated as
    ``log(tanh^2(a_i) + sech^2(a_i) (1 + R_ii R~_ii))``, a sum of non-negative terms,
    with ``log(1 + R_ii R~_ii)`` from the diagonals' free values without cancellation
    (:func:`~invertible.transforms.stable.log1p_tanh_product`), and summed in log space
    where it underflows: the log-det stays finite and exact to float precision.

    ``variant="orthogonal"``: ``Q`` is the QR factor of a free ``D x M`` matrix
    (``M = bottleneck <= D``). ``variant="householder"``: ``Q`` is a product of
    ``reflections`` Householder matrices ``I - 2 v v^T / |v|^2`` and ``M = D``; a vector ``v = 0``
    (whose reflection has no limit) stands for the identity, so ``Q`` is the product of the others.

    ``forward(y)`` solves ``g^{-1}``: the part of ``y`` orthogonal to ``Q`` is kept,
    and ``v = Q^T z`` solves the upper-triangular system ``v + R tanh(R~ v + b) = Q^T y``,
    one increasing scalar equation per coordinate from the last to the first
    (bracketed Newton); a final Newton step on the whole system carries the
    implicit gradients.

    Args:
        features: dimension ``D``.
        context_features: size of the amortising context (``None``: free parameters).
        variant: ``"orthogonal"`` or ``"householder"``.
        bottleneck: ``M`` for the orthogonal variant (default ``D``).
        reflections: number of Householder reflections (default ``D``).
    """

    def __init__(
        self,
        features: int,
        context_features: int | None = None,
        variant: str = "orthogonal",
        bottleneck: int | None = None,
        reflections: int | None = None,
    ):
        super().__init__()
        if variant not in _VARIANTS:
            raise ValueError(f"unknown Sylvester variant {variant!r}; choose from {list(_VARIANTS)}")
        if features < 1:
            raise ValueError(f"features must be positive, got {features}")
        m = features if bottleneck is None or variant == "householder" else bottleneck
        if not 1 <= m <= features:
            raise ValueError(f"bottleneck must be in [1, {features}], got {bottleneck}")
        k = features if reflections is None else reflections
        if k < 1:
            raise ValueError(f"reflections must be positive, got {reflections}")
        self.features, self.m, self.variant = features, m, variant
        init = {
            "r1": 0.1 * torch.randn(m, m),
            "r2": 0.1 * torch.randn(m, m),
            "d1": torch.empty(m).uniform_(-1.0, 1.0),
            "d2": torch.empty(m).uniform_(-1.0, 1.0),
            "b": torch.zeros(m),
        }
        init["q"] = torch.randn(features, m) if variant == "orthogonal" else torch.randn(k, features)
        self.params = ContextParameters(init, context_features)
        self.register_buffer("_upper", torch.ones(m, m).triu(1), persistent=False)

    def _coefficients(self, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(Q, R, R~, b, log(1 + diag(R) diag(R~)))``."""
        p = self.params(context)
        r1 = p["r1"] * self._upper + torch.diag_embed(torch.tanh(p["d1"]))
        r2 = p["r2"] * self._upper + torch.diag_embed(torch.tanh(p["d2"]))
        if self.variant == "orthogonal":
            q = torch.linalg.qr(p["q"]).Q  # (n, D, M)
        else:
            q = _unit_rows(p["q"])  # (n, K, D) unit reflection vectors (0 for a zero vector: no reflection)
        return q, r1, r2, p["b"], log1p_tanh_product(p["d1"], p["d2"])

    def _q(self, q: Tensor, v: Tensor) -> Tensor:
        """``Q v`` (``v``: ``(batch, M)``); for Householder ``Q = H_1 ... H_K`` applied reflection by reflection."""
        if self.variant == "orthogonal":
            return (q @ v.unsqueeze(-1)).squeeze(-1)  # (n, D, M) @ (..., n, M, 1)
        for i in reversed(range(q.shape[1])):
            u = q[:, i]
            v = v - 2.0 * (v * u).sum(-1, keepdim=True) * u
        return v

    def _qt(self, q: Tensor, x: Tensor) -> Tensor:
        """``Q^T x`` (``x``: ``(batch, D)``)."""
        if self.variant == "orthogonal":
            return (x.unsqueeze(-2) @ q).squeeze(-2)
        for i in range(q.shape[1]):
            u = q[:, i]
            x = x - 2.0 * (x * u).sum(-1, keepdim=True) * u
        return x

    @staticmethod
    def _logdet(a: Tensor, r1: Tensor, r2: Tensor, log1p_diag: Tensor) -> Tensor:
        """``sum_i log(1 + sech^2(a_i) R_ii R~_ii)``; ``log1p_diag = log(1 + R_ii R~_ii)`` (see the class)."""
        diag = torch.diagonal(r1, dim1=-2, dim2=-1) * torch.diagonal(r2, dim1=-2, dim2=-1)
        log_s2 = log_sech2(a)
        x = log_s2.exp() * diag
        direct = x >= -0.5
        near_zero = log_add(torch.tanh(a).square(), log1p_diag + log_s2)
        return torch.where(direct, torch.log1p(torch.where(direct, x, 0.0)), near_zero).sum(-1)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_last(z, self.features, type(self).__name__)  # a reshape to (-1, D) would regroup another width
        q, r1, r2, b, log1p_diag = self._coefficients(context)
        v = self._qt(q, z)
        a = _matvec(r2, v) + b
        y = z + self._q(q, _matvec(r1, torch.tanh(a)))
        return y, self._logdet(a, r1, r2, log1p_diag)

    def forward(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_last(y, self.features, type(self).__name__)
        coefficients = self._coefficients(context)
        if y.dim() == 2:
            return self._solve(y, *coefficients)
        # extra leading sample dimensions (..., batch, D): one row per sample, with its element's coefficients
        lead = y.shape[:-1]
        coefficients = (c.expand(*lead, *c.shape[1:]).reshape(-1, *c.shape[1:]) for c in coefficients)
        z, ladj = self._solve(y.reshape(-1, self.features), *coefficients)
        return z.reshape(y.shape), ladj.reshape(lead)

    def _solve(
        self, y: Tensor, q: Tensor, r1: Tensor, r2: Tensor, b: Tensor, log1p_diag: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``g^{-1}(y)`` and its log-det for ``y`` of shape ``(batch, D)`` (coefficients of batch 1 or ``batch``)."""
        vy = self._qt(q, y)
        n = vy.shape[0]
        r1e, r2e, be = r1.expand(n, -1, -1), r2.expand(n, -1, -1), b.expand(n, -1)
        with torch.no_grad():
            v = torch.zeros_like(vy)
            tanh_a = torch.zeros_like(vy)
            for i in reversed(range(self.m)):
                c = (r2e[:, i, i + 1 :] * v[:, i + 1 :]).sum(-1) + be[:, i]
                t = vy[:, i] - (r1e[:, i, i + 1 :] * tanh_a[:, i + 1 :]).sum(-1)
                s1, s2 = r1e[:, i, i], r2e[:, i, i]

                def equation(x: Tensor) -> tuple[Tensor, Tensor]:
                    a = s2 * x + c
                    return x + s1 * torch.tanh(a) - t, 1.0 + s1 * s2 * log_sech2(a).exp()

                v[:, i] = bracketed_newton(equation, t - s1.abs(), t + s1.abs())
                tanh_a[:, i] = torch.tanh(s2 * v[:, i] + c)
        # one Newton step on v + R tanh(R~ v + b) = Q^T y from the detached root
        a = _matvec(r2e, v) + be
        residual = v + _matvec(r1e, torch.tanh(a)) - vy
        jac = torch.eye(self.m, dtype=v.dtype, device=v.device) + r1e * log_sech2(a).exp().unsqueeze(1) @ r2e
        # a diagonal below the smallest normal float (a flat point of a saturated layer, 0 in floating point):
        # the root is exact to its bracket, so the step keeps its value and only carries the gradient
        tiny = torch.finfo(jac.dtype).tiny
        pivots = torch.diagonal(jac, dim1=-2, dim2=-1)
        flat = (pivots < tiny).any(-1, keepdim=True)
        residual = torch.where(flat, residual - residual.detach(), residual)
        jac = jac + torch.diag_embed(pivots.clamp_min(tiny) - pivots)
        v = v - torch.linalg.solve_triangular(jac, residual.unsqueeze(-1), upper=True).squeeze(-1)
        a = _matvec(r2e, v) + be
        z = y - self._q(q, _matvec(r1e, torch.tanh(a)))
        return z, -self._logdet(a, r1e, r2e, log1p_diag.expand(n, -1))
