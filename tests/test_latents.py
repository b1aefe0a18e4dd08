"""``Flow.encode`` / ``Flow.decode`` and the ``encode`` / ``decode`` commands: data to latents and back."""

from __future__ import annotations

import warnings

import pytest
import torch

from invertible import Flow
from invertible.distributions import StandardNormal
from invertible.models import build
from invertible.transforms import ElementwiseAffine


@pytest.mark.parametrize("name, options, shape", [
    ("realnvp", {"features": 3, "layers": 2, "hidden": [8], "context_features": 2}, (3,)),
    ("maf", {"features": 3, "layers": 2, "hidden": [8], "context_features": 2}, (3,)),
    ("glow", {"event_shape": (1, 4, 4), "levels": 1, "steps": 2, "hidden": 8, "context_features": 2}, (1, 4, 4)),
])
def test_decode_inverts_encode_and_encode_is_the_transform(name, options, shape) -> None:
    torch.manual_seed(0)
    flow = build(name, **options).double().eval()
    with torch.no_grad():  # move every zero-initialised output layer off its identity start
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 3, *shape, dtype=torch.float64)
    c = torch.randn(2, 3, 2, dtype=torch.float64)
    z = flow.encode(x, c)
    assert z.shape == x.shape
    expected, _ = flow.transform(x.flatten(0, 1), c.flatten(0, 1))
    torch.testing.assert_close(z.flatten(0, 1), expected)
    assert not torch.allclose(z, x)
    torch.testing.assert_close(flow.decode(z, c), x)
    # the density is the base's at the latent times the Jacobian factor
    _, ladj = flow.transform(x.flatten(0, 1), c.flatten(0, 1))
    torch.testing.assert_close(flow.log_prob(x, c).flatten(), flow.base.log_prob(z.flatten(0, 1)) + ladj)


def test_encode_carries_gradients_to_the_data_and_parameters() -> None:
    torch.manual_seed(0)
    flow = build("realnvp", features=2, layers=2, hidden=[8])
    x = torch.randn(4, 2, requires_grad=True)
    flow.encode(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in flow.parameters())


def test_encode_and_decode_check_their_inputs() -> None:
    flow = build("maf", features=3, layers=1, hidden=[8], context_features=2)
    c = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"z has shape \(4, 2\); expected \(batch, 3\)"):
        flow.decode(torch.zeros(4, 2), c)
    with pytest.raises(ValueError, match=r"x has shape \(4, 2\); expected \(batch, 3\)"):
        flow.encode(torch.zeros(4, 2), c)
    with pytest.raises(ValueError, match="z contains 1 non-finite value"):
        flow.decode(torch.tensor([[0.0, float("inf"), 0.0]]), c[:1])
    with pytest.raises(ValueError, match="this flow is conditional"):
        flow.encode(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"context batch shape \(3,\) does not match the data batch shape \(4,\)"):
        flow.decode(torch.zeros(4, 3), c[:3])
    with pytest.raises(TypeError, match=r"z has dtype torch.float64 but the flow's parameters are torch.float32"):
        flow.decode(torch.zeros(4, 3, dtype=torch.float64), c)


def test_points_the_maps_overflow_come_back_with_a_warning() -> None:
    scale = ElementwiseAffine(2, shift=False)
    with torch.no_grad():
        scale.log_scale.fill_(-10.0)  # the inverse multiplies by e^10
    flow = Flow(scale, StandardNormal(2))
    z = torch.tensor([[1e36, 0.0], [1.0, 2.0]])
    with pytest.warns(RuntimeWarning, match=r"1 of 2 decoded point\(s\) are not finite: the inverse map overflowed "
                                            r"the torch.float32 range; decode in float64"):
        x = flow.decode(z)
    assert torch.isinf(x[0, 0]) and torch.isfinite(x[1]).all()
    with torch.no_grad():
        scale.log_scale.fill_(10.0)
    with pytest.warns(RuntimeWarning, match=r"1 of 2 latent\(s\) are not finite: the forward map overflowed the "
                                            r"torch.float32 range; encode in float64"):
        flow.encode(z)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flow.encode(torch.ones(3, 2))


def test_a_made_pool_has_no_one_latent_space() -> None:
    single = build("made", features=3, hidden=[8])
    x = torch.randn(5, 3)
    torch.testing.assert_close(single.decode(single.encode(x)), x, atol=1e-5, rtol=1e-5)
    pool = build("made", features=3, hidden=[8], masks=4)
    with pytest.raises(ValueError, match=r"this MADE is a pool of 4 mask sets.*model.transform \(the loaded set, 0"):
        pool.encode(x)
    with pytest.raises(ValueError, match="this MADE is a pool of 4 mask sets"):
        pool.decode(x)
