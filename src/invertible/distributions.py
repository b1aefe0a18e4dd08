"""Base distributions of flows, as modules so they move with ``.to(device)`` and are saved.

Each has ``event_shape``, ``log_prob(z)`` summed over the event (shape ``(batch,)``),
``sample(shape)`` and ``rsample(shape, temperature=1.0)``: at temperature ``T`` the base's noise about its
location is scaled by ``T`` (Glow's reduced-temperature sampling, Kingma & Dhariwal 2018, Section 5.3: for a
Gaussian base ``N(mu, T^2 sigma^2)``, the density ``p(z)^(1/T^2)`` normalised).
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["StandardNormal", "DiagonalNormal", "StandardLogistic", "BASES", "build_base"]

_LOG_2PI = math.log(2 * math.pi)


def as_sample_shape(shape: int | Sequence[int] | torch.Size) -> torch.Size:
    """A sample shape from an integer (Python, NumPy or a 0-d integer tensor) or a sequence of them."""
    try:
        return torch.Size((operator.index(shape),))
    except TypeError:
        pass
    try:
        return torch.Size(shape)
    except TypeError:
        raise TypeError(f"sample shape must be an integer or a sequence of integers, got {shape!r}") from None


class _Base(nn.Module):
    """Shared plumbing: a fixed event shape and a device/dtype anchor buffer."""

    def __init__(self, event_shape: int | Sequence[int]):
        super().__init__()
        self.event_shape = torch.Size((event_shape,) if isinstance(event_shape, numbers.Integral) else event_shape)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def _noise_shape(self, shape: Sequence[int] | int) -> tuple[int, ...]:
        return (*as_sample_shape(shape), *self.event_shape)

    def _sum_event(self, x: Tensor) -> Tensor:
        return x.sum(dim=tuple(range(-len(self.event_shape), 0))) if len(self.event_shape) else x

    def sample(self, shape: Sequence[int] | int = (), temperature: float = 1.0) -> Tensor:
        with torch.no_grad():
            return self.rsample(shape, temperature)


class StandardNormal(_Base):
    """``N(0, I)``: ``log p(z) = -1/2 (|z|^2 + d log 2 pi)``."""

    def log_prob(self, z: Tensor) -> Tensor:
        return -0.5 * (self._sum_event(z.square()) + self.event_shape.numel() * _LOG_2PI)

    def rsample(self, shape: Sequence[int] | int = (), temperature: float = 1.0) -> Tensor:
        a = self._anchor
        return temperature * torch.randn(self._noise_shape(shape), device=a.device, dtype=a.dtype)


class DiagonalNormal(_Base):
    """``N(mu, diag(sigma^2))`` with learnable ``mu`` and ``log sigma`` (initially ``N(0, I)``)."""

    def __init__(self, event_shape: int | Sequence[int]):
        super().__init__(event_shape)
        self.loc = nn.Parameter(torch.zeros(self.event_shape))
        self.log_scale = nn.Parameter(torch.zeros(self.event_shape))

    def log_prob(self, z: Tensor) -> Tensor:
        e = (z - self.loc) * torch.exp(-self.log_scale)
        return self._sum_event(-0.5 * (e.pow(2) + _LOG_2PI) - self.log_scale)

    def rsample(self, shape: Sequence[int] | int = (), temperature: float = 1.0) -> Tensor:
        """``mu + T sigma eps``: the mean stays where it is at every temperature ``T``."""
        eps = torch.randn(self._noise_shape(shape), device=self.loc.device, dtype=self.loc.dtype)
        return self.loc + torch.exp(self.log_scale) * (temperature * eps)


class StandardLogistic(_Base):
    """Standard logistic, NICE's prior: ``log p(z) = -(softplus(z) + softplus(-z))`` per dimension.

    Dinh et al., "NICE: Non-linear Independent Components Estimation", 2014.
    """

    def log_prob(self, z: Tensor) -> Tensor:
        return self._sum_event(-(F.softplus(z) + F.softplus(-z)))

    def rsample(self, shape: Sequence[int] | int = (), temperature: float = 1.0) -> Tensor:
        """``T (log u - log(1 - u))`` of ``u ~ U(0, 1)`` (a logistic of scale ``T``), ``u`` kept in
        ``[eps/2, 1 - eps/2]``: ``torch.rand``'s grid step, so both tails reach the same ``|z|`` (16.6 in float32,
        36.7 in float64 at ``T = 1``) and ``u = 0`` is not ``-inf``."""
        a = self._anchor
        half_eps = torch.finfo(a.dtype).eps / 2
        u = torch.rand(self._noise_shape(shape), device=a.device, dtype=a.dtype).clamp(half_eps, 1 - half_eps)
        return temperature * (torch.log(u) - torch.log1p(-u))


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


class MixtureOfGaussians(_Base):
    """A learnable mixture of ``K`` Gaussians for each dimension, independent across dimensions:

        log p(z) = sum_d log sum_k w_dk N(z_d; mu_dk, sigma_dk^2).

    A per-coordinate form of the base of "MAF MoG" (Papamakarios et al. 2017), whose base is a MADE MoG:
    a mixture for each conditional ``p(z_d | z_<d)``. Means start spread over ``[-1, 1]``, scales at 1 and
    weights equal. ``rsample`` picks components without gradient and
    reparameterises the Gaussian draw, so gradients reach the means and scales
    but not the weights (a discrete choice has no pathwise gradient). At temperature ``T`` every
    component's scale is multiplied by ``T`` about its mean, the weights kept.
    """

    def __init__(self, event_shape: int | Sequence[int], components: int = 5):
        super().__init__(event_shape)
        if components < 1:
            raise ValueError(f"components must be >= 1, got {components}")
        self.components = components
        grid = torch.linspace(-1.0, 1.0, components) if components > 1 else torch.zeros(1)
        self.loc = nn.Parameter(grid.expand(*self.event_shape, components).clone())
        self.log_scale = nn.Parameter(torch.zeros(*self.event_shape, components))
        self.logits = nn.Parameter(torch.zeros(*self.event_shape, components))

    def log_prob(self, z: Tensor) -> Tensor:
        e = (z.unsqueeze(-1) - self.loc) * torch.exp(-self.log_scale)
        log_n = -0.5 * (e.pow(2) + _LOG_2PI) - self.log_scale
        return self._sum_event(torch.logsumexp(log_n + F.log_softmax(self.logits, -1), dim=-1))

    def rsample(self, shape: Sequence[int] | int = (), temperature: float = 1.0) -> Tensor:
        shape = self._noise_shape(shape)
        with torch.no_grad():
            probs = F.softmax(self.logits, -1).expand(*shape, self.components)
            k = torch.multinomial(probs.reshape(-1, self.components), 1).view(*shape, 1)
        loc = torch.gather(self.loc.expand(*shape, self.components), -1, k).squeeze(-1)
        log_scale = torch.gather(self.log_scale.expand(*shape, self.components), -1, k).squeeze(-1)
        eps = torch.randn(shape, device=loc.device, dtype=loc.dtype)
        return loc + torch.exp(log_scale) * (temperature * eps)


BASES["mog"] = MixtureOfGaussians
__all__.append("MixtureOfGaussians")
