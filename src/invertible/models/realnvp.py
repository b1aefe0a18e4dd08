"""RealNVP: affine coupling layers with alternating masks.

Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", ICLR 2017.
"""

from __future__ import annotations

from typing import Sequence

from ..core import Compose, Flow, Transform
from ..distributions import build_base
from ..transforms import ActNorm, AffineCoupling, alternating_mask
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
        base: ``"normal"``, ``"diagonal_normal"`` or ``"logistic"``.
    """

    def __init__(
        self,
        features: int,
        context_features: int | None = None,
        layers: int = 8,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        scale: str = "softclamp",
        actnorm: bool = False,
        base: str = "normal",
    ):
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
