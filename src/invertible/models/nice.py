"""NICE: additive coupling layers, a diagonal scaling layer and a logistic prior.

Dinh, Krueger & Bengio, "NICE: Non-linear Independent Components Estimation", ICLR 2015 workshop.
"""

from __future__ import annotations

from typing import Sequence

from ..core import Compose, Flow
from ..distributions import build_base
from ..transforms import AdditiveCoupling, ElementwiseAffine, alternating_mask
from .images import event_shape_of, nice_image_transform
from .registry import register


@register("nice")
class NICE(Flow):
    """``layers`` additive couplings with alternating masks, then ``z = exp(s) * h`` (the scaling layer).

    ``log p(x) = sum_i [log p_H(z_i) + s_i]``: the additive layers are volume
    preserving, so the scaling layer carries the whole log-det. The paper uses
    4 couplings of 5x1000 ReLU units and a standard logistic prior.

    Args:
        features: dimension of the data vectors.
        context_features: size of the conditioning vector (``None``: unconditional).
        layers: number of additive coupling layers.
        hidden: hidden widths of each coupling's MLP.
        base: ``"logistic"`` (the paper's), or another of :data:`~invertible.distributions.BASES`
            (``"normal"``, ``"diagonal_normal"``, ``"mog"``: 5 Gaussians per dimension).
        event_shape: instead of ``features``: ``(D,)`` or an image ``(C, H, W)``; images are
            flattened and their pixels split odd/even, as in the paper's MNIST model.
    """

    def __init__(
        self,
        features: int | None = None,
        context_features: int | None = None,
        layers: int = 4,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        base: str = "logistic",
        event_shape: Sequence[int] | None = None,
    ):
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        shape = event_shape_of(features, event_shape)
        if len(shape) == 3:
            transform = nice_image_transform(shape, layers, hidden, context_features, activation)  # type: ignore[arg-type]
            super().__init__(transform, build_base(base, shape), context_features)
            return
        features = shape[0]
        if features < 2:
            raise ValueError(f"coupling flows need at least 2 features, got {features}")
        transforms = [
            AdditiveCoupling(
                alternating_mask(features, i % 2), hidden=hidden, context_features=context_features, activation=activation
            )
            for i in range(layers)
        ]
        transforms.append(ElementwiseAffine(features, shift=False))
        super().__init__(Compose(transforms), build_base(base, features), context_features)
