"""Batch normalisation as a bijection, as used between the layers of MAF and RealNVP."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core import Transform

__all__ = ["BatchNorm"]


class BatchNorm(Transform):
    """``z = (x - m) / sqrt(v + eps) * exp(log_gamma) + beta`` per feature.

    Dinh et al., "Density estimation using Real NVP", 2017 (Sec. 3.7);
    Papamakarios et al., "Masked Autoregressive Flow", 2017 (Sec. 3.3):

        log|det dz/dx| = sum_i (log_gamma_i - 1/2 log(v_i + eps)).

    In training mode ``forward`` uses the batch mean and (biased) variance and
    updates running averages; in evaluation mode, and in ``inverse`` always, it
    uses the running averages, so the layer is a fixed bijection once trained.
    Events are vectors ``(features,)``.
    """

    def __init__(self, features: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.momentum, self.eps = momentum, eps
        self.log_gamma = nn.Parameter(torch.zeros(features))
        self.beta = nn.Parameter(torch.zeros(features))
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_var", torch.ones(features))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training and x.shape[0] > 1:
            mean, var = x.mean(0), x.var(0, unbiased=False)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        log_scale = self.log_gamma - 0.5 * torch.log(var + self.eps)
        z = (x - mean) * torch.exp(log_scale) + self.beta
        return z, log_scale.sum().expand(x.shape[0])

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_scale = self.log_gamma - 0.5 * torch.log(self.running_var + self.eps)
        x = (z - self.beta) * torch.exp(-log_scale) + self.running_mean
        return x, (-log_scale.sum()).expand(z.shape[0])
