"""Cases for the variational-inference transforms (planar, radial, Sylvester), free and amortised."""

from invertible.core import Compose, Inverse
from invertible.transforms import Planar, Radial, Sylvester

from . import Case, PresetCase

CASES = [
    # planar layers start as the identity (u_hat = 0): perturb enough to test a real warp
    Case("planar", lambda c: Planar(3, context_features=c), (3,), conditional=True, perturb=0.5),
    Case("planar_1d", lambda c: Planar(1), (1,)),
    Case("planar_stack", lambda c: Compose(Planar(2, c), Planar(2, c), Planar(2, c)), (2,), conditional=True, perturb=0.5),
    Case("planar_inverse", lambda c: Inverse(Planar(4, context_features=c)), (4,), conditional=True, perturb=0.5),
    Case("radial", lambda c: Radial(3, context_features=c), (3,), conditional=True),
    Case("radial_1d", lambda c: Radial(1), (1,)),
    Case("sylvester_orthogonal", lambda c: Sylvester(4, c, "orthogonal"), (4,), conditional=True),
    Case("sylvester_bottleneck", lambda c: Sylvester(5, c, "orthogonal", bottleneck=2), (5,), conditional=True),
    Case("sylvester_householder", lambda c: Sylvester(3, c, "householder", reflections=2), (3,), conditional=True),
]

PRESETS = [
    PresetCase("planar", {"features": 2, "layers": 4}),
    PresetCase("radial", {"features": 3, "layers": 3, "base": "diagonal_normal"}),
    PresetCase("sylvester", {"features": 3, "layers": 2, "variant": "householder", "reflections": 2}),
]
