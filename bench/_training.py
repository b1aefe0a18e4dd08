"""One maximum-likelihood training loop for every library, so only the implementations differ.

Every model sees the same batches in the same order (drawn from a generator
seeded by ``seed``), the same Adam optimiser, learning-rate schedule (linear
warm-up then cosine decay to zero) and gradient clipping, for the same number
of steps.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor

from invertible.data import load
from invertible.train.schedule import lr_factor

from ._flows import Model


def batches(n: int, batch_size: int, steps: int, seed: int):
    """``steps`` index batches: fresh permutations of ``range(n)``, cut into ``batch_size`` chunks."""
    g = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < batch_size:
            order = torch.cat([order, torch.randperm(n, generator=g)])
        yield order[:batch_size]
        order = order[batch_size:]


def fit(
    model: Model,
    train: Tensor,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    clip: float = 5.0,
    warmup: int = 0,
) -> dict[str, float]:
    """Minimise the mean negative log-likelihood of ``train``; returns the final loss and the wall time."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, warmup, "cosine"))
    model.train()
    t0 = time.perf_counter()
    loss = torch.tensor(float("nan"))
    for idx in batches(len(train), batch_size, steps, seed):
        loss = -model.log_prob(train[idx]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        sched.step()
    model.eval()
    return {"final_loss": loss.item(), "train_s": time.perf_counter() - t0}


@torch.no_grad()
def mean_log_prob(model: Model, x: Tensor, chunk: int = 8192) -> float:
    """Mean of ``model.log_prob`` over ``x``, in chunks."""
    return float(torch.cat([model.log_prob(c) for c in x.split(chunk)]).double().mean())


def check_exact_data(parser: argparse.ArgumentParser, names: list[str], option: str) -> None:
    """A usage error unless every dataset of ``names`` loads and has an exact ``log_prob`` (the KL gap needs one)."""
    for name in names:
        try:
            exact = load(name, seed=0).log_prob is not None
        except (ValueError, OSError) as e:
            parser.error(f"{option}: {e}")
        if not exact:
            parser.error(f"{option}: dataset {name!r} has no exact log_prob; the KL gap needs one")
