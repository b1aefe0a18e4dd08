"""Semantics of the autoregressive family that the other suites leave open, each checked from first principles.

MADE (Germain et al. 2015):
- hidden degrees lie in ``[1, D - 1]`` (``[0, D - 1]`` with a context), so every hidden unit sees something,
  and with cycled degrees every unit reaches an output; random degrees are drawn uniformly for every unit
  (Sec. 4), except the context-only unit 0 of each layer;
- ``D = 1``: the only variable has no predecessors, so the outputs are constants;
- ``resample`` redraws exactly what it is asked to: the order alone keeps the hidden degrees;
- clear errors for empty sizes and for a missing context;
- the Bernoulli MADE is ``sum_i log Bernoulli(x_i; sigmoid(l_i(x_<i)))`` with a hand-written masked tanh MLP.

Mask pools and ensembles (order/connectivity-agnostic training):
- ``ensemble = E < masks`` samples from sets ``0..E-1`` only; a conditional ensemble's samples carry the mixture
  log-density ``log (1/E) sum_k p_k(x | c)``; an empty batch stays empty;
- the pool follows its settings (``order_agnostic``, the network's ``random_degrees``) and its ``seed``;
- impossible pool sizes are refused when the model is built.

MAF/IAF stacks (Papamakarios et al. 2017, Kingma et al. 2016):
- ``permutation="reverse"`` alternates the natural and the reversed order, so the stack mixes every coordinate;
- every layer of a conditional stack reads the context; every MADE has the requested hidden widths;
- unknown scales and stacks without layers or features are refused when built.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invertible.models import build, rebuild
from invertible.nets import MLP, MaskedMLP

from .perturb import perturb


def _reaches_an_output(net: MaskedMLP) -> list[torch.Tensor]:
    """For each hidden layer, which units have a path of unmasked weights to some output."""
    reach = net.output.mask.bool().any(0)  # units of the last hidden layer
    out = [reach]
    for layer in reversed(net.layers[1:]):
        reach = (layer.mask.bool() & reach[:, None]).any(0)
        out.append(reach)
    return out[::-1]


@pytest.mark.parametrize("features", [2, 3, 5])
@pytest.mark.parametrize("random_degrees", [False, True])
@pytest.mark.parametrize("context", [None, 2])
def test_no_hidden_unit_is_dead(features, random_degrees, context):
    """Every hidden unit gets an input (the layer below, or the context for first-layer units);
    cycled ones feed an output.

    A unit of degree ``D`` would see every input and so be barred from every output; a degree-0 unit
    without a context would see no input at all (MADE keeps degrees in ``[1, D - 1]``)."""
    for seed in range(8):
        net = MaskedMLP(features, 2, (7, 6), context_features=context, order="random", random_degrees=random_degrees,
                        seed=seed)
        low = 0 if context else 1
        for deg in net.layer_degrees()[1:]:
            assert int(deg.min()) >= low and int(deg.max()) <= max(features - 1, low)
        if context is None:
            assert (net.layers[0].mask.sum(1) > 0).all(), "a first-layer unit sees no input"
        for layer in net.layers[1:]:
            assert (layer.mask.sum(1) > 0).all()
        if not random_degrees:  # random degrees may leave a unit whose degree no unit above reaches (MADE, Sec. 4)
            for reach in _reaches_an_output(net):
                assert reach.all(), f"seed {seed}: a hidden unit reaches no output"


@pytest.mark.parametrize("random_degrees", [False, True])
def test_resampling_only_the_order_keeps_the_hidden_degrees(random_degrees):
    """``resample(order=True, connectivity=False)``: a new input order, the same hidden degrees (cycled or drawn),
    and masks rebuilt for the new order, so the network is autoregressive in it."""
    net = MaskedMLP(6, 2, (24, 24), order="random", random_degrees=random_degrees, activation="tanh", seed=1).double()
    perturb(net)
    hidden = [deg.clone() for deg in net.layer_degrees()[1:]]
    order = net.order().clone()
    net.resample(order=True, connectivity=False, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(net.order(), order)
    assert all(torch.equal(a, b) for a, b in zip(net.layer_degrees()[1:], hidden))
    x = torch.randn(6, dtype=torch.float64)
    seen = torch.autograd.functional.jacobian(lambda v: net(v.unsqueeze(0))[0], x).abs().sum(0) > 0
    new = net.order().tolist()
    for k, i in enumerate(new):
        assert seen[i].nonzero().flatten().sort().values.tolist() == sorted(new[:k])


@pytest.mark.parametrize("context", [None, 2])
def test_random_hidden_degrees_are_drawn_uniformly_for_every_unit(context):
    """MADE, Sec. 4: each unit's degree is drawn from ``[low, D - 1]`` (``low`` = 1, or 0 with a context), so over
    many seeds every unit takes every value; with a context, unit 0 of each layer is pinned to 0 (the context path)."""
    d, low = 4, (0 if context else 1)
    draws = [MaskedMLP(d, 2, (6, 6), context_features=context, random_degrees=True, seed=s).layer_degrees()[1:]
             for s in range(60)]
    for layer in range(2):
        degrees = torch.stack([net[layer] for net in draws])  # (seeds, units)
        free = degrees[:, 1:] if context else degrees
        for unit in range(free.shape[1]):
            assert set(free[:, unit].tolist()) == set(range(low, d)), f"layer {layer} unit {unit}"
        if context:
            assert (degrees[:, 0] == 0).all()


def test_a_one_dimensional_made_has_unconditioned_outputs():
    """With ``D = 1`` the only variable has no predecessors: the outputs are constants, and a MAF on 1-D data is
    the affine map ``z = x exp(beta) + m`` with constant ``beta, m``, a Gaussian density."""
    torch.manual_seed(0)
    net = MaskedMLP(1, 2, (5, 5)).double()
    perturb(net)
    x = torch.randn(7, 1, dtype=torch.float64)
    out = net(x)
    torch.testing.assert_close(out, out[:1].expand_as(out))
    flow = build("maf", features=1, layers=2, hidden=[4]).double()
    perturb(flow)
    z, _ = flow.transform(x)
    slope = (z[1] - z[0]) / (x[1] - x[0])
    torch.testing.assert_close(z, z[:1] + slope * (x - x[:1]))  # affine in x
    normal = torch.distributions.Normal(-z[0] / slope + x[0], 1 / slope.abs())
    torch.testing.assert_close(flow.log_prob(x), normal.log_prob(x[:, 0]))


@pytest.mark.parametrize("options, message", [
    (dict(features=0, params=2, hidden=(8,)), "features >= 1"),
    (dict(features=3, params=0, hidden=(8,)), "params >= 1"),
    (dict(features=3, params=2, hidden=(8, 0)), "hidden layer"),
    (dict(features=3, params=2, hidden=()), "hidden layer"),
])
def test_made_rejects_empty_sizes_with_a_clear_error(options, message):
    with pytest.raises(ValueError, match=message):
        MaskedMLP(**options)


@pytest.mark.parametrize("net", [lambda **o: MaskedMLP(3, **o), lambda **o: MLP(3, 2, **o)])
@pytest.mark.parametrize("options, message", [
    (dict(hidden=64), r"hidden must be a list of widths, e.g. \[64, 64\], got 64"),  # "'int' object is not iterable"
    (dict(hidden="64"), r"hidden must be a list of widths"),
    (dict(hidden=[8, 2.5]), r"hidden must be a list of widths"),
    (dict(context_features=0), r"context_features must be None \(unconditional\) or an integer >= 1, got 0"),
    (dict(context_features=-2), r"context_features must be None"),  # a torch error from nn.Linear
])
def test_the_networks_refuse_widths_and_context_sizes_that_are_none(net, options, message):
    """``context_features=0`` built an unconditional network, where a flow refuses it."""
    with pytest.raises(ValueError, match=message):
        net(**options)


@pytest.mark.parametrize("order", [[0.2, 1.7, 2.1], torch.tensor([0.0, 1.0, 2.0]), [True, False, True]])
def test_an_order_of_non_integers_is_refused(order):
    """A float order was cast to integers: ``[0.2, 1.7, 2.1]`` became the default order ``[0, 1, 2]``."""
    with pytest.raises(ValueError, match=r"order must be a permutation of 0..2 \(integers\)"):
        MaskedMLP(3, order=order)
    assert MaskedMLP(3, order=np.array([2, 0, 1])).order().tolist() == [2, 0, 1]


def _centres(model, k_range) -> torch.Tensor:
    """``T_k^{-1}(0)`` of each mask set ``k``: where a sample of set ``k`` at temperature ~0 lands."""
    out = []
    for k in k_range:
        model.use_masks(k)
        with torch.no_grad():
            out.append(model.transform.inverse(torch.zeros(1, model.event_shape[0], dtype=torch.float64))[0][0])
    return torch.stack(out)


def test_ensemble_samples_come_from_the_first_ensemble_mask_sets_only():
    """With ``ensemble = E < masks`` the model is the mixture of sets ``0..E-1``: no sample comes from a later set."""
    torch.manual_seed(0)
    model = build("made", features=3, hidden=[16, 16], masks=3, ensemble=2).double().eval()
    perturb(model, 0.5)
    centres = _centres(model, range(3))
    assert torch.cdist(centres, centres).add(torch.eye(3) * 1e9).min() > 1e-2  # the sets are told apart
    x = model.sample(60, temperature=1e-9)
    nearest = torch.cdist(x, centres).argmin(1)
    assert torch.cdist(x, centres).min(1).values.max() < 1e-6
    assert set(nearest.tolist()) == {0, 1}


def test_conditional_ensemble_samples_carry_the_mixture_log_density():
    """``sample_and_log_prob`` of a conditional ensemble: ``log (1/E) sum_k p_k(x | c)``, with ``p_k`` the density of
    mask set ``k`` alone and each sample scored under its own context row."""
    torch.manual_seed(0)
    model = build("made", features=3, hidden=[16], masks=3, context_features=2).double().eval()
    perturb(model, 0.5)
    ctx = torch.randn(4, 2, dtype=torch.float64)
    x, log_p = model.sample_and_log_prob(5, ctx)
    assert x.shape == (5, 4, 3) and log_p.shape == (5, 4)
    flat_x, flat_c = x.reshape(20, 3), ctx.repeat(5, 1)
    per_set = []
    for k in range(3):
        model.use_masks(k)
        z, ladj = model.transform(flat_x, flat_c)
        per_set.append(torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1) + ladj)
    mixture = torch.stack(per_set).exp().mean(0).log()
    torch.testing.assert_close(log_p.reshape(20), mixture)


def test_bernoulli_made_uses_its_activation_and_the_masks_of_its_order():
    """``log p(x) = sum_i x_i log s(l_i) + (1 - x_i) log s(-l_i)`` with ``l`` a tanh MLP whose weights are masked by
    ``[m_l(k) >= m_{l-1}(j)]`` between hidden layers and ``[m(i) > m_L(k)]`` at the output, in the given order."""
    torch.manual_seed(0)
    model = build("bernoulli_made", features=4, hidden=[10, 10], activation="tanh", order="reverse").double()
    perturb(model, 0.7)
    net = model.net
    rank = torch.tensor([4, 3, 2, 1])  # "reverse": the last input comes first
    degrees = [rank, net.hidden_degrees_0, net.hidden_degrees_1]
    x = torch.bernoulli(torch.full((9, 4), 0.5, dtype=torch.float64))
    h = x
    for layer, below, deg in zip(net.layers, degrees[:-1], degrees[1:]):
        h = torch.tanh(h @ (layer.weight * (deg[:, None] >= below[None, :])).t() + layer.bias)
    logits = h @ (net.output.weight * (rank[:, None] > degrees[-1][None, :])).t() + net.output.bias
    expected = (x * torch.nn.functional.logsigmoid(logits) + (1 - x) * torch.nn.functional.logsigmoid(-logits)).sum(1)
    torch.testing.assert_close(model.log_prob(x), expected)


def test_an_unknown_scale_is_refused_when_the_layer_is_built():
    from invertible.transforms import InverseAutoregressiveAffine, MaskedAffineAutoregressive

    for cls in (MaskedAffineAutoregressive, InverseAutoregressiveAffine):
        with pytest.raises(ValueError, match="unknown scale function 'tanh'"):
            cls(3, hidden=(8,), scale="tanh")


@pytest.mark.parametrize("name", ["made", "bernoulli_made"])
@pytest.mark.parametrize("options, message", [
    (dict(masks=0), "masks must be >= 1, got 0"),
    (dict(masks=2, ensemble=0), "ensemble must be between 1 and masks=2, got 0"),
    (dict(masks=2, ensemble=3), "ensemble must be between 1 and masks=2, got 3"),
])
def test_a_mask_pool_of_impossible_size_is_refused_when_built(name, options, message):
    with pytest.raises(ValueError, match=message):
        build(name, features=3, hidden=[8], **options)


def test_switching_the_networks_random_degrees_rebuilds_the_pool_with_drawn_degrees():
    """The pool follows ``net.random_degrees``: switched on, a set built before is rebuilt with drawn hidden degrees
    (even without connectivity-agnostic training), and switched off again, the cycled degrees come back."""
    model = build("made", features=5, hidden=[16], masks=2, connectivity_agnostic=False)
    cycled = MaskedMLP(5, 2, (16,)).hidden_degrees_0
    for k in (1, 0):
        model.use_masks(k)
        assert torch.equal(model.net.hidden_degrees_0, cycled)
    model.net.random_degrees = True
    model.use_masks(1)
    assert not torch.equal(model.net.hidden_degrees_0, cycled)
    model.net.random_degrees = False
    model.use_masks(1)
    assert torch.equal(model.net.hidden_degrees_0, cycled)


@pytest.mark.parametrize("name", ["made", "bernoulli_made"])
def test_the_seed_picks_the_mask_pool(name):
    """Same seed, same pool of orders; another seed, another pool."""
    def orders(seed: int) -> list[list[int]]:
        model = build(name, features=6, hidden=[16], masks=3, seed=seed)
        out = []
        for k in range(3):
            model.use_masks(k)
            out.append(model.net.order().tolist())
        return out

    assert orders(0) == orders(0) and orders(0) != orders(1)


@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_reverse_permutation_alternates_the_natural_and_the_reversed_order(name):
    """``permutation="reverse"``: layer 0 in the natural order, layer 1 reversed, and so on; so the stack mixes every
    coordinate with every other (its Jacobian has no zero), which a stack of one repeated order cannot do."""
    flow = build(name, features=4, layers=3, hidden=[16], init="shear").double()
    perturb(flow)
    orders = [m.order().tolist() for m in flow.modules() if isinstance(m, MaskedMLP)]
    assert orders == [[0, 1, 2, 3], [3, 2, 1, 0], [0, 1, 2, 3]]
    x = 0.5 * torch.randn(4, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: flow.transform(v.unsqueeze(0))[0][0], x)
    assert (jac != 0).all()


@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_every_layer_of_a_conditional_stack_reads_the_context(name):
    """Conditional MAF/IAF: each layer's map changes with the context, so the density does too."""
    torch.manual_seed(0)
    flow = build(name, features=3, layers=2, hidden=[16], context_features=2).double()
    perturb(flow)
    x = torch.randn(5, 3, dtype=torch.float64)
    c = torch.randn(5, 2, dtype=torch.float64)
    layers = [t for t in flow.transform.transforms if isinstance(getattr(t, "net", None), MaskedMLP)]
    assert len(layers) == 2
    for layer in layers:
        assert not torch.allclose(layer(x, c)[0], layer(x, c + 1.0)[0])
    assert not torch.allclose(flow.log_prob(x, c), flow.log_prob(x, c + 1.0))


@pytest.mark.parametrize("name", ["maf", "iaf"])
@pytest.mark.parametrize("options", [dict(features=3, layers=0), dict(features=0, layers=2)])
def test_a_stack_without_layers_or_features_is_refused(name, options):
    with pytest.raises(ValueError, match="need features >= 1 and layers >= 1"):
        build(name, hidden=[8], **options)


@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_every_made_of_a_stack_has_the_requested_hidden_widths(name):
    flow = build(name, features=3, layers=2, hidden=[12, 7])
    nets = [m for m in flow.modules() if isinstance(m, MaskedMLP)]
    assert len(nets) == 2
    for net in nets:
        assert [layer.out_features for layer in net.layers] == [12, 7] and net.output.in_features == 7


def test_switching_order_agnostic_training_off_rebuilds_the_pool_in_the_given_order():
    """A pool built order-agnostically has its own orders; with ``order_agnostic`` switched off, every set comes
    back in the model's ``order`` (given through ``rebuild``: ``build`` refuses an order the pool does not use)."""
    model = rebuild("made", features=5, hidden=[16], masks=3, order="reverse")
    drawn = []
    for k in range(3):
        model.use_masks(k)
        drawn.append(model.net.order().tolist())
    assert any(order != [4, 3, 2, 1, 0] for order in drawn)
    model.order_agnostic = False
    for k in range(3):
        model.use_masks(k)
        assert model.net.order().tolist() == [4, 3, 2, 1, 0]


@pytest.mark.parametrize("name", ["made", "bernoulli_made"])
def test_an_ensemble_draws_an_empty_batch(name):
    model = build(name, features=3, hidden=[8], masks=3).eval()
    assert model.sample(0).shape == (0, 3)


def test_a_conditional_made_called_without_its_context_says_so():
    net = MaskedMLP(3, 2, (8,), context_features=2)
    for call in (lambda: net(torch.zeros(1, 3)), lambda: net.sequential(lambda i, p: p[:, 0], 1)):
        with pytest.raises(ValueError, match="expects a context of 2 features"):
            call()


@pytest.mark.parametrize("hidden, shown", [([], r"hidden=\[\]"), ([16, 0], r"hidden=\[16, 0\]")])
def test_a_masked_mlp_without_hidden_units_is_refused_naming_the_widths(hidden, shown):
    with pytest.raises(ValueError, match=r"each of width >= 1; got features=3, params=2, " + shown):
        MaskedMLP(3, 2, hidden)
