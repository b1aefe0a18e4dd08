"""Bijections, one module per family; each follows the :class:`invertible.Transform` contract."""

from ..core import Compose, Inverse, Transform
from .coupling import AdditiveCoupling, AffineCoupling, alternating_mask
from .elementwise import ElementwiseAffine, LeakyReLU, Logit, Sigmoid, SmoothLeakyELU
from .linear import LULinear
from .normalization import ActNorm
from .permutation import Permutation, RandomPermutation, ReversePermutation
from .planar import Planar
from .radial import Radial
from .sylvester import Sylvester

__all__ = [
    "Transform",
    "Compose",
    "Inverse",
    "AdditiveCoupling",
    "AffineCoupling",
    "alternating_mask",
    "ElementwiseAffine",
    "LeakyReLU",
    "SmoothLeakyELU",
    "Sigmoid",
    "Logit",
    "LULinear",
    "ActNorm",
    "Permutation",
    "ReversePermutation",
    "RandomPermutation",
    "Planar",
    "Radial",
    "Sylvester",
]
