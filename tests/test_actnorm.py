"""ActNorm's data-dependent initialisation: once, on the first training pass; again only for a loaded uninitialised state."""

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


def test_an_empty_batch_leaves_the_initialisation_to_the_next_one():
    layer = ActNorm(3)
    z, ladj = layer(torch.empty(0, 3))
    assert z.shape == (0, 3) and ladj.shape == (0,) and not bool(layer.initialized)
    x = 2.0 + 3.0 * torch.randn(256, 3)
    layer(x)
    torch.testing.assert_close(layer.loc.detach(), x.mean(0))


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


@pytest.mark.slow
def test_initialised_actnorm_compiles_without_a_graph_break():
    layer = ActNorm(3)
    layer(torch.randn(16, 3))
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(8, 3)
    torch.testing.assert_close(compiled(x)[0], layer(x)[0])
