"""Conditioner networks: the learnable functions inside transforms."""

from .conv import ConvResNet, GlowConvNet, ZeroConv2d
from .made import MaskedLinear, MaskedMLP
from .mlp import MLP

__all__ = ["MLP", "MaskedLinear", "MaskedMLP", "GlowConvNet", "ConvResNet", "ZeroConv2d"]
