"""Cases for the autoregressive family: MAF/IAF layers, splines, and the MADE/MAF/IAF/NSF presets."""

from invertible.transforms import BatchNorm, InverseAutoregressiveAffine, MaskedAffineAutoregressive

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

CASES.append(Case("batch_norm", lambda c: BatchNorm(4), (4,)))

PRESETS = [
    PresetCase("maf", {"features": 3, "layers": 2, "hidden": [12], "batch_norm": True}),
    PresetCase("iaf", {"features": 3, "layers": 2, "hidden": [12], "permutation": "random", "base": "mog", "components": 3}),
]
