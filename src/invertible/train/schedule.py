"""Learning-rate schedule: linear warm-up, then cosine decay (Loshchilov & Hutter, SGDR, ICLR 2017)."""

from __future__ import annotations

import math

__all__ = ["lr_factor"]


def lr_factor(step: int, steps: int, warmup: int, schedule: str, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate for optimisation step ``step`` (0-based).

    Warm-up: ``(step + 1) / warmup`` for ``step < warmup``. Then ``"cosine"`` gives
    ``r + (1 - r) (1 + cos(pi t)) / 2`` with ``t = (step - warmup) / (steps - warmup)``
    and ``r = min_ratio``; ``"constant"`` gives 1.
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or steps <= warmup:
        return 1.0
    t = min(1.0, (step - warmup) / (steps - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
