"""A variational autoencoder whose approximate posterior is a flow amortised by the encoder.

Kingma & Welling, "Auto-Encoding Variational Bayes", 2014; flow posteriors from
Rezende & Mohamed 2015 (planar, radial), van den Berg et al. 2018 (Sylvester)
and Kingma et al., "Improved Variational Inference with Inverse Autoregressive
Flow", 2016 (IAF).

``q(z | x)``: ``z_0 = mu(x) + sigma(x) * eps``, ``eps ~ N(0, I)``, then
``z_K = g_K o ... o g_1(z_0)`` whose parameters (planar, radial, Sylvester) or
autoregressive networks (IAF) take the encoder's last hidden layer ``h(x)`` as
context, so ``log q(z_K | x) = log N(z_0; mu, sigma^2) - sum_k log|det dg_k/dz|``.
The layers are :class:`~invertible.Transform` s used in their generative
(``inverse``) direction. Prior ``p(z) = N(0, I)``; decoder ``p(x | z)`` from
:mod:`invertible.variational.likelihoods`.

``ELBO(x) = E_q[log p(x | z) + log p(z) - log q(z | x)]``; the importance-weighted
estimate ``log p(x) ~ log 1/k sum_i p(x, z_i) / q(z_i | x)`` (Burda et al. 2016)
is a tighter bound that approaches ``log p(x)`` as ``k`` grows.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
from torch import Tensor, nn

from ..core import Compose, Transform
from ..nets.mlp import MLP
from ..transforms import InverseAutoregressiveAffine, Planar, Radial, Sylvester
from . import likelihoods

__all__ = ["VAE", "POSTERIORS", "train_vae", "evaluate_vae"]

POSTERIORS = ("diagonal", "planar", "radial", "sylvester", "iaf")
_LOG_2PI = math.log(2 * math.pi)


def posterior_layers(kind: str, latent: int, context: int, layers: int) -> list[Transform]:
    """The flow layers of ``q(z | x)`` after the diagonal Gaussian (none for ``"diagonal"``)."""
    if kind not in POSTERIORS:
        raise ValueError(f"unknown posterior {kind!r}; choose from {list(POSTERIORS)}")
    if kind == "diagonal":
        return []
    if layers < 1:
        raise ValueError(f"the {kind} posterior needs layers >= 1, got {layers}")
    if kind == "iaf":
        # MADE layers reading the noise and the encoder's context; alternating orders replace permutations
        return [
            InverseAutoregressiveAffine(latent, (256, 256), context, order="default" if i % 2 == 0 else "reverse", activation="elu")
            for i in range(layers)
        ]
    if kind == "sylvester":
        return [Sylvester(latent, context, "householder", reflections=min(latent, 4)) for _ in range(layers)]
    cls = Planar if kind == "planar" else Radial
    return [cls(latent, context) for _ in range(layers)]


class VAE(nn.Module):
    """MLP encoder and decoder, a flow posterior, a standard normal prior.

    Args:
        event_shape: image shape ``(C, H, W)`` (or a vector length).
        latent: dimension of ``z``.
        hidden: width of the two hidden layers of encoder and decoder.
        context: size of the flow's context, a linear map of the encoder's last hidden layer (none for ``"diagonal"``).
        posterior: one of :data:`POSTERIORS`.
        layers: number of flow layers in the posterior.
        likelihood: ``"bernoulli"``, ``"gaussian"`` or ``"logistic"``.
        levels: grey levels of the data (for the discretized likelihoods).
    """

    def __init__(
        self,
        event_shape: tuple[int, ...] | int,
        latent: int = 32,
        hidden: int = 300,
        context: int = 64,
        posterior: str = "diagonal",
        layers: int = 0,
        likelihood: str = "bernoulli",
        levels: int = 256,
    ):
        super().__init__()
        for name, value in (("latent", latent), ("context", context)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if likelihood != "bernoulli" and (isinstance(levels, bool) or not isinstance(levels, int) or levels < 2):
            raise ValueError(f"the {likelihood} likelihood needs levels >= 2 grey levels, got {levels!r}")
        self.event_shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
        self.features = math.prod(self.event_shape)
        self.latent, self.likelihood, self.levels = latent, likelihood, levels
        out = self.features * likelihoods.outputs_per_pixel(likelihood)
        self.encoder = MLP(self.features, hidden, (hidden,), activation="elu", zero_init=False)
        self.act = nn.ELU()
        self.loc = nn.Linear(hidden, latent)
        self.log_scale = nn.Linear(hidden, latent)
        # the flow's context (built before the flow: its initialisation draws come first); a diagonal posterior has none
        self.context = nn.Linear(hidden, context) if posterior != "diagonal" else None
        self.flow = Compose(posterior_layers(posterior, latent, context, layers))
        # planar, radial and Sylvester layers broadcast per-image parameters over extra leading sample dimensions
        self._broadcast = all(isinstance(t, (Planar, Radial, Sylvester)) for t in self.flow.transforms)
        self.decoder = MLP(latent, out, (hidden, hidden), activation="elu", zero_init=False)

    def posterior(self, x: Tensor, k: int = 1) -> tuple[Tensor, Tensor]:
        """``k`` samples of ``q(z | x)`` per image and their log-densities: ``(k, B, latent)``, ``(k, B)``."""
        h = self.act(self.encoder(x.reshape(x.shape[0], -1)))
        loc, log_scale = self.loc(h), self.log_scale(h)
        eps = torch.randn(k, *loc.shape, dtype=loc.dtype, device=loc.device)
        z0 = loc + torch.exp(log_scale) * eps
        log_q0 = (-0.5 * (eps**2 + _LOG_2PI) - log_scale).sum(-1)
        if self.context is None:
            return z0, log_q0
        c = self.context(h)
        if self._broadcast:
            # parameters depend on x only: compute them once per image and broadcast over the k samples
            z, ladj = z0, 0.0
            for t in reversed(self.flow.transforms):  # the order of Compose.inverse
                z, l_k = t.inverse(z, c)
                ladj = ladj + l_k
            return z, log_q0 - ladj
        ctx = c.expand(k, *c.shape).reshape(-1, c.shape[-1])
        z, ladj = self.flow.inverse(z0.reshape(-1, self.latent), ctx)
        return z.reshape(k, *loc.shape), log_q0 - ladj.reshape(k, -1)

    def log_weights(self, x: Tensor, k: int = 1) -> tuple[Tensor, Tensor, Tensor]:
        """``log p(x | z)``, ``log p(z)``, ``log q(z | x)`` for ``k`` posterior samples per image, each ``(k, B)``."""
        z, log_q = self.posterior(x, k)
        out = self.decoder(z)
        log_px = likelihoods.log_likelihood(self.likelihood, out, x.reshape(1, x.shape[0], -1), self.levels)
        log_pz = (-0.5 * (z**2 + _LOG_2PI)).sum(-1)
        return log_px, log_pz, log_q

    def elbo(self, x: Tensor, kl_weight: float = 1.0) -> Tensor:
        """Single-sample ``log p(x|z) + w (log p(z) - log q(z|x))`` per image (``w < 1`` during warm-up)."""
        log_px, log_pz, log_q = self.log_weights(x)
        return (log_px + kl_weight * (log_pz - log_q)).squeeze(0)

    def check_images(self, x: Tensor, name: str = "x") -> None:
        """``ValueError`` unless ``x`` is a non-empty batch ``(n, *event_shape)`` of finite values the decoder can
        score, in the dtype of the model: 0 or 1 for ``bernoulli`` (binarize grey levels first), in ``[0, 1]``
        otherwise."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
        if x.dim() < 1 or tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)}; expected (n, {', '.join(map(str, self.event_shape))})")
        dtype = self.loc.weight.dtype
        if x.dtype != dtype:  # the encoder's first matrix product would fail on it, naming no argument
            raise ValueError(f"{name} has dtype {x.dtype} and the model {dtype}: convert the images first "
                             f"({name}.to({dtype}))")
        if x.shape[0] == 0:
            raise ValueError(f"{name} holds no images")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains {int((~torch.isfinite(x)).sum())} non-finite value(s) (NaN or inf)")
        if self.likelihood == "bernoulli":
            bad = int(((x != 0) & (x != 1)).sum())
            if bad:
                raise ValueError(f"{name} has {bad} value(s) other than 0 and 1: the bernoulli decoder needs binary "
                                 "images (binarize them, or use the gaussian or logistic likelihood)")
        elif bool((x < 0).any() or (x > 1).any()):
            raise ValueError(f"{name} has values outside [0, 1] (min {float(x.min())}, max {float(x.max())}): "
                             f"the {self.likelihood} likelihood models grey levels in [0, 1]")

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Mean images of the decoder at ``z ~ p(z)``: ``(n, *event_shape)``."""
        z = torch.randn(n, self.latent, dtype=self.loc.weight.dtype, device=self.loc.weight.device)
        return likelihoods.mean(self.likelihood, self.decoder(z)).reshape(n, *self.event_shape)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Mean images of the decoder at one sample of ``q(z | x)``."""
        z, _ = self.posterior(x)
        return likelihoods.mean(self.likelihood, self.decoder(z[0])).reshape(x.shape)


def train_vae(
    model: VAE,
    train: Tensor,
    steps: int,
    batch_size: int = 100,
    lr: float = 1e-3,
    warmup: int = 0,
    log_every: int = 200,
    callback: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Adam on the negative ELBO with minibatches drawn by reshuffled epochs; KL weight ramps 0 -> 1 over ``warmup`` steps.

    The loss during warm-up is ``-(log p(x|z) + w (log p(z) - log q(z|x)))``; the recorded ``train_elbo`` is the
    ELBO itself (``w = 1``) of the same samples.
    """
    if steps < 1 or batch_size < 1 or not lr > 0 or warmup < 0 or log_every < 1:
        raise ValueError(f"need steps >= 1, batch_size >= 1, lr > 0, warmup >= 0, log_every >= 1; "
                         f"got {steps}, {batch_size}, {lr}, {warmup}, {log_every}")
    model.check_images(train, "train")
    if batch_size > len(train):
        raise ValueError(f"the batch size {batch_size} exceeds the {len(train)} training images")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history, running, order, pos = [], 0.0, torch.randperm(len(train)), 0
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        if pos + batch_size > len(train):
            order, pos = torch.randperm(len(train)), 0
        x = train[order[pos : pos + batch_size]]
        pos += batch_size
        w = min(1.0, step / warmup) if warmup else 1.0
        log_px, log_pz, log_q = model.log_weights(x)
        loss = -(log_px + w * (log_pz - log_q)).mean()
        elbo = float((log_px + log_pz - log_q).detach().mean())
        if not math.isfinite(elbo):
            raise FloatingPointError(f"the ELBO became non-finite at step {step}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += elbo
        if step % log_every == 0 or step == steps:
            record = {"step": step, "train_elbo": running / (step % log_every or log_every), "kl_weight": w,
                      "wall_time_s": time.perf_counter() - t0}
            history.append(record)
            running = 0.0
            if callback is not None:
                callback(record)
    return history


@torch.no_grad()
def evaluate_vae(model: VAE, x: Tensor, k: int = 500, chunk: int = 20) -> dict:
    """Mean ELBO and importance-weighted ``log p(x)`` (``k`` samples per image) over ``x``, in nats per image.

    Raises ``FloatingPointError`` when either is not finite (a diverged model).
    """
    for name, value in (("k", k), ("chunk", chunk)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    model.check_images(x)
    elbos, iw = [], []
    for xb in x.split(chunk):
        log_px, log_pz, log_q = model.log_weights(xb, k)
        lw = (log_px + log_pz - log_q).double()
        elbos.append(lw.mean(0))
        iw.append(torch.logsumexp(lw, 0) - math.log(k))
    elbo, iw_log_px = float(torch.cat(elbos).mean()), float(torch.cat(iw).mean())
    if not (math.isfinite(elbo) and math.isfinite(iw_log_px)):
        raise FloatingPointError(f"the test ELBO is {elbo} and the IW log p(x) {iw_log_px}: the model diverged; lower the learning rate")
    return {"elbo": elbo, "iw_log_px": iw_log_px, "iw_samples": k}
