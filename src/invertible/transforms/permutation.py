"""Fixed permutations of features (vectors) or channels (images): volume preserving, ``log|det| = 0``."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core import Transform
from ..seeding import seeded_generator
from .shapes import check_channels

__all__ = ["Permutation", "ReversePermutation", "RandomPermutation"]


class Permutation(Transform):
    """``z[:, i] = x[:, perm[i]]`` along dimension 1 (features of a vector, channels of an image)."""

    def __init__(self, perm: Tensor):
        super().__init__()
        values = torch.as_tensor(perm)
        if values.is_complex() or (values.is_floating_point() and not torch.equal(values, values.trunc())):
            raise ValueError(f"perm must hold integers, got {values.tolist()}")
        perm = values.to(torch.long)
        if perm.dim() != 1 or not torch.equal(perm.sort().values, torch.arange(len(perm), device=perm.device)):
            raise ValueError(f"perm must be a permutation of 0..n-1 (a 1-D list of indices), got {perm.tolist()}")
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_channels(x, self.perm.numel(), type(self).__name__)
        return x.index_select(1, self.perm), x.new_zeros(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_channels(z, self.perm.numel(), type(self).__name__)
        return z.index_select(1, self.inverse_perm), z.new_zeros(z.shape[0])


class ReversePermutation(Permutation):
    """Reverses the order of features (RealNVP/MAF's alternation between layers)."""

    def __init__(self, features: int):
        super().__init__(torch.arange(features - 1, -1, -1))


class RandomPermutation(Permutation):
    """A random but fixed permutation, drawn from ``seed`` so the model is reproducible."""

    def __init__(self, features: int, seed: int = 0):
        g = seeded_generator(seed)
        super().__init__(torch.randperm(features, generator=g))
