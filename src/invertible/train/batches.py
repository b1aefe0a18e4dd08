"""Reproducible mini-batches: the batch of step ``k`` depends only on the seed and ``k``.

Each epoch draws a permutation from a generator seeded with ``(seed, epoch)``,
so a run resumed at any step sees exactly the batches an uninterrupted run
sees. Under data parallelism every process draws the same global batch and
keeps its own contiguous shard of it. Random preprocessing of a batch
(dequantization noise) is drawn from :meth:`BatchPlan.noise_seed`, which
depends only on the seed, the step and the process, for the same reason.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["BatchPlan"]

#: Keeps the noise seeds apart from the epoch permutations' seeds.
_NOISE_TAG = 0x6E6F6973


class BatchPlan:
    """Index batches for ``n`` examples, ``batch_size`` per step, split over ``world_size`` processes.

    The last incomplete batch of an epoch is dropped, so every step has the same size. The indices are on
    ``device``: each epoch's permutation is drawn on the CPU and moved there once (a copy per step would make
    every step wait for the GPU).
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu"):
        if batch_size > n:
            raise ValueError(f"batch_size ({batch_size}) exceeds the {n} training examples: use a batch size of at most {n}")
        if batch_size % world_size:
            raise ValueError(f"batch_size ({batch_size}) must be divisible by the number of processes ({world_size})")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.device = rank, world_size, torch.device(device)
        self.per_epoch = n // batch_size
        self._epoch = -1
        self._perm: Tensor | None = None

    def _permutation(self, epoch: int) -> Tensor:
        if epoch != self._epoch:
            state = np.random.SeedSequence([self.seed, epoch]).generate_state(2, dtype=np.uint32)
            g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
            self._perm = torch.randperm(self.n, generator=g).to(self.device)
            self._epoch = epoch
        assert self._perm is not None
        return self._perm

    def indices(self, step: int) -> Tensor:
        """This process's example indices for optimisation step ``step`` (0-based)."""
        epoch, i = divmod(step, self.per_epoch)
        batch = self._permutation(epoch)[i * self.batch_size : (i + 1) * self.batch_size]
        shard = self.batch_size // self.world_size
        return batch[self.rank * shard : (self.rank + 1) * shard]

    def noise_seed(self, step: int) -> int:
        """Seed of the random preprocessing (dequantization noise) of this process's batch at ``step``."""
        state = np.random.SeedSequence([self.seed, step, self.rank, _NOISE_TAG]).generate_state(2, dtype=np.uint32)
        return int(state[0]) << 31 | int(state[1]) >> 1
