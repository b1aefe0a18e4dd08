"""RealNVP: affine coupling layers with alternating masks.

Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
"""

from __future__ import annotations

from typing import Sequence

from ..core import Compose, Flow, Transform
from ..distributions import build_base
from ..transforms import ActNorm, AffineCoupling, alternating_mask
from .images import event_shape_of, realnvp_image_transform
from .registry import register


@register("realnvp")
class RealNVP(Flow):
    """``layers`` affine couplings whose masks alternate, so every feature is transformed.

    Each coupling ``z_b = x_b exp(s(x_a)) + t(x_a)`` has an MLP conditioner whose
    last layer starts at zero (the flow starts as the identity).

    Args:
        features: dimension of the data vectors.
        context_features: size of the conditioning vector (``None``: unconditional).
        layers: number of coupling layers.
        hidden: hidden widths of each coupling's MLP.
        scale: ``"softclamp"``, ``"sigmoid"`` or ``"exp"`` (see :class:`AffineCoupling`).
        actnorm: put an :class:`ActNorm` before every coupling.
        base: ``"normal"``, ``"diagonal_normal"``, ``"logistic"`` or ``"mog"`` (5 Gaussians per dimension;
            :data:`~invertible.distributions.BASES`).
        event_shape: instead of ``features``: ``(D,)`` or an image ``(C, H, W)``, which builds
            the paper's multi-scale architecture (see :func:`realnvp_image_transform`) from
            ``levels``, ``hidden_channels`` and ``blocks``; ``layers``, ``hidden`` and
            ``activation`` are the vector options.
        levels, hidden_channels, blocks: scales, ResNet width and depth for images.
    """

    @staticmethod
    def inert_options(options: dict) -> dict[str, str]:
        """The vector options (``layers``, ``hidden``, ``activation``) for an image, the image options (``levels``,
        ``hidden_channels``, ``blocks``) for vectors."""
        shape = options["event_shape"]
        if shape is not None and len(shape) == 3:
            return {k: f"it shapes the coupling MLPs of vectors, and event_shape is the image {list(shape)} "
                       "(levels, hidden_channels and blocks shape the image model)" for k in ("layers", "hidden", "activation")}
        return {k: "it shapes the multi-scale model of images (event_shape [C, H, W]), and the data are vectors "
                   "(layers, hidden and activation shape the vector model)" for k in ("levels", "hidden_channels", "blocks")}

    @staticmethod
    def unlearnable_options(options: dict) -> dict[str, str]:
        """``levels`` whose last scale works on one pixel: half of its checkerboard couplings keep that pixel (no
        gradient reaches them) and the other half condition on nothing (a context aside)."""
        shape, levels = options["event_shape"], options["levels"]
        if shape is None or len(shape) != 3 or not isinstance(levels, int) or levels < 1:
            return {}
        f = 2 ** (levels - 1)
        if shape[1] % f == 0 and shape[2] % f == 0 and (shape[1] // f) * (shape[2] // f) < 2:
            return {"levels": f"the last of {levels} scales works on 1x1 images, where checkerboard couplings have a "
                              "single pixel to split: use fewer levels"}
        return {}

    def __init__(
        self,
        features: int | None = None,
        context_features: int | None = None,
        layers: int = 8,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        scale: str = "softclamp",
        actnorm: bool = False,
        base: str = "normal",
        event_shape: Sequence[int] | None = None,
        levels: int = 2,
        hidden_channels: int = 64,
        blocks: int = 2,
    ):
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        shape = event_shape_of(features, event_shape)
        if len(shape) == 3:
            transform = realnvp_image_transform(
                shape, levels, hidden_channels, blocks, scale, actnorm, context_features  # type: ignore[arg-type]
            )
            super().__init__(transform, build_base(base, shape), context_features)
            return
        features = shape[0]
        if features < 2:
            raise ValueError(f"coupling flows need at least 2 features, got {features}")
        transforms: list[Transform] = []
        for i in range(layers):
            if actnorm:
                transforms.append(ActNorm(features))
            transforms.append(
                AffineCoupling(
                    alternating_mask(features, i % 2),
                    hidden=hidden,
                    context_features=context_features,
                    activation=activation,
                    scale=scale,
                )
            )
        super().__init__(Compose(transforms), build_base(base, features), context_features)
