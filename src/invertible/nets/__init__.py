"""Conditioner networks: the learnable functions inside transforms."""

from .made import MaskedLinear, MaskedMLP
from .mlp import MLP

__all__ = ["MLP", "MaskedLinear", "MaskedMLP"]
