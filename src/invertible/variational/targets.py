"""Unnormalized 2-D target densities for reverse-KL fitting, with their log-normalizers by quadrature.

``log p~(z) = -U(z)``; ``log Z = log int exp(-U(z)) dz`` is computed on a fine
grid (:meth:`Target.log_z`), so ``KL(q || p) = log Z - ELBO`` is exact up to
the Monte Carlo error of the ELBO.

U1-U4 are the energies of Table 1 of Rezende & Mohamed, "Variational Inference
with Normalizing Flows", ICML 2015:

- ``U1(z) = 1/2 ((|z| - 2) / 0.4)^2 - log(exp(-1/2 ((z1 - 2) / 0.6)^2) + exp(-1/2 ((z1 + 2) / 0.6)^2))``
- ``U2(z) = 1/2 ((z2 - w1(z)) / 0.4)^2``
- ``U3(z) = -log(exp(-1/2 ((z2 - w1) / 0.35)^2) + exp(-1/2 ((z2 - w1 + w2) / 0.35)^2))``
- ``U4(z) = -log(exp(-1/2 ((z2 - w1) / 0.4)^2) + exp(-1/2 ((z2 - w1 + w3) / 0.35)^2))``

with ``w1 = sin(2 pi z1 / 4)``, ``w2 = 3 exp(-1/2 ((z1 - 1) / 0.6)^2)``,
``w3 = 3 sigmoid((z1 - 1) / 0.3)``. U2-U4 do not decay along ``z1`` and so have
no normalizer on the plane; the paper shows them on ``[-4, 4]^2``. Here they get
a smooth wall outside that window, ``+ 1/2 ((|z1| - 4)_+ / 0.5)^2``, which leaves
them unchanged on the paper's window and makes ``Z`` finite. Their normalizers are then
in closed form: along ``z2`` each Gaussian term integrates to ``sigma sqrt(2 pi)``
whatever ``z1``, and along ``z1`` the wall gives ``8 + 0.5 sqrt(2 pi)``, so
``Z = (sum of the sigmas) sqrt(2 pi) (8 + 0.5 sqrt(2 pi))`` (sigmas 0.4; 0.35, 0.35; 0.4, 0.35).

Multimodal extras: ``banana`` (``z1 ~ N(0, 1.2^2)``, ``z2 | z1 ~ N(z1^2 / 2 - 1.5, 0.35^2)``),
``mog`` (four Gaussians of scale 0.4 at ``(+-2.5, +-2.5)`` with weights 1:2:3:4)
and ``funnel`` (Neal's funnel: ``z1 ~ N(0, 1)``, ``z2 | z1 ~ N(0, exp(z1))``).
Their normalizers are known in closed form too (``closed_log_z``), which checks
the quadrature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

__all__ = ["Target", "TARGETS", "get_target"]


def _w1(z: Tensor) -> Tensor:
    return torch.sin(2 * math.pi * z[..., 0] / 4)


def _w2(z: Tensor) -> Tensor:
    return 3 * torch.exp(-0.5 * ((z[..., 0] - 1) / 0.6) ** 2)


def _w3(z: Tensor) -> Tensor:
    return 3 * torch.sigmoid((z[..., 0] - 1) / 0.3)


def _wall(z: Tensor) -> Tensor:
    return 0.5 * (torch.relu(z[..., 0].abs() - 4.0) / 0.5) ** 2


def _log_mix(*terms: Tensor) -> Tensor:
    return torch.logsumexp(torch.stack(terms, -1), -1)


def u1(z: Tensor) -> Tensor:
    ring = 0.5 * ((z.norm(dim=-1) - 2) / 0.4) ** 2
    return -ring + _log_mix(-0.5 * ((z[..., 0] - 2) / 0.6) ** 2, -0.5 * ((z[..., 0] + 2) / 0.6) ** 2)


def u2(z: Tensor) -> Tensor:
    return -0.5 * ((z[..., 1] - _w1(z)) / 0.4) ** 2 - _wall(z)


def u3(z: Tensor) -> Tensor:
    d = z[..., 1] - _w1(z)
    return _log_mix(-0.5 * (d / 0.35) ** 2, -0.5 * ((d + _w2(z)) / 0.35) ** 2) - _wall(z)


def u4(z: Tensor) -> Tensor:
    d = z[..., 1] - _w1(z)
    return _log_mix(-0.5 * (d / 0.4) ** 2, -0.5 * ((d + _w3(z)) / 0.35) ** 2) - _wall(z)


def banana(z: Tensor) -> Tensor:
    return -0.5 * (z[..., 0] / 1.2) ** 2 - 0.5 * ((z[..., 1] - 0.5 * z[..., 0] ** 2 + 1.5) / 0.35) ** 2


_MOG_MEANS = ((2.5, 2.5), (-2.5, 2.5), (-2.5, -2.5), (2.5, -2.5))
_MOG_WEIGHTS = (1.0, 2.0, 3.0, 4.0)


def mog(z: Tensor) -> Tensor:
    terms = [
        math.log(w) - 0.5 * (((z[..., 0] - a) ** 2 + (z[..., 1] - b) ** 2) / 0.4**2)
        for (a, b), w in zip(_MOG_MEANS, _MOG_WEIGHTS)
    ]
    return _log_mix(*terms)


def funnel(z: Tensor) -> Tensor:
    v, x = z[..., 0], z[..., 1]
    return -0.5 * v**2 - 0.5 * x**2 * torch.exp(-v) - 0.5 * v


Box = tuple[tuple[float, float], tuple[float, float]]


@dataclass
class Target:
    """An unnormalized 2-D log-density ``log p~(z)`` and how to integrate and show it.

    Args:
        name: the target's name.
        log_density: ``z`` of shape ``(..., 2)`` -> ``log p~(z)`` of shape ``(...)``.
        box: integration window ``((z1_lo, z1_hi), (z2_lo, z2_hi))`` holding all but a negligible mass.
        grid: quadrature points per axis.
        view: plotting window.
        closed_log_z: the normalizer in closed form, where known (checks the quadrature).
    """

    name: str
    log_density: Callable[[Tensor], Tensor]
    box: Box
    grid: tuple[int, int]
    view: Box = ((-4.0, 4.0), (-4.0, 4.0))
    closed_log_z: float | None = None
    _log_z: float | None = field(default=None, repr=False)

    def __call__(self, z: Tensor) -> Tensor:
        """``log p~(z)`` of points ``z`` of shape ``(..., 2)``; ``ValueError`` for points of another dimension."""
        if z.dim() < 1 or z.shape[-1] != 2:
            raise ValueError(f"the target {self.name!r} is a density on the plane: points must have shape (..., 2), "
                             f"got {tuple(z.shape)}")
        return self.log_density(z)

    def log_z(self) -> float:
        """``log int exp(log p~(z)) dz`` by the midpoint rule on the grid (float64), cached."""
        if self._log_z is None:
            (a, b), (c, d) = self.box
            nx, ny = self.grid
            hx, hy = (b - a) / nx, (d - c) / ny
            xs = torch.linspace(a + hx / 2, b - hx / 2, nx, dtype=torch.float64)
            ys = torch.linspace(c + hy / 2, d - hy / 2, ny, dtype=torch.float64)
            total = []
            for chunk in xs.split(256):
                zz = torch.stack(torch.meshgrid(chunk, ys, indexing="ij"), -1)
                total.append(torch.logsumexp(self.log_density(zz).reshape(-1), 0))
            self._log_z = float(torch.logsumexp(torch.stack(total), 0)) + math.log(hx * hy)
        return self._log_z


def _walled_log_z(sigmas: float) -> float:
    """``log Z`` of U2-U4: ``sigmas sqrt(2 pi)`` along ``z2`` times ``8 + 0.5 sqrt(2 pi)`` along ``z1`` (window and wall)."""
    s = math.sqrt(2 * math.pi)
    return math.log(sigmas * s * (8 + 0.5 * s))


TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target("u1", u1, ((-5, 5), (-5, 5)), (500, 500)),
        Target("u2", u2, ((-8, 8), (-6, 6)), (800, 600), closed_log_z=_walled_log_z(0.4)),
        Target("u3", u3, ((-8, 8), (-8, 6)), (800, 700), closed_log_z=_walled_log_z(0.35 + 0.35)),
        Target("u4", u4, ((-8, 8), (-8, 6)), (800, 700), closed_log_z=_walled_log_z(0.4 + 0.35)),
        Target("banana", banana, ((-9, 9), (-4, 40)), (900, 2200), ((-4, 4), (-3, 5)), math.log(2 * math.pi * 1.2 * 0.35)),
        Target("mog", mog, ((-6, 6), (-6, 6)), (600, 600), ((-4.5, 4.5), (-4.5, 4.5)), math.log(10 * 2 * math.pi * 0.16)),
        Target("funnel", funnel, ((-8, 8), (-60, 60)), (800, 6000), ((-4, 4), (-6, 6)), math.log(2 * math.pi)),
    ]
}


def get_target(name: str) -> Target:
    """A built-in target by name: one of :data:`TARGETS`."""
    if not isinstance(name, str):
        raise TypeError(f"the target name must be a string, one of {sorted(TARGETS)}; got {type(name).__name__}")
    key = name.lower()
    if key not in TARGETS:
        raise ValueError(f"unknown target {name!r}; choose from {sorted(TARGETS)}")
    return TARGETS[key]
