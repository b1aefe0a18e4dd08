"""Cases for the image transforms (small shapes so the autograd Jacobian stays cheap) and image presets."""

import torch

from invertible.core import Compose, Inverse
from invertible.transforms import (
    AdditiveImageCoupling,
    AffineImageCoupling,
    AffinePrior,
    BatchNorm,
    BlockDiagonalLinear,
    Conv1x1,
    DiagonalLinear,
    FactorOut,
    FullLinear,
    LUConv1x1,
    PeriodicConv,
    Reshape,
    Squeeze,
    TriangularLinear,
    UniformDequantization,
    VariationalDequantization,
)

from . import Case, PresetCase


def pixels(levels: int):
    """Integer pixel values in [0, levels - 1], as floats."""

    def draw(shape, g):
        return torch.randint(0, levels, shape, generator=g).double()

    return draw


def unit(shape, g):
    return torch.rand(shape, generator=g, dtype=torch.float64) * 0.98 + 0.01


def _multiscale(c, prior: str):
    # (2, 4, 4): keep 1 channel, squeeze it to (4, 2, 2), couple, unsqueeze back
    inner = Compose(Squeeze(), AffineImageCoupling((4, 2, 2), "channel", 1, hidden=4, context_features=c), Inverse(Squeeze()))
    return FactorOut(2, 1, inner, prior=prior, context_features=c)


CASES = [
    # the suite compares shapes of x and z, so shape-changing maps are tested wrapped in their inverse
    Case("squeeze", lambda c: Compose(Squeeze(), LUConv1x1(8), Inverse(Squeeze())), (2, 4, 4)),
    Case("unsqueeze", lambda c: Compose(Inverse(Squeeze()), PeriodicConv(1), Squeeze()), (4, 2, 2), perturb=0.1),
    Case(
        "reshape_image_to_vector",
        lambda c: Compose(Reshape((2, 2, 2), (8,)), FullLinear(8), Inverse(Reshape((2, 2, 2), (8,)))),
        (2, 2, 2),
    ),
    Case("factor_out_learned_prior", lambda c: _multiscale(c, "conditional"), (2, 4, 4), conditional=True),
    Case("factor_out_channel_prior", lambda c: _multiscale(c, "channel"), (2, 4, 4), conditional=True),
    Case("factor_out_fixed_split", lambda c: _multiscale(c, "fixed"), (2, 4, 4), conditional=True),
    Case("affine_prior", lambda c: AffinePrior((2, 2, 2), context_features=c), (2, 2, 2), conditional=True),
    Case("affine_prior_per_channel", lambda c: AffinePrior((2, 1, 1), context_features=c), (2, 2, 2), conditional=True),
    *[
        Case(
            f"additive_image_coupling_{mask}_{parity}",
            lambda c, mask=mask, parity=parity: AdditiveImageCoupling((2, 2, 4), mask, parity, hidden=4, context_features=c),
            (2, 2, 4),
            conditional=True,
        )
        for mask in ("checkerboard", "channel")
        for parity in (0, 1)
    ],
    *[
        Case(
            f"affine_image_coupling_{mask}_{net}_{scale}",
            lambda c, mask=mask, net=net, scale=scale: AffineImageCoupling(
                (3, 2, 2), mask, 1, hidden=4, net=net, blocks=1, context_features=c, scale=scale
            ),
            (3, 2, 2),
            conditional=True,
        )
        for mask, net, scale in [
            ("checkerboard", "resnet", "softclamp"),
            ("channel", "glow", "sigmoid"),
            ("checkerboard", "glow", "exp"),
            ("channel", "resnet", "softclamp"),
        ]
    ],
    Case("conv1x1", lambda c: Conv1x1(3, seed=1), (3, 2, 2)),
    Case("lu_conv1x1", lambda c: LUConv1x1(3, seed=2), (3, 2, 2)),
    Case("periodic_conv", lambda c: PeriodicConv(2, 3), (2, 3, 3), perturb=0.1),
    Case("periodic_conv_single_channel", lambda c: PeriodicConv(1, 3), (1, 3, 5), perturb=0.1),
    Case("batchnorm_image", lambda c: BatchNorm(2), (2, 3, 3)),
    Case("batchnorm_vector", lambda c: BatchNorm(4), (4,)),
    Case("full_linear", lambda c: FullLinear(4, seed=3), (4,)),
    Case("diagonal_linear", lambda c: DiagonalLinear(4), (4,)),
    Case("triangular_linear_lower", lambda c: TriangularLinear(4), (4,)),
    Case("triangular_linear_upper", lambda c: TriangularLinear(4, lower=False), (4,)),
    Case("block_diagonal_linear", lambda c: BlockDiagonalLinear(6, 2), (6,)),
    Case("uniform_dequantization", lambda c: UniformDequantization(17), (1, 2, 2), x=pixels(17), bijective=False),
    Case(
        "variational_dequantization",
        lambda c: VariationalDequantization(5, (2, 2, 2), steps=2, hidden=4),
        (2, 2, 2),
        x=pixels(5),
        bijective=False,
        atol=1e-5,
    ),
    ]

PRESETS = [
    PresetCase("nice", {"event_shape": [1, 2, 4], "layers": 2, "hidden": [4]}),
    PresetCase("realnvp", {"event_shape": [1, 4, 4], "levels": 2, "hidden_channels": 4, "blocks": 1, "actnorm": True}),
    PresetCase("glow", {"event_shape": [1, 4, 4], "levels": 2, "steps": 1, "hidden": 4}),
]
