"""MAF and IAF: stacks of masked affine autoregressive layers.

Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density Estimation", NeurIPS 2017.
Kingma et al., "Improved Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016.
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from ..core import Compose, Flow, Inverse, Transform
from ..distributions import MixtureOfGaussians, build_base
from ..nets.made import lowest_hidden_degree
from ..seeding import part_seeds
from ..transforms.autoregressive import InverseAutoregressiveAffine, MaskedAffineAutoregressive
from ..transforms.normalization import BatchNorm
from .registry import register

__all__ = ["MAF", "IAF", "layer_orders", "make_base", "mixture_inert"]


def layer_orders(layers: int, permutation: str) -> list[str]:
    """Order of each layer: alternately default/reversed (``"reverse"``) or a fresh random order (``"random"``).

    Giving each MADE its own order is the same model as a permutation layer
    between fixed-order MADEs (the permutations are absorbed into the masks),
    without moving any data.
    """
    if permutation == "reverse":
        return ["default" if i % 2 == 0 else "reverse" for i in range(layers)]
    if permutation == "random":
        return ["random"] * layers
    raise ValueError(f"unknown permutation {permutation!r}; use 'reverse' or 'random'")


def make_base(base: str, features: int, components: int) -> nn.Module:
    """``"mog"``: a per-dimension mixture of ``components`` Gaussians; otherwise :func:`build_base`."""
    if base == "mog":
        return MixtureOfGaussians(features, components)
    return build_base(base, features)


def mixture_inert(options: dict) -> dict[str, str]:
    """``components`` without ``base="mog"``, for a preset's ``inert_options``."""
    if options["base"] == "mog":
        return {}
    return {"components": f"it sizes the mixture of base='mog', and base is {options['base']!r}"}


def _stack(layer_cls: type, features: int, context_features: int | None, layers: int, hidden: Sequence[int],
           activation: str, permutation: str, batch_norm: bool, scale: str, init: str, random_degrees: bool,
           seed: int) -> Compose:
    if features < 1 or layers < 1:
        raise ValueError(f"need features >= 1 and layers >= 1, got features={features}, layers={layers}")
    transforms: list[Transform] = []
    # batch statistics come from the side the layers read: the data (MAF) or the noise (IAF, whose samples train it)
    sampling_side = issubclass(layer_cls, InverseAutoregressiveAffine)
    for i, (order, layer_seed) in enumerate(zip(layer_orders(layers, permutation), part_seeds(seed, layers))):
        if batch_norm and i > 0:
            transforms.append(Inverse(BatchNorm(features)) if sampling_side else BatchNorm(features))
        transforms.append(
            layer_cls(features, hidden, context_features, order=order, random_degrees=random_degrees,
                      activation=activation, scale=scale, init=init, seed=layer_seed)
        )
    return Compose(transforms)


@register("maf")
class MAF(Flow):
    """Masked Autoregressive Flow: ``layers`` MADE affine layers, each in its own order.

    ``log_prob`` is one MADE pass per layer; sampling is ``D`` sequential steps per
    layer that each compute only the hidden units whose inputs became known
    (about one MADE pass per layer in total).

    Args:
        features: data dimension.
        context_features: conditioning size (conditional MAF: the context feeds every MADE).
        layers: number of autoregressive layers.
        hidden: hidden widths of each MADE.
        activation: hidden nonlinearity.
        permutation: ``"reverse"`` (orders alternate) or ``"random"`` (a random order per layer).
        batch_norm: a :class:`BatchNorm` between consecutive layers (as in the MAF paper; its code also puts one
            after the last layer). In evaluation it uses running averages of the batch statistics (momentum
            0.1), where the paper's code sets them to the statistics of the whole training set.
        base: ``"normal"``, ``"diagonal_normal"``, ``"logistic"`` or ``"mog"``
            (a mixture of ``components`` Gaussians per dimension, independent across dimensions; the paper's
            "MAF MoG" has a MADE MoG base instead, a mixture for each conditional ``p(z_d | z_<d)``).
        components: mixture components when ``base="mog"``.
        scale: log-scale function of each layer (see :class:`MaskedAffineAutoregressive`).
        init: each layer's start, ``"shear"`` or ``"identity"`` (see
            :class:`MaskedAffineAutoregressive`); ``None`` takes the preset's default:
            ``"shear"`` for MAF (it fits 2-D toys better than the identity start: see
            docs/autoreg.md), ``"identity"`` for IAF (a variational posterior that starts
            at its base).
        random_degrees: random hidden degrees in each MADE.
        seed: seed of random orders and degrees.
    """

    layer_class: type = MaskedAffineAutoregressive
    default_init: str = "shear"

    @staticmethod
    def inert_options(options: dict) -> dict[str, str]:
        """The options that do nothing under the others: ``components`` without ``base="mog"``, ``batch_norm`` with
        one layer, ``permutation`` with one feature (one order), ``random_degrees`` where the hidden units can have
        one degree only (two features without a context, as for MADE), and ``seed`` when it draws neither."""
        inert = mixture_inert(options)
        if options["batch_norm"] and options["layers"] == 1:
            inert["batch_norm"] = "it normalises between layers, and layers is 1"
        d, low = options["features"], lowest_hidden_degree(options["context_features"])
        one_order, one_degree = d == 1, d - 1 <= low  # hidden degrees lie in [low, max(D - 1, low)]
        if one_order:
            inert["permutation"] = "a single feature has one order"
        if one_degree:
            inert["random_degrees"] = f"the hidden units of {d} feature(s) can only have degree {low}"
        random_order = options["permutation"] == "random" and not one_order
        if not random_order and not (options["random_degrees"] and not one_degree):
            inert["seed"] = (f"it draws random orders (permutation='random') and random degrees (random_degrees=true), "
                             f"and permutation is {options['permutation']!r} with random_degrees "
                             f"{str(options['random_degrees']).lower()} over {d} feature(s)")
        return inert

    def __init__(
        self,
        features: int,
        context_features: int | None = None,
        layers: int = 5,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        permutation: str = "reverse",
        batch_norm: bool = False,
        base: str = "normal",
        components: int = 10,
        scale: str = "softclamp",
        init: str | None = None,
        random_degrees: bool = False,
        seed: int = 0,
    ):
        transform = _stack(self.layer_class, features, context_features, layers, hidden, activation,
                           permutation, batch_norm, scale, init or self.default_init, random_degrees, seed)
        super().__init__(transform, make_base(base, features, components), context_features)


@register("iaf")
class IAF(MAF):
    """Inverse Autoregressive Flow: the MAF stack with every layer reading the noise side.

    Sampling and ``sample_and_log_prob``/``rsample_and_log_prob`` are one MADE pass
    per layer (the variational-posterior use); ``log_prob`` of outside data takes
    ``D`` sequential steps per layer. Same options as :class:`MAF`; with
    ``batch_norm`` each :class:`BatchNorm` is mirrored too (``Inverse(BatchNorm)``), so in
    training mode it normalises the samples on their way out and its running
    statistics follow them (the MAF's batch-norm normalises the data on their way in).
    An IAF fitted by maximum likelihood runs the other way, so there its batch-norm
    layers keep their starting statistics and act as learned affine maps; a MAF is
    the model for that use.
    """

    layer_class = InverseAutoregressiveAffine
    default_init = "identity"
