"""Moving a module's parameters off their start, so zero-initialised heads do real work in a test."""

from __future__ import annotations

import torch


def perturb(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> None:
    """Add ``scale`` times seeded standard normal noise to every parameter of ``module``, in place."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device))
