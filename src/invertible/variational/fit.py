"""Reverse-KL fitting of a flow to an unnormalized density: maximise the ELBO.

``ELBO(q) = E_q[log p~(z) - log q(z)] = log Z - KL(q || p) <= log Z``
(Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015).

Two gradient estimators:

- ``"reparam"`` (default): ``z = T(u)``, ``u ~ base``; differentiate through the
  sample (needs a differentiable ``log p~``). One pass of the flow's sampling
  direction gives ``z`` and ``log q(z)`` together.
- ``"reinforce"``: the score-function estimator
  ``grad ELBO = E_q[(f(z) - b) grad log q(z)]``, ``f = log p~ - log q``, for
  targets without gradients; ``b`` is the leave-one-out mean of ``f`` over the
  batch (a baseline that keeps the estimator unbiased). Needs ``q.log_prob``.

Annealing (the paper's Sec. 6.1): the target is ``beta_t log p~`` with
``beta_t = min(1, 0.01 + t / anneal_steps)``.

Diagnostics (:func:`evaluate`): the ELBO, the importance-sampling estimate
``log Z ~ logsumexp_i(log p~(z_i) - log q(z_i)) - log n`` (``z_i ~ q``) and the
effective sample size ``(sum w)^2 / sum w^2`` as a fraction of ``n``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from torch import Tensor, nn

from .targets import Target

__all__ = ["fit", "evaluate", "FitResult", "ESTIMATORS"]

ESTIMATORS = ("reparam", "reinforce")


class Approximation(Protocol):
    """What :func:`fit` needs of ``q``: reparameterised samples with their log-density."""

    def rsample_and_log_prob(self, n: int) -> tuple[Tensor, Tensor]: ...

    def parameters(self): ...


@dataclass
class FitResult:
    """Outcome of :func:`fit`: final diagnostics, exact KL where ``log Z`` is known, the ELBO curve."""

    elbo: float
    log_z_is: float
    ess: float
    log_z_true: float | None
    kl: float | None
    steps: int
    wall_time_s: float
    history: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        """Flat JSON-able summary (no history)."""
        return {k: v for k, v in self.__dict__.items() if k != "history"}


def _log_target(log_density: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    out = log_density(z)
    if out.shape != z.shape[:1]:
        raise ValueError(f"log_density returned shape {tuple(out.shape)} for samples of shape {tuple(z.shape)}; expected ({z.shape[0]},)")
    return out


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _diverged(step: int) -> FloatingPointError:
    return FloatingPointError(f"the ELBO became non-finite at step {step}; lower the learning rate or clip gradients")


@torch.no_grad()
def evaluate(q: Approximation, log_density: Callable[[Tensor], Tensor], samples: int = 100_000, chunk: int = 10_000) -> dict:
    """ELBO, importance-sampling ``log Z`` and effective sample size fraction from ``samples`` draws of ``q``.

    Raises ``FloatingPointError`` when a log-weight ``log p~(z) - log q(z)`` is not finite (a diverged ``q``):
    the ELBO, ``log Z`` and ESS would be infinite or NaN.
    """
    _check_positive(samples=samples, chunk=chunk)
    log_w = []
    for start in range(0, samples, chunk):
        z, log_q = q.rsample_and_log_prob(min(chunk, samples - start))
        log_w.append(_log_target(log_density, z).double() - log_q.double())
    lw = torch.cat(log_w)
    bad = int((~torch.isfinite(lw)).sum())
    if bad:
        raise FloatingPointError(f"log p~(z) - log q(z) is not finite for {bad} of {lw.numel()} samples of q")
    lse = torch.logsumexp(lw, 0)
    return {
        "elbo": float(lw.mean()),
        "log_z_is": float(lse - math.log(lw.numel())),
        "ess": float(torch.exp(2 * lse - torch.logsumexp(2 * lw, 0)) / lw.numel()),
    }


def fit(
    q: Approximation,
    log_density: Callable[[Tensor], Tensor],
    steps: int = 10_000,
    batch_size: int = 256,
    lr: float = 1e-3,
    estimator: str = "reparam",
    anneal_steps: int = 0,
    eval_samples: int = 100_000,
    log_every: int = 500,
    clip_grad: float | None = None,
    callback: Callable[[dict], None] | None = None,
) -> FitResult:
    """Maximise ``E_q[log p~(z) - log q(z)]`` over ``q``'s parameters with Adam.

    Args:
        q: a :class:`~invertible.Flow` (unconditional) or any module with
            ``rsample_and_log_prob(n)`` (and ``sample``/``log_prob`` for REINFORCE).
        log_density: ``log p~`` (a :class:`Target` reports the exact KL).
        steps, batch_size, lr: Adam steps, samples per step, learning rate.
        estimator: ``"reparam"`` or ``"reinforce"``.
        anneal_steps: length of the linear annealing of ``beta_t`` from 0.01 to 1 (0: none).
        eval_samples: samples for the final diagnostics.
        log_every: record the running ELBO every so many steps.
        clip_grad: clip the gradient norm to this value (``None``: no clipping).
        callback: called with each history record.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose from {list(ESTIMATORS)}")
    _check_positive(steps=steps, batch_size=batch_size, eval_samples=eval_samples, log_every=log_every)
    if batch_size < 2 and estimator == "reinforce":
        raise ValueError("the REINFORCE baseline needs batch_size >= 2")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if not anneal_steps >= 0:  # NaN too: min(1, 0.01 + t / nan) is 1, no annealing at all
        raise ValueError(f"anneal_steps must be >= 0, got {anneal_steps}")
    if clip_grad is not None and not clip_grad > 0:
        raise ValueError(f"clip_grad must be positive (or None: no clipping), got {clip_grad}")
    params = [p for p in q.parameters() if p.requires_grad]
    if not params:
        raise ValueError("q has no trainable parameters")
    opt = torch.optim.Adam(params, lr=lr)
    history: list[dict] = []
    running = 0.0
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        beta = min(1.0, 0.01 + step / anneal_steps) if anneal_steps else 1.0
        if estimator == "reparam":
            z, log_q = q.rsample_and_log_prob(batch_size)
            log_p = _log_target(log_density, z)
            loss = (log_q - beta * log_p).mean()
            elbo = float((log_p - log_q).detach().mean())
        else:
            with torch.no_grad():
                z = q.sample(batch_size)
            if not torch.isfinite(z).all():
                raise _diverged(step)
            log_q = q.log_prob(z)
            f = (beta * _log_target(log_density, z) - log_q).detach()
            baseline = (f.sum() - f) / (batch_size - 1)
            loss = -((f - baseline) * log_q).mean()
            elbo = float((_log_target(log_density, z) - log_q).detach().mean())
        if not math.isfinite(elbo):
            raise _diverged(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad is not None:
            nn.utils.clip_grad_norm_(params, clip_grad)
        opt.step()
        running += elbo
        if step % log_every == 0 or step == steps:
            n = step % log_every or log_every
            record = {"step": step, "elbo": running / n, "beta": beta}
            history.append(record)
            running = 0.0
            if callback is not None:
                callback(record)
    wall = time.perf_counter() - t0
    stats = evaluate(q, log_density, eval_samples)
    log_z = log_density.log_z() if isinstance(log_density, Target) else None
    return FitResult(
        elbo=stats["elbo"],
        log_z_is=stats["log_z_is"],
        ess=stats["ess"],
        log_z_true=log_z,
        kl=None if log_z is None else log_z - stats["elbo"],
        steps=steps,
        wall_time_s=wall,
        history=history,
    )
