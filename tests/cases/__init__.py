"""The registry of transform and preset cases that the generic property suite runs over.

Each family adds a module to this package holding ``CASES`` (a list of
:class:`Case`) and, for presets, ``PRESETS`` (a list of :class:`PresetCase`).
Every module here is collected; ``test_registry_is_complete`` fails when a
public transform class or a registered preset has no case.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from invertible import Transform

Sampler = Callable[[tuple[int, ...], torch.Generator], Tensor]


def normal(shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float64)


def unit_interval(shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=g, dtype=torch.float64) * 0.98 + 0.01


@dataclass
class Case:
    """How to build one transform for the property suite and where its inputs live.

    ``build(context_features)`` returns the transform (``context_features`` is
    ``None`` for the unconditional build). ``x`` and ``z`` draw inputs in the
    domain and the image. ``perturb`` adds noise of that size to every
    parameter after a warm-up pass, so zero-initialised layers are not the
    identity when tested. ``jacobian`` compares with autograd (keep events small).
    """

    name: str
    build: Callable[[int | None], Transform]
    event_shape: tuple[int, ...]
    conditional: bool = False
    x: Sampler = normal
    z: Sampler = normal
    perturb: float = 0.2
    jacobian: bool = True
    atol: float = 1e-6
    # an estimator's log-det (exact_logdet=False) is compared with this tolerance instead
    logdet_atol: float | None = None
    # False for surjections (dequantization): only inverse(forward(x)) == x and the
    # negated log-det are checked, neither forward(inverse(z)) nor the Jacobian
    bijective: bool = True


@dataclass
class PresetCase:
    """A registered preset with small options for the suite."""

    name: str
    options: dict[str, Any]
    x: Sampler = normal
    conditional_options: dict[str, Any] = field(default_factory=dict)


def _modules():
    for info in pkgutil.iter_modules(__path__):
        yield importlib.import_module(f"{__name__}.{info.name}")


def all_cases() -> list[Case]:
    return [c for m in _modules() for c in getattr(m, "CASES", [])]


def all_preset_cases() -> list[PresetCase]:
    return [c for m in _modules() for c in getattr(m, "PRESETS", [])]
