"""Glow: multi-scale flow of ActNorm, invertible 1x1 convolutions and affine couplings.

Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
"""

from __future__ import annotations

from typing import Sequence

from ..core import Compose, Flow, Inverse, Transform
from ..distributions import StandardNormal
from ..transforms import (
    ActNorm,
    AdditiveImageCoupling,
    AffineImageCoupling,
    AffinePrior,
    Conv1x1,
    FactorOut,
    LUConv1x1,
    RandomPermutation,
    ReversePermutation,
    Squeeze,
)
from ..transforms.multiscale import PRIORS
from .registry import register

__all__ = ["Glow", "PERMUTATIONS", "COUPLINGS", "image_shape"]

PERMUTATIONS = ("conv1x1_lu", "conv1x1", "reverse", "shuffle")
COUPLINGS = ("affine", "additive")


def image_shape(event_shape: Sequence[int], levels: int) -> tuple[int, int, int]:
    """Check an image event shape ``(C, H, W)`` for ``levels`` squeezes by 2; return it as a tuple."""
    shape = tuple(int(s) for s in event_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image models take event_shape (C, H, W), got {tuple(event_shape)}")
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    f = 2**levels
    if shape[1] % f or shape[2] % f:
        raise ValueError(f"{levels} levels squeeze by {f}: height and width must be divisible by {f}, got {shape[1]}x{shape[2]}")
    return shape  # type: ignore[return-value]


def _permutation(kind: str, channels: int, seed: int) -> Transform:
    if kind == "conv1x1_lu":
        return LUConv1x1(channels, seed=seed)
    if kind == "conv1x1":
        return Conv1x1(channels, seed=seed)
    if kind == "reverse":
        return ReversePermutation(channels)
    return RandomPermutation(channels, seed=seed)


@register("glow")
class Glow(Flow):
    """Glow: ``levels`` scales of ``squeeze -> steps x (ActNorm, 1x1 conv, coupling) -> split``.

    Each level squeezes the image (``C, H, W -> 4C, H/2, W/2``), runs
    ``steps`` flow steps, and factors out half of the channels with a learned
    prior (``prior``: a Gaussian per channel by default, or Glow's ``split2d``
    ``N(mu(z1), sigma(z1))``); the last level ends in a learned prior on what
    is left (``learntop``). Each coupling network is Glow's 3-layer CNN with
    a zero-initialised output (:class:`~invertible.nets.GlowConvNet`). The whole model is a
    single bijection of the ``(C, H, W)`` image onto a ``(C, H, W)`` latent
    with a standard normal base (see :class:`~invertible.transforms.FactorOut`),
    so ``flow.sample(n, temperature=0.7)`` scales every latent at once, as the
    paper's reduced-temperature samples do.

    With ``context_features`` (a one-hot class label) the model is
    class-conditional: the label feeds every coupling conditioner, every
    split prior and the top prior. (Glow's code, ``ycond``, feeds it to the
    top prior only, as a per-channel shift of its mean and log-scale.)

    Args:
        event_shape: ``(C, H, W)``; ``H`` and ``W`` divisible by ``2**levels``.
        context_features: size of the conditioning vector (``None``: unconditional).
        levels: number of scales ``L``.
        steps: flow steps per scale ``K``.
        hidden: channels of the coupling networks.
        coupling: ``"affine"`` or ``"additive"``.
        permutation: ``"conv1x1_lu"``, ``"conv1x1"``, ``"reverse"`` or ``"shuffle"``.
        scale: log-scale function of affine couplings (``"sigmoid"`` is Glow's code).
        prior: the split and top priors: ``"channel"`` (the default: a learned
            Gaussian per channel for every factored-out half and on top, as
            normflows' ``GlowBase``), ``"conditional"`` (Glow's code: each split
            prior a convolution of the kept half, a learned Gaussian per element
            on top) or ``"fixed"`` (standard normal). On small data sets the
            conditional prior fits the training set better and the test set
            worse (scikit-learn's digits: +0.010 to 0.012 bits/dim at test, ``docs/images.md``).
        output_gain: multiply each coupling network's output by a learned
            ``exp(3 logs)`` as Glow's code does (off by default; on digits it
            costs 0.010 to 0.016 bits/dim at test, see :class:`~invertible.nets.GlowConvNet`).
    """

    @staticmethod
    def inert_options(options: dict) -> dict[str, str]:
        """``scale`` with additive couplings."""
        if options["coupling"] == "affine":
            return {}
        return {"scale": f"it is the log-scale function of affine couplings, and coupling is {options['coupling']!r}"}

    def __init__(
        self,
        event_shape: Sequence[int],
        context_features: int | None = None,
        levels: int = 2,
        steps: int = 8,
        hidden: int = 64,
        coupling: str = "affine",
        permutation: str = "conv1x1_lu",
        scale: str = "sigmoid",
        prior: str = "channel",
        output_gain: bool = False,
    ):
        shape = image_shape(event_shape, levels)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if coupling not in COUPLINGS:
            raise ValueError(f"unknown coupling {coupling!r}; choose from {COUPLINGS}")
        if permutation not in PERMUTATIONS:
            raise ValueError(f"unknown permutation {permutation!r}; choose from {PERMUTATIONS}")
        if prior not in PRIORS:
            raise ValueError(f"unknown prior {prior!r}; choose from {PRIORS}")

        def step(c: int, h: int, w: int, seed: int) -> list[Transform]:
            net = {"context_features": context_features, "output_gain": output_gain}
            if coupling == "affine":
                layer = AffineImageCoupling((c, h, w), "channel", 0, hidden, scale=scale, **net)
            else:
                layer = AdditiveImageCoupling((c, h, w), "channel", 0, hidden, **net)
            return [ActNorm(c), _permutation(permutation, c, seed), layer]

        def level(i: int, c: int, h: int, w: int) -> Transform:
            c, h, w = 4 * c, h // 2, w // 2
            body: list[Transform] = [Squeeze()]
            for k in range(steps):
                body += step(c, h, w, seed=1000 * i + k)
            if i == levels - 1:
                if prior != "fixed":
                    body.append(AffinePrior((c, h, w) if prior == "conditional" else (c, 1, 1), context_features))
            else:
                keep = c // 2
                body.append(FactorOut(c, keep, level(i + 1, keep, h, w), prior, context_features))
            body.append(Inverse(Squeeze()))
            return Compose(body)

        super().__init__(level(0, *shape), StandardNormal(shape), context_features)
