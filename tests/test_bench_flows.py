"""The benchmark builds the same architecture in every library: sizes and masks agree layer by layer."""

from __future__ import annotations

import pytest
import torch

from bench._flows import MODELS, Spec, build, parameters


def _density_layers(library: str, model) -> list:
    """Each library's coupling layers in the density (data -> noise) direction, as functions x -> y."""
    net = model.net
    if library == "invertible":
        return [lambda x, t=t: t(x)[0] for t in net.transform]
    if library == "zuko":
        return [lambda x, t=t: t(None)(x) for t in net.transform.transforms]
    if library == "nflows":
        return [lambda x, t=t: t(x)[0] for t in net._transform._transforms]
    if library == "normflows":
        return [lambda x, t=t: t.inverse(x)[0] for t in reversed(net.flows)]
    raise AssertionError(library)


@pytest.mark.parametrize("features", [2, 4])
def test_identical_realnvp_in_every_library(features: int) -> None:
    spec = Spec(features=features, layers=3, hidden=(8, 8))
    sizes = set()
    for library in MODELS["realnvp"]:
        torch.manual_seed(0)
        model = build("realnvp", library, spec)
        sizes.add(parameters(model))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.2 * torch.randn_like(p))  # no layer may stay the identity
        layers = _density_layers(library, model)
        assert len(layers) == spec.layers
        x = torch.randn(16, features)
        with torch.no_grad():
            for i, layer in enumerate(layers):
                y = layer(x)
                fixed = (torch.arange(features) % 2) == (i % 2)
                assert torch.equal(y[:, fixed], x[:, fixed]), f"{library}: layer {i} moved a feature it should keep"
                assert not torch.allclose(y[:, ~fixed], x[:, ~fixed]), f"{library}: layer {i} kept a feature it should move"
                x = y
        assert model.log_prob(torch.randn(5, features)).shape == (5,) and model.sample(3).shape == (3, features)
    assert len(sizes) == 1, f"parameter counts differ between libraries: {sizes}"
