"""Parameters that are either free or amortised: given per sample by a context network.

Classic variational inference learns one set of flow parameters; an amortised
posterior (a VAE's ``q(z|x)``) gets them per sample from the encoder (Rezende &
Mohamed 2015, Sec. 4; van den Berg et al. 2018). :class:`ContextParameters`
does both: ``theta(context) = theta_0 + W context`` with the linear head ``W``
starting at zero, so an amortised layer starts equal to its free counterpart.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import Tensor, nn

__all__ = ["ContextParameters"]


class ContextParameters(nn.Module):
    """Named parameter tensors, optionally shifted per sample by a linear function of the context.

    Args:
        init: name -> initial value (its shape is the parameter's shape).
        context_features: size of the context vector; ``None`` for free parameters.

    Calling the module with ``context`` of shape ``(batch, context_features)``
    returns a dict name -> tensor of shape ``(batch, *shape)``; without a context,
    ``(1, *shape)`` (broadcast over the batch). Free parameters ignore a context they are given, as
    every unconditional transform does: a conditional flow passes its context to all of its layers.
    """

    def __init__(self, init: Mapping[str, Tensor], context_features: int | None = None):
        super().__init__()
        self.names = list(init)
        self.shapes = [tuple(v.shape) for v in init.values()]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.theta = nn.Parameter(torch.cat([v.reshape(-1) for v in init.values()]).clone())
        self.context_features = context_features
        if context_features is not None:
            self.head = nn.Linear(context_features, sum(self.sizes))
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, context: Tensor | None = None) -> dict[str, Tensor]:
        if self.context_features is None:
            flat = self.theta.unsqueeze(0)
        else:
            if context is None:
                raise ValueError(f"this layer is amortised: pass a context of shape (batch, {self.context_features})")
            flat = self.theta + self.head(context)
        parts = torch.split(flat, self.sizes, dim=-1)
        return {n: p.reshape(p.shape[0], *s) for n, p, s in zip(self.names, parts, self.shapes)}
