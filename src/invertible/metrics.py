"""Likelihood in the units image models report: bits per dimension."""

from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor

__all__ = ["bits_per_dim"]


def bits_per_dim(log_prob: Tensor, event_shape: int | Sequence[int]) -> Tensor:
    """``-log p(x) / (d log 2)`` for ``d`` dimensions, from a log-likelihood in nats.

    For ``L``-level data (``L = 256`` for 8-bit images, ``L = 2^n`` for n-bit,
    or any ``L``, e.g. 17 for scikit-learn's digits) pass the log-likelihood
    of the *discrete* values: the model's ``log q(y)`` plus the dequantization
    term of :class:`~invertible.transforms.UniformDequantization` (which
    contains ``-d log L``) and the log-det of any further preprocessing such
    as :class:`~invertible.transforms.Logit`. Then a uniform model scores
    exactly ``log2 L`` bits/dim, and no model can claim fewer bits than the
    data's true entropy (dequantization gives an upper bound).
    """
    d = event_shape if isinstance(event_shape, int) else math.prod(event_shape)
    if d < 1:
        raise ValueError(f"the event must have at least one dimension, got {event_shape}")
    return -log_prob / (d * math.log(2.0))
