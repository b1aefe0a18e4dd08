"""Image architectures of the NICE and RealNVP papers, used by their presets when given an image event shape."""

from __future__ import annotations

from typing import Sequence

from ..core import Compose, Inverse, Transform
from ..transforms import (
    ActNorm,
    AdditiveCoupling,
    AffineImageCoupling,
    ElementwiseAffine,
    FactorOut,
    Reshape,
    Squeeze,
    alternating_mask,
)

__all__ = ["event_shape_of", "nice_image_transform", "realnvp_image_transform"]


def event_shape_of(features: int | None, event_shape: Sequence[int] | None) -> tuple[int, ...]:
    """The event shape from ``features`` (vectors) or ``event_shape`` (vectors or ``(C, H, W)`` images)."""
    if event_shape is None:
        if features is None:
            raise ValueError("give features (vectors) or event_shape (e.g. [1, 28, 28] for images)")
        return (int(features),)
    shape = tuple(int(s) for s in event_shape)
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise ValueError(f"event_shape must be (D,) or (C, H, W), got {tuple(event_shape)}")
    if features is not None and features != (shape[0] if len(shape) == 1 else None):
        raise ValueError(f"features={features} contradicts event_shape={shape}")
    return shape


def nice_image_transform(
    shape: tuple[int, int, int], layers: int, hidden: Sequence[int], context_features: int | None, activation: str
) -> Transform:
    """NICE on images (Dinh et al. 2014, Section 5): flatten, additive couplings on odd/even pixels, diagonal scaling."""
    d = shape[0] * shape[1] * shape[2]
    if d < 2:
        raise ValueError(f"coupling flows need at least 2 values per image, got images of shape {tuple(shape)}")
    flat = Reshape(shape, (d,))
    couplings: list[Transform] = [
        AdditiveCoupling(alternating_mask(d, i % 2), hidden=hidden, context_features=context_features, activation=activation)
        for i in range(layers)
    ]
    return Compose(flat, *couplings, ElementwiseAffine(d, shift=False), Inverse(flat))


def realnvp_image_transform(
    shape: tuple[int, int, int],
    levels: int,
    hidden_channels: int,
    blocks: int,
    scale: str,
    actnorm: bool,
    context_features: int | None,
) -> Transform:
    """RealNVP's multi-scale architecture (Dinh et al. 2017, Section 4.1).

    Each scale but the last: 3 checkerboard couplings (alternating parity),
    squeeze, 3 channel-wise couplings, then half of the channels are factored
    out with a fixed standard-normal prior. The last scale: 4 checkerboard
    couplings. Conditioners are ResNets (``blocks`` residual blocks of
    ``hidden_channels``); ``actnorm`` puts an ActNorm before each coupling.
    """
    c, h, w = shape
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    f = 2 ** (levels - 1)
    if h % f or w % f:
        raise ValueError(f"{levels} scales squeeze by {f}: height and width must be divisible by {f}, got {h}x{w}")

    def coupling(mask: str, parity: int, c: int, h: int, w: int) -> list[Transform]:
        layer = AffineImageCoupling(
            (c, h, w), mask, parity, hidden_channels, net="resnet", blocks=blocks, context_features=context_features, scale=scale
        )
        return [ActNorm(c), layer] if actnorm else [layer]

    def scale_(i: int, c: int, h: int, w: int) -> Transform:
        body: list[Transform] = []
        if i == levels - 1:
            for k in range(4):
                body += coupling("checkerboard", k % 2, c, h, w)
            return Compose(body)
        for k in range(3):
            body += coupling("checkerboard", k % 2, c, h, w)
        body.append(Squeeze())
        c4, h2, w2 = 4 * c, h // 2, w // 2
        for k in range(3):
            body += coupling("channel", k % 2, c4, h2, w2)
        keep = c4 // 2
        body.append(FactorOut(c4, keep, scale_(i + 1, keep, h2, w2), prior="fixed"))
        body.append(Inverse(Squeeze()))
        return Compose(body)

    return scale_(0, c, h, w)
