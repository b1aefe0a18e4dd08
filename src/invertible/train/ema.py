"""Exponential moving average of a model's weights (Polyak averaging).

``theta_ema <- d_t theta_ema + (1 - d_t) theta`` after every optimisation step,
with ``d_t = min(decay, (1 + t) / (10 + t))`` after ``t`` updates (the warm-up of
TensorFlow's ``ExponentialMovingAverage``), so the average is not dragged towards
the initial weights (or towards ActNorm's parameters before their data-dependent
initialisation). Buffers are copied as they are. Averaged weights usually give a
better test likelihood than the last iterate (Polyak & Juditsky 1992).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """A frozen copy of ``model`` whose parameters track an exponential average of the model's."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, p in zip(self.model.parameters(), model.parameters()):
            avg.lerp_(p.detach(), 1 - d)
        for avg, b in zip(self.model.buffers(), model.buffers()):
            avg.copy_(b)
        self.updates += 1
