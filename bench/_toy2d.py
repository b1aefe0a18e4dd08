"""Checkerboard and 8gaussians with their exact log-densities (FFJORD's toy_data definitions), for the benchmarks."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import Tensor

_STD = 0.5 / 1.414
_CENTERS = torch.tensor([(1, 0), (-1, 0), (0, 1), (0, -1), (1 / math.sqrt(2), 1 / math.sqrt(2)),
                         (1 / math.sqrt(2), -1 / math.sqrt(2)), (-1 / math.sqrt(2), 1 / math.sqrt(2)),
                         (-1 / math.sqrt(2), -1 / math.sqrt(2))]) * 4 / 1.414


def _checkerboard(n: int, g: torch.Generator) -> Tensor:
    x1 = torch.rand(n, generator=g) * 4 - 2
    x2 = torch.rand(n, generator=g) - torch.randint(0, 2, (n,), generator=g) * 2.0 + torch.floor(x1) % 2
    return torch.stack([x1, x2], 1) * 2


def _checkerboard_log_prob(x: Tensor) -> Tensor:
    cell = torch.floor(x / 2)
    inside = (x.abs() <= 4).all(1) & ((cell[:, 0] + cell[:, 1]) % 2 == 0)
    return torch.where(inside, torch.full_like(x[:, 0], -math.log(32.0)), torch.full_like(x[:, 0], -math.inf))


def _eight_gaussians(n: int, g: torch.Generator) -> Tensor:
    k = torch.randint(0, 8, (n,), generator=g)
    return _CENTERS[k] + _STD * torch.randn(n, 2, generator=g)


def _eight_gaussians_log_prob(x: Tensor) -> Tensor:
    d2 = (x[:, None, :] - _CENTERS.to(x)).pow(2).sum(-1)
    return torch.logsumexp(-0.5 * d2 / _STD**2, 1) - math.log(8 * 2 * math.pi * _STD**2)


_TOYS = {"checkerboard": (_checkerboard, _checkerboard_log_prob), "8gaussians": (_eight_gaussians, _eight_gaussians_log_prob)}


def load(name: str, seed: int = 0, n_train: int = 50_000, n_test: int = 20_000) -> SimpleNamespace:
    """``train``, ``test`` and the exact ``log_prob`` of one toy density."""
    sampler, log_prob = _TOYS[name]
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(train=sampler(n_train, g), test=sampler(n_test, g), log_prob=log_prob)
