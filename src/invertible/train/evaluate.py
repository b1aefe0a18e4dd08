"""Likelihoods in the raw data space: NLL in nats, KL gap, bits per dimension.

A :class:`~invertible.data.DataBundle` stores data already mapped into the
model's space by ``preprocess`` (standardisation; dequantisation + logit for
images). For raw data ``x`` and ``y = preprocess(x)``,

    log p(x) = log q(y) + log|det dy/dx| = log q(y) - log|det dx/dy|,

and ``log|det dx/dy|`` is the log-det of ``preprocess.inverse`` at ``y``, so the
raw-space likelihood needs only the stored data.

Bits per dimension for discrete data with ``levels`` values per dimension:
``bpd = nll / (D ln 2)`` where the raw space of such data is the integer
grid ``{0, ..., levels - 1}`` plus uniform dequantisation noise, i.e. the
cube ``[0, levels)^D`` with unit-volume bins; the continuous NLL there is an
upper bound on the discrete code length (Theis et al. 2016). A preprocess
that first divides by ``levels`` carries the ``D log(levels)`` term in its log-det.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core import Flow
from ..data import DataBundle

__all__ = ["preprocess_ladj", "evaluate_split", "split_tensors"]


def split_tensors(bundle: DataBundle, split: str) -> tuple[Tensor, Tensor | None]:
    """The data and context tensors of ``split`` (``train``, ``val`` or ``test``)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    return getattr(bundle, split), getattr(bundle, f"{split}_context")


@torch.no_grad()
def preprocess_ladj(bundle: DataBundle, y: Tensor) -> Tensor:
    """``log|det dy/dx|`` of the preprocessing at raw ``x = preprocess^{-1}(y)``; zeros without one."""
    if bundle.preprocess is None:
        return y.new_zeros(y.shape[0])
    _, ladj_inverse = bundle.preprocess.to(y.device).inverse(y)
    return -ladj_inverse


@torch.no_grad()
def evaluate_split(flow: Flow, bundle: DataBundle, split: str, batch_size: int, device: torch.device) -> dict[str, float]:
    """Mean NLL (nats, raw space) of a split, plus ``kl_gap`` and bits/dim where they are defined.

    ``kl_gap = mean_i [log p(x_i) - log q(x_i)]`` over the split estimates
    ``KL(p || q)`` when the data density ``p`` is known (``bundle.log_prob``).
    """
    data, context = split_tensors(bundle, split)
    was_training = flow.training
    flow.eval()
    total, gap, n = 0.0, 0.0, data.shape[0]
    if n == 0:
        raise ValueError(f"the {split} split of dataset {bundle.name!r} is empty")
    try:
        for start in range(0, n, batch_size):
            y = data[start : start + batch_size].to(device)
            c = None if context is None else context[start : start + batch_size].to(device)
            log_q = flow.log_prob(y, c).double()
            total -= (log_q + preprocess_ladj(bundle, y).double()).sum().item()
            if bundle.log_prob is not None:
                gap += (bundle.log_prob(y).double() - log_q).sum().item()
    finally:
        flow.train(was_training)
    nll = total / n
    out = {f"{split}_nll": nll}
    if bundle.log_prob is not None:
        out["kl_gap"] = gap / n
    if bundle.levels is not None:
        dims = math.prod(bundle.event_shape)
        out[f"{split}_bpd"] = nll / (dims * math.log(2))
    return out
