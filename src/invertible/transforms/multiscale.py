"""Multi-scale architectures as one bijection: factoring out channels with a (learned) prior.

RealNVP and Glow "factor out" half of the channels at each scale: those go
straight to the latent space, the other half is processed further. With a
learned prior ``p(z2 | z1) = N(mu(z1), sigma(z1)^2)`` (Glow) this is the same
as the conditional affine map ``e2 = (z2 - mu(z1)) / sigma(z1)`` followed by a
standard normal — so the whole multi-scale model stays a single bijection of
the full ``(C, H, W)`` tensor with a standard-normal base, and sampling,
temperature and interpolation treat all latents alike.

Both maps scale by ``exp(-+log_sigma)`` with ``log_sigma`` clamped to ``[-L, L]``, the
largest range whose ``exp`` is a finite float (:data:`~invertible.transforms.SCALE_FUNCTIONS`
``["exp"]``, as affine couplings do): beyond it ``exp`` is ``inf`` and ``0 * inf`` a NaN
(at ``x2 = mu`` going forward, at ``e2 = 0`` going back). The clamp changes the map only
where ``exp(+-log_sigma)`` would not be finite; the log-det is that of the clamped map.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..core import Transform, sum_except_batch
from ..nets.conv import ZeroConv2d, with_context
from .coupling import SCALE_FUNCTIONS
from .shapes import check_channels

__all__ = ["FactorOut", "AffinePrior", "PRIORS"]

#: Priors of a factored-out half: learned from the kept half, learned per channel, or fixed N(0, I).
PRIORS = ("conditional", "channel", "fixed")

#: ``log_sigma`` clamped to ``[-L, L]``, where ``exp(+-log_sigma)`` is finite (see the module).
_bounded = SCALE_FUNCTIONS["exp"]


class FactorOut(Transform):
    """Split ``x = (x1, x2)`` along channels; ``x1`` goes through ``inner``, ``x2`` through the prior map.

    Forward (data -> latent)::

        (mu, log_sigma) = prior(x1, context)           # zeros for the fixed split
        e2 = (x2 - mu) * exp(-log_sigma)               # log|det| = -sum log_sigma
        z1 = inner(x1, context)
        z  = concat(z1, e2)

    ``inner`` must keep the shape of ``x1`` (wrap a squeeze and its inverse
    around the next scale). The Jacobian is block triangular, so the log-det
    is the inner one plus the prior's. The prior of ``x2``:

    - ``"conditional"``: Glow's learned prior (Kingma & Dhariwal 2018, code
      ``split2d``), ``mu`` and ``log_sigma`` from a zero-initialised 3x3
      convolution of ``x1`` (and of the context, which makes it class-conditional);
    - ``"channel"``: a learned diagonal Gaussian with one ``mu`` and one
      ``log_sigma`` per channel, independent of ``x1`` (an
      :class:`AffinePrior` of shape ``(C2, 1, 1)``, shifted by a linear map of
      the context); far fewer parameters, and the factored-out half cannot be
      predicted from the kept half, which regularises small data sets;
    - ``"fixed"``: RealNVP's standard-normal split (Dinh et al. 2017, Section 3.6).

    Args:
        channels: channels of the input ``x``.
        keep: channels of ``x1`` (the first ``keep`` channels); the rest are factored out.
        inner: the transform applied to ``x1``.
        prior: ``"conditional"``, ``"channel"`` or ``"fixed"`` (see above).
        context_features: size of the conditioning vector of the prior.
    """

    def __init__(
        self,
        channels: int,
        keep: int,
        inner: Transform,
        prior: str = "conditional",
        context_features: int | None = None,
    ):
        super().__init__()
        if not 0 < keep < channels:
            raise ValueError(f"keep must lie strictly between 0 and channels={channels}, got {keep}")
        if prior not in PRIORS:
            raise ValueError(f"unknown split prior {prior!r}; choose from {PRIORS}")
        self.channels, self.keep = channels, keep
        self.inner = inner
        self.prior_kind = prior
        self.context_features = None if prior == "fixed" else context_features
        if prior == "conditional":
            self.prior = ZeroConv2d(keep + (self.context_features or 0), 2 * (channels - keep))
        elif prior == "channel":
            self.prior = AffinePrior((channels - keep, 1, 1), self.context_features)
        else:
            self.prior = None

    def _prior(self, x1: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor] | None:
        if self.prior is None:
            return None
        if isinstance(self.prior, AffinePrior):
            shape = (x1.shape[0], self.prior.event_shape[0], *x1.shape[2:])
            return self.prior.params(shape, x1.dtype, context)
        h = self.prior(with_context(x1, context, self.context_features))
        return h[:, 0::2], _bounded(h[:, 1::2])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        # a prior of one factored-out channel would broadcast over extra channels, counted once in the log-det
        check_channels(x, self.channels, "FactorOut")
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
        check_channels(z, self.channels, "FactorOut")
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

    ``mu`` and ``log_sigma`` are learned per element of ``event_shape``
    (Glow's ``learntop``) and, with a context ``y`` (a one-hot label), shifted
    by a zero-initialised linear function of it, per element of ``event_shape``
    (Glow's ``ycond`` shifts per channel, as the shape ``(C, 1, 1)`` does):
    ``mu(y) = mu_0 + A y``, ``log_sigma(y) = s_0 + B y``.
    ``log|det| = -sum log_sigma(y)`` over all elements of ``x``. Sizes of 1
    in ``event_shape`` are shared by broadcasting: ``(C, 1, 1)`` learns one
    Gaussian per channel for images of any size.
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

    def params(self, shape: Sequence[int], dtype: torch.dtype, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(mu, log_sigma)`` broadcast to ``shape`` (batch first), for the given context; ``log_sigma``
        clamped to ``[-L, L]`` (see the module)."""
        shape = tuple(shape)
        if self.context_features is None:
            return self.loc.expand(shape), _bounded(self.log_scale).expand(shape)
        if context is None:
            raise ValueError(f"this prior expects a context of {self.context_features} features")
        h = self.from_context(context.to(dtype)).view(shape[0], 2, *self.event_shape)
        return self.loc.expand(shape) + h[:, 0], _bounded(self.log_scale.expand(shape) + h[:, 1])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        loc, log_scale = self.params(x.shape, x.dtype, context)
        return (x - loc) * torch.exp(-log_scale), -sum_except_batch(log_scale)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        loc, log_scale = self.params(z.shape, z.dtype, context)
        return z * torch.exp(log_scale) + loc, sum_except_batch(log_scale)
