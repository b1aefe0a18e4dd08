"""The inference caches of the linear layers never serve a stale inverse or log-det.

Every cached layer (``FullLinear``, ``BlockDiagonalLinear``, ``Conv1x1``, ``LUConv1x1``, ``PeriodicConv``) is used in
evaluation mode under ``torch.no_grad`` (filling its cache), its weights are changed one way or another, and its
forward and inverse passes are then compared with a freshly built layer in training mode (which caches nothing)
holding the same weights: optimiser steps (foreach and fused), ``load_state_dict``, ``copy_``, writes through
``p.data``, ``.to(float64)``, ``torch.func.functional_call``, the training engine's EMA, ``nn.utils.parametrize`` and
weight tying; ``torch.func.vmap`` over weights runs and gives each weight's own log-det; and a Glow evaluated
before a fused Adam step scores with its new weights after it.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from invertible.core import Inverse
from invertible.models import build
from invertible.train.ema import EMA
from invertible.transforms import BlockDiagonalLinear, FullLinear
from invertible.transforms.conv import Conv1x1, LUConv1x1, PeriodicConv

LAYERS = {
    "full": (lambda: FullLinear(4, seed=1), (4,)),
    "block": (lambda: BlockDiagonalLinear(4, 2, seed=1), (4,)),
    "conv1x1": (lambda: Conv1x1(3, seed=1), (3, 4, 4)),
    "lu_conv1x1": (lambda: LUConv1x1(3, seed=1), (3, 4, 4)),
    "periodic": (lambda: PeriodicConv(3), (3, 4, 4)),
}


def _input(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(5, *shape, generator=torch.Generator().manual_seed(3), dtype=dtype)


def _warm(layer: nn.Module, x: torch.Tensor) -> None:
    """Fills the caches: forward and inverse at inference."""
    layer.eval()
    with torch.no_grad():
        layer(x)
        layer.inverse(x)


def _check_fresh(name: str, layer: nn.Module, x: torch.Tensor) -> None:
    """``layer`` at inference equals a new layer in training mode given its (effective) weights."""
    make, _ = LAYERS[name]
    fresh = make().to(x.dtype).train()
    with torch.no_grad():
        for key, value in fresh.state_dict().items():
            value.copy_(getattr(layer, key))
    layer.eval()
    with torch.no_grad():
        for direction in ("forward", "inverse"):
            out, ladj = getattr(layer, direction)(x)
            ref, ref_ladj = getattr(fresh, direction)(x)
            torch.testing.assert_close(out, ref.detach(), msg=f"{direction} output")
            torch.testing.assert_close(ladj, ref_ladj.detach(), msg=f"{direction} log-det")


def _training_step(layer: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> None:
    layer.train()
    z, ladj = layer(x)
    (0.5 * z.pow(2).flatten(1).sum(1) - ladj).mean().backward()
    optimizer.step()
    optimizer.zero_grad()


OPTIMIZERS = {
    "adam_foreach": lambda p: torch.optim.Adam(p, lr=0.1, foreach=True),
    "adam_fused": lambda p: torch.optim.Adam(p, lr=0.1, fused=True),
    "adamw_fused": lambda p: torch.optim.AdamW(p, lr=0.1, fused=True),
    "sgd_fused": lambda p: torch.optim.SGD(p, lr=0.1, fused=True),
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1, foreach=False),
}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("name", LAYERS)
def test_an_optimiser_step_renews_the_cache(name: str, optimizer: str) -> None:
    make, shape = LAYERS[name]
    layer, x = make(), _input(shape)
    opt = OPTIMIZERS[optimizer](layer.parameters())
    for _ in range(2):  # each step after the cache was filled
        _warm(layer, x)
        _training_step(layer, opt, x)
        _check_fresh(name, layer, x)


@pytest.mark.parametrize("name", LAYERS)
def test_load_state_dict_copy_and_data_writes_renew_the_cache(name: str) -> None:
    make, shape = LAYERS[name]
    layer, x = make(), _input(shape)
    other = make()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.2 * torch.randn_like(p))
    _warm(layer, x)
    layer.load_state_dict(other.state_dict())
    _check_fresh(name, layer, x)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(p + 0.1)
    _check_fresh(name, layer, x)
    for p in layer.parameters():
        p.data = p.data * 1.1  # bypasses the version counter
    _check_fresh(name, layer, x)
    for p in layer.parameters():
        p.data.mul_(0.9)
    _check_fresh(name, layer, x)


@pytest.mark.parametrize("name", LAYERS)
def test_a_change_of_dtype_renews_the_cache(name: str) -> None:
    make, shape = LAYERS[name]
    layer = make()
    _warm(layer, _input(shape))
    layer.to(torch.float64)
    x = _input(shape, torch.float64)
    _check_fresh(name, layer, x)
    with torch.no_grad():
        assert layer(x)[1].dtype == layer.inverse(x)[0].dtype == torch.float64


@pytest.mark.parametrize("name", LAYERS)
def test_functional_call_sees_the_weights_it_is_given(name: str) -> None:
    make, shape = LAYERS[name]
    layer, x = make(), _input(shape)
    both = Inverse(layer)  # its forward is the layer's inverse
    _warm(layer, x)
    for scale in (1.5, 0.5, 1.5, 1.0):
        weights = {k: v * scale for k, v in layer.state_dict().items() if v.is_floating_point()}
        shifted = make().train()
        shifted.load_state_dict(weights, strict=False)
        with torch.no_grad():
            for module, prefix, direction in ((layer, "", "forward"), (both, "transform.", "inverse")):
                out, ladj = torch.func.functional_call(module, {prefix + k: v for k, v in weights.items()}, (x,))
                ref, ref_ladj = getattr(shifted, direction)(x)
                torch.testing.assert_close(out, ref.detach(), msg=f"{direction} output at scale {scale}")
                torch.testing.assert_close(ladj, ref_ladj.detach(), msg=f"{direction} log-det at scale {scale}")
    _check_fresh(name, layer, x)  # and the layer's own weights afterwards


@pytest.mark.parametrize("name", LAYERS)
def test_the_engines_ema_update_renews_the_cache_of_the_average(name: str) -> None:
    make, shape = LAYERS[name]
    layer, x = make(), _input(shape)
    ema = EMA(layer, decay=0.5)
    opt = torch.optim.Adam(layer.parameters(), lr=0.1, foreach=True)
    for _ in range(2):
        _warm(ema.model, x)
        _training_step(layer, opt, x)
        ema.update(layer)
        _check_fresh(name, ema.model, x)


class _Double(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * w


#: the parameter each layer gets a parametrization on
PARAMETRIZED = {
    "full": "weight",
    "block": "blocks",
    "conv1x1": "weight",
    "lu_conv1x1": "log_abs_s",
    "periodic": "kernel",
}


@pytest.mark.parametrize("name", LAYERS)
def test_a_parametrized_weight_renews_the_cache_when_its_original_changes(name: str) -> None:
    make, shape = LAYERS[name]
    layer, x = make(), _input(shape)
    nn.utils.parametrize.register_parametrization(layer, PARAMETRIZED[name], _Double())
    _check_fresh(name, layer, x)
    with torch.no_grad():
        getattr(layer.parametrizations, PARAMETRIZED[name]).original.mul_(0.7)
    _check_fresh(name, layer, x)


@pytest.mark.parametrize("name", ["full", "conv1x1"])
def test_tied_weights_renew_both_caches(name: str) -> None:
    make, shape = LAYERS[name]
    a, b, x = make(), make(), _input(shape)
    b.weight = a.weight
    _warm(a, x)
    _warm(b, x)
    with torch.no_grad():
        b.weight.mul_(1.3)
    _check_fresh(name, a, x)
    _check_fresh(name, b, x)


@pytest.mark.parametrize("name", LAYERS)
def test_vmap_over_weights_gives_each_its_own_log_det(name: str) -> None:
    make, shape = LAYERS[name]
    layer, x = make(), _input(shape)
    _warm(layer, x)
    scales = torch.tensor([0.5, 1.0, 2.0])
    weights = {k: v.detach() for k, v in layer.named_parameters()}

    def run(scale: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(layer, {k: v * scale for k, v in weights.items()}, (x,))[1]

    with torch.no_grad():
        batched = torch.func.vmap(run)(scales)
        for row, scale in zip(batched, scales):
            torch.testing.assert_close(row, run(scale))
    assert not torch.allclose(batched[0], batched[2])


@pytest.mark.parametrize("permutation", ["conv1x1", "conv1x1_lu"])
def test_a_glow_scored_after_a_fused_adam_step_scores_with_its_new_weights(permutation: str) -> None:
    torch.manual_seed(0)
    flow = build("glow", event_shape=[1, 4, 4], levels=1, steps=2, hidden=4, permutation=permutation)
    x = torch.randn(8, 1, 4, 4)
    flow.log_prob(x)  # initialises ActNorm
    opt = torch.optim.Adam(flow.parameters(), lr=0.1, fused=True)
    flow.eval()
    with torch.no_grad():
        flow.log_prob(x)
    flow.train()
    (-flow.log_prob(x).mean()).backward()
    opt.step()
    flow.eval()
    with torch.no_grad():
        cached = flow.log_prob(x)
    flow.train()
    torch.testing.assert_close(cached, flow.log_prob(x).detach())


@pytest.mark.parametrize("name", LAYERS)
def test_writing_to_a_returned_log_det_leaves_the_cache_alone(name: str) -> None:
    """A batch of one gets the stored log-det expanded to one row: a caller's ``+=`` on it must not reach the
    value that later calls return."""
    make, shape = LAYERS[name]
    layer = make()
    x = _input(shape)[:1]
    _warm(layer, x)
    with torch.no_grad():
        for direction in ("forward", "inverse"):
            _, ladj = getattr(layer, direction)(x)
            expected = ladj.clone()
            ladj += 100.0
            torch.testing.assert_close(getattr(layer, direction)(x)[1], expected, msg=direction)
