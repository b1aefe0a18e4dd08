"""Observation models ``log p(x | z)`` of the VAE decoder, summed over pixels.

- ``bernoulli``: binarized images, ``log p = -BCE(logits, x)``.
- ``gaussian``: grey levels as a continuous density ``N(x; sigmoid(m), s^2)``; the
  scale is floored at ``1 / levels`` so the density stays bounded on discrete data.
- ``logistic``: the discretized logistic of Salimans et al. (PixelCNN++, 2017)
  over ``levels`` evenly spaced grey levels in ``[0, 1]``, a proper probability
  mass function (the end bins take the tails).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LIKELIHOODS", "outputs_per_pixel", "log_likelihood", "mean"]

LIKELIHOODS = ("bernoulli", "gaussian", "logistic")


def outputs_per_pixel(kind: str) -> int:
    """Decoder outputs per pixel: 1 (logit) for Bernoulli, 2 (location, log-scale) otherwise."""
    if kind not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {kind!r}; choose from {list(LIKELIHOODS)}")
    return 1 if kind == "bernoulli" else 2


def _split(out: Tensor, kind: str, levels: int) -> tuple[Tensor, Tensor]:
    loc, log_scale = out.chunk(2, dim=-1)
    floor = -math.log(levels) if kind == "gaussian" else -7.0
    return loc, log_scale.clamp(min=floor, max=2.0)


def log_likelihood(kind: str, out: Tensor, x: Tensor, levels: int = 256) -> Tensor:
    """``log p(x | z)`` per example, from decoder outputs ``out`` (``(..., D * outputs_per_pixel)``) and flat ``x`` (``(..., D)``)."""
    if kind == "bernoulli":
        return -F.binary_cross_entropy_with_logits(out, x.expand_as(out), reduction="none").sum(-1)
    loc, log_scale = _split(out, kind, levels)
    if kind == "gaussian":
        mu = torch.sigmoid(loc)
        return (-0.5 * ((x - mu) * torch.exp(-log_scale)) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)).sum(-1)
    if kind != "logistic":
        raise ValueError(f"unknown likelihood {kind!r}; choose from {list(LIKELIHOODS)}")
    half = 0.5 / (levels - 1)
    inv_s = torch.exp(-log_scale)
    plus, minus = (x - loc + half) * inv_s, (x - loc - half) * inv_s
    log_cdf_plus = plus - F.softplus(plus)  # log sigmoid(plus): the lowest bin takes the left tail
    log_sf_minus = -F.softplus(minus)  # log(1 - sigmoid(minus)): the highest bin takes the right tail
    # log(sigmoid(plus) - sigmoid(minus)) = log sigmoid(plus) + log sigmoid(-minus) + log(1 - exp(-(plus - minus))):
    # exact, and no difference of two probabilities near 1 (or 0) cancels in either tail
    mid = F.logsigmoid(plus) + F.logsigmoid(-minus) + torch.log(-torch.expm1(-2 * half * inv_s))
    lp = torch.where(x < half, log_cdf_plus, torch.where(x > 1 - half, log_sf_minus, mid))
    return lp.sum(-1)


def mean(kind: str, out: Tensor) -> Tensor:
    """The decoder's mean image (flat): ``sigmoid(logit)`` or the clamped location."""
    if kind == "bernoulli":
        return torch.sigmoid(out)
    loc = out.chunk(2, dim=-1)[0]
    return torch.sigmoid(loc) if kind == "gaussian" else loc.clamp(0.0, 1.0)
