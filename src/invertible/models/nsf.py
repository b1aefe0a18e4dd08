"""Neural Spline Flows: rational-quadratic spline layers, autoregressive or coupling.

Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", NeurIPS 2019.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..core import Compose, Flow, Transform
from ..seeding import part_seeds, seeded_generator
from ..transforms.coupling import alternating_mask
from ..transforms.spline import MaskedRQSAutoregressive, RQSCoupling
from .maf import layer_orders, make_base, mixture_inert
from .registry import register

__all__ = ["NSF"]


def _coupling_masks(features: int, layers: int, permutation: str, seed: int) -> list[torch.Tensor]:
    if permutation == "reverse":
        return [alternating_mask(features, i % 2) for i in range(layers)]
    if permutation == "random":
        g = seeded_generator(seed)
        masks = []
        for _ in range(layers):
            m = torch.zeros(features, dtype=torch.bool)
            m[torch.randperm(features, generator=g)[: features // 2]] = True
            masks.append(m)
        return masks
    raise ValueError(f"unknown permutation {permutation!r}; use 'reverse' or 'random'")


@register("nsf")
class NSF(Flow):
    """Rational-quadratic neural spline flow, RQ-NSF (AR) or RQ-NSF (C).

    ``kind="autoregressive"``: every layer is a :class:`MaskedRQSAutoregressive`
    (MADE conditioner, own order per layer; fast density, ``D``-step sampling).
    ``kind="coupling"``: every layer is an :class:`RQSCoupling` with alternating
    (``permutation="reverse"``) or random half masks; both directions one pass.

    Args:
        features: data dimension.
        context_features: conditioning size.
        layers: number of spline layers.
        hidden: hidden widths of each conditioner.
        bins: spline bins ``K``.
        bound: splines act on ``[-bound, bound]``; identity (linear tails) outside.
        kind: ``"autoregressive"`` or ``"coupling"``.
        permutation: ``"reverse"`` or ``"random"`` orders/masks per layer.
        base: base distribution name (``"mog"`` as in :class:`MAF`).
        components: mixture components when ``base="mog"``.
        seed: seed of random orders/masks.
    """

    @staticmethod
    def inert_options(options: dict) -> dict[str, str]:
        """``components`` without ``base="mog"``, ``permutation`` with one feature (one order), ``seed`` without
        ``permutation="random"`` over two or more features."""
        inert = mixture_inert(options)
        if options["features"] == 1:
            inert["permutation"] = "a single feature has one order"
        if options["permutation"] != "random" or options["features"] == 1:
            inert["seed"] = (f"it draws the orders or masks of permutation='random', and permutation is "
                             f"{options['permutation']!r} over {options['features']} feature(s)")
        return inert

    def __init__(
        self,
        features: int,
        context_features: int | None = None,
        layers: int = 5,
        hidden: Sequence[int] = (64, 64),
        bins: int = 8,
        bound: float = 3.0,
        kind: str = "autoregressive",
        permutation: str = "reverse",
        activation: str = "relu",
        base: str = "normal",
        components: int = 10,
        seed: int = 0,
    ):
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        transforms: list[Transform]
        if kind == "autoregressive":
            transforms = [
                MaskedRQSAutoregressive(features, hidden, context_features, order=order, activation=activation,
                                        bins=bins, bound=bound, seed=layer_seed)
                for order, layer_seed in zip(layer_orders(layers, permutation), part_seeds(seed, layers))
            ]
        elif kind == "coupling":
            if features < 2:
                raise ValueError(f"coupling flows need at least 2 features, got {features}")
            transforms = [
                RQSCoupling(mask, hidden, context_features, activation=activation, bins=bins, bound=bound)
                for mask in _coupling_masks(features, layers, permutation, seed)
            ]
        else:
            raise ValueError(f"unknown kind {kind!r}; use 'autoregressive' or 'coupling'")
        super().__init__(Compose(transforms), make_base(base, features, components), context_features)
