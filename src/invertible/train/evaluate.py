"""Likelihoods in the raw data space: NLL in nats, KL gap, bits per dimension.

A :class:`~invertible.data.DataBundle` stores data already mapped into the
model's space by ``preprocess`` (standardisation; dequantisation + logit for
images). For raw data ``x`` and ``y = preprocess(x)``,

    log p(x) = log q(y) + log|det dy/dx| = log q(y) - log|det dx/dy|,

and ``log|det dx/dy|`` is the log-det of ``preprocess.inverse`` at ``y``, so the
raw-space likelihood needs only the stored data. Bundles with ``raw=True``
(images) store ``x`` itself and a stochastic ``preprocess`` (dequantization):
there ``y, ladj = preprocess(x)`` is drawn per batch, and ``log q(y) + ladj``
is a one-sample estimate of the dequantization bound on ``log P(x)``.
Evaluation draws that noise from fixed seeds, so every validation sees the
same noise and the test figure is reproducible; averaging over ``draws``
noise draws lowers its variance and keeps it an upper bound on the bits/dim.

Bits per dimension for discrete data with ``levels`` values per dimension:
``bpd = nll / (D ln 2)`` where the raw space of such data is the integer
grid ``{0, ..., levels - 1}`` plus uniform dequantisation noise, i.e. the
cube ``[0, levels)^D`` with unit-volume bins; the continuous NLL there is an
upper bound on the discrete code length (Theis et al. 2016). A preprocess
that first divides by ``levels`` carries the ``D log(levels)`` term in its log-det.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor

from ..core import Flow
from ..data import DataBundle

__all__ = ["preprocess_ladj", "evaluate_split", "split_tensors", "to_model_space", "seeded_rng", "EVAL_NOISE_SEED"]

#: Seed of the dequantization noise of evaluation draw 0 (draw ``k`` uses ``EVAL_NOISE_SEED + k``).
EVAL_NOISE_SEED = 0


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


@contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with torch's generator (CPU, and ``device`` if CUDA) seeded by ``seed``, restored afterwards."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def to_model_space(bundle: DataBundle, x: Tensor) -> tuple[Tensor, Tensor]:
    """A batch ``x`` of a split as the model's input ``y`` and ``log|det dy/dx|`` at it.

    For ``raw`` bundles ``y, ladj = preprocess(x)`` (dequantization noise from
    torch's generator); otherwise the split is already ``y`` and the log-det
    comes from ``preprocess.inverse`` (:func:`preprocess_ladj`).
    """
    if bundle.raw:
        return bundle.preprocess.to(x.device)(x)
    return x, preprocess_ladj(bundle, x)


@torch.no_grad()
def evaluate_split(
    flow: Flow, bundle: DataBundle, split: str, batch_size: int, device: torch.device, draws: int = 1
) -> dict[str, float]:
    """Mean NLL (nats, raw space) of a split, plus ``kl_gap`` and bits/dim where they are defined.

    ``kl_gap = mean_i [log p(x_i) - log q(x_i)]`` over the split estimates
    ``KL(p || q)`` when the data density ``p`` is known (``bundle.log_prob``).
    For ``raw`` bundles the NLL is averaged over ``draws`` seeded
    dequantization draws (seeds ``EVAL_NOISE_SEED + k``).
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    data, context = split_tensors(bundle, split)
    was_training = flow.training
    flow.eval()
    total, gap, n = 0.0, 0.0, data.shape[0]
    if n == 0:
        raise ValueError(f"the {split} split of dataset {bundle.name!r} is empty")
    draws = draws if bundle.raw else 1
    try:
        for k in range(draws):
            with seeded_rng(EVAL_NOISE_SEED + k, device):
                for start in range(0, n, batch_size):
                    y, ladj = to_model_space(bundle, data[start : start + batch_size].to(device))
                    c = None if context is None else context[start : start + batch_size].to(device)
                    log_q = flow.log_prob(y, c).double()
                    total -= (log_q + ladj.double()).sum().item()
                    if bundle.log_prob is not None:
                        gap += (bundle.log_prob(y).double() - log_q).sum().item()
    finally:
        flow.train(was_training)
    nll = total / (n * draws)
    gap /= draws
    out = {f"{split}_nll": nll}
    if bundle.log_prob is not None:
        out["kl_gap"] = gap / n
    if bundle.levels is not None:
        dims = math.prod(bundle.event_shape)
        out[f"{split}_bpd"] = nll / (dims * math.log(2))
    return out
