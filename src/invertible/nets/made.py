"""Masked MLP: the MADE conditioner of autoregressive flows.

Germain, Gregor, Murray & Larochelle, "MADE: Masked Autoencoder for
Distribution Estimation", ICML 2015.

Each input ``x_i`` gets a degree ``m(i)`` in ``1..D`` (its position in the
autoregressive order). Every hidden unit ``k`` of layer ``l`` gets a degree
``m_l(k)`` and may only see units of the layer below whose degree is not larger:

    M^l[k, j] = 1  if  m_l(k) >= m_{l-1}(j)      (hidden layers)
    M^out[i, k] = 1  if  m(i) > m_L(k)           (output for x_i: strictly earlier inputs)

so output ``i`` depends on ``x_<i`` only and the Jacobian of any transform built
on it is triangular in the order. Hidden degrees lie in ``[1, D - 1]`` — or
``[0, D - 1]`` with a context: degree-0 units see the context alone, and they are
what lets the *first* variable of the order depend on the context.
The context feeds every unit of the first hidden layer through an unmasked
linear map, so it reaches every hidden unit and every output.

Order-agnostic training (a new input order per minibatch) and
connectivity-agnostic training (new hidden degrees) are
:meth:`MaskedMLP.resample`; the masks are buffers, so the current ones are saved
with the model.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import _check_context_features
from ..seeding import seeded_generator
from .mlp import hidden_widths, make_activation

__all__ = ["MaskedLinear", "MaskedMLP", "input_degrees", "hidden_degrees", "lowest_hidden_degree"]

#: ``step(i, params)``: given the parameters ``(batch, params)`` of input ``i``, return its value ``(batch,)``.
Step = Callable[[int, Tensor], Tensor]


class MaskedLinear(nn.Linear):
    """``y = x (W * M)^T + b`` with a fixed binary mask ``M`` (a buffer of the weight's shape)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self.register_buffer("mask", torch.ones(out_features, in_features))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def input_degrees(features: int, order: str | Sequence[int] | Tensor = "default", generator: torch.Generator | None = None) -> Tensor:
    """Degrees ``1..D`` of the inputs: ``order`` lists the input indices from first to last.

    ``"default"`` is ``0, 1, ..., D-1``; ``"reverse"`` is ``D-1, ..., 0``; ``"random"``
    draws a permutation (from ``generator``); a sequence gives the order itself.
    """
    if isinstance(order, str):
        if order == "default":
            perm = torch.arange(features)
        elif order == "reverse":
            perm = torch.arange(features - 1, -1, -1)
        elif order == "random":
            perm = torch.randperm(features, generator=generator)
        else:
            raise ValueError(f"unknown order {order!r}; use 'default', 'reverse', 'random' or a permutation")
    else:
        perm = torch.as_tensor(order)
        if perm.is_floating_point() or perm.is_complex() or perm.dtype == torch.bool:  # a cast would truncate them
            raise ValueError(f"order must be a permutation of 0..{features - 1} (integers), got {order!r}")
        perm = perm.long()
        if perm.shape != (features,) or not torch.equal(perm.sort().values, torch.arange(features)):
            raise ValueError(f"order must be a permutation of 0..{features - 1}, got {perm.tolist()}")
    degrees = torch.empty(features, dtype=torch.long)
    degrees[perm] = torch.arange(1, features + 1)
    return degrees


def lowest_hidden_degree(context_features: int | None) -> int:
    """The lowest degree of a hidden unit: 0 with a context (units that see the context alone), else 1."""
    return 0 if context_features else 1


def hidden_degrees(
    units: int, low: int, high: int, random: bool = False, generator: torch.Generator | None = None
) -> Tensor:
    """Degrees of one hidden layer in ``[low, high]``: cycled evenly, or drawn uniformly (MADE, Sec. 4)."""
    if random:
        return torch.randint(low, high + 1, (units,), generator=generator)
    return torch.arange(units) % (high - low + 1) + low


class MaskedMLP(nn.Module):
    """An autoregressive MLP: ``D`` inputs -> ``params`` outputs per input, output ``(batch, params, D)``.

    ``out[:, p, i]`` depends only on the inputs before ``i`` in the order (and the context).

    Args:
        features: ``D``, the number of inputs.
        params: outputs per input (2 for shift and log-scale, ``3K - 1`` for a spline, 1 for logits).
        hidden: widths of the hidden layers (any number of them, at least one).
        context_features: size of the conditioning vector, or ``None``.
        order: input order: ``"default"``, ``"reverse"``, ``"random"`` or a permutation.
        random_degrees: draw hidden degrees at random instead of cycling them.
        activation: hidden nonlinearity (see :data:`invertible.nets.mlp.ACTIVATIONS`).
        zero_init: start the output layer at zero, so a flow layer on it starts as the identity.
        seed: seed of the random order/degrees drawn at construction.
    """

    def __init__(
        self,
        features: int,
        params: int = 2,
        hidden: Sequence[int] = (64, 64),
        context_features: int | None = None,
        order: str | Sequence[int] | Tensor = "default",
        random_degrees: bool = False,
        activation: str = "relu",
        zero_init: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        hidden = hidden_widths(hidden)
        _check_context_features(context_features)
        if features < 1 or params < 1 or not hidden or min(hidden) < 1:
            raise ValueError(f"MaskedMLP needs features >= 1, params >= 1 and at least one hidden layer, each of width >= 1; "
                             f"got features={features}, params={params}, hidden={hidden}")
        self.features, self.params, self.hidden = features, params, hidden
        self.context_features = context_features
        self.random_degrees = random_degrees
        self.activation = make_activation(activation, inplace=True)  # always applied to a fresh pre-activation
        sizes = [features, *hidden]
        self.layers = nn.ModuleList(MaskedLinear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.output = MaskedLinear(hidden[-1], params * features)
        self.context = nn.Linear(context_features, hidden[0], bias=False) if context_features else None
        if zero_init:
            nn.init.zeros_(self.output.weight)
            nn.init.zeros_(self.output.bias)
        self.register_buffer("degrees", torch.zeros(features, dtype=torch.long))
        for i, h in enumerate(hidden):
            self.register_buffer(f"hidden_degrees_{i}", torch.zeros(h, dtype=torch.long))
        g = seeded_generator(seed)
        self.set_degrees(input_degrees(features, order, g), g)
        self.register_load_state_dict_post_hook(MaskedMLP._check_loaded)

    @property
    def min_hidden_degree(self) -> int:
        """0 with a context (context-only units), else 1 (:func:`lowest_hidden_degree`)."""
        return lowest_hidden_degree(self.context_features)

    @property
    def max_hidden_degree(self) -> int:
        """``D - 1`` (a unit of degree ``D`` would reach no output), or the lowest degree where that is below it."""
        return max(self.features - 1, self.min_hidden_degree)

    def layer_degrees(self) -> list[Tensor]:
        """Degrees of the inputs, then of every hidden layer."""
        return [self.degrees, *(getattr(self, f"hidden_degrees_{i}") for i in range(len(self.hidden)))]

    @torch.no_grad()
    def set_degrees(self, degrees: Tensor, generator: torch.Generator | None = None) -> None:
        """Set the input degrees, draw/cycle the hidden degrees and rebuild every mask.

        The masks are new tensors, not overwritten in place: a graph built with the
        previous masks (an ensemble's earlier mask sets) can still backpropagate.
        """
        self.degrees.copy_(degrees)
        low, high = self.min_hidden_degree, self.max_hidden_degree
        prev = degrees
        for i in range(len(self.layers)):
            lo = max(int(prev.min()), low) if self.random_degrees and i > 0 else low
            lo = min(lo, high)
            deg = hidden_degrees(self.hidden[i], lo, high, self.random_degrees, generator)
            if self.random_degrees and self.context_features:
                deg[0] = low  # keep a context-only path to the first variable
            getattr(self, f"hidden_degrees_{i}").copy_(deg)
            prev = deg
        self._build_masks()

    def _build_masks(self) -> None:
        """The masks of the degree buffers, as new tensors:
        ``M^l[k, j] = [m_l(k) >= m_{l-1}(j)]``, ``M^out[i, k] = [m(i) > m_L(k)]``.

        Made outside ``torch.inference_mode`` even when called inside it (a MADE ensemble loads its
        mask sets in every evaluation): a mask made there would be an inference tensor, which the
        training passes after it could not save for backward.
        """
        with torch.inference_mode(False):
            for layer, mask in zip([*self.layers, self.output], self._masks()):
                layer.mask = mask.to(layer.mask)

    def _masks(self) -> list[Tensor]:
        """The boolean masks of the degree buffers, of the hidden layers and then of the output layer."""
        degrees = self.layer_degrees()
        hidden = [deg[:, None] >= prev[None, :] for prev, deg in zip(degrees[:-1], degrees[1:])]
        return [*hidden, (self.degrees[:, None] > degrees[-1][None, :]).repeat(self.params, 1)]

    def _check_loaded(self, _incompatible_keys: object) -> None:
        """After ``load_state_dict``: the degrees are a MADE's and the masks those they give. A state whose masks
        or degrees were edited loaded as it was: all-ones masks gave a network that is not autoregressive (its
        log-det no longer that of its Jacobian), degrees outside ``1..D`` sampled silently."""
        d, low, high = self.features, self.min_hidden_degree, self.max_hidden_degree
        if not torch.equal(self.degrees.sort().values.cpu(), torch.arange(1, d + 1)):
            raise ValueError(f"the loaded input degrees {self.degrees.tolist()} are not a permutation of 1..{d}")
        for i, deg in enumerate(self.layer_degrees()[1:]):
            if int(deg.min()) < low or int(deg.max()) > high:
                raise ValueError(f"the loaded degrees of hidden layer {i} lie in {int(deg.min())}..{int(deg.max())}, "
                                 f"outside {low}..{high}")
        for layer, mask in zip([*self.layers, self.output], self._masks()):
            if not torch.equal(layer.mask.cpu(), mask.to(layer.mask).cpu()):
                raise ValueError("the loaded masks are not those of the loaded degrees: the network would not be "
                                 "autoregressive")

    def resample(self, order: bool = True, connectivity: bool = True, generator: torch.Generator | None = None) -> None:
        """Draw a new random input order and/or new hidden degrees (order/connectivity-agnostic training).

        ``connectivity=False`` keeps the hidden degrees as they are (cycled, or drawn before): the
        ranges they come from do not depend on the input order, so only the masks are rebuilt.
        """
        degrees = input_degrees(self.features, "random", generator) if order else self.degrees.clone()
        if not connectivity:
            self.degrees.copy_(degrees)
            self._build_masks()
            return
        random_degrees = self.random_degrees
        self.random_degrees = True
        try:
            self.set_degrees(degrees, generator)
        finally:
            self.random_degrees = random_degrees

    def order(self) -> Tensor:
        """Input indices from first to last in the autoregressive order."""
        return torch.argsort(self.degrees)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        # The layers are called through ``forward``, not ``__call__``: at MADE sizes the
        # module-call machinery costs as much as the arithmetic of a small layer (hooks
        # registered on the sub-layers therefore do not fire; hooks on the MADE do).
        act = self.activation.forward
        layers = iter(self.layers)  # slicing a ModuleList builds a new ModuleList at every call
        h = next(layers).forward(x)
        if self.context is not None:
            if context is None:
                raise ValueError(f"this network expects a context of {self.context_features} features")
            h = h + self.context(context)
        h = act(h)
        for layer in layers:
            h = act(layer.forward(h))
        return self.output.forward(h).view(x.shape[0], self.params, self.features)

    def sequential(self, step: Step, batch: int, context: Tensor | None = None, like: Tensor | None = None) -> Tensor:
        """Fill in the inputs one at a time in the order: ``x_i = step(i, out[:, :, i])``; returns ``x`` ``(batch, D)``.

        This is the sampling direction of MAF (and the density direction of IAF):
        ``D`` sequential steps, since output ``i`` needs ``x_<i``. It does *not*
        re-run the network ``D`` times: a hidden unit of degree ``m`` depends on
        the inputs of degree ``<= m`` only, so its value is final once those are
        known. Step ``j`` computes just the units of degree ``j`` in each layer
        (from the prefix of finished units below, with units kept sorted by degree)
        and the outputs of the ``(j+1)``-th input, so all ``D`` steps together cost
        about one forward pass of the network. Under ``torch.no_grad`` the units
        are written into preallocated buffers; with gradients enabled they are
        concatenated out of place, so the result is differentiable.
        """
        like = like if like is not None else self.output.weight
        d, n_layers = self.features, len(self.layers)
        in_place = not torch.is_grad_enabled()
        order = self.order()
        positions = order.tolist()  # read once: one int(order[j]) per step read the device D times
        perms = [torch.argsort(deg, stable=True) for deg in self.layer_degrees()[1:]]
        # ends[l][m]: number of units of layer l with degree <= m (units sorted by degree)
        ends = [torch.searchsorted(deg.sort().values, torch.arange(d, device=deg.device), right=True).tolist()
                for deg in self.layer_degrees()[1:]]
        cols = [order, *perms[:-1]]
        weights = [(layer.weight * layer.mask)[perm][:, col] for layer, perm, col in zip(self.layers, perms, cols)]
        biases = [layer.bias[perm] for layer, perm in zip(self.layers, perms)]
        w_out = (self.output.weight * self.output.mask).view(self.params, d, -1)[:, order][:, :, perms[-1]]
        b_out = self.output.bias.view(self.params, d)[:, order]
        if self.context is not None:
            if context is None:
                raise ValueError(f"this network expects a context of {self.context_features} features")
            ctx_h = self.context(context)[:, perms[0]]
        x = _Prefix(batch, d, like, in_place)
        hs = [_Prefix(batch, h, like, in_place) for h in self.hidden]
        for j in range(d):
            below = x
            for l in range(n_layers):
                lo, hi = (ends[l][j - 1] if j else 0), ends[l][j]
                width = j if l == 0 else ends[l - 1][j]
                if hi > lo:
                    pre = torch.addmm(biases[l][lo:hi], below.prefix(width), weights[l][lo:hi, :width].t())
                    if l == 0 and self.context is not None:
                        pre = pre + ctx_h[:, lo:hi]
                    hs[l].append(self.activation(pre))
                below = hs[l]
            width = ends[-1][j]
            params = torch.addmm(b_out[:, j], hs[-1].prefix(width), w_out[:, j, :width].t())
            x.append(step(positions[j], params).unsqueeze(1))
        return x.prefix(d)[:, torch.argsort(order)]


class _Prefix:
    """A ``(batch, width)`` block of units filled left to right; :meth:`prefix` reads the filled part."""

    def __init__(self, batch: int, width: int, like: Tensor, in_place: bool):
        self.in_place = in_place
        self.filled = 0
        self.data = like.new_empty(batch, width) if in_place else like.new_empty(batch, 0)

    def append(self, block: Tensor) -> None:
        if self.in_place:
            self.data[:, self.filled : self.filled + block.shape[1]] = block
        else:
            self.data = torch.cat([self.data, block], dim=1)
        self.filled += block.shape[1]

    def prefix(self, n: int) -> Tensor:
        return self.data[:, :n]
