"""Bijections, one module per family; each follows the :class:`invertible.Transform` contract."""

from ..core import Compose, Inverse, Transform
from .autoregressive import InverseAutoregressiveAffine, MaskedAffineAutoregressive
from .batchnorm import BatchNorm
from .coupling import AdditiveCoupling, AffineCoupling, alternating_mask
from .elementwise import ElementwiseAffine, LeakyReLU, Logit, Sigmoid, SmoothLeakyELU
from .linear import LULinear
from .normalization import ActNorm
from .spline import MaskedRQSAutoregressive, RQSCoupling, rational_quadratic_spline
from .permutation import Permutation, RandomPermutation, ReversePermutation

__all__ = [
    "Transform",
    "Compose",
    "Inverse",
    "AdditiveCoupling",
    "AffineCoupling",
    "alternating_mask",
    "MaskedAffineAutoregressive",
    "InverseAutoregressiveAffine",
    "ElementwiseAffine",
    "LeakyReLU",
    "SmoothLeakyELU",
    "Sigmoid",
    "Logit",
    "LULinear",
    "ActNorm",
    "BatchNorm",
    "RQSCoupling",
    "MaskedRQSAutoregressive",
    "rational_quadratic_spline",
    "Permutation",
    "ReversePermutation",
    "RandomPermutation",
]
