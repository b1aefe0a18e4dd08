"""Cases for the autoregressive family: MAF/IAF layers, splines, and the MADE/MAF/IAF/NSF presets."""

from invertible.transforms import (
    InverseAutoregressiveAffine,
    MaskedAffineAutoregressive,
    MaskedRQSAutoregressive,
    RQSCoupling,
    alternating_mask,
)

from . import Case, PresetCase

CASES = [
    Case(
        "maf_affine",
        lambda c: MaskedAffineAutoregressive(4, hidden=(10, 10), context_features=c, order="random", seed=3),
        (4,),
        conditional=True,
    ),
    Case(
        "maf_affine_random_degrees",
        lambda c: MaskedAffineAutoregressive(5, hidden=(16, 12, 16), context_features=c, random_degrees=True, scale="exp", seed=1),
        (5,),
        conditional=True,
    ),
    Case(
        "iaf_affine",
        lambda c: InverseAutoregressiveAffine(4, hidden=(10,), context_features=c, order="reverse", scale="sigmoid"),
        (4,),
        conditional=True,
    ),
]

CASES += [
    # perturb 0.5 on a bound of 1.5: inputs of scale up to 3 fall in both the spline and the tails
    Case(
        "rqs_coupling",
        lambda c: RQSCoupling(alternating_mask(4), hidden=(12,), context_features=c, bins=5, bound=1.5),
        (4,),
        conditional=True,
        perturb=0.5,
    ),
    Case(
        "rqs_autoregressive",
        lambda c: MaskedRQSAutoregressive(3, hidden=(12, 12), context_features=c, order="reverse", bins=4, bound=1.5),
        (3,),
        conditional=True,
        perturb=0.5,
    ),
]

PRESETS = [
    PresetCase("made", {"features": 3, "hidden": [12, 12], "order": "reverse"}),
    PresetCase("bernoulli_made", {"features": 3, "hidden": [8]}),
    PresetCase("nsf", {"features": 3, "layers": 2, "hidden": [12], "bins": 4, "bound": 2.0}),
    PresetCase("nsf", {"features": 4, "layers": 2, "hidden": [12], "bins": 3, "kind": "coupling", "permutation": "random"}),
    PresetCase("maf", {"features": 3, "layers": 2, "hidden": [12], "batch_norm": True}),
    PresetCase("iaf", {"features": 3, "layers": 2, "hidden": [12], "permutation": "random", "base": "mog", "components": 3}),
    PresetCase("iaf", {"features": 3, "layers": 2, "hidden": [12], "batch_norm": True}),
]
