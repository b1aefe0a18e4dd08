"""Conditioner networks: the learnable functions inside transforms."""

from .conv import ConvResNet, GlowConvNet, ZeroConv2d
from .mlp import MLP

__all__ = ["MLP", "GlowConvNet", "ConvResNet", "ZeroConv2d"]
