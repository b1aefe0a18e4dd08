"""MADE as a density model of its own: Gaussian conditionals for real data, Bernoulli for binary data.

Germain, Gregor, Murray & Larochelle, "MADE: Masked Autoencoder for
Distribution Estimation", ICML 2015.

    log p(x) = sum_i log p(x_i | x_<i),   p(x_i | x_<i) from output i of one masked network.

Order- and connectivity-agnostic training (MADE, Sec. 4): with ``masks = K > 1``
the model keeps a pool of ``K`` mask sets (each a random input order and/or
random hidden degrees, drawn from ``seed``). In training mode every minibatch
uses the loaded set and then loads the next, so from construction the
minibatches cycle through sets ``0, 1, ..., K-1, 0, ...``; the index of the
loaded set is a buffer (``mask_index``), so a checkpointed run resumes the cycle
where it stopped. Under ``torch.compile`` the swap runs eagerly, outside the
graph, so one compiled density serves every set of the pool. Each set is built
(drawn and turned into masks) once and kept; the kept sets are dropped when a
pool setting changes. In evaluation
mode ``log_prob`` averages the densities of the first ``ensemble`` mask sets,

    log p(x) = log (1/E) sum_k p_k(x)          (log-mean-exp),

and sampling draws each sample from one mask set chosen uniformly, so samples
and densities describe the same mixture.
"""

from __future__ import annotations

import math
import operator
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Flow
from ..distributions import StandardNormal
from ..nets.made import MaskedMLP, input_degrees, lowest_hidden_degree
from ..seeding import SEED_RANGE, seeded_generator
from ..transforms.autoregressive import MaskedAffineAutoregressive
from .registry import register

__all__ = ["MADE", "BernoulliMADE"]

#: Mask set ``k`` of a pool is drawn from a generator seeded with ``seed * _SEED_STRIDE + k``.
_SEED_STRIDE = 1_000_003


class _MaskPool:
    """A pool of ``masks`` mask sets for one :class:`MaskedMLP` and the ensemble logic around it."""

    net: MaskedMLP
    training: bool

    @staticmethod
    def inert_options(options: dict) -> dict[str, str]:
        """The pool options that do nothing under the others: ``masks`` when every set would be the same MADE (one
        feature, or two without a context and no order-agnostic training: one order, one hidden degree); ``order``
        when every set of a pool draws its own order; with one mask set (a fixed MADE), the two kinds of agnostic
        training, and ``seed`` unless the order is ``"random"``."""
        inert: dict[str, str] = {}
        d, low = options["features"], lowest_hidden_degree(options["context_features"])
        one_order, one_degree = d == 1, d - 1 <= low  # hidden degrees lie in [low, max(D - 1, low)]
        if (options["masks"] > 1 and (one_order or not options["order_agnostic"])
                and (one_degree or not options["connectivity_agnostic"])):
            why = ("a single feature has one order, and its hidden units one degree" if one_order else
                   f"the hidden units of {d} features can only have degree {low}")
            inert["masks"] = f"every mask set is drawn alike ({why}), so every set is the same MADE (use masks=1)"
        if options["masks"] > 1 and options["order_agnostic"]:
            inert["order"] = (f"with masks={options['masks']} and order_agnostic true every mask set draws its own "
                              "input order")
        if options["masks"] == 1:
            why = "it resamples the mask sets of a pool, and masks is 1 (a single fixed MADE)"
            inert["order_agnostic"] = inert["connectivity_agnostic"] = why
            if options["order"] != "random":
                inert["seed"] = (f"it draws the mask sets of a pool or a random order, and masks is 1 with "
                                 f"order {options['order']!r}")
        return inert

    def _init_pool(self, masks: int, ensemble: int | None, order_agnostic: bool, connectivity_agnostic: bool,
                   order: str | Sequence[int], seed: int) -> None:
        if masks < 1:
            raise ValueError(f"masks must be >= 1, got {masks}")
        ensemble = masks if ensemble is None else ensemble
        if not 1 <= ensemble <= masks:
            raise ValueError(f"ensemble must be between 1 and masks={masks}, got {ensemble}")
        # set k's generator takes seed * stride + k, for k < masks
        low, high = -(-SEED_RANGE[0] // _SEED_STRIDE), (SEED_RANGE[1] - (masks - 1)) // _SEED_STRIDE
        if not low <= seed <= high:
            raise ValueError(f"seed must lie in {low}..{high} (mask set k's generator is seeded with {_SEED_STRIDE} * seed + k, "
                             f"which torch.Generator takes in -2**63..2**64 - 1), got {seed}")
        if masks > 1 and not (order_agnostic or connectivity_agnostic):
            raise ValueError(f"masks={masks} needs order_agnostic or connectivity_agnostic: with both off every mask set "
                             "is the same MADE (use masks=1)")
        self.masks, self.ensemble = masks, ensemble
        self.order_agnostic, self.connectivity_agnostic = order_agnostic, connectivity_agnostic
        self.base_order, self.seed = order, seed
        # the built mask sets by index, and the pool settings they were built with (not saved: rebuilt on demand)
        self._mask_sets: dict[int, dict[str, Tensor]] = {}
        self._mask_sets_key: tuple | None = None
        # which mask set is loaded; a buffer so a saved model comes back with the same one
        self.register_buffer("mask_index", torch.zeros((), dtype=torch.long))  # type: ignore[attr-defined]
        self.use_masks(0)
        self.register_load_state_dict_post_hook(_MaskPool._check_loaded_index)  # type: ignore[attr-defined]

    def _check_loaded_index(self, _incompatible_keys: object) -> None:
        """After ``load_state_dict``: the loaded set is one of the pool's (an edited index loaded, and the first
        evaluation failed on it)."""
        k = int(self.mask_index)  # type: ignore[attr-defined]
        if not 0 <= k < self.masks:
            raise ValueError(f"the loaded mask set {k} is not in the pool of {self.masks}")

    def use_masks(self, k: int) -> None:
        """Load mask set ``k`` of the pool (set 0 with ``masks=1`` is the plain MADE in the given order).

        Without order-agnostic training every set has the input order ``order`` (one
        draw of it, from ``seed``, when it is ``"random"``); only their hidden degrees differ.
        A set is built once (:meth:`_build_masks`) and then loaded from a copy kept by the
        model; the copies are dropped when ``masks``, ``order_agnostic``,
        ``connectivity_agnostic``, ``base_order``, ``seed`` or the network's
        ``random_degrees`` change. As in :meth:`MaskedMLP.set_degrees`, the masks are new tensors,
        not overwritten, so a graph built with the previous set can still backpropagate.
        """
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.masks:
            raise ValueError(f"mask set {k!r} is not in the pool: expected an integer in 0..{self.masks - 1}")
        key = self._pool_key()
        if key != self._mask_sets_key:
            self._mask_sets, self._mask_sets_key = {}, key
        kept = self._mask_sets.get(k)
        if kept is None:
            self._build_masks(k)
            self._mask_sets[k] = {name: b.detach().clone() for name, b in self.net.named_buffers()}
        else:
            for name, b in kept.items():  # as set_degrees: degrees copied in place, masks new tensors
                owner, _, attr = name.rpartition(".")
                module = self.net.get_submodule(owner)
                now = getattr(module, attr)
                if attr == "mask":
                    with torch.inference_mode(False):  # a normal tensor, as in MaskedMLP._build_masks
                        setattr(module, attr, b.to(now, copy=True))
                else:
                    now.copy_(b)
        self.mask_index.fill_(k)  # type: ignore[attr-defined]

    def _pool_key(self) -> tuple:
        """The settings that mask sets are built from, and the device of the network they are kept for (after
        ``.to(device)`` the kept copies of another device would be copied across at every load)."""
        order = self.base_order if isinstance(self.base_order, str) else tuple(int(i) for i in self.base_order)
        return (self.masks, self.order_agnostic, self.connectivity_agnostic, order, self.seed, self.net.random_degrees,
                self.net.degrees.device)

    def _build_masks(self, k: int) -> None:
        """Draw mask set ``k`` from ``seed`` and set the network's degrees and masks to it."""
        g = seeded_generator(self.seed * _SEED_STRIDE + k)
        if self.order_agnostic and self.masks > 1:
            degrees = input_degrees(self.net.features, "random", g)
        else:
            fixed = seeded_generator(self.seed * _SEED_STRIDE)
            degrees = input_degrees(self.net.features, self.base_order, fixed)
        random_degrees = self.net.random_degrees
        self.net.random_degrees = random_degrees or (self.connectivity_agnostic and self.masks > 1)
        try:
            self.net.set_degrees(degrees, g)
        finally:
            self.net.random_degrees = random_degrees

    @torch.compiler.disable
    def _load_next_masks(self) -> None:
        """Load the set after the loaded one, ``(mask_index + 1) mod masks``.

        Eager even inside ``torch.compile``: the pool's bookkeeping (set indices, kept sets, random
        generators) would make the compiler specialise on the set and recompile for each one. Outside
        the graph, the compiled density reads the masks as inputs and serves every set of the pool.
        """
        self.use_masks((int(self.mask_index) + 1) % self.masks)  # type: ignore[attr-defined]

    @contextmanager
    def _keeping_loaded_masks(self) -> Iterator[None]:
        """Load the mask set loaded before the block once it ends, also when it raises (a refused input or an
        interrupt inside an ensemble loop must not leave another set loaded)."""
        current = int(self.mask_index)  # type: ignore[attr-defined]
        try:
            yield
        finally:
            self.use_masks(current)

    def _ensemble_log_prob(self, single) -> Tensor:
        """``log (1/E) sum_k exp(single())`` over the first ``E`` mask sets, restoring the loaded set
        (also when ``single`` raises).

        In training mode: the loaded mask set alone, after which the next set of the pool is
        loaded (one set per minibatch).
        """
        if self.masks == 1:
            return single()
        if self.training:
            out = single()
            self._load_next_masks()
            return out
        parts = []
        with self._keeping_loaded_masks():
            for k in range(self.ensemble):
                self.use_masks(k)
                parts.append(single())
        return torch.logsumexp(torch.stack(parts), 0) - math.log(self.ensemble)

    def _ensemble_sample(self, n: int, draw) -> Tensor:
        """``n`` samples of the mixture over the ensemble: each from one mask set chosen uniformly.

        ``draw(idx)`` returns samples for the rows ``idx`` of the request. In training mode:
        the loaded mask set alone.
        """
        if self.training or self.masks == 1 or n == 0:
            return draw(torch.arange(n))
        which = torch.randint(0, self.ensemble, (n,))
        out = None
        with self._keeping_loaded_masks():
            for k in range(self.ensemble):
                idx = (which == k).nonzero().squeeze(1)
                if len(idx):
                    self.use_masks(k)
                    part = draw(idx)
                    out = part.new_empty(n, *part.shape[1:]) if out is None else out
                    out[idx] = part
        return out


@register("made")
class MADE(_MaskPool, Flow):
    """Gaussian MADE: ``x_i | x_<i ~ N(mu_i, exp(alpha_i)^2)``, exact ``log p(x)`` in one pass.

    This model is a one-layer MAF: the layer ``z_i = x_i exp(beta_i) + m_i``
    (``beta_i = 3 tanh(raw_i / 3)``, the soft-clamped network output) with a
    standard normal base gives exactly these Gaussian conditionals, with
    ``alpha_i = -beta_i`` and ``mu_i = -m_i exp(-beta_i)`` (the paper's
    ``z_i = (x_i - mu_i) exp(-alpha_i)``), so every conditional standard deviation
    lies in ``(e^-3, e^3)``, about ``(0.05, 20)``, on the (standardised) data, and it is an
    :class:`~invertible.Flow` and works wherever flows do (``transform`` is the
    :class:`MaskedAffineAutoregressive` layer for the loaded mask set).
    With ``masks > 1`` it trains order/connectivity-agnostically and evaluates as
    an ensemble (see the module docstring); ``log_prob`` and ``sample`` then
    describe the mixture, while ``transform`` is the loaded mask set alone.

    Args:
        features: data dimension.
        context_features: conditioning size (the context feeds every hidden unit).
        hidden: hidden widths.
        activation: hidden nonlinearity.
        order: input order of every mask set, unless ``order_agnostic`` and ``masks > 1``.
        masks: size of the mask pool (1: a single fixed MADE).
        ensemble: mask sets averaged at evaluation (default: all ``masks``).
        order_agnostic: mask sets draw random input orders.
        connectivity_agnostic: mask sets draw random hidden degrees (with ``masks > 1``, at least one of the two is on).
        seed: seed of the mask pool (mask set ``k`` from ``1000003 * seed + k``, within torch's generator range).
    """

    def __init__(
        self,
        features: int,
        context_features: int | None = None,
        hidden: Sequence[int] = (128, 128),
        activation: str = "relu",
        order: str | Sequence[int] = "default",
        masks: int = 1,
        ensemble: int | None = None,
        order_agnostic: bool = True,
        connectivity_agnostic: bool = True,
        seed: int = 0,
    ):
        layer = MaskedAffineAutoregressive(features, hidden, context_features, order=order, activation=activation)
        Flow.__init__(self, layer, StandardNormal(features), context_features)
        self.net = layer.net
        self._init_pool(masks, ensemble, order_agnostic, connectivity_agnostic, order, seed)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self._ensemble_log_prob(lambda: Flow.log_prob(self, x, context))

    def _latent_map(self, direction: str, x: Tensor, context: Tensor | None) -> Tensor:
        """:meth:`Flow.encode` and :meth:`Flow.decode` of a single MADE; a pool has no one latent space."""
        if self.masks > 1:
            raise ValueError(f"this MADE is a pool of {self.masks} mask sets, each a bijection of its own, so it has no "
                             "one latent space to encode into or decode from: use one set's, model.transform (the "
                             f"loaded set, {int(self.mask_index)}; model.use_masks(k) loads set k), or train with masks=1")
        return Flow._latent_map(self, direction, x, context)

    def rsample(
        self, n: int | Sequence[int] = 1, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        """Reparameterised samples of the model's mixture: each from one mask set of the ensemble.

        Shapes, ``context`` and ``temperature`` as in :meth:`Flow.rsample`.
        """
        shape, _, x = self._ensemble_rsample(n, context, temperature)
        if self.validate:
            self._check_samples(x, temperature)
        return x.reshape(*shape, *self.event_shape)

    def _ensemble_rsample(
        self, n: int | Sequence[int], context: Tensor | None, temperature: float = 1.0
    ) -> tuple[torch.Size, Tensor | None, Tensor]:
        """``(sample shape, flat context, flat samples)``, each sample from one mask set of the ensemble, unchecked."""
        shape, context, u = self._base_noise(n, context, temperature)

        def draw(idx: Tensor) -> Tensor:
            return self.transform.inverse(u[idx], None if context is None else context[idx])[0]

        return shape, context, self._ensemble_sample(len(u), draw)

    def rsample_and_log_prob(self, n: int | Sequence[int] = 1, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Samples and their log-density: of the loaded mask set in training mode, of the ensemble otherwise.

        As :meth:`Flow.rsample_and_log_prob`: with ``validate`` on, samples that are not finite, and finite samples
        whose log-density is not finite, come back as they are with a ``RuntimeWarning``.
        """
        if self.training or self.masks == 1:
            return Flow.rsample_and_log_prob(self, n, context)
        shape, context, x = self._ensemble_rsample(n, context)

        def single() -> Tensor:
            z, ladj = self.transform(x, context)
            return self.base.log_prob(z) + ladj

        log_p = self._ensemble_log_prob(single)
        if self.validate:
            self._check_samples(x)
            self._check_sample_log_prob(x, log_p)
        return x.reshape(*shape, *self.event_shape), log_p.reshape(shape)


@register("bernoulli_made")
class BernoulliMADE(_MaskPool, nn.Module):
    """Bernoulli MADE for binary vectors: ``p(x_i = 1 | x_<i) = sigmoid(l_i(x_<i))``,

        log p(x) = sum_i [x_i log sigmoid(l_i) + (1 - x_i) log sigmoid(-l_i)].

    A discrete distribution has no bijection to a continuous base, so this model
    is not a :class:`~invertible.Flow`. It keeps the parts of the flow API that
    make sense for it and that the training engine, the command line and
    :func:`invertible.load` use: ``log_prob(x, context=None)`` (exact, in nats;
    ``x`` must be 0/1), ``forward`` (= ``log_prob``), ``sample(n, context=None)``
    (``D`` sequential steps with cached hidden units), ``event_shape``,
    ``context_features``, ``config`` and ``save(path)``. It is built by name like
    every preset: ``invertible.models.build("bernoulli_made", features=64)``.
    There is no ``transform``, ``rsample`` or ``as_distribution``.

    ``validate`` (default ``True``), as :attr:`Flow.validate`: ``log_prob`` checks the shape, dtype and 0/1
    values of ``x`` and the context, and ``sample`` the context, raising ``ValueError``; switch it off for a hot
    path whose data were checked once (the training engine checks every split when it builds the model, see
    :func:`~invertible.train.build.check_fits`, and runs its steps without the checks).

    Arguments as in :class:`MADE` (the mask pool and ensemble work the same way).
    """

    def __init__(
        self,
        features: int,
        context_features: int | None = None,
        hidden: Sequence[int] = (128, 128),
        activation: str = "relu",
        order: str | Sequence[int] = "default",
        masks: int = 1,
        ensemble: int | None = None,
        order_agnostic: bool = True,
        connectivity_agnostic: bool = True,
        seed: int = 0,
    ):
        nn.Module.__init__(self)
        self.context_features = context_features
        self.event_shape = torch.Size((features,))
        self.net = MaskedMLP(features, 1, hidden, context_features, order=order, activation=activation)
        self.config: dict | None = None
        self.validate = True
        self._init_pool(masks, ensemble, order_agnostic, connectivity_agnostic, order, seed)

    _check_dtype = Flow._check_dtype
    _check_context = Flow._check_context

    def _check(self, x: Tensor, context: Tensor | None) -> None:
        """``ValueError`` (``TypeError`` for a dtype) unless ``x`` is a ``(batch, D)`` tensor of 0s and 1s of the
        parameters' dtype and ``context`` fits it."""
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.event_shape[0]:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x has shape {shape}; expected (batch, {self.event_shape[0]})")
        self._check_dtype(x, "x")
        if not ((x == 0) | (x == 1)).all():
            raise ValueError("BernoulliMADE models binary data: x must contain only 0 and 1")
        self._check_context(context, x.shape[:1])

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Exact ``log p(x)`` in nats for ``x`` of shape ``(batch, D)`` with entries in {0, 1}."""
        if self.validate:
            self._check(x, context)

        def single() -> Tensor:
            logits = self.net(x, context)[:, 0]
            return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)

        return self._ensemble_log_prob(single)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.log_prob(x, context)

    @torch.no_grad()
    def sample(self, n: int = 1, context: Tensor | None = None) -> Tensor:
        """``n`` binary samples ``(n, D)``; with a context of batch ``B``, ``(n, B, D)``.

        ``n``: a Python, NumPy or 0-d tensor integer, as for :meth:`Flow.sample`.
        """
        try:
            count = -1 if isinstance(n, bool) else operator.index(n)
        except TypeError:
            count = -1
        if count < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        n = count
        if self.validate:
            self._check_context(context, None)
        if context is None:
            return self._ensemble_sample(n, lambda idx: self._draw(len(idx), None))
        flat = context.reshape(-1, context.shape[-1]).repeat(n, 1)
        x = self._ensemble_sample(flat.shape[0], lambda idx: self._draw(len(idx), flat[idx]))
        return x.view(n, *context.shape[:-1], self.event_shape[0])

    def _draw(self, n: int, context: Tensor | None) -> Tensor:
        def step(i: int, logits: Tensor) -> Tensor:
            return torch.bernoulli(torch.sigmoid(logits[:, 0]))

        return self.net.sequential(step, n, context)

    def save(self, path: str) -> None:
        """Write config and weights to ``path``; read back with :func:`invertible.load`."""
        from ..persistence import save_flow

        save_flow(self, path)  # type: ignore[arg-type]
