"""Coupling layers on images: additive (NICE) and affine (RealNVP, Glow), with image masks.

Two ways to split an image ``x`` of shape ``(C, H, W)`` into an identity part
and a transformed part (Dinh et al. 2017, Section 3.4):

- ``"checkerboard"``: pixels whose ``(i + j + parity)`` is even stay; the
  conditioner sees the image with the transformed pixels zeroed.
- ``"channel"``: the first ``ceil(C/2)`` channels stay (``parity=0``) or the
  other ``floor(C/2)`` (``parity=1``); the conditioner sees the kept channels.

The conditioner (:class:`~invertible.nets.GlowConvNet` or
:class:`~invertible.nets.ConvResNet`, last convolution at zero) returns the
parameters of an elementwise map of the transformed part; the Jacobian is
triangular, so the log-det is a sum over the transformed elements and the
inverse costs one conditioner pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core import Transform, sum_except_batch
from ..nets import ConvResNet, GlowConvNet
from .coupling import affine_element, check_scale
from .shapes import check_channels

__all__ = ["checkerboard_mask", "channel_mask", "AdditiveImageCoupling", "AffineImageCoupling", "MASKS", "NETS"]

MASKS = ("checkerboard", "channel")
NETS = ("glow", "resnet")


def checkerboard_mask(height: int, width: int, parity: int = 0) -> Tensor:
    """``(1, H, W)`` boolean mask, True where ``(i + j + parity)`` is even (the identity pixels)."""
    i = torch.arange(height)[:, None]
    j = torch.arange(width)[None, :]
    return ((i + j + parity) % 2 == 0).unsqueeze(0)


def channel_mask(channels: int, parity: int = 0) -> Tensor:
    """``(C,)`` boolean mask: True on the first ``ceil(C/2)`` channels (``parity=0``) or on the
    other ``floor(C/2)`` (``parity=1``, the complement), so alternating parities transform every channel."""
    keep = torch.arange(channels) < (channels + 1) // 2
    return keep if parity == 0 else ~keep


class _ImageCoupling(Transform):
    """Shared split/merge and conditioner plumbing; subclasses define the elementwise map.

    ``net`` picks the conditioner (``"glow"``: :class:`~invertible.nets.GlowConvNet`,
    ``"resnet"``: :class:`~invertible.nets.ConvResNet` with ``blocks`` residual
    blocks); ``output_gain`` gives the Glow network the learned output gain of
    Glow's code (see :class:`~invertible.nets.ZeroConv2d`).
    """

    params_per_element: int = 1

    def __init__(
        self,
        event_shape: tuple[int, int, int],
        mask: str = "channel",
        parity: int = 0,
        hidden: int = 64,
        net: str = "glow",
        blocks: int = 2,
        context_features: int | None = None,
        output_gain: bool = False,
    ):
        super().__init__()
        if len(event_shape) != 3:
            raise ValueError(f"image couplings take an event shape (C, H, W), got {tuple(event_shape)}")
        if mask not in MASKS:
            raise ValueError(f"unknown mask {mask!r}; choose from {MASKS}")
        if net not in NETS:
            raise ValueError(f"unknown conditioner net {net!r}; choose from {NETS}")
        c, h, w = event_shape
        self.channels = c
        self.mask_type = mask
        if mask == "channel":
            if c < 2:
                raise ValueError("a channel-wise mask needs at least 2 channels; use mask='checkerboard'")
            # the kept channels are a contiguous block: split and concatenate by slicing
            self.parity = parity
            n_in = int(channel_mask(c, parity).sum())
            n_out = c - n_in
        else:
            self.register_buffer("mask", checkerboard_mask(h, w, parity).float())
            n_in, n_out = c, c
        self.net_in_channels = n_in
        n_out *= self.params_per_element
        if net == "glow":
            self.net = GlowConvNet(n_in, n_out, hidden, context_features, output_gain=output_gain)
        else:
            if output_gain:
                raise ValueError("output_gain applies to net='glow'; the ResNet conditioner always has its output gain")
            self.net = ConvResNet(n_in, n_out, hidden, blocks, context_features)

    def _element(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _couple(self, x: Tensor, context: Tensor | None, inverse: bool) -> tuple[Tensor, Tensor]:
        # a one-channel transformed part would broadcast over extra channels, counted once in the log-det
        check_channels(x, self.channels, type(self).__name__)
        if self.mask_type == "channel":
            n_keep = self.net_in_channels
            # split, not two slices: its backward is one cat, a slice's a zero-filled copy of x each
            if self.parity == 0:
                x_a, x_b = x.split([n_keep, x.shape[1] - n_keep], 1)
            else:
                x_b, x_a = x.split([x.shape[1] - n_keep, n_keep], 1)
            params = self.net(x_a, context).unflatten(1, (self.params_per_element, -1))
            y_b, ladj = self._element(x_b, params, inverse)
            out = torch.cat([x_a, y_b] if self.parity == 0 else [y_b, x_a], dim=1)
            return out, sum_except_batch(ladj)
        m = self.mask.to(x.dtype)
        params = self.net(x * m, context).unflatten(1, (self.params_per_element, -1))
        y, ladj = self._element(x, params, inverse)
        # selected, not blended: an inf of the unused map at an identity pixel would make inf * 0 = NaN
        keep = self.mask.bool()
        return torch.where(keep, x, y), sum_except_batch(torch.where(keep, 0.0, ladj))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(x, context, inverse=False)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._couple(z, context, inverse=True)


class AdditiveImageCoupling(_ImageCoupling):
    """``z_b = x_b + t(x_a)``: volume preserving (NICE, Dinh et al. 2014; Glow's additive variant)."""

    params_per_element = 1

    def _element(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        shift = params.squeeze(1)  # a view whose backward is a view too (``params[:, 0]`` would zero-fill a copy)
        return (x - shift if inverse else x + shift), torch.zeros_like(x)


class AffineImageCoupling(_ImageCoupling):
    """``z_b = x_b * exp(s(x_a)) + t(x_a)``, ``log|det| = sum s`` (RealNVP, Glow).

    ``scale`` picks how the raw output becomes ``s`` (see
    :class:`~invertible.transforms.AffineCoupling`): ``"sigmoid"`` is Glow's
    code, ``"softclamp"`` (``3 tanh(raw / 3)``) keeps ``|s| < 3`` and is the
    identity near zero, ``"exp"`` is unbounded.
    """

    params_per_element = 2

    def __init__(self, *args, scale: str = "sigmoid", **kwargs):
        super().__init__(*args, **kwargs)
        self.scale = check_scale(scale)

    def _element(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        return affine_element(x, params, self.scale, inverse)
