"""Multilayer perceptrons used as coupling conditioners."""

from __future__ import annotations

import numbers
from typing import Sequence

import torch
from torch import Tensor, nn

from ..core import _check_context_features

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


#: activations that can overwrite their input (saving an allocation and a copy per layer)
_IN_PLACE = {"relu", "elu", "silu", "leaky_relu"}


def make_activation(name: str, inplace: bool = False) -> nn.Module:
    """An activation module by name (one of :data:`ACTIVATIONS`).

    ``inplace=True`` overwrites the input where the activation allows it; use it only
    on a fresh tensor nobody else reads (the output of a linear layer).
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name](inplace=True) if inplace and name in _IN_PLACE else ACTIVATIONS[name]()


def hidden_widths(hidden: Sequence[int]) -> list[int]:
    """``hidden`` as a list of ``int``, or a ``ValueError`` unless it is a sequence of integers (each net checks the
    widths it takes); ``hidden=64`` was "'int' object is not iterable"."""
    if (isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence)
            or not all(isinstance(w, numbers.Integral) and not isinstance(w, bool) for w in hidden)):
        raise ValueError(f"hidden must be a list of widths, e.g. [64, 64], got {hidden!r}")
    return [int(width) for width in hidden]


class MLP(nn.Module):
    """``in_features (+ context_features) -> hidden... -> out_features``.

    The context, when given, is concatenated to the input. With
    ``zero_init=True`` the last layer starts at zero, so a coupling layer built
    on it starts as the identity (Glow, Kingma & Dhariwal 2018).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64, 64),
        context_features: int | None = None,
        activation: str = "relu",
        zero_init: bool = True,
    ):
        super().__init__()
        hidden = hidden_widths(hidden)
        if any(width < 1 for width in hidden):
            raise ValueError(f"hidden widths must be >= 1, got {hidden}")
        _check_context_features(context_features)
        self.context_features = context_features
        sizes = [in_features + (context_features or 0), *hidden, out_features]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            if i > 0:
                layers.append(make_activation(activation, inplace=True))
            layers.append(nn.Linear(a, b))
        if zero_init:
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if self.context_features is not None:
            if context is None:
                raise ValueError(f"this network expects a context of {self.context_features} features")
            x = torch.cat([x, context], dim=-1)
        return self.net(x)
