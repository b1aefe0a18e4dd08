"""Base distributions of flows, as modules so they move with ``.to(device)`` and are saved.

Each has ``event_shape``, ``log_prob(z)`` summed over the event (shape ``(batch,)``),
``sample(shape)`` and ``rsample(shape)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["StandardNormal", "DiagonalNormal", "StandardLogistic", "BASES", "build_base"]

_LOG_2PI = math.log(2 * math.pi)


class _Base(nn.Module):
    """Shared plumbing: a fixed event shape and a device/dtype anchor buffer."""

    def __init__(self, event_shape: int | Sequence[int]):
        super().__init__()
        self.event_shape = torch.Size((event_shape,) if isinstance(event_shape, int) else event_shape)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def _noise_shape(self, shape: Sequence[int] | int) -> tuple[int, ...]:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        return (*shape, *self.event_shape)

    def _sum_event(self, x: Tensor) -> Tensor:
        return x.sum(dim=tuple(range(-len(self.event_shape), 0))) if len(self.event_shape) else x

    def sample(self, shape: Sequence[int] | int = ()) -> Tensor:
        with torch.no_grad():
            return self.rsample(shape)


class StandardNormal(_Base):
    """``N(0, I)``: ``log p(z) = -1/2 (|z|^2 + d log 2 pi)``."""

    def log_prob(self, z: Tensor) -> Tensor:
        return self._sum_event(-0.5 * (z.pow(2) + _LOG_2PI))

    def rsample(self, shape: Sequence[int] | int = ()) -> Tensor:
        a = self._anchor
        return torch.randn(self._noise_shape(shape), device=a.device, dtype=a.dtype)


class DiagonalNormal(_Base):
    """``N(mu, diag(sigma^2))`` with learnable ``mu`` and ``log sigma`` (initially ``N(0, I)``)."""

    def __init__(self, event_shape: int | Sequence[int]):
        super().__init__(event_shape)
        self.loc = nn.Parameter(torch.zeros(self.event_shape))
        self.log_scale = nn.Parameter(torch.zeros(self.event_shape))

    def log_prob(self, z: Tensor) -> Tensor:
        e = (z - self.loc) * torch.exp(-self.log_scale)
        return self._sum_event(-0.5 * (e.pow(2) + _LOG_2PI) - self.log_scale)

    def rsample(self, shape: Sequence[int] | int = ()) -> Tensor:
        eps = torch.randn(self._noise_shape(shape), device=self.loc.device, dtype=self.loc.dtype)
        return self.loc + torch.exp(self.log_scale) * eps


class StandardLogistic(_Base):
    """Standard logistic, NICE's prior: ``log p(z) = -(softplus(z) + softplus(-z))`` per dimension.

    Dinh et al., "NICE: Non-linear Independent Components Estimation", 2014.
    """

    def log_prob(self, z: Tensor) -> Tensor:
        return self._sum_event(-(F.softplus(z) + F.softplus(-z)))

    def rsample(self, shape: Sequence[int] | int = ()) -> Tensor:
        a = self._anchor
        tiny = torch.finfo(a.dtype).tiny
        u = torch.rand(self._noise_shape(shape), device=a.device, dtype=a.dtype).clamp(tiny, 1 - 1e-7)
        return torch.log(u) - torch.log1p(-u)


BASES: dict[str, type[_Base]] = {
    "normal": StandardNormal,
    "diagonal_normal": DiagonalNormal,
    "logistic": StandardLogistic,
}


def build_base(name: str, event_shape: int | Sequence[int]) -> _Base:
    """Base distribution by name: one of :data:`BASES`."""
    if name not in BASES:
        raise ValueError(f"unknown base distribution {name!r}; choose from {sorted(BASES)}")
    return BASES[name](event_shape)
