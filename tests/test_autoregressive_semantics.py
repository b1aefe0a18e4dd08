"""Semantics of the autoregressive family that the other suites leave open, each checked from first principles.

- MADE's hidden degrees lie in ``[1, D - 1]`` (``[0, D - 1]`` with a context), so every hidden unit
  sees something and reaches some output (Germain et al. 2015, Sec. 4): no dead units;
- ``resample`` redraws exactly what it is asked to: the order alone keeps the hidden degrees;
"""

from __future__ import annotations

import pytest
import torch

from invertible.models import build
from invertible.nets import MaskedMLP

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
    """Every hidden unit gets an input (the layer below, or the context for first-layer units); cycled ones feed an output.

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
