"""Sylvester normalizing flows: K layers ``g(z) = z + Q R tanh(R~ Q^T z + b)``.

van den Berg, Hasenclever, Tomczak & Welling, "Sylvester Normalizing Flows for
Variational Inference", UAI 2018.
"""

from __future__ import annotations

from ..core import Compose, Flow
from ..distributions import build_base
from ..transforms import Sylvester as SylvesterLayer
from .registry import register


@register("sylvester")
class Sylvester(Flow):
    """``x = g_K o ... o g_1(u)``, ``u ~ base``, with Sylvester layers (orthogonal or Householder ``Q``).

    Args:
        features: dimension of the vectors.
        context_features: size of the context that amortises every layer's parameters.
        layers: number ``K`` of Sylvester layers.
        variant: ``"orthogonal"`` or ``"householder"``.
        bottleneck: ``M`` columns of ``Q`` for the orthogonal variant (default ``features``).
        reflections: Householder reflections per layer (default ``features``).
        base: ``"normal"`` or ``"diagonal_normal"``, or ``"logistic"``, ``"mog"``
            (:data:`~invertible.distributions.BASES`).
    """

    @staticmethod
    def inert_options(options: dict) -> dict[str, str]:
        """``bottleneck`` of the householder variant, ``reflections`` of the orthogonal one."""
        if options["variant"] == "householder":
            return {"bottleneck": "it sizes Q of variant='orthogonal', and variant is 'householder' (M = features)"}
        return {"reflections": f"it counts the reflections of variant='householder', and variant is {options['variant']!r}"}

    def __init__(
        self,
        features: int,
        context_features: int | None = None,
        layers: int = 8,
        variant: str = "orthogonal",
        bottleneck: int | None = None,
        reflections: int | None = None,
        base: str = "normal",
    ):
        if layers < 1:
            raise ValueError(f"layers must be positive, got {layers}")
        transforms = [
            SylvesterLayer(features, context_features, variant, bottleneck, reflections) for _ in range(layers)
        ]
        super().__init__(Compose(transforms), build_base(base, features), context_features)
