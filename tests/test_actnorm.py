"""ActNorm's data-dependent initialisation: once, on the first training pass; again only for a loaded uninitialised state."""

import numpy as np
import pytest
import torch

from invertible.transforms import ActNorm


def test_first_training_pass_initialises_and_later_ones_do_not():
    torch.manual_seed(0)
    layer = ActNorm(3)
    x = 2.0 + 3.0 * torch.randn(256, 3)
    z, _ = layer(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    loc = layer.loc.detach().clone()
    layer(x + 10.0)
    torch.testing.assert_close(layer.loc.detach(), loc)


def test_image_initialisation_pools_each_channel_over_the_batch_and_the_pixels():
    torch.manual_seed(0)
    layer = ActNorm(2)
    x = torch.randn(32, 2, 5, 4) * torch.tensor([0.5, 4.0]).view(1, 2, 1, 1) + torch.tensor([3.0, -1.0]).view(1, 2, 1, 1)
    z, ladj = layer(x)
    torch.testing.assert_close(z.mean((0, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std((0, 2, 3), unbiased=False), torch.ones(2), atol=1e-4, rtol=0)
    std = x.std((0, 2, 3), unbiased=False)
    torch.testing.assert_close(ladj, torch.full((32,), -20 * std.log().sum().item()), rtol=1e-5, atol=1e-5)


def test_an_empty_batch_leaves_the_initialisation_to_the_next_one():
    layer = ActNorm(3)
    z, ladj = layer(torch.empty(0, 3))
    assert z.shape == (0, 3) and ladj.shape == (0,) and not bool(layer.initialized)
    x = 2.0 + 3.0 * torch.randn(256, 3)
    layer(x)
    torch.testing.assert_close(layer.loc.detach(), x.mean(0))


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_a_first_batch_with_nan_or_inf_is_refused_and_the_next_one_initialises(bad):
    """Its statistics would set loc or log_scale to inf or NaN for good, every later output NaN."""
    layer = ActNorm(2)
    x = torch.randn(8, 2)
    x[3, 1] = bad
    with pytest.raises(ValueError, match="ActNorm cannot initialise from a batch holding NaN or inf"):
        layer(x)
    assert not layer.initialized
    good = torch.randn(8, 2) * 3 + 1
    z, _ = layer(good)
    torch.testing.assert_close(z.mean(0), torch.zeros(2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("eps", [-1.0, float("nan"), float("inf"), "1e-6", True])
def test_normalisation_layers_refuse_an_eps_that_is_not_a_finite_number_at_least_zero(eps):
    from invertible.transforms import BatchNorm

    for layer in (ActNorm, BatchNorm):
        with pytest.raises(ValueError, match="eps must be a finite number >= 0, got"):
            layer(2, eps=eps)
    assert ActNorm(2, eps=0).eps == 0.0 and BatchNorm(2, eps=0).eps == 0.0
    assert ActNorm(2, eps=np.float32(0.5)).eps == 0.5 and BatchNorm(2, eps=np.float64(0.5)).eps == 0.5  # numpy's too


def test_loaded_flag_decides_whether_the_next_pass_initialises():
    torch.manual_seed(0)
    x = torch.randn(64, 2) * 5
    trained = ActNorm(2)
    trained(x)
    fresh = ActNorm(2)
    fresh(torch.randn(64, 2))  # initialised on other data
    fresh.load_state_dict(trained.state_dict())
    fresh(x + 100.0)  # the loaded state is initialised: kept
    torch.testing.assert_close(fresh.loc.detach(), trained.loc.detach())
    trained.load_state_dict(ActNorm(2).state_dict())  # an uninitialised state: initialise again
    trained(x + 100.0)
    torch.testing.assert_close(trained.loc.detach(), (x + 100.0).mean(0), rtol=1e-5, atol=1e-4)


def test_training_through_the_inverse_marks_the_layer_initialised():
    """A layer fitted by its samples keeps what it learnt when a forward pass comes later; sampling alone
    (no gradients) leaves the data-dependent start to the first forward pass."""
    torch.manual_seed(0)
    sampled = ActNorm(2)
    with torch.no_grad():
        sampled.inverse(torch.randn(64, 2))
    x = 3.0 + 2.0 * torch.randn(256, 2)
    sampled(x)
    torch.testing.assert_close(sampled.loc.detach(), x.mean(0))
    fitted = ActNorm(2)
    optimizer = torch.optim.SGD(fitted.parameters(), lr=0.1)
    for _ in range(5):
        x_fit, _ = fitted.inverse(torch.randn(64, 2))
        optimizer.zero_grad()
        (x_fit - 5.0).square().mean().backward()
        optimizer.step()
    learnt = fitted.loc.detach().clone()
    assert bool(fitted.initialized) and learnt.abs().min() > 0.5
    fitted(x)
    torch.testing.assert_close(fitted.loc.detach(), learnt)


def test_a_channel_without_spread_is_centred_not_scaled_by_one_over_eps():
    x = torch.tensor([[[[0.3]], [[-1.2]]]])  # one image of 2 channels and 1x1 pixels
    layer = ActNorm(2)
    z, ladj = layer(x)
    torch.testing.assert_close(layer.loc.detach(), x.flatten())
    torch.testing.assert_close(layer.log_scale.detach(), torch.zeros(2))
    assert torch.equal(ladj, torch.zeros(1))
    torch.testing.assert_close(layer(x + 1.0)[0], torch.ones(1, 2, 1, 1))
    constant = ActNorm(2)
    constant(torch.stack([torch.full((8,), 2.0), torch.randn(8)], 1))
    assert constant.log_scale[0] == 0 and constant.log_scale[1] != 0
    # constants whose rounded mean is not the constant itself: the deviations are rounding, not spread
    for value, n in ((0.1, 100), (1 / 3, 7), (10000.1, 1000)):
        constant = ActNorm(1)
        constant(torch.full((n, 1), value))
        assert constant.log_scale == 0, (value, n)


def test_initialisation_standardises_data_far_from_zero():
    # float32 at 1e4 with unit spread: E[x^2] - E[x]^2 loses all but a few bits of the variance
    torch.manual_seed(0)
    x = 1e4 + torch.randn(4096, 3)
    z, _ = ActNorm(3)(x)
    torch.testing.assert_close(z.std(0), torch.ones(3), rtol=1e-2, atol=0)
    torch.testing.assert_close(z.mean(0), torch.zeros(3), rtol=0, atol=1e-2)


def test_glow_trained_on_batches_of_one_image_keeps_a_finite_scale():
    from invertible.models import build

    torch.manual_seed(0)
    glow = build("glow", event_shape=(1, 8, 8), levels=3, steps=1, hidden=4)  # the third level works on 1x1 images
    glow(torch.randn(1, 1, 8, 8))
    assert -glow.log_prob(torch.randn(16, 1, 8, 8)).mean() < 1e3


@pytest.mark.slow
def test_initialised_actnorm_compiles_without_a_graph_break():
    layer = ActNorm(3)
    layer(torch.randn(16, 3))
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(8, 3)
    torch.testing.assert_close(compiled(x)[0], layer(x)[0])
