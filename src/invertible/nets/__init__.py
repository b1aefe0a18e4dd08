"""Conditioner networks: the learnable functions inside transforms."""

from .mlp import MLP

__all__ = ["MLP"]
