"""Cases for the autoregressive family: MAF/IAF layers, splines, and the MADE/MAF/IAF/NSF presets."""

from invertible.transforms import InverseAutoregressiveAffine, MaskedAffineAutoregressive

from . import Case

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
