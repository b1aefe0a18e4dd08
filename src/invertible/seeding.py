"""Seeded random generators for the random but fixed parts of a model (orders, degrees, permutations, rotations)."""

from __future__ import annotations

import numbers

import torch

__all__ = ["seeded_generator"]

#: The seeds ``torch.Generator.manual_seed`` takes (a negative seed is taken modulo ``2**64``).
SEED_RANGE = (-(2**63), 2**64 - 1)


def seeded_generator(seed: int, name: str = "seed") -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``, or a ``ValueError`` naming ``name`` unless ``seed`` is an
    integer in ``[-2**63, 2**64 - 1]`` (torch's own errors say "Overflow when unpacking long long" or
    "expected a long")."""
    low, high = SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not low <= seed <= high:
        raise ValueError(f"{name} must be an integer in [-2**63, 2**64 - 1], got {seed!r}")
    return torch.Generator().manual_seed(int(seed))
