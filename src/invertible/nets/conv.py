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
    return their outputs in the default layout again.
    """
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x


class ZeroConv2d(nn.Module):
    """Glow's ``Conv2dZeros``: a 3x3 convolution whose weights start at zero, output times ``exp(3 * logs)``.

    The learned per-channel factor ``exp(3 logs)`` (``logs`` starts at 0) lets
    the output scale grow quickly once training moves the weights off zero.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.logs = nn.Parameter(torch.zeros(out_channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) * torch.exp(3 * self.logs)


class GlowConvNet(nn.Module):
    """Glow's coupling network: conv 3x3 -> ReLU -> conv 1x1 -> ReLU -> zero-initialised conv 3x3.

    Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", 2018, Section 3.3.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 64, context_features: int | None = None):
        super().__init__()
        self.context_features = context_features
        self.net = nn.Sequential(
            nn.Conv2d(in_channels + (context_features or 0), hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(inplace=True),
            ZeroConv2d(hidden, out_channels),
        )

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

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        h = self.blocks(self.head(channels_last_on_cpu(with_context(x, context, self.context_features))))
        return self.out(F.relu(h)).contiguous()
