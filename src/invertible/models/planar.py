"""Planar and radial flows: stacks of K layers of Rezende & Mohamed's maps.

Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015.
Sampling (``rsample_and_log_prob``) runs the closed-form maps; ``log_prob``
inverts them numerically (see :mod:`invertible.transforms.planar`).
"""

from __future__ import annotations

from ..core import Compose, Flow
from ..distributions import build_base
from ..transforms import Planar as PlanarLayer
from ..transforms import Radial as RadialLayer
from .registry import register


@register("planar")
class Planar(Flow):
    """``x = g_K o ... o g_1(u)``, ``u ~ base``, with planar layers ``g_k(z) = z + u_k tanh(w_k^T z + b_k)``.

    Args:
        features: dimension of the vectors.
        context_features: size of the context that amortises every layer's parameters.
        layers: number ``K`` of planar layers.
        base: ``"normal"`` or ``"diagonal_normal"`` (learnable mean and scale), or ``"logistic"``, ``"mog"``
            (5 Gaussians per dimension): :data:`~invertible.distributions.BASES`.
    """

    def __init__(self, features: int, context_features: int | None = None, layers: int = 16, base: str = "normal"):
        if layers < 1:
            raise ValueError(f"layers must be positive, got {layers}")
        transforms = [PlanarLayer(features, context_features) for _ in range(layers)]
        super().__init__(Compose(transforms), build_base(base, features), context_features)


@register("radial")
class Radial(Flow):
    """``x = g_K o ... o g_1(u)``, ``u ~ base``, with radial layers ``g_k(z) = z + beta_k (z - z0_k) / (alpha_k + |z - z0_k|)``.

    Args:
        features: dimension of the vectors.
        context_features: size of the context that amortises every layer's parameters.
        layers: number ``K`` of radial layers.
        base: ``"normal"`` or ``"diagonal_normal"``, or ``"logistic"``, ``"mog"``
            (:data:`~invertible.distributions.BASES`).
    """

    def __init__(self, features: int, context_features: int | None = None, layers: int = 16, base: str = "normal"):
        if layers < 1:
            raise ValueError(f"layers must be positive, got {layers}")
        transforms = [RadialLayer(features, context_features) for _ in range(layers)]
        super().__init__(Compose(transforms), build_base(base, features), context_features)
