"""MADE masks, the cached sequential inverse of MAF/IAF, and the IAF one-pass sampling path."""

import pytest
import torch

from invertible.nets import MaskedMLP
from invertible.transforms import InverseAutoregressiveAffine, MaskedAffineAutoregressive

from .perturb import perturb


@pytest.mark.parametrize("hidden", [(12,), (12, 9), (16, 8, 16)])
@pytest.mark.parametrize("random_degrees", [False, True])
@pytest.mark.parametrize("context", [None, 2])
def test_made_is_autoregressive_in_its_order(hidden, random_degrees, context):
    d = 5
    torch.manual_seed(0)  # the weights' initialisation
    net = MaskedMLP(d, 3, hidden, context_features=context, order="random", random_degrees=random_degrees, seed=4).double()
    perturb(net)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(d, generator=g, dtype=torch.float64)
    c = torch.randn(1, context, generator=g, dtype=torch.float64) if context else None
    jac = torch.autograd.functional.jacobian(lambda v: net(v.unsqueeze(0), c)[0], x)  # (P, D, D)
    rank = net.degrees  # position in the order, 1..D
    allowed = rank[:, None] > rank[None, :]  # output i may see input j only if j comes earlier
    assert (jac.abs().sum(0)[~allowed] == 0).all()
    # and it does use every earlier input with a generic network
    assert (jac.abs().sum(0)[allowed] > 0).float().mean() > 0.5
    # the masks give a path from every earlier input to every output: exactly the allowed pairs with cycled
    # degrees (the Jacobian at one point misses paths through ReLUs that are off there)
    paths = net.layers[0].mask
    for layer in net.layers[1:]:
        paths = layer.mask @ paths
    paths = (net.output.mask.view(3, d, -1) @ paths) > 0
    assert not paths[:, ~allowed].any()
    if not random_degrees:
        assert paths[:, allowed].all(), "an output cannot see some earlier input"


def test_resample_draws_a_new_order_and_stays_autoregressive():
    net = MaskedMLP(6, 2, (24, 24), order="default")
    g = torch.Generator().manual_seed(0)
    orders = set()
    for _ in range(5):
        net.resample(generator=g)
        orders.add(tuple(net.order().tolist()))
        out = net.output.mask.view(2, 6, -1)[0]
        first = net.order()[0]
        assert out[first].sum() == 0  # the first variable has no inputs
    assert len(orders) > 1


def test_made_rejects_bad_orders():
    with pytest.raises(ValueError, match="permutation"):
        MaskedMLP(3, 2, (8,), order=[0, 0, 1])
    with pytest.raises(ValueError, match="unknown order"):
        MaskedMLP(3, 2, (8,), order="sideways")


@pytest.mark.parametrize("cls", [MaskedAffineAutoregressive, InverseAutoregressiveAffine])
@pytest.mark.parametrize("context", [None, 3])
def test_cached_sequential_pass_matches_the_autograd_path(cls, context):
    torch.manual_seed(0)
    t = cls(6, hidden=(20, 20), context_features=context, order="random", random_degrees=True, seed=2).double()
    perturb(t)
    x = torch.randn(9, 6, dtype=torch.float64)
    c = torch.randn(9, context, dtype=torch.float64) if context else None
    slow = t.inverse if cls is MaskedAffineAutoregressive else t.forward
    fast = t.forward if cls is MaskedAffineAutoregressive else t.inverse
    y_grad, l_grad = slow(x, c)
    with torch.no_grad():
        y_buf, l_buf = slow(x, c)
    torch.testing.assert_close(y_buf, y_grad)
    torch.testing.assert_close(l_buf, l_grad)
    back, l_back = fast(y_buf, c)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(l_back, -l_buf)


def test_maf_sampling_is_differentiable():
    t = MaskedAffineAutoregressive(4, hidden=(16,)).double()
    perturb(t)
    z = torch.randn(5, 4, dtype=torch.float64)
    x, _ = t.inverse(z)
    x.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in t.parameters())


def test_maf_layer_is_the_papers_affine_map_in_its_parameterisation():
    # z = x exp(beta) + m is the paper's z = (x - mu) exp(-alpha) with alpha = -beta, mu = -m exp(-beta)
    torch.manual_seed(0)
    t = MaskedAffineAutoregressive(5, hidden=(16,), scale="exp").double()
    perturb(t)
    x = torch.randn(7, 5, dtype=torch.float64)
    raw, m = t.net(x).unbind(1)
    alpha, mu = -raw, -m * torch.exp(-raw)
    z, ladj = t(x)
    torch.testing.assert_close(z, (x - mu) * torch.exp(-alpha))
    torch.testing.assert_close(ladj, -alpha.sum(1))


def test_soft_clamp_is_bound_tanh_over_bound_to_the_last_bits():
    from invertible.transforms.coupling import soft_clamp

    raw = torch.cat([torch.linspace(-50, 50, 2001, dtype=torch.float64), torch.tensor([0.0, 1e-12, -1e300, 1e300])])
    for bound in (1.0, 3.0, 7.5):
        torch.testing.assert_close(soft_clamp(raw, bound), bound * torch.tanh(raw / bound), rtol=0, atol=1e-14)
    assert soft_clamp(torch.zeros(3)).eq(0).all()  # a zero-initialised layer is the identity




@pytest.mark.parametrize("random_degrees", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_the_context_reaches_every_output_including_the_first_in_the_order(random_degrees, seed):
    """Degree-0 hidden units carry the context to the first variable, whose outputs see no input at all."""
    torch.manual_seed(seed)
    net = MaskedMLP(5, 2, (4, 4), context_features=2, order="random", random_degrees=random_degrees,
                    activation="tanh", seed=seed).double()
    perturb(net, seed=seed)
    x = torch.randn(1, 5, dtype=torch.float64)
    c = torch.randn(2, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: net(x, v.unsqueeze(0))[0], c)  # (P, D, C)
    assert (jac.abs().sum((0, 2)) > 0).all(), "some output does not depend on the context"


@pytest.mark.parametrize("order", [[2, 0, 3, 1], "reverse", "default"])
def test_an_order_lists_the_inputs_from_first_to_last(order):
    """Output ``order[k]`` depends on the inputs ``order[:k]`` exactly (the Jacobian of a generic network)."""
    d = 4
    expected = order if isinstance(order, list) else {"default": [0, 1, 2, 3], "reverse": [3, 2, 1, 0]}[order]
    torch.manual_seed(0)
    net = MaskedMLP(d, 2, (16, 16), order=order, activation="tanh").double()
    perturb(net)
    assert net.order().tolist() == expected
    x = torch.randn(d, dtype=torch.float64)
    seen = torch.autograd.functional.jacobian(lambda v: net(v.unsqueeze(0))[0], x).abs().sum(0) > 0  # (D, D)
    for k, i in enumerate(expected):
        assert seen[i].nonzero().flatten().sort().values.tolist() == sorted(expected[:k])


def test_resample_redraws_only_what_it_is_asked_to():
    """``resample(order=False)`` keeps the input order; ``connectivity`` alone decides whether hidden degrees are redrawn."""
    net = MaskedMLP(6, 2, (24, 24), order="random", seed=1)
    cycled = [deg.clone() for deg in net.layer_degrees()]
    g = torch.Generator().manual_seed(0)
    net.resample(order=True, connectivity=False, generator=g)
    assert not torch.equal(net.degrees, cycled[0])
    assert all(torch.equal(a, b) for a, b in zip(net.layer_degrees()[1:], cycled[1:]))  # still cycled 1..D-1
    order = net.degrees.clone()
    net.resample(order=False, connectivity=True, generator=g)
    assert torch.equal(net.degrees, order)
    assert not any(torch.equal(a, b) for a, b in zip(net.layer_degrees()[1:], cycled[1:]))
    assert not net.random_degrees  # the network's own setting is kept


@pytest.mark.parametrize("context", [None, 2])
def test_random_hidden_degrees_leave_no_unit_without_inputs(context):
    """MADE, Sec. 4: layer ``l`` draws degrees from ``[min m_{l-1}, D - 1]``, so every hidden unit sees some unit below."""
    for seed in range(20):
        net = MaskedMLP(8, 2, (3, 3, 3), context_features=context, order="random", random_degrees=True, seed=seed)
        for layer in net.layers[1:]:
            assert (layer.mask.sum(1) > 0).all(), f"seed {seed}: a hidden unit is cut off from the layer below"


def test_iaf_layer_reads_the_noise_in_its_sampling_direction():
    """IAF ``inverse``: ``x_i = u_i exp(beta_i(u_<i)) + m_i(u_<i)`` with the network applied to the noise ``u``."""
    torch.manual_seed(0)
    t = InverseAutoregressiveAffine(5, hidden=(16,), order="random", scale="exp", seed=1).double()
    perturb(t)
    u = torch.randn(7, 5, dtype=torch.float64)
    beta, m = t.net(u).unbind(1)
    x, ladj = t.inverse(u)
    torch.testing.assert_close(x, u * torch.exp(beta) + m)
    torch.testing.assert_close(ladj, beta.sum(1))


def test_the_default_scale_soft_clamps_the_log_scale_at_three():
    """Without a ``scale`` argument, ``beta = 3 tanh(raw / 3)``: even a huge raw output keeps ``|beta| < 3``."""
    torch.manual_seed(0)
    t = MaskedAffineAutoregressive(3, hidden=(8,)).double()
    with torch.no_grad():
        t.net.output.bias[:3] = torch.tensor([40.0, -40.0, 0.5], dtype=torch.float64)  # raw beta of each feature
    x = torch.randn(4, 3, dtype=torch.float64)
    _, ladj = t(x)
    expected = 3 * torch.tanh(torch.tensor([40.0, -40.0, 0.5], dtype=torch.float64) / 3)
    torch.testing.assert_close(ladj, expected.sum().expand(4))


@pytest.mark.parametrize("cls", [MaskedAffineAutoregressive, InverseAutoregressiveAffine])
def test_a_layer_builds_its_made_with_the_options_it_is_given(cls):
    """Order, seed, hidden degrees and activation reach the conditioner: it is the MADE built with them directly."""
    options = dict(hidden=(12, 12), context_features=2, order="random", random_degrees=True, activation="tanh", seed=5)
    t = cls(4, **options).double()
    net = MaskedMLP(4, 2, **options).double()
    for a, b in zip(t.net.layer_degrees(), net.layer_degrees()):
        assert torch.equal(a, b)
    other = cls(4, **{**options, "seed": 6})
    assert not torch.equal(other.net.degrees, t.net.degrees)
    net.load_state_dict(t.net.state_dict())
    perturb(net)
    t.net.load_state_dict(net.state_dict())
    x, c = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    torch.testing.assert_close(t.net(x, c), net(x, c))
    relu = MaskedMLP(4, 2, **{**options, "activation": "relu"}).double()
    relu.load_state_dict(net.state_dict())
    assert not torch.allclose(relu(x, c), net(x, c))  # so the comparison above tells the activations apart
