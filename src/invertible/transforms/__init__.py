"""Bijections, one module per family; each follows the :class:`invertible.Transform` contract."""

from ..core import Compose, Inverse, Transform
from .autoregressive import InverseAutoregressiveAffine, MaskedAffineAutoregressive
from .conv import Conv1x1, LUConv1x1, PeriodicConv
from .coupling import AdditiveCoupling, AffineCoupling, alternating_mask
from .dequantization import UniformDequantization, VariationalDequantization
from .elementwise import ElementwiseAffine, LeakyReLU, Logit, Sigmoid, SmoothLeakyELU
from .image_coupling import AdditiveImageCoupling, AffineImageCoupling, channel_mask, checkerboard_mask
from .linear import BlockDiagonalLinear, DiagonalLinear, FullLinear, LULinear, TriangularLinear
from .multiscale import AffinePrior, FactorOut
from .normalization import ActNorm, BatchNorm
from .spline import MaskedRQSAutoregressive, RQSCoupling, rational_quadratic_spline
from .permutation import Permutation, RandomPermutation, ReversePermutation
from .reshape import Reshape, Squeeze
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
    "MaskedAffineAutoregressive",
    "InverseAutoregressiveAffine",
    "AdditiveImageCoupling",
    "AffineImageCoupling",
    "checkerboard_mask",
    "channel_mask",
    "ElementwiseAffine",
    "LeakyReLU",
    "SmoothLeakyELU",
    "Sigmoid",
    "Logit",
    "LULinear",
    "FullLinear",
    "DiagonalLinear",
    "TriangularLinear",
    "BlockDiagonalLinear",
    "Conv1x1",
    "LUConv1x1",
    "PeriodicConv",
    "ActNorm",
    "BatchNorm",
    "RQSCoupling",
    "MaskedRQSAutoregressive",
    "rational_quadratic_spline",
    "Permutation",
    "ReversePermutation",
    "RandomPermutation",
    "Squeeze",
    "Reshape",
    "FactorOut",
    "AffinePrior",
    "UniformDequantization",
    "VariationalDequantization",
    "Planar",
    "Radial",
    "Sylvester",
]
