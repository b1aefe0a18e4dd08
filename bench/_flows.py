"""The same flow built in each library, so the benchmarks compare implementations, not architectures.

``MODELS[name][library](spec)`` returns a :class:`Model` with ``log_prob(x)``
and ``sample(n)``. Within one model name every library gets the same number of
coupling layers, the same hidden widths and activation of the conditioner
MLPs, the same masks in the same order (layer ``i`` keeps the features of
parity ``i % 2`` fixed and transforms the others, in the density direction)
and a fixed standard normal base. What stays each library's own is what its
users get by default: the scale function of the affine coupling and the
initialisation of the conditioners. A later family adds its entries to
:data:`MODELS` (for example ``MODELS["maf"] = {...}``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

import invertible


@dataclass(frozen=True)
class Spec:
    """Architecture shared by every library: data size, coupling layers, conditioner hidden widths."""

    features: int = 2
    layers: int = 8
    hidden: tuple[int, ...] = (64, 64)

    def describe(self) -> str:
        return f"{self.layers} affine couplings, MLP {self.features // 2}->{'->'.join(map(str, self.hidden))}, ReLU, D={self.features}"


class Model(nn.Module):
    """One library's flow behind a common face: ``log_prob(x) -> (batch,)`` and ``sample(n) -> (n, D)``."""

    def __init__(self, net: nn.Module, log_prob: Callable[[Tensor], Tensor], sample: Callable[[int], Tensor]):
        super().__init__()
        self.net = net
        self._log_prob = log_prob
        self._sample = sample

    def log_prob(self, x: Tensor) -> Tensor:
        return self._log_prob(x)

    def sample(self, n: int) -> Tensor:
        return self._sample(n)


def _identity_mask(spec: Spec, i: int) -> Tensor:
    """True where layer ``i`` keeps a feature fixed (as ``invertible``'s ``alternating_mask``)."""
    return invertible.transforms.alternating_mask(spec.features, i % 2)


def _invertible_realnvp(spec: Spec) -> Model:
    flow = invertible.models.RealNVP(spec.features, layers=spec.layers, hidden=list(spec.hidden))
    flow.validate = False  # the peers do not check their inputs either
    return Model(flow, flow.log_prob, flow.sample)


def _zuko_realnvp(spec: Spec) -> Model:
    import zuko

    flow = zuko.flows.RealNVP(spec.features, transforms=spec.layers, hidden_features=spec.hidden, activation=nn.ReLU)
    # zuko's mask i is ``arange(D) % 2 == i % 2`` with True = conditioning (fixed) features: identical to ours.
    for i, t in enumerate(flow.transform.transforms):
        assert torch.equal(t.mask, _identity_mask(spec, i))
    return Model(flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,)))


class _PlainMLP(nn.Module):
    """nflows calls its conditioner as ``net(x, context)``; a plain ReLU MLP with default initialisation."""

    def __init__(self, in_features: int, out_features: int, hidden: tuple[int, ...]):
        super().__init__()
        sizes = [in_features, *hidden, out_features]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Linear(a, b))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x)


def _nflows_realnvp(spec: Spec) -> Model:
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.transforms import AffineCouplingTransform, CompositeTransform

    layers = [
        # nflows: mask > 0 marks the transformed features, <= 0 the fixed ones
        AffineCouplingTransform((~_identity_mask(spec, i)).int(), lambda a, b: _PlainMLP(a, b, spec.hidden))
        for i in range(spec.layers)
    ]
    flow = Flow(CompositeTransform(layers), StandardNormal([spec.features]))
    return Model(flow, flow.log_prob, flow.sample)


def _normflows_realnvp(spec: Spec) -> Model:
    import normflows as nf

    n_fixed = int(_identity_mask(spec, 0).sum())
    n_moved = spec.features - n_fixed
    blocks = []
    for i in range(spec.layers):
        # normflows fixes the odd features in "checkerboard" mode and the even ones in "checkerboard_inv";
        # its list runs in the sampling direction, so density-direction layer i is block layers-1-i.
        mode = "checkerboard_inv" if i % 2 == 0 else "checkerboard"
        a, b = (n_fixed, n_moved) if i % 2 == 0 else (n_moved, n_fixed)
        net = nf.nets.MLP([a, *spec.hidden, 2 * b], init_zeros=True)
        blocks.append(nf.flows.AffineCouplingBlock(net, split_mode=mode))
    flow = nf.NormalizingFlow(nf.distributions.DiagGaussian(spec.features, trainable=False), blocks[::-1])
    return Model(flow, flow.log_prob, lambda n: flow.sample(n)[0])


#: model name -> library -> builder. ``invertible`` must be present in every entry.
MODELS: dict[str, dict[str, Callable[[Spec], Model]]] = {
    "realnvp": {
        "invertible": _invertible_realnvp,
        "zuko": _zuko_realnvp,
        "nflows": _nflows_realnvp,
        "normflows": _normflows_realnvp,
    },
}


def build(model: str, library: str, spec: Spec) -> Model:
    """Build ``model`` in ``library`` with the shared architecture ``spec``."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; benchmarked models: {sorted(MODELS)}")
    if library not in MODELS[model]:
        raise ValueError(f"no {library!r} build of {model!r}; libraries: {sorted(MODELS[model])}")
    return MODELS[model][library](spec)


def check_names(parser: argparse.ArgumentParser, models: list[str], peers: list[str]) -> None:
    """A usage error for an unknown ``--models`` or ``--peers`` name (instead of a silently skipped peer)."""
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {', '.join(map(repr, unknown))}; benchmarked models: {', '.join(MODELS)}")
    libraries = sorted({lib for m in models for lib in MODELS[m]} - {"invertible"})
    unknown = [p for p in peers if p not in libraries]
    if unknown:
        parser.error(f"--peers: unknown {', '.join(map(repr, unknown))}; peers of {', '.join(models)}: {', '.join(libraries)}")


def parameters(model: Model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
