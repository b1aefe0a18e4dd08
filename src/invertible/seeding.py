"""Seeds and seeded random generators: of the datasets' splits, and of the random but fixed parts of a model
(orders, degrees, permutations, rotations)."""

from __future__ import annotations

import numbers
from typing import Any

import torch

__all__ = ["check_seed", "seeded_generator", "part_seeds", "SEED_RANGE"]

#: The seeds ``torch.Generator.manual_seed`` takes (a negative seed is taken modulo ``2**64``).
SEED_RANGE = (-(2**63), 2**64 - 1)


def check_seed(seed: Any, name: str = "seed", negative: bool = False) -> int:
    """``seed`` as an ``int``, or a ``ValueError`` naming ``name`` unless it is an integer in ``[0, 2**64 - 1]``
    (with ``negative``, in ``[-2**63, 2**64 - 1]``, all that ``torch.Generator.manual_seed`` takes).

    A float is not truncated (``2.5`` would draw seed 2's numbers) and ``True`` is no seed. A dataset's seed
    must not be negative: torch wraps it modulo ``2**64`` (``-1`` would draw seed ``2**64 - 1``'s data) and
    ``numpy.random.default_rng`` refuses it. torch's own errors say "Overflow when unpacking long long" or
    "expected a long".
    """
    low, high = SEED_RANGE if negative else (0, SEED_RANGE[1])
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not low <= seed <= high:
        raise ValueError(f"{name} must be an integer in [{'-2**63' if negative else 0}, 2**64 - 1], got {seed!r}")
    return int(seed)


def seeded_generator(seed: int, name: str = "seed") -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``, any seed torch takes (:func:`check_seed` with ``negative``)."""
    return torch.Generator().manual_seed(check_seed(seed, name, negative=True))


def part_seeds(seed: int, parts: int, name: str = "seed") -> list[int]:
    """Seeds of the ``parts`` random parts of one model (its layers' orders, a layer's blocks) seeded with ``seed``:
    the first ``parts`` draws of a generator seeded with ``seed``.

    Seeding part ``i`` with ``seed + i`` would give seed ``s + 1``'s part ``i`` the numbers of seed ``s``'s part
    ``i + 1``, so models of consecutive seeds would share all their parts but one.
    """
    return torch.randint(2**62, (parts,), generator=seeded_generator(seed, name)).tolist()
