"""Cases for the foundation's transforms and presets."""

import torch

from invertible.core import Compose, Inverse
from invertible.transforms import (
    ActNorm,
    AdditiveCoupling,
    AffineCoupling,
    ElementwiseAffine,
    LeakyReLU,
    Logit,
    LULinear,
    Permutation,
    RandomPermutation,
    ReversePermutation,
    Sigmoid,
    SmoothLeakyELU,
    alternating_mask,
)

from . import Case, PresetCase, unit_interval

CASES = [
    Case("elementwise_affine", lambda c: ElementwiseAffine(5), (5,)),
    Case("elementwise_affine_image", lambda c: ElementwiseAffine((2, 3, 3), shift=False), (2, 3, 3)),
    Case("leaky_relu", lambda c: LeakyReLU(0.3), (4,)),
    Case("smooth_leaky_elu", lambda c: SmoothLeakyELU(0.2), (4,)),
    Case("sigmoid", lambda c: Sigmoid(), (3,), z=unit_interval),
    Case("logit", lambda c: Logit(0.05), (3,), x=unit_interval),
    Case("permutation", lambda c: Permutation(torch.tensor([2, 0, 1])), (3,)),
    Case("reverse_permutation", lambda c: ReversePermutation(5), (5,)),
    Case("random_permutation_channels", lambda c: RandomPermutation(3, seed=1), (3, 2, 2)),
    Case("lu_linear", lambda c: LULinear(5), (5,)),
    Case("actnorm", lambda c: ActNorm(4), (4,)),
    Case("actnorm_image", lambda c: ActNorm(2), (2, 3, 3)),
    Case(
        "additive_coupling",
        lambda c: AdditiveCoupling(alternating_mask(5), hidden=(8,), context_features=c),
        (5,),
        conditional=True,
    ),
    *[
        Case(
            f"affine_coupling_{scale}",
            lambda c, scale=scale: AffineCoupling(alternating_mask(4, 1), hidden=(8, 8), context_features=c, scale=scale),
            (4,),
            conditional=True,
        )
        for scale in ("softclamp", "sigmoid", "exp")
    ],
    Case(
        "compose",
        lambda c: Compose(LULinear(3), AffineCoupling(torch.tensor([True, False, True]), hidden=(8,), context_features=c)),
        (3,),
        conditional=True,
    ),
    Case("inverse", lambda c: Inverse(AffineCoupling(alternating_mask(4), hidden=(8,), context_features=c)), (4,), conditional=True),
    # masks of one leading and one trailing block split with views (the alternating ones above interleave)
    *[
        Case(
            f"affine_coupling_blocks_{name}",
            lambda c, mask=mask: AffineCoupling(torch.tensor(mask), hidden=(8,), context_features=c),
            (len(mask),),
            conditional=True,
        )
        for name, mask in (("identity_first", [True, True, False, False, False]), ("identity_last", [False, False, True]))
    ],
]

PRESETS = [
    PresetCase("nice", {"features": 4, "layers": 3, "hidden": [8]}),
    PresetCase("realnvp", {"features": 3, "layers": 3, "hidden": [8], "actnorm": True}),
]
