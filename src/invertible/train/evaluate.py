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
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from ..core import Flow, Transform, flow_dtype
from ..data import SPLITS as BUNDLE_SPLITS
from ..data import DataBundle

__all__ = ["evaluation_mode", "preprocess_ladj", "evaluate_split", "split_log_densities", "row_log_densities", "row_latents", "model_samples", "summarize", "split_tensors", "to_model_space",
           "seeded_rng", "EVAL_NOISE_SEED", "SPLITS"]

#: Seed of the dequantization noise of evaluation draw 0 (draw ``k`` uses ``EVAL_NOISE_SEED + k``).
EVAL_NOISE_SEED = 0
#: The splits :func:`split_tensors` knows: a bundle's three, and ``all`` of them together.
SPLITS = (*BUNDLE_SPLITS, "all")


def split_tensors(bundle: DataBundle, split: str) -> tuple[Tensor, Tensor | None]:
    """The data and context tensors of ``split``: ``train``, ``val``, ``test``, or ``all`` (the three together,
    in that order)."""
    if split == "all":
        parts = [split_tensors(bundle, s) for s in BUNDLE_SPLITS]
        context = None if parts[0][1] is None else torch.cat([c for _, c in parts])
        return torch.cat([x for x, _ in parts]), context
    if split not in SPLITS:
        raise ValueError(f"split must be {', '.join(SPLITS[:-1])} or {SPLITS[-1]}, got {split!r}")
    return getattr(bundle, split), getattr(bundle, f"{split}_context")


@torch.no_grad()
def preprocess_ladj(bundle: DataBundle, y: Tensor) -> Tensor:
    """``log|det dy/dx|`` of the preprocessing at raw ``x = preprocess^{-1}(y)``; zeros without one."""
    return _inverse_ladj(bundle.preprocess, y)


def _inverse_ladj(preprocess: Transform | None, y: Tensor) -> Tensor:
    """``log|det dy/dx|`` of ``preprocess`` at raw ``x = preprocess^{-1}(y)``; zeros for ``None``."""
    if preprocess is None:
        return y.new_zeros(y.shape[0])
    _, ladj_inverse = preprocess.to(y.device).inverse(y)
    return -ladj_inverse


@contextmanager
def evaluation_mode(module: torch.nn.Module) -> Iterator[None]:
    """Run the block with ``module`` in evaluation mode (an ensemble's average, batch norm's running averages),
    and give it back in the mode it came in."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


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
    return _model_input(bundle.preprocess, bundle.raw, x)


def _model_input(preprocess: Transform | None, raw: bool, x: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`to_model_space` of a batch ``x`` of data preprocessed by ``preprocess`` (per batch if ``raw``)."""
    if raw:
        return preprocess.to(x.device)(x)
    return x, _inverse_ladj(preprocess, x)


@torch.no_grad()
def row_log_densities(
    flow: Flow,
    data: Tensor,
    context: Tensor | None,
    preprocess: Transform | None,
    raw: bool,
    batch_size: int,
    device: torch.device,
    draws: int = 1,
    log_prob: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Per-row ``log p(x)`` (nats, raw space, float64 on the CPU) of the rows ``data`` (with their ``context``),
    and per-row ``log p_data(x) - log q(x)`` where the data density ``log_prob`` is given, else ``None``.

    ``data`` are in the model's space, mapped there by ``preprocess``, or, with ``raw``, the raw values that
    ``preprocess`` maps there per batch (dequantization): each row's values are then averaged over ``draws``
    seeded dequantization draws (seeds ``EVAL_NOISE_SEED + k``), so they do not depend on ``batch_size``.
    The model's inputs and contexts take the flow's dtype (:func:`~invertible.core.flow_dtype`): a float64 flow scores float32 data.
    """
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    n = data.shape[0]
    draws = draws if raw else 1
    log_p = torch.zeros(n, dtype=torch.float64)
    gap = None if log_prob is None else torch.zeros(n, dtype=torch.float64)
    with evaluation_mode(flow):
        for k in range(draws):
            with seeded_rng(EVAL_NOISE_SEED + k, device):
                for rows, y, ladj, c in _model_batches(flow, data, context, preprocess, raw, batch_size, device):
                    log_q = flow.log_prob(y, c).double()
                    log_p[rows] += (log_q + ladj.double()).cpu()
                    if gap is not None:
                        gap[rows] += (log_prob(y).double() - log_q).cpu()
    return log_p / draws, None if gap is None else gap / draws


@torch.no_grad()
def row_latents(
    flow: Flow,
    data: Tensor,
    context: Tensor | None,
    preprocess: Transform | None,
    raw: bool,
    batch_size: int,
    device: torch.device,
) -> Tensor:
    """The latents ``z = f(y)`` (on the CPU, in the flow's dtype) of the rows ``data`` (with their ``context``),
    the model's inputs ``y`` taken as by :func:`row_log_densities` with one draw: raw pixels get the
    dequantization noise of its first draw (seed ``EVAL_NOISE_SEED``), so the latents are reproducible."""
    with evaluation_mode(flow), seeded_rng(EVAL_NOISE_SEED, device):
        return torch.cat([flow.encode(y, c).cpu()
                          for _, y, _, c in _model_batches(flow, data, context, preprocess, raw, batch_size, device)])


def _model_batches(
    flow: Flow, data: Tensor, context: Tensor | None, preprocess: Transform | None, raw: bool, batch_size: int,
    device: torch.device,
) -> Iterator[tuple[slice, Tensor, Tensor, Tensor | None]]:
    """``(rows, y, ladj, c)`` for consecutive batches of ``batch_size`` rows of ``data``: the model's inputs ``y``
    (:func:`to_model_space`, in the flow's dtype on ``device``), the preprocessing's log-det at them and the
    batch's context."""
    dtype = flow_dtype(flow)
    for start in range(0, data.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        y, ladj = _model_input(preprocess, raw, data[rows].to(device))
        c = None if context is None else context[rows].to(device, dtype)
        yield rows, y.to(dtype), ladj, c


def summarize(
    split: str, log_p: Tensor, gap: Tensor | None = None, levels: int | None = None, event_shape: Sequence[int] = ()
) -> dict[str, float]:
    """``{split}_nll`` (mean ``-log p``), ``kl_gap`` (mean ``gap``, when given) and, for data of ``levels``
    discrete values per dimension, ``{split}_bpd`` (events of ``event_shape``), from the per-row values of
    :func:`row_log_densities`."""
    nll = -log_p.mean().item()
    out = {f"{split}_nll": nll}
    if gap is not None:
        out["kl_gap"] = gap.mean().item()
    if levels is not None:
        out[f"{split}_bpd"] = nll / (math.prod(event_shape) * math.log(2))
    return out


def evaluate_split(
    flow: Flow, bundle: DataBundle, split: str, batch_size: int, device: torch.device, draws: int = 1
) -> dict[str, float]:
    """Mean NLL (nats, raw space) of a split, plus ``kl_gap`` and bits/dim where they are defined.

    ``kl_gap = mean_i [log p(x_i) - log q(x_i)]`` over the split estimates
    ``KL(p || q)`` when the data density ``p`` is known (``bundle.log_prob``).
    For ``raw`` bundles the NLL is averaged over ``draws`` seeded
    dequantization draws (seeds ``EVAL_NOISE_SEED + k``).
    """
    return summarize(split, *split_log_densities(flow, bundle, split, batch_size, device, draws), bundle.levels,
                     bundle.event_shape)


def split_log_densities(
    flow: Flow, bundle: DataBundle, split: str, batch_size: int, device: torch.device, draws: int = 1
) -> tuple[Tensor, Tensor | None]:
    """:func:`row_log_densities` of the rows of ``split`` (see :func:`split_tensors`), in the split's order."""
    data, context = split_tensors(bundle, split)
    if data.shape[0] == 0:
        raise ValueError(f"the {split} split of dataset {bundle.name!r} is empty")
    return row_log_densities(flow, data, context, bundle.preprocess, bundle.raw, batch_size, device, draws,
                             bundle.log_prob)


def model_samples(model: torch.nn.Module, n: int, context: Tensor | None, temperature: float = 1.0) -> Tensor:
    """``n`` samples (one per context row when conditional) from the model's own sampler, a flow's at
    ``temperature``; a Bernoulli MADE, a discrete model with no base noise, takes no temperature."""
    options = {"temperature": temperature} if isinstance(model, Flow) else {}
    return model.sample(n, **options) if context is None else model.sample(1, context, **options)[0]
