"""Multi-scale architectures as one bijection: factoring out channels with a (learned) prior.

RealNVP and Glow "factor out" half of the channels at each scale: those go
straight to the latent space, the other half is processed further. With a
learned prior ``p(z2 | z1) = N(mu(z1), sigma(z1)^2)`` (Glow) this is the same
as the conditional affine map ``e2 = (z2 - mu(z1)) / sigma(z1)`` followed by a
standard normal — so the whole multi-scale model stays a single bijection of
the full ``(C, H, W)`` tensor with a standard-normal base, and sampling,
temperature and interpolation treat all latents alike.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..core import Transform, sum_except_batch
from ..nets.conv import ZeroConv2d, with_context

__all__ = ["FactorOut", "AffinePrior"]


class FactorOut(Transform):
    """Split ``x = (x1, x2)`` along channels; ``x1`` goes through ``inner``, ``x2`` through the prior map.

    Forward (data -> latent)::

        (mu, log_sigma) = prior(x1, context)           # zeros for the fixed split
        e2 = (x2 - mu) * exp(-log_sigma)               # log|det| = -sum log_sigma
        z1 = inner(x1, context)
        z  = concat(z1, e2)

    ``inner`` must keep the shape of ``x1`` (wrap a squeeze and its inverse
    around the next scale). The Jacobian is block triangular, so the log-det
    is the inner one plus the prior's. With ``learned_prior=False`` this is
    RealNVP's fixed standard-normal split (Dinh et al. 2017, Section 3.6);
    with ``True`` Glow's learned prior (Kingma & Dhariwal 2018, code
    ``split2d``), a zero-initialised 3x3 convolution of ``x1`` (and of the
    context, which makes the prior class-conditional).

    Args:
        channels: channels of the input ``x``.
        keep: channels of ``x1`` (the first ``keep`` channels); the rest are factored out.
        inner: the transform applied to ``x1``.
        learned_prior: learn ``mu`` and ``log_sigma`` from ``x1`` (else a fixed ``N(0, I)``).
        context_features: size of the conditioning vector of the prior.
    """

    def __init__(
        self,
        channels: int,
        keep: int,
        inner: Transform,
        learned_prior: bool = True,
        context_features: int | None = None,
    ):
        super().__init__()
        if not 0 < keep < channels:
            raise ValueError(f"keep must lie strictly between 0 and channels={channels}, got {keep}")
        self.keep = keep
        self.inner = inner
        self.context_features = context_features if learned_prior else None
        self.prior = ZeroConv2d(keep + (self.context_features or 0), 2 * (channels - keep)) if learned_prior else None

    def _prior(self, x1: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor] | None:
        if self.prior is None:
            return None
        h = self.prior(with_context(x1, context, self.context_features))
        return h[:, 0::2], h[:, 1::2]

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x1, x2 = x[:, : self.keep], x[:, self.keep :]
        ladj = x.new_zeros(x.shape[0])
        params = self._prior(x1, context)
        if params is not None:
            mu, log_sigma = params
            x2 = (x2 - mu) * torch.exp(-log_sigma)
            ladj = -sum_except_batch(log_sigma)
        z1, ladj1 = self.inner(x1, context)
        return torch.cat([z1, x2], dim=1), ladj + ladj1

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z1, e2 = z[:, : self.keep], z[:, self.keep :]
        x1, ladj = self.inner.inverse(z1, context)
        params = self._prior(x1, context)
        if params is not None:
            mu, log_sigma = params
            e2 = e2 * torch.exp(log_sigma) + mu
            ladj = ladj + sum_except_batch(log_sigma)
        return torch.cat([x1, e2], dim=1), ladj


class AffinePrior(Transform):
    """The top-level learned prior ``N(mu(y), sigma(y)^2)`` of Glow as the map ``z = (x - mu) / sigma``.

    ``mu`` and ``log_sigma`` are learned per element (Glow's ``learntop``) and,
    with a context ``y`` (a one-hot label), shifted by a zero-initialised
    linear function of it (Glow's ``ycond``): ``mu(y) = mu_0 + A y``,
    ``log_sigma(y) = s_0 + B y``. ``log|det| = -sum log_sigma(y)``.
    """

    def __init__(self, event_shape: Sequence[int], context_features: int | None = None):
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.loc = nn.Parameter(torch.zeros(self.event_shape))
        self.log_scale = nn.Parameter(torch.zeros(self.event_shape))
        self.context_features = context_features
        if context_features is not None:
            n = 1
            for s in self.event_shape:
                n *= s
            self.from_context = nn.Linear(context_features, 2 * n)
            nn.init.zeros_(self.from_context.weight)
            nn.init.zeros_(self.from_context.bias)

    def _params(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        loc, log_scale = self.loc.expand(x.shape), self.log_scale.expand(x.shape)
        if self.context_features is not None:
            if context is None:
                raise ValueError(f"this prior expects a context of {self.context_features} features")
            h = self.from_context(context.to(x.dtype)).view(x.shape[0], 2, *self.event_shape)
            loc, log_scale = loc + h[:, 0], log_scale + h[:, 1]
        return loc, log_scale

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        loc, log_scale = self._params(x, context)
        return (x - loc) * torch.exp(-log_scale), -sum_except_batch(log_scale)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        loc, log_scale = self._params(z, context)
        return z * torch.exp(log_scale) + loc, sum_except_batch(log_scale)
