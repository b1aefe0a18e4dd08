"""Coupling layers on vectors: additive (NICE) and affine (RealNVP).

A binary mask splits ``x`` into an identity part ``x_a`` and a transformed part
``x_b``; a conditioner network reads ``x_a`` (and the context) and sets the
parameters of an elementwise bijection of ``x_b``. The Jacobian is triangular,
so the log-det is the sum of the elementwise log-derivatives, and the inverse
costs one conditioner pass.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Transform
from ..nets import MLP
from .shapes import check_channels
from .stable import exp_bound

__all__ = ["AdditiveCoupling", "AffineCoupling", "alternating_mask", "soft_clamp", "SCALE_FUNCTIONS"]


def alternating_mask(features: int, parity: int = 0) -> Tensor:
    """``[1, 0, 1, 0, ...]`` (``parity=0``) or ``[0, 1, 0, 1, ...]`` (``parity=1``): True marks the identity part."""
    return (torch.arange(features) + parity) % 2 == 0


def soft_clamp(raw: Tensor, bound: float = 3.0) -> Tensor:
    """``bound * tanh(raw / bound)``: the identity near 0, smoothly limited to ``(-bound, bound)``.

    Computed as ``2 bound sigmoid(2 raw / bound) - bound`` (``tanh(u) = 2 sigmoid(2u) - 1``):
    the same function, and on the CPU PyTorch's sigmoid is about three times
    cheaper than its tanh, forward and backward.
    """
    return torch.sigmoid(raw * (2.0 / bound)) * (2.0 * bound) - bound


def _sigmoid_log_scale(raw: Tensor) -> Tensor:
    """Glow's code: ``scale = sigmoid(raw + 2)``, so ``log scale = log sigmoid(raw + 2)`` (one fused op),
    floored at ``-L`` (:func:`~invertible.transforms.stable.exp_bound`): below it ``exp(-log scale)``
    is ``inf`` and the inverse ``(z - t) exp(-log scale)`` is ``0 * inf = NaN`` at ``z = t``."""
    return F.logsigmoid(raw + 2.0).clamp_min(-exp_bound(raw.dtype))


def _exp_log_scale(raw: Tensor) -> Tensor:
    """The original unbounded scale ``log scale = raw``, clamped to ``[-L, L]``
    (:func:`~invertible.transforms.stable.exp_bound`): beyond it ``exp(raw)`` or ``exp(-raw)``
    is ``inf`` and ``x exp(raw)`` is ``0 * inf = NaN`` at ``x = 0``."""
    bound = exp_bound(raw.dtype)
    return raw.clamp(-bound, bound)


#: How an affine coupling turns the raw network output into a log-scale. Every one keeps
#: ``|log scale| <= L``, the largest value whose ``exp`` is a finite float (88.7 in float32, 709.8
#: in float64): ``"softclamp"`` by construction (``|s| < 3``), ``"sigmoid"`` and ``"exp"`` by a clamp
#: that changes the map only where its scale or inverse scale would not be a finite float. The
#: affine map and its log-det are then finite for every finite input whose image is a finite
#: float; where ``|x| exp(s)`` itself exceeds the float range the output is ``+-inf``, not NaN.
SCALE_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "softclamp": soft_clamp,
    "sigmoid": _sigmoid_log_scale,
    "exp": _exp_log_scale,
}


def check_scale(scale: str) -> str:
    """``scale`` if it names one of :data:`SCALE_FUNCTIONS`, else a ``ValueError`` listing them."""
    if scale not in SCALE_FUNCTIONS:
        raise ValueError(f"unknown scale function {scale!r}; choose from {sorted(SCALE_FUNCTIONS)}")
    return scale


def affine_element(x: Tensor, params: Tensor, scale: str, inverse: bool) -> tuple[Tensor, Tensor]:
    """The affine map shared by affine couplings and MAF/IAF layers, elementwise.

    ``(raw, t) = params.unbind(1)`` and ``s = SCALE_FUNCTIONS[scale](raw)``; forward
    ``y = x exp(s) + t`` (one ``addcmul``) with log-det ``s``, inverse
    ``y = (x - t) exp(-s)`` with log-det ``-s``. ``unbind`` gives both halves one
    backward node; ``params[:, i]`` would backpropagate through a zero-filled copy each.
    """
    raw, shift = params.unbind(1)
    log_scale = SCALE_FUNCTIONS[scale](raw)
    if inverse:
        return (x - shift) * torch.exp(-log_scale), -log_scale
    return torch.addcmul(shift, x, torch.exp(log_scale)), log_scale


def _layout(mask: Tensor) -> str | None:
    """How a coupling mask splits the features: ``"interleaved"`` (even/odd positions, even ``D``),
    ``"blocks"`` (a leading and a trailing block) or ``None`` (anything else: index gathers).

    The first two split and merge with views, ``stack`` and ``cat``, whose backward
    passes are views and one copy; general masks gather and scatter by index, and each
    gather backpropagates through a zero-filled copy of the whole input.
    """
    d = len(mask)
    if d % 2 == 0 and bool((mask[0::2] == mask[0]).all()) and bool((mask[1::2] != mask[0]).all()):
        return "interleaved"
    changes = int((mask[1:] != mask[:-1]).sum())
    return "blocks" if changes == 1 else None


class _MaskedCoupling(Transform):
    """Splits features by a fixed mask and asks a conditioner for ``params_per_dim`` numbers per transformed feature."""

    params_per_dim: int = 1

    def __init__(
        self,
        mask: Tensor | Sequence[bool],
        conditioner: nn.Module | None = None,
        hidden: Sequence[int] = (64, 64),
        context_features: int | None = None,
        activation: str = "relu",
    ):
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.dim() != 1 or mask.all() or not mask.any():
            raise ValueError("mask must be a 1-D boolean vector with both True (identity) and False (transformed) entries")
        self.features = len(mask)
        self.register_buffer("identity_idx", mask.nonzero().squeeze(1))
        self.register_buffer("transform_idx", (~mask).nonzero().squeeze(1))
        n_a, n_b = len(self.identity_idx), len(self.transform_idx)
        self._layout = _layout(mask)
        self._identity_first = bool(mask[0])  # whether x_a comes first in the split
        self._block_sizes = [n_a, n_b] if self._identity_first else [n_b, n_a]
        self.conditioner = conditioner or MLP(
            n_a, n_b * self.params_per_dim, hidden, context_features=context_features, activation=activation
        )

    def _params(self, x_a: Tensor, context: Tensor | None) -> Tensor:
        h = self.conditioner(x_a, context)
        return h.unflatten(1, (self.params_per_dim, -1))

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_a, x_b)``: the identity and the transformed features, as views when the mask allows."""
        if self._layout is None:
            return x[:, self.identity_idx], x[:, self.transform_idx]
        if self._layout == "interleaved":  # the two columns of x viewed as (batch, D/2, 2)
            first, second = x.unflatten(1, (-1, 2)).unbind(2)
        else:
            first, second = x.split(self._block_sizes, 1)
        return (first, second) if self._identity_first else (second, first)

    def _merge(self, x_a: Tensor, y_b: Tensor) -> Tensor:
        """The inverse of :meth:`_split`: one ``stack`` or ``cat`` when the mask allows."""
        parts = [x_a, y_b] if self._identity_first else [y_b, x_a]
        if self._layout == "interleaved":
            return torch.stack(parts, 2).flatten(1)
        if self._layout == "blocks":
            return torch.cat(parts, 1)
        out = x_a.new_empty(x_a.shape[0], x_a.shape[1] + y_b.shape[1])
        out[:, self.identity_idx] = x_a
        out[:, self.transform_idx] = y_b
        return out

    def _element(self, x_b: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _couple(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        check_channels(x, self.features, type(self).__name__)  # a general mask's gathers would drop extra features
        x_a, x_b = self._split(x)
        y_b, ladj = self._element(x_b, self._params(x_a, context), inverse)
        return self._merge(x_a, y_b), ladj

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(x, context, inverse=False)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(z, context, inverse=True)


class AdditiveCoupling(_MaskedCoupling):
    """``z_a = x_a``, ``z_b = x_b + t(x_a)``: volume preserving, ``log|det| = 0``.

    Dinh, Krueger & Bengio, "NICE: Non-linear Independent Components Estimation", 2014.
    """

    params_per_dim = 1

    def _element(self, x_b: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        shift = params.squeeze(1)  # a view whose backward is a view too (``params[:, 0]`` would zero-fill a copy)
        y = x_b - shift if inverse else x_b + shift
        return y, x_b.new_zeros(x_b.shape[0])


class AffineCoupling(_MaskedCoupling):
    """``z_a = x_a``, ``z_b = x_b * exp(s(x_a)) + t(x_a)``, ``log|det| = sum s(x_a)``.

    Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", 2017.

    ``scale`` chooses how the raw output becomes the log-scale ``s``:
    ``"softclamp"`` (default) uses ``3 tanh(raw / 3)``, which is the identity
    near zero — a zero-initialised conditioner gives an identity layer with
    unit gradient — and keeps ``|s| < 3`` so no single layer can blow up or
    collapse its input; ``"sigmoid"`` is Glow's ``sigmoid(raw + 2)``, which
    only contracts (scale in (0, 1)) and starts at 0.88; ``"exp"`` is the
    unbounded original (bounded only by the float range, see :data:`SCALE_FUNCTIONS`).
    """

    params_per_dim = 2

    def __init__(self, *args, scale: str = "softclamp", **kwargs):
        super().__init__(*args, **kwargs)
        self.scale = check_scale(scale)

    def _element(self, x_b: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        y_b, log_scale = affine_element(x_b, params, self.scale, inverse)
        return y_b, log_scale.sum(1)
