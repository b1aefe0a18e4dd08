"""Normalisation layers that are bijections: ActNorm."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..core import Transform

__all__ = ["ActNorm"]


class ActNorm(Transform):
    """Per-channel affine ``z = (x - loc) * exp(-log_scale)`` with data-dependent initialisation.

    Glow (Kingma & Dhariwal 2018, Section 3.1). Dimension 1 is the channel (the
    feature of a vector, the channel of an image); an image of ``H x W`` pixels
    contributes ``H W`` copies of each channel's log-scale:
    ``log|det| = -H W sum_c log_scale_c``.

    On its first forward pass in training mode the layer sets ``loc`` and
    ``log_scale`` to the batch's per-channel mean and standard deviation, so
    its output starts at zero mean and unit variance. Under
    ``torch.distributed`` the statistics are averaged over all ranks, so every
    replica starts identical. The ``initialized`` flag is a buffer: it is saved
    in ``state_dict`` and restored by ``load_state_dict``, so a reloaded model
    is not initialised a second time.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.loc = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    def _view(self, p: Tensor, x: Tensor) -> Tensor:
        return p.view(1, -1, *([1] * (x.dim() - 2)))

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        dims = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dim=dims)
        sq = x.pow(2).mean(dim=dims)
        if dist.is_available() and dist.is_initialized():
            stats = torch.stack([mean, sq])
            dist.all_reduce(stats)
            mean, sq = stats / dist.get_world_size()
        std = (sq - mean.pow(2)).clamp_min(0).sqrt()
        self.loc.copy_(mean)
        self.log_scale.copy_(torch.log(std + self.eps))
        self.initialized.fill_(True)

    def _ladj(self, x: Tensor) -> Tensor:
        pixels = x[0, 0].numel()
        return (-pixels * self.log_scale.sum()).expand(x.shape[0])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized):
            self._initialize(x)
        z = (x - self._view(self.loc, x)) * torch.exp(-self._view(self.log_scale, x))
        return z, self._ladj(x)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = z * torch.exp(self._view(self.log_scale, z)) + self._view(self.loc, z)
        return x, -self._ladj(z)
