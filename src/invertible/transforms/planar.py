"""Planar flow: ``g(z) = z + u_hat tanh(w^T z + b)``.

Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015, Sec. 4.1
and Appendix A.1.

Direction. The planar map ``g`` is closed-form in the *generative* direction
(noise to sample), which is what variational inference needs. In this library
``forward`` is the normalizing direction (data to latent), so :class:`Planar`
implements ``g`` as its ``inverse`` and ``g^{-1}`` as its ``forward``. Inside a
:class:`~invertible.Flow`, ``rsample_and_log_prob`` then runs the closed-form
``g`` (classic VI, one pass), and ``log_prob`` solves ``g^{-1}`` numerically.
Wrap it in :class:`~invertible.Inverse` to get the opposite choice (closed-form
density, solved sampling).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import Transform
from .amortized import ContextParameters
from .roots import bracketed_newton, implicit_step
from .shapes import check_last
from .stable import log_add, log_sech2, log_softplus

__all__ = ["Planar"]


class Planar(Transform):
    """One planar layer, free or amortised (per-sample ``u, w, b`` from the context).

    ``g(z) = z + u_hat tanh(w^T z + b)`` with ``log|det dg/dz| = log(1 + w^T u_hat sech^2(w^T z + b))``.
    Invertibility needs ``w^T u_hat >= -1``; the paper's reparameterisation
    ``u_hat = u + (m(w^T u) - w^T u) w / |w|^2`` with ``m(x) = -1 + softplus(x)``
    gives ``w^T u_hat = m(w^T u) > -1``. The log-det is evaluated as
    ``log(tanh^2(a) + softplus(w^T u) sech^2(a))`` (the same number, as
    ``1 + w^T u_hat = softplus(w^T u)``): both terms are non-negative, where
    ``1 + (w^T u_hat) sech^2(a)`` cancels to 0 or below once ``w^T u_hat`` rounds to -1.
    Where that sum falls below the smallest normal float (``softplus(w^T u)``
    underflows for ``w^T u < -87`` in float32, ``-708`` in float64, and ``a ~ 0``) it
    is summed in log space from ``log softplus(w^T u)``, so the log-det stays finite
    and exact (e.g. ``w^T u`` itself at ``a = 0``) rather than ``log 0 = -inf``. For
    ``w^T u < -1`` the correction cancels against ``u`` along ``w``, and a second
    orthogonalisation pass restores ``w^T u_hat = m(w^T u)`` to rounding (:meth:`_reorthogonalised`).

    ``inverse(z)`` is ``g`` (closed form). ``forward(y)`` is ``g^{-1}``: with
    ``a = w^T z + b``, ``w^T y + b = a + (w^T u_hat) tanh(a)``, an increasing
    scalar equation in ``a`` bracketed by ``w^T y + b -/+ |w^T u_hat|``, solved
    by bracketed Newton to float precision; then ``z = y - u_hat tanh(a)``.
    Gradients flow through the solve by the implicit function theorem.

    Initialisation: ``w ~ U(-sqrt(2/D), sqrt(2/D))``, ``b = 0`` and
    ``u = log(e - 1) w / |w|^2``, so that ``m(w^T u) = 0`` and ``u_hat = 0``: every
    layer starts as the identity and a stack of ``K`` layers starts at its base
    distribution, whatever ``K``. (Shrinking a random ``u`` does not do this:
    ``u = 0`` gives ``u_hat = (log 2 - 1) w / |w|^2``, a warp of size ``0.31/|w|``.)
    The common alternative, ``u ~ U(-sqrt 2, sqrt 2)`` (normflows), starts a deep
    stack as a random composition of warps; fitting U1-U4 by reverse KL
    (``python -m bench variational energies``, ``docs/variational.md``) the
    identity start reached a lower KL on average over seeds and kept both modes of
    U1, but was slower on U4.

    Args:
        features: dimension ``D`` of the vectors.
        context_features: size of the context that amortises ``u, w, b`` (``None``: free parameters).
    """

    def __init__(self, features: int, context_features: int | None = None):
        super().__init__()
        if features < 1:
            raise ValueError(f"features must be positive, got {features}")
        lim_w = math.sqrt(2.0 / features)
        self.features = features
        w = torch.empty(features).uniform_(-lim_w, lim_w)
        # w^T u = log(e - 1) makes m(w^T u) = 0 and u_hat = 0: the layer starts as the identity
        u = math.log(math.e - 1.0) * w / (w * w).sum().clamp_min(torch.finfo(w.dtype).tiny)
        self.params = ContextParameters({"u": u, "w": w, "b": torch.zeros(1)}, context_features)

    def _coefficients(self, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(u_hat, w, b, q, log q)`` with ``q = 1 + w^T u_hat = softplus(w^T u) > 0``.

        At ``w = 0`` (``|w|^2`` below the smallest normal number) the correction along ``w / |w|^2`` is 0/0:
        there ``u_hat = u`` and ``q = 1 + w^T u``, so the layer is the translation ``z + u tanh(b)``.
        """
        p = self.params(context)
        u, w, b = p["u"], p["w"], p["b"]
        wu = (w * u).sum(-1, keepdim=True)
        w2 = (w * w).sum(-1, keepdim=True)
        tiny = torch.finfo(w.dtype).tiny
        normal = w2 >= tiny
        q = F.softplus(wu)
        u_hat = self._reorthogonalised(u + torch.where(normal, (q - 1.0 - wu) / w2.clamp_min(tiny), 0.0) * w,
                                       w, w2.clamp_min(tiny), q - 1.0, normal & (wu < -1.0))
        return u_hat, w, b, torch.where(normal, q, 1.0 + wu), torch.where(normal, log_softplus(wu), torch.log1p(wu))

    @staticmethod
    def _reorthogonalised(u_hat: Tensor, w: Tensor, w2: Tensor, m: Tensor, needed: Tensor) -> Tensor:
        """``u_hat + (m - w^T u_hat) w / |w|^2`` where ``needed`` (a second Gram-Schmidt pass), else ``u_hat``.

        For ``w^T u << 0`` the first pass ``u + (m - w^T u) w / |w|^2`` cancels: ``u`` and the
        correction are of size ``|w^T u| / |w|`` along ``w`` and ``u_hat`` of size ``|m| / |w| < 1 / |w|``,
        so ``w^T u_hat`` misses ``m`` by about ``eps |w^T u|`` (2.4e-4 at ``w^T u = -1e4`` in float32),
        against ``1 + m = softplus(w^T u)``, which is below it from ``w^T u ~ -17``: the map then folds
        near ``w^T z + b = 0`` and disagrees with its log-det and with ``forward``, which use ``m``.
        The second pass brings the miss down to rounding of ``u_hat`` itself (about ``eps``). Neither
        is exact: below ``softplus(w^T u) ~ eps`` no float ``u_hat`` has ``w^T u_hat = m`` to that
        precision, and the part of ``u_hat`` across ``w`` keeps the rounding of ``u`` (``eps |u|``).
        ``needed`` is ``w^T u < -1``: above, the first pass is exact to a few ulps of ``1 + m``.
        """
        residual = m - (w * u_hat).sum(-1, keepdim=True)
        return torch.where(needed, u_hat + residual / w2 * w, u_hat)

    @staticmethod
    def _slope(a: Tensor, q: Tensor) -> Tensor:
        """``dg/dz`` along ``w``: ``1 + (w^T u_hat) sech^2(a) = tanh^2(a) + q sech^2(a)``."""
        return torch.tanh(a).square() + q * log_sech2(a).exp()

    @staticmethod
    def _log_slope(a: Tensor, q: Tensor, log_q: Tensor) -> Tensor:
        """``log(tanh^2(a) + q sech^2(a))``, in log space where the sum underflows."""
        log_s2 = log_sech2(a)
        return log_add(torch.tanh(a).square(), log_q + log_s2, q * log_s2.exp())

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_last(z, self.features, "Planar")  # its parameters would broadcast over another width
        u_hat, w, b, q, log_q = self._coefficients(context)
        a = (z * w).sum(-1, keepdim=True) + b
        return z + u_hat * torch.tanh(a), self._log_slope(a, q, log_q).squeeze(-1)

    def forward(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_last(y, self.features, "Planar")
        u_hat, w, b, q, log_q = self._coefficients(context)
        t = (y * w).sum(-1, keepdim=True) + b
        c = q - 1.0

        def equation(a: Tensor) -> tuple[Tensor, Tensor]:
            return a + c * torch.tanh(a) - t, self._slope(a, q)

        a0 = bracketed_newton(equation, t - c.abs(), t + c.abs())
        a = implicit_step(a0, *equation(a0))  # one Newton step from the detached root: exact implicit gradients
        z = y - u_hat * torch.tanh(a)
        return z, -self._log_slope(a, q, log_q).squeeze(-1)
