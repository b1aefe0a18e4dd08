"""Convolutional conditioners for coupling layers on images.

Both networks take an image ``x`` of shape ``(batch, in_channels, H, W)`` and an
optional context: a vector ``(batch, K)`` (a one-hot class label, broadcast to
``K`` constant channels) or an image ``(batch, K, H, W)`` (concatenated as
channels, e.g. the data image that conditions a dequantization flow). Their
last convolution starts at zero, so a coupling built on them starts as the
identity map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ZeroConv2d", "GlowConvNet", "ConvResNet", "with_context"]


def with_context(x: Tensor, context: Tensor | None, context_features: int | None) -> Tensor:
    """Append the context to ``x`` as channels: vectors broadcast over pixels, images as they are."""
    if context_features is None:
        return x
    if context is None:
        raise ValueError(f"this network expects a context of {context_features} features")
    if context.dim() == 2:
        context = context[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
    if context.shape[1] != context_features or context.shape[2:] != x.shape[2:]:
        raise ValueError(
            f"context of shape {tuple(context.shape)} does not fit: expected (batch, {context_features})"
            f" or (batch, {context_features}, {x.shape[2]}, {x.shape[3]})"
        )
    return torch.cat([x, context.to(x.dtype)], dim=1)


def channels_last_on_cpu(x: Tensor) -> Tensor:
    """``x`` in channels-last layout when it lives on the CPU, as it is otherwise.

    oneDNN's CPU convolutions run faster on channels-last inputs for the small
    images inside flow steps: a Glow training step on 1x8x8 digits took 13-18 %
    less time with it (``python -m bench glow --part speed``). The networks
    also store their convolution weights channels-last (so oneDNN need not
    reorder them at every call, another 2-4 %) and return their outputs in the
    default layout again.
    """
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x


class ZeroConv2d(nn.Module):
    """A 3x3 convolution whose weights start at zero; with ``gain``, Glow's ``Conv2dZeros``.

    ``gain=True`` multiplies the output by a learned per-channel factor
    ``exp(3 logs)`` (``logs`` starts at 0), as Glow's code does: the output
    scale can then grow three times as fast as the weights move. ``gain=False``
    is a plain zero-initialised convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, gain: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logs = nn.Parameter(torch.zeros(out_channels, 1, 1)) if gain else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)
        return h if self.logs is None else h * torch.exp(3 * self.logs)


class GlowConvNet(nn.Module):
    """Glow's coupling network: conv 3x3 -> ReLU -> conv 1x1 -> ReLU -> zero-initialised conv 3x3.

    Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", 2018, Section 3.3.
    The hidden convolutions start as in Glow's code, weights drawn from
    ``N(0, 0.05^2)`` and zero biases: smaller than PyTorch's default for these
    few input channels, which slows the early fit and, on small data sets,
    generalises better (digits: 0.02 bits/dim lower at test, ``docs/images.md``).
    Glow's code also multiplies the last layer's output by a learned gain
    ``exp(3 logs)`` (``output_gain=True``, see :class:`ZeroConv2d`). It is off
    by default: on small data sets it lets the couplings fit the training set
    faster at the expense of test likelihood (on scikit-learn's digits the
    gain costs 0.010 to 0.016 bits/dim at test, ``docs/images.md``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: int = 64,
        context_features: int | None = None,
        output_gain: bool = False,
    ):
        super().__init__()
        self.context_features = context_features
        self.net = nn.Sequential(
            nn.Conv2d(in_channels + (context_features or 0), hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(inplace=True),
            ZeroConv2d(hidden, out_channels, gain=output_gain),
        )
        for layer in (self.net[0], self.net[2]):
            nn.init.normal_(layer.weight, 0.0, 0.05)
            nn.init.zeros_(layer.bias)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(channels_last_on_cpu(with_context(x, context, self.context_features))).contiguous()


class _ResidualBlock(nn.Module):
    """``h + conv(relu(conv(relu(h))))`` with 3x3 convolutions."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.conv2(F.relu(self.conv1(F.relu(h))))


class ConvResNet(nn.Module):
    """RealNVP's conditioner: a 3x3 input convolution, ``blocks`` residual blocks, a zero-initialised output.

    Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", 2017,
    Section 4.1. The paper normalises inside the blocks with batch
    normalisation; this network leaves it out so that the coupling computes
    the same function in training and evaluation mode (an ActNorm or
    :class:`~invertible.transforms.BatchNorm` flow layer between couplings
    plays that role).
    """

    def __init__(
        self, in_channels: int, out_channels: int, hidden: int = 64, blocks: int = 2, context_features: int | None = None
    ):
        super().__init__()
        self.context_features = context_features
        self.head = nn.Conv2d(in_channels + (context_features or 0), hidden, 3, padding=1)
        self.blocks = nn.Sequential(*[_ResidualBlock(hidden) for _ in range(blocks)])
        self.out = ZeroConv2d(hidden, out_channels)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        h = self.blocks(self.head(channels_last_on_cpu(with_context(x, context, self.context_features))))
        return self.out(F.relu(h)).contiguous()
