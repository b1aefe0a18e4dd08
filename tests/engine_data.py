"""Small registered datasets for the engine and command-line tests (no files, no downloads)."""

from __future__ import annotations

import math

import torch

from invertible.data import DataBundle, register_dataset
from invertible.transforms import ElementwiseAffine

SCALE = torch.tensor([1.0, 0.5])
LOC = torch.tensor([1.0, -1.0])


def _gaussian_log_prob(y: torch.Tensor) -> torch.Tensor:
    return torch.distributions.Normal(LOC.to(y), SCALE.to(y)).log_prob(y).sum(-1)


@register_dataset("engine-gauss")
def engine_gauss(seed: int = 0, n: int = 600, features: int = 2, nonfinite: bool = False, conditional: bool = False) -> DataBundle:
    """An axis-aligned 2-D Gaussian with its exact density (or a standard normal in ``features`` dimensions)."""
    g = torch.Generator().manual_seed(seed)
    if features == 2:
        x = torch.randn(n, 2, generator=g) * SCALE + LOC
    else:
        x = torch.randn(n, features, generator=g)
    if nonfinite:
        x[3, 0] = float("nan")
    a, b = int(0.7 * n), int(0.85 * n)
    ctx = torch.randn(n, 3, generator=g) if conditional else None
    return DataBundle(
        "engine-gauss", x[:a], x[a:b], x[b:],
        train_context=None if ctx is None else ctx[:a],
        val_context=None if ctx is None else ctx[a:b],
        test_context=None if ctx is None else ctx[b:],
        log_prob=_gaussian_log_prob if features == 2 and not conditional else None,
    )


def discrete_preprocess(levels: int, features: int) -> ElementwiseAffine:
    """``y = x / levels - 1/2``: raw values in ``[0, levels)`` to model space; ``log|det| = -D log(levels)``."""
    t = ElementwiseAffine(features)
    with torch.no_grad():
        t.log_scale.fill_(-math.log(levels))
        t.shift.fill_(-0.5)
    t.requires_grad_(False)
    return t


@register_dataset("engine-discrete")
def engine_discrete(seed: int = 0, n: int = 500, levels: int = 16, features: int = 3) -> DataBundle:
    """Integers in ``{0..levels-1}`` plus uniform dequantisation noise, scaled into model space."""
    g = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, levels, (n, features), generator=g).float() + torch.rand(n, features, generator=g)
    pre = discrete_preprocess(levels, features)
    with torch.no_grad():
        y, _ = pre(raw)
    a, b = int(0.6 * n), int(0.8 * n)
    return DataBundle("engine-discrete", y[:a], y[a:b], y[b:], levels=levels, preprocess=pre)


@register_dataset("engine-pixels")
def engine_pixels(
    seed: int = 0, n: int = 96, levels: int = 8, raw: bool = True, alpha: float = 0.05, dequantization: str = "uniform"
) -> DataBundle:
    """Random ``1x4x4`` images with ``levels`` grey levels: 16 test, 8 validation, 72 training images."""
    from invertible.data.images import image_bundle

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, levels, (n, 1, 4, 4), generator=g).float().numpy()
    return image_bundle("engine-pixels", images, None, levels, seed, test=16, val_fraction=0.1, alpha=alpha, raw=raw,
                        dequantization=dequantization)


#: The same data under other names: datasets other than the run's own for runs on engine-gauss and engine-pixels.
register_dataset("engine-gauss-other")(engine_gauss)
register_dataset("engine-pixels-other")(engine_pixels)
