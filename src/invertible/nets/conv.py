"""Convolutional conditioners for coupling layers on images.

Both networks take an image ``x`` of shape ``(batch, in_channels, H, W)`` and an
optional context: a vector ``(batch, K)`` (a one-hot class label, broadcast to
``K`` constant channels) or an image ``(batch, K, H, W)`` (concatenated as
channels, e.g. the data image that conditions a dequantization flow). Their
last convolution starts at zero, so a coupling built on them starts as the
identity map.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ZeroConv2d", "GlowConvNet", "ConvResNet", "conv_matrix", "small_image_conv", "with_context"]


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
    images inside flow steps (docs/images.md gives the Glow step's ratios to
    normflows' before and after, from ``python -m bench glow --part speed``). The networks
    also store their convolution weights channels-last (so oneDNN need not
    reorder them at every call, another 2-4 %) and return their outputs in the
    default layout again.
    """
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x


#: Images of at most this many pixels go through :func:`small_image_conv` instead of convolutions.
#: Measured on the CPU at batch 128 and 64 hidden channels, forward and backward: on 2x2 images the
#: matrix form is 1.5x faster for :class:`GlowConvNet` and 1.2x for :class:`ConvResNet`; on 3x3 images
#: it is 1.2x faster for the first and 1.7x slower for the second (its 64 -> 64 matrices are large).
SMALL_IMAGE_PIXELS = 4


@functools.lru_cache(maxsize=None)
def _shift_matrices(height: int, width: int, kernel_size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``S[t, p, q] = 1`` where kernel tap ``t`` joins output pixel ``p`` to input pixel ``q``; shape ``(k*k, HW*HW)``.

    Made outside ``torch.inference_mode`` even when first asked for inside it: the cache serves the whole
    process, and an inference tensor in it could not be saved for backward by any later training pass.
    """
    pad = kernel_size // 2
    with torch.inference_mode(False):
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        dy = ys[None, :] - ys[:, None] + pad
        dx = xs[None, :] - xs[:, None] + pad
        inside = (dy >= 0) & (dy < kernel_size) & (dx >= 0) & (dx < kernel_size)
        tap = torch.where(inside, dy * kernel_size + dx, -1)
        shifts = torch.arange(kernel_size**2)[:, None, None] == tap[None]
        return shifts.reshape(kernel_size**2, -1).to(device=device, dtype=dtype)


def conv_matrix(
    weight: Tensor, height: int, width: int, *, channels_last_in: bool = False, channels_last_out: bool = False
) -> Tensor:
    """The matrix of a stride-1, zero-padded ("same") convolution on ``height x width`` images.

    For a kernel ``weight`` of shape ``(O, I, k, k)`` with odd ``k``, returns
    ``M`` of shape ``(O*H*W, I*H*W)`` with ``conv(x).flatten() = M @ x.flatten()``
    for each image: ``M[(o, p), (i, q)] = weight[o, i, q - p + k // 2]`` where
    the offset of pixel ``q`` from pixel ``p`` lies inside the kernel, 0 elsewhere.
    Pixels are flattened row-major, after (``channels_last_*=False``) or before
    (``True``) the channel. Applying ``M`` costs ``(H W)^2 I O`` multiply-adds
    per image against ``H W k^2 I O`` for the convolution, so it is the cheaper
    way on the few pixels of the deepest levels of a multi-scale flow. ``M`` is
    built as one matrix product of the kernel with fixed 0/1 shift matrices, so
    it is cheap to form and to differentiate in ``weight``.
    """
    out_channels, in_channels, k, k_w = weight.shape
    if k != k_w or k % 2 == 0:
        raise ValueError(f"conv_matrix needs a square kernel of odd size, got {k}x{k_w}")
    pixels = height * width
    # traced by torch.compile without the cache (which Dynamo would skip anyway, with a warning)
    shift_matrices = _shift_matrices.__wrapped__ if torch.compiler.is_compiling() else _shift_matrices
    shifts = shift_matrices(height, width, k, weight.device, weight.dtype)
    m = (weight.reshape(out_channels * in_channels, k * k) @ shifts).view(out_channels, in_channels, pixels, pixels)
    rows = (2, 0) if channels_last_out else (0, 2)
    cols = (3, 1) if channels_last_in else (1, 3)
    return m.permute(*rows, *cols).reshape(out_channels * pixels, in_channels * pixels)


def small_image_conv(
    x: Tensor, conv: nn.Conv2d, height: int, width: int, *, channels_last_in: bool = False, channels_last_out: bool = False
) -> Tensor:
    """``conv`` applied to flattened ``height x width`` images ``x`` of shape ``(batch, I*H*W)`` by one matrix product.

    Returns ``(batch, O*H*W)``, pixels ordered as :func:`conv_matrix` says
    (see :data:`SMALL_IMAGE_PIXELS` for where this beats the convolution).
    """
    pixels = height * width
    bias = conv.bias.repeat(pixels) if channels_last_out else conv.bias.repeat_interleave(pixels)
    matrix = conv_matrix(conv.weight, height, width, channels_last_in=channels_last_in, channels_last_out=channels_last_out)
    return torch.addmm(bias, x, matrix.t())


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
        return self.apply_gain(self.conv(x))

    def apply_gain(self, h: Tensor) -> Tensor:
        """The convolution's output ``h`` times the learned gain, if there is one."""
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
        if hidden < 1:
            raise ValueError(f"hidden channels must be >= 1, got {hidden}")
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
        x = with_context(x, context, self.context_features)
        if x.shape[2] * x.shape[3] <= SMALL_IMAGE_PIXELS:
            return self._small_image_forward(x)
        return self.net(channels_last_on_cpu(x)).contiguous()

    def _small_image_forward(self, x: Tensor) -> Tensor:
        """The same network as three matrix products (:func:`small_image_conv`), for images of few pixels.

        The 1x1 convolution between them is a linear layer on the pixels of the
        channels-last hidden image. Same parameters, same function; a Glow
        training step on digits (whose second level works on 2x2 images)
        is about 10 % faster.
        """
        batch, _, height, width = x.shape
        first, middle, last = self.net[0], self.net[2], self.net[4]
        h = small_image_conv(x.flatten(1), first, height, width, channels_last_out=True).relu_()
        h = F.linear(h.view(-1, middle.in_channels), middle.weight.view(middle.out_channels, -1), middle.bias).relu_()
        out = small_image_conv(h.view(batch, height * width * middle.out_channels), last.conv, height, width, channels_last_in=True)
        return last.apply_gain(out.unflatten(1, (-1, height, width)))


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
        if hidden < 1 or blocks < 0:
            raise ValueError(f"need hidden channels >= 1 and blocks >= 0, got hidden={hidden}, blocks={blocks}")
        self.context_features = context_features
        self.head = nn.Conv2d(in_channels + (context_features or 0), hidden, 3, padding=1)
        self.blocks = nn.Sequential(*[_ResidualBlock(hidden) for _ in range(blocks)])
        self.out = ZeroConv2d(hidden, out_channels)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x = with_context(x, context, self.context_features)
        if x.shape[2] * x.shape[3] <= SMALL_IMAGE_PIXELS:
            return self._small_image_forward(x)
        h = self.blocks(self.head(channels_last_on_cpu(x)))
        return self.out(F.relu(h)).contiguous()

    def _small_image_forward(self, x: Tensor) -> Tensor:
        """The same network with every convolution as a matrix product (:func:`small_image_conv`)."""
        height, width = x.shape[-2:]
        size = dict(height=height, width=width)
        h = small_image_conv(x.flatten(1), self.head, **size, channels_last_out=True)
        for block in self.blocks:
            r = small_image_conv(F.relu(h), block.conv1, **size, channels_last_in=True, channels_last_out=True)
            h = h + small_image_conv(F.relu(r), block.conv2, **size, channels_last_in=True, channels_last_out=True)
        out = small_image_conv(F.relu(h), self.out.conv, **size, channels_last_in=True)
        return self.out.apply_gain(out.unflatten(1, (-1, height, width)))
