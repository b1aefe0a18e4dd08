"""MADE density models: exact normalisation (single masks and ensembles), sampling, agnostic training, save/load."""

import itertools
import math
import re

import numpy as np
import pytest
import torch

import invertible
from invertible.models import build, rebuild

from .perturb import perturb


def _all_binary(d: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)), dtype=torch.float64)


@pytest.mark.parametrize("masks", [1, 3])
@pytest.mark.parametrize("context", [None, 2])
def test_bernoulli_made_sums_to_one(masks, context):
    torch.manual_seed(0)
    model = build("bernoulli_made", features=4, hidden=[16, 16], masks=masks, context_features=context).double().eval()
    perturb(model, 0.5)
    xs = _all_binary(4)
    ctx = torch.randn(1, context, dtype=torch.float64).expand(len(xs), -1) if context else None
    total = model.log_prob(xs, ctx).exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0, dtype=torch.float64))


def test_bernoulli_made_samples_follow_its_probabilities():
    torch.manual_seed(1)
    model = build("bernoulli_made", features=3, hidden=[16], masks=2).double().eval()
    perturb(model, 1.0)
    xs = _all_binary(3)
    probs = model.log_prob(xs).exp()
    s = model.sample(20000)
    freq = torch.stack([(s == x).all(1).double().mean() for x in xs])
    assert (freq - probs).abs().max() < 0.02


def test_gaussian_made_ensemble_integrates_to_one():
    torch.manual_seed(0)
    model = build("made", features=2, hidden=[16, 16], masks=3).double().eval()
    perturb(model, 0.3)
    g = torch.linspace(-9, 9, 401, dtype=torch.float64)
    grid = torch.cartesian_prod(g, g)
    dens = model.log_prob(grid).exp().view(401, 401)
    mass = torch.trapezoid(torch.trapezoid(dens, g, dim=1), g)
    assert abs(mass.item() - 1.0) < 1e-3
    x, log_p = model.sample_and_log_prob(7)
    torch.testing.assert_close(log_p, model.log_prob(x))


@pytest.mark.parametrize("context", [None, 2])
def test_gaussian_made_ensemble_samples_follow_its_density(context):
    """Samples of an ensemble (with or without a context) have the mean and spread of its mixture density."""
    torch.manual_seed(0)
    model = build("made", features=2, hidden=[16, 16], masks=3, context_features=context).double().eval()
    perturb(model, 0.3)
    ctx = torch.randn(1, context, dtype=torch.float64) if context else None
    g = torch.linspace(-9, 9, 401, dtype=torch.float64)
    grid = torch.cartesian_prod(g, g)
    grid_ctx = None if ctx is None else ctx.expand(len(grid), -1)

    def moments(log_density: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = log_density.exp()[:, None]
        integral = lambda f: torch.trapezoid(torch.trapezoid((w * f).view(401, 401, -1), g, dim=1), g, dim=0)
        mean = integral(grid)
        return mean, integral((grid - mean) ** 2)

    mean, var = moments(model.log_prob(grid, grid_ctx))
    torch.manual_seed(1)
    s = model.sample(40000, ctx).reshape(40000, 2)
    se = (var / 40000).sqrt()
    assert ((s.mean(0) - mean).abs() < 4 * se).all()
    torch.testing.assert_close(s.var(0), var, rtol=0.05, atol=0.0)
    model.use_masks(0)  # the mixture is not mask set 0 alone: the check above can tell them apart
    single, _ = moments(invertible.Flow.log_prob(model, grid, grid_ctx))
    assert ((single - mean).abs() > 10 * se).any()


def test_gaussian_made_ensemble_backpropagates():
    """The ensemble's density and samples are differentiable: gradients match central differences (float64)."""
    torch.manual_seed(0)
    model = build("made", features=3, hidden=[16, 16], masks=3).double().eval()
    perturb(model, 0.3)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    model.log_prob(x).sum().backward()
    eps = 1e-6
    for i in range(3):
        step = torch.zeros(1, 3, dtype=torch.float64)
        step[0, i] = eps
        with torch.no_grad():
            fd = (model.log_prob(x + step) - model.log_prob(x - step)) / (2 * eps)
        torch.testing.assert_close(x.grad[:, i], fd, rtol=1e-5, atol=1e-7)

    bias = model.net.output.bias  # rows (param, feature): row 3 is the shift of feature 0

    def total_of_samples() -> torch.Tensor:
        torch.manual_seed(5)  # the same noise and mask-set choices on every call
        return model.rsample(6).sum()

    model.zero_grad()
    total_of_samples().backward()
    with torch.no_grad():
        bias[3] += eps
        up = total_of_samples()
        bias[3] -= 2 * eps
        down = total_of_samples()
        bias[3] += eps
    torch.testing.assert_close(bias.grad[3], (up - down) / (2 * eps), rtol=1e-5, atol=1e-7)
    assert bias.grad[3] != 0


def test_gaussian_made_pool_modes():
    """Evaluation uses the first ``ensemble`` mask sets whichever set training left loaded; training uses one set."""
    torch.manual_seed(0)
    model = build("made", features=3, hidden=[16, 16], masks=3, ensemble=1).double()
    perturb(model, 0.3)
    x = torch.randn(5, 3, dtype=torch.float64)
    model.train()
    for _ in range(2):
        model.log_prob(x)  # one minibatch each: sets 0, then 1; set 2 is loaded for the next
    assert int(model.mask_index) == 2
    samples, log_p = model.rsample_and_log_prob(4)  # training mode: both from the loaded set
    torch.testing.assert_close(log_p, invertible.Flow.log_prob(model, samples))
    assert int(model.mask_index) == 2
    model.eval()
    density = model.log_prob(x)
    assert int(model.mask_index) == 2  # the loaded set is restored
    model.use_masks(0)
    torch.testing.assert_close(density, invertible.Flow.log_prob(model, x))
    model.use_masks(2)
    assert not torch.allclose(density, invertible.Flow.log_prob(model, x))


def _set_log_probs(model, x: torch.Tensor) -> list[torch.Tensor]:
    """``log p_k(x)`` of every mask set ``k``, each built afresh in a copy of ``model``."""
    out = []
    for k in range(model.masks):
        fresh = build("made", **model.config["options"]).double()
        fresh.load_state_dict(model.state_dict())
        fresh.use_masks(k)
        out.append(invertible.Flow.log_prob(fresh, x).detach())
    return out


def test_training_cycles_the_mask_sets_from_set_0_and_a_restored_model_continues_the_cycle():
    torch.manual_seed(0)
    model = build("made", features=3, hidden=[16, 16], masks=3).double()
    perturb(model, 0.3)
    x = torch.randn(5, 3, dtype=torch.float64)
    sets = _set_log_probs(model, x)
    assert not torch.allclose(sets[0], sets[1]) and not torch.allclose(sets[1], sets[2])
    model.train()
    for k in (0, 1):  # the first minibatch after construction uses set 0
        torch.testing.assert_close(model.log_prob(x), sets[k])
        assert int(model.mask_index) == k + 1
    resumed = build("made", **model.config["options"]).double().train()
    resumed.load_state_dict(model.state_dict())  # a checkpoint after two minibatches
    for k in (2, 0, 1):
        torch.testing.assert_close(resumed.log_prob(x), sets[k])
        torch.testing.assert_close(model.log_prob(x), sets[k])
    assert int(resumed.mask_index) == int(model.mask_index) == 2


def test_mask_sets_are_built_once_and_give_the_ensemble_of_explicitly_built_sets(monkeypatch):
    from invertible.models import made

    built: list[int] = []
    builder = made._MaskPool._build_masks
    monkeypatch.setattr(made._MaskPool, "_build_masks", lambda self, k: built.append(k) or builder(self, k))
    torch.manual_seed(0)
    model = build("made", features=3, hidden=[16, 16], masks=3, context_features=2).double()
    perturb(model, 0.3)
    model.eval()
    model.use_masks(1)
    x, c = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    first = model.log_prob(x, c)
    for _ in range(3):
        torch.testing.assert_close(model.log_prob(x, c), first, rtol=0, atol=0)
        model.sample(8, c[:2])
    model.train()
    for _ in range(4):
        model.log_prob(x, c)
    assert sorted(built) == [0, 1, 2]  # each set once, over evaluations, samples and training
    assert int(model.mask_index) == 2
    model.eval()
    fresh = build("made", **model.config["options"]).double().eval()
    fresh.load_state_dict(model.state_dict())
    parts = []
    for k in range(3):
        fresh._mask_sets.clear()  # every set built afresh, as before the sets were kept
        fresh.use_masks(k)
        parts.append(invertible.Flow.log_prob(fresh, x, c))
    torch.testing.assert_close(first, torch.logsumexp(torch.stack(parts), 0) - math.log(3), rtol=0, atol=0)


def test_kept_mask_sets_follow_the_pool_settings_and_survive_loading_a_state():
    torch.manual_seed(0)
    model = build("made", features=4, hidden=[16], masks=2)
    other = build("made", features=4, hidden=[16], masks=2, seed=1)
    for k in (1, 0, 1):  # set 1 built, then loaded from the kept copy
        model.use_masks(k)
    model.load_state_dict(other.state_dict())  # writes seed 1's set 0 into the loaded set's buffers in place
    model.use_masks(0)
    model.use_masks(1)
    fresh = build("made", features=4, hidden=[16], masks=2)
    fresh.use_masks(1)
    assert all(torch.equal(a, b) for a, b in zip(model.net.buffers(), fresh.net.buffers()))
    model.seed = 1  # a changed pool setting drops the kept sets
    model.use_masks(0)
    assert all(torch.equal(a, b) for a, b in zip(model.net.buffers(), other.net.buffers()))
    model.double()
    model.use_masks(1)
    assert model.net.output.mask.dtype == torch.float64
    for bad in (2, -1, 1.0, True):
        with pytest.raises(ValueError, match=r"mask set .* is not in the pool: expected an integer in 0\.\.1"):
            model.use_masks(bad)


def test_kept_mask_sets_follow_the_model_to_another_device():
    """After ``.to(device)`` the copies kept on the old device were copied across at every load of their set (a
    blocking host-to-GPU copy per training step); ``meta`` stands in for a GPU here."""
    model = build("made", features=4, hidden=[16], masks=2)
    model.use_masks(1)
    model.use_masks(0)
    model.to("meta")
    model.use_masks(1)
    model.use_masks(0)
    assert {t.device.type for kept in model._mask_sets.values() for t in kept.values()} == {"meta"}


@pytest.mark.parametrize("order", ["random", "reverse"])
def test_without_order_agnostic_training_every_mask_set_keeps_the_one_order(order):
    model = build("made", features=5, hidden=[16], masks=4, order=order, order_agnostic=False)
    orders, degrees = set(), set()
    for k in range(4):
        model.use_masks(k)
        orders.add(tuple(model.net.order().tolist()))
        degrees.add(tuple(model.net.hidden_degrees_0.tolist()))
    assert len(orders) == 1 and len(degrees) == 4  # connectivity-agnostic only
    single = build("made", features=5, hidden=[16], order=order)
    assert orders == {tuple(single.net.order().tolist())}  # the order of the one-mask MADE


def test_order_agnostic_training_cycles_masks_and_learns():
    torch.manual_seed(0)
    model = build("bernoulli_made", features=6, hidden=[32, 32], masks=4)
    first = torch.bernoulli(torch.full((256, 3), 0.5))
    data = torch.cat([first, first], 1)  # x_{i+3} copies x_i: learnable in every order
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    seen = set()
    for _ in range(80):
        loss = -model.log_prob(data).mean()
        seen.add(int(model.mask_index))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert seen == {0, 1, 2, 3}
    model.eval()
    assert -model.log_prob(data).mean() < 6 * 0.6931 - 1.0  # well below independent fair coins


def test_bernoulli_made_rejects_bad_dtypes_contexts_and_counts_with_clear_errors():
    model = build("bernoulli_made", features=3, hidden=[8])
    for x in (torch.tensor([[0, 1, 1]]), torch.tensor([[False, True, True]])):
        with pytest.raises(TypeError, match="floating-point"):
            model.log_prob(x)
    with pytest.raises(TypeError, match="float64 but the flow's parameters are torch.float32"):
        model.log_prob(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="unconditional"):
        model.sample(2, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="non-negative integer"):
        model.sample(-1)
    conditional = build("bernoulli_made", features=3, hidden=[8], context_features=2)
    with pytest.raises(ValueError, match="does not match the data batch shape"):
        conditional.log_prob(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 2\)"):
        conditional.log_prob(torch.zeros(2, 3), torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 2\)"):
        conditional.sample(2, torch.zeros(1, 5))
    assert conditional.sample(2, torch.zeros(4, 2)).shape == (2, 4, 3)


def test_bernoulli_made_rejects_non_binary_data_and_round_trips(tmp_path):
    model = build("bernoulli_made", features=3, hidden=[8], masks=2)
    with pytest.raises(ValueError, match="binary"):
        model.log_prob(torch.tensor([[0.0, 0.5, 1.0]]))
    with pytest.raises(ValueError, match="shape"):
        model.log_prob(torch.zeros(2, 4))
    model.eval()
    model.save(tmp_path / "m")
    again = invertible.load(tmp_path / "m")
    xs = _all_binary(3).float()
    torch.testing.assert_close(again.log_prob(xs), model.log_prob(xs))


def test_gaussian_made_log_prob_is_the_sum_of_its_gaussian_conditionals():
    """``log p(x) = sum_i log N(x_i; mu_i, sigma_i^2)`` with ``sigma_i = exp(-beta_i)``, ``mu_i = -m_i exp(-beta_i)``
    and ``beta_i = 3 tanh(raw_i / 3)``, from a MADE with the model's order and activation built separately."""
    from invertible.nets import MaskedMLP

    torch.manual_seed(0)
    model = build("made", features=4, hidden=[16, 16], activation="tanh", order="reverse").double().eval()
    perturb(model, 0.5)
    net = MaskedMLP(4, 2, (16, 16), order="reverse", activation="tanh").double()
    for mine, theirs in zip(net.layer_degrees(), model.net.layer_degrees()):
        assert torch.equal(mine, theirs)  # one mask set: the plain MADE in the given order, cycled hidden degrees
    net.load_state_dict(model.net.state_dict())
    x = torch.randn(6, 4, dtype=torch.float64)
    raw, m = net(x).unbind(1)
    beta = 3 * torch.tanh(raw / 3)
    normal = torch.distributions.Normal(-m * torch.exp(-beta), torch.exp(-beta))
    torch.testing.assert_close(model.log_prob(x), normal.log_prob(x).sum(1))


def _nearest_mask_set(model, x: torch.Tensor, c: torch.Tensor, temperature: float) -> torch.Tensor:
    """For each row, the noise that the mask set whose centre ``T_k^{-1}(0; c)`` lies nearest maps it to, over ``T``."""
    centres, noises = [], []
    for k in range(model.ensemble):
        model.use_masks(k)
        with torch.no_grad():
            centres.append(model.transform.inverse(torch.zeros_like(x), c)[0])
            noises.append(model.transform(x, c)[0] / temperature)
    distance = torch.stack([(x - centre).norm(dim=1) for centre in centres])  # (E, N)
    nearest, which = distance.min(0)
    second = distance.sort(0).values[1]
    assert (nearest < 1e-3).all() and (second > 1e3 * nearest).all()  # every sample sits at the centre of one mask set
    return torch.stack(noises)[which, torch.arange(len(x))]


def test_ensemble_samples_use_their_own_context_and_their_own_noise():
    """Sample ``(i, b)`` is ``T_k^{-1}(T u; c_b)`` for one mask set ``k`` and a fresh noise row ``u``."""
    torch.manual_seed(0)
    model = build("made", features=2, hidden=[16, 16], masks=3, context_features=2).double().eval()
    perturb(model, 0.5)
    ctx = 2 * torch.randn(4, 2, dtype=torch.float64)
    temperature = 1e-6
    x = model.sample(50, ctx, temperature=temperature)  # (50, 4, 2)
    u = _nearest_mask_set(model, x.reshape(-1, 2), ctx.repeat(50, 1), temperature)
    assert len(torch.unique(u.round(decimals=6), dim=0)) == len(u)  # no noise row is reused
    assert abs(float(u.mean())) < 0.15 and abs(float(u.std()) - 1) < 0.15


def test_conditional_bernoulli_samples_follow_the_probabilities_of_their_own_context():
    torch.manual_seed(2)
    model = build("bernoulli_made", features=3, hidden=[16], masks=2, context_features=2).double().eval()
    perturb(model, 1.0)
    ctx = torch.tensor([[-2.0, 1.0], [2.0, -1.0]], dtype=torch.float64)
    xs = _all_binary(3)
    probs = torch.stack([model.log_prob(xs, c.expand(len(xs), -1)).exp() for c in ctx])  # (B, 8)
    assert (probs[0] - probs[1]).abs().max() > 0.1  # the contexts give clearly different distributions
    s = model.sample(20000, ctx)  # (20000, B, 3)
    for b in range(2):
        freq = torch.stack([(s[:, b] == x).all(1).double().mean() for x in xs])
        assert (freq - probs[b]).abs().max() < 0.02


def test_in_training_mode_samples_come_from_the_loaded_mask_set_alone():
    torch.manual_seed(0)
    model = build("made", features=2, hidden=[16, 16], masks=3).double()
    perturb(model, 0.5)
    model.train()
    model.use_masks(1)
    with torch.no_grad():
        centre = model.transform.inverse(torch.zeros(1, 2, dtype=torch.float64))[0]
    x = model.sample(30, temperature=1e-9)
    assert int(model.mask_index) == 1
    torch.testing.assert_close(x, centre.expand(30, -1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["rsample_and_log_prob", "sample_and_log_prob"])
def test_ensemble_samples_that_overflow_are_reported_and_returned(method):
    """An evaluating ensemble (``masks > 1``) reports samples that its inverse overflowed with a ``RuntimeWarning`` at
    the caller's line and returns them with their log-density, as a flow does; it used to raise "x contains
    non-finite value(s)" from its own ``log_prob`` of them. Ordinary samples keep the ensemble's ``log_prob``."""
    torch.manual_seed(0)
    model = build("made", features=3, hidden=[8], masks=2).eval()
    perturb(model, 0.5)
    x, log_p = getattr(model, method)(16)
    torch.testing.assert_close(log_p, model.log_prob(x))
    with torch.no_grad():
        model.net.layers[-1].bias.fill_(1e38)  # shifts m of order 1e38, times exp(3): beyond float32
    with pytest.warns(RuntimeWarning, match="not finite") as record:  # samples, and finite samples' densities
        x, log_p = getattr(model, method)(16)
    overflowed = r"\d+ of 16 sample\(s\) are not finite: the inverse map overflowed"
    assert any(re.match(overflowed, str(w.message)) for w in record)
    assert [w.filename for w in record] == [__file__] * len(record)
    assert x.shape == (16, 3) and log_p.shape == (16,) and not torch.isfinite(x).all()


def test_bernoulli_made_validate_switches_its_checks_and_the_engine_checks_the_data_once():
    """``validate = False`` skips the checks of ``log_prob`` and ``sample`` (as ``Flow.validate``), for the training
    steps; ``check_fits`` checks that every split is binary, so the steps can skip them."""
    from invertible.data import DataBundle
    from invertible.train.build import check_fits

    model = build("bernoulli_made", features=3, hidden=[8])
    half = torch.tensor([[0.0, 0.5, 1.0]])
    with pytest.raises(ValueError, match="binary"):
        model.log_prob(half)
    model.validate = False
    assert torch.isfinite(model.log_prob(half)).all()  # unchecked: the cross-entropy of a soft target
    with pytest.raises(ValueError, match="unconditional"):
        build("bernoulli_made", features=3, hidden=[8]).sample(2, torch.zeros(1, 2))
    assert model.sample(2).shape == (2, 3)
    bits = torch.bernoulli(torch.full((30, 3), 0.5))
    check_fits(model, DataBundle("bits", bits[:20], bits[20:25], bits[25:], levels=2))
    with pytest.raises(ValueError, match=r"dataset 'bits', test split: BernoulliMADE models binary data"):
        check_fits(model, DataBundle("bits", bits[:20], bits[20:25], bits[25:] / 2, levels=2))


@pytest.mark.parametrize("n", [np.int64(3), torch.tensor(3)], ids=["numpy", "tensor"])
def test_bernoulli_made_samples_an_integer_count_of_any_kind(n):
    """As :meth:`Flow.sample`: a NumPy or 0-d tensor integer is a count (it was refused as not an integer)."""
    model = build("bernoulli_made", features=3, hidden=[8])
    assert model.sample(n).shape == (3, 3)


@pytest.mark.parametrize("n", [-1, 2.0, True, (2,)])
def test_bernoulli_made_refuses_a_count_that_is_not_a_non_negative_integer(n):
    with pytest.raises(ValueError, match="n must be a non-negative integer"):
        build("bernoulli_made", features=3, hidden=[8]).sample(n)


@pytest.mark.parametrize("name", ["made", "bernoulli_made"])
def test_an_ensemble_evaluated_under_inference_mode_trains_afterwards(name):
    """Loading the mask sets inside ``torch.inference_mode`` makes normal masks, which backward can save."""
    torch.manual_seed(0)
    model = build(name, features=3, hidden=[8], masks=3)
    x = (torch.randn(8, 3) > 0).float()
    with torch.inference_mode():
        model.log_prob(x)  # training mode: loads the next mask set
        model.eval()
        model.log_prob(x)  # the ensemble: loads every set, then the current one again
    model.train()
    model.log_prob(x).mean().backward()
    assert all(p.grad is not None for p in model.net.parameters())


@pytest.mark.parametrize("name", ["made", "bernoulli_made"])
def test_a_pool_of_several_mask_sets_needs_an_agnostic_kind_of_training(name):
    """With neither order- nor connectivity-agnostic training every mask set of a pool is the same MADE: ``masks > 1``
    was a plain MADE evaluated ``masks`` times over; it is refused, and either kind of training alone is accepted."""
    with pytest.raises(ValueError, match=r"masks=3 needs order_agnostic or connectivity_agnostic"):
        build(name, features=3, hidden=[8], masks=3, order_agnostic=False, connectivity_agnostic=False)
    rebuild(name, features=3, hidden=[8], masks=1, order_agnostic=False, connectivity_agnostic=False)
    for options in (dict(order_agnostic=False), dict(connectivity_agnostic=False)):
        model = build(name, features=3, hidden=[8], masks=3, **options)
        sets = []
        for k in range(3):
            model.use_masks(k)
            sets.append([b.clone() for b in model.net.buffers()])
        assert not all(torch.equal(a, b) for a, b in zip(sets[0], sets[1]))


def test_a_run_draws_the_density_and_samples_of_the_ensemble_and_keeps_the_loaded_mask_set(tmp_path, monkeypatch):
    """The run's pictures are drawn from the flow the run ends with, in training mode without EMA or early stopping:
    each batch of grid points loaded the next mask set, so density.png was a patchwork of single mask sets, and the
    samples came from the loaded set alone. They show the ensemble, as test_nll scores it, and the mode and loaded
    set are left as they were."""
    from invertible.data import DataBundle
    from invertible.plots import density_grid
    from invertible.train import pictures

    torch.manual_seed(0)
    model = build("made", features=2, hidden=[16], masks=3)
    perturb(model, 0.5)
    model.train()
    model.use_masks(1)
    drawn = {}

    def density_2d(flow, data, samples, preprocess=None):
        drawn["density"] = density_grid(flow, (-3, 3, -3, 3), 60, batch_size=500)[2]
        drawn["samples"] = samples
        return pictures.loss_curve([])

    monkeypatch.setattr(pictures, "density_2d", density_2d)
    data = torch.randn(30, 2)
    pictures.draw_run(tmp_path, model, DataBundle("points", data, data, data), [], seed=3)
    assert model.training and int(model.mask_index) == 1
    model.eval()
    np.testing.assert_allclose(drawn["density"], density_grid(model, (-3, 3, -3, 3), 60)[2], rtol=1e-5, atol=0)
    torch.manual_seed(3)
    torch.testing.assert_close(drawn["samples"], model.sample(30))


@pytest.mark.parametrize("name", ["made", "bernoulli_made"])
def test_a_seed_beyond_the_generators_range_is_refused_by_name(name):
    """Mask set ``k`` is drawn from a generator seeded with ``1000003 * seed + k``: a seed that takes it beyond
    torch's range ended in "Overflow when unpacking long long"; it is a ValueError naming the seeds that work,
    and the ends of that range build."""
    low, high = -(2**63 // 1_000_003), (2**64 - 3) // 1_000_003
    for seed in (low, -1, 0, high):
        build(name, features=3, hidden=[8], masks=3, seed=seed)
    for seed in (low - 1, high + 1, 2**62):
        with pytest.raises(ValueError, match=rf"seed must lie in {low}\.\.{high} .* got {seed}"):
            build(name, features=3, hidden=[8], masks=3, seed=seed)


@pytest.mark.parametrize("name", ["made", "bernoulli_made"])
@pytest.mark.parametrize("method", ["log_prob", "sample"])
def test_an_ensemble_pass_that_raises_leaves_the_loaded_mask_set_in_place(name, method, monkeypatch):
    """An error (or an interrupt) inside the ensemble loop restores the mask set that was loaded before it."""
    model = build(name, features=3, hidden=[8], masks=3).eval()
    model.use_masks(2)
    loaded = {k: v.clone() for k, v in model.net.state_dict().items() if "mask" in k or "degree" in k}
    assert loaded
    calls = {"n": 0}
    pass_name = "forward" if method == "log_prob" else "sequential"  # a density pass, or a sampling pass
    one_pass = getattr(model.net, pass_name)

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return one_pass(*args, **kwargs)

    monkeypatch.setattr(model.net, pass_name, failing)
    with pytest.raises(KeyboardInterrupt):
        if method == "log_prob":
            model.log_prob(torch.zeros(4, 3))
        else:
            torch.manual_seed(0)
            model.sample(64)
    assert calls["n"] == 2
    assert int(model.mask_index) == 2
    now = {k: v for k, v in model.net.state_dict().items() if k in loaded}
    assert now.keys() == loaded.keys() and all(torch.equal(now[k], loaded[k]) for k in loaded)


def _mask_sets(model) -> list[list[torch.Tensor]]:
    """The masks of every set of ``model``'s pool, set by set."""
    sets = []
    for k in range(model.masks):
        model.use_masks(k)
        sets.append([layer.mask.clone() for layer in [*model.net.layers, model.net.output]])
    return sets


@pytest.mark.parametrize("name", ["made", "bernoulli_made"])
@pytest.mark.parametrize(("options", "why"), [
    (dict(features=2, order_agnostic=False), "the hidden units of 2 features can only have degree 1"),
    (dict(features=1), "a single feature has one order, and its hidden units one degree"),
    (dict(features=1, context_features=2), "a single feature has one order"),
])
def test_a_pool_whose_sets_can_only_be_drawn_alike_is_refused_by_build(name, options, why):
    """Two features without a context have hidden degrees 1 only, and one feature one order too: a pool of them was
    one MADE evaluated ``masks`` times over, accepted. Two features with a context (degrees 0 and 1) or with
    order-agnostic training draw different sets and are accepted."""
    with pytest.raises(ValueError, match=rf"model option masks=4 has no effect: every mask set is drawn alike "
                                         rf"\({re.escape(why)}"):
        build(name, hidden=[8], masks=4, **options)
    sets = _mask_sets(rebuild(name, hidden=[8], masks=4, **options))  # a saved one still loads
    assert all(all(torch.equal(a, b) for a, b in zip(sets[0], s)) for s in sets[1:])
    for accepted in (dict(features=2, context_features=2, order_agnostic=False), dict(features=2)):
        sets = _mask_sets(build(name, hidden=[8], masks=4, **accepted))
        assert any(not all(torch.equal(a, b) for a, b in zip(sets[0], s)) for s in sets[1:])


@pytest.mark.parametrize("name", ["made", "bernoulli_made"])
def test_a_pool_option_the_other_settings_make_inert_is_refused_by_build_and_accepted_by_rebuild(name):
    """``order`` of an order-agnostic pool, the agnostic kinds of training of one mask set and the ``seed`` of a
    fixed order do nothing: ``build`` names the option and says why; a saved model (``rebuild``) is let be."""
    refused = [
        (dict(masks=3, order="reverse"), r"order='reverse' has no effect: with masks=3 and order_agnostic true"),
        (dict(order_agnostic=False), r"order_agnostic=False has no effect: .*masks is 1"),
        (dict(connectivity_agnostic=False), r"connectivity_agnostic=False has no effect: .*masks is 1"),
        (dict(seed=5), r"seed=5 has no effect: .*masks is 1 with order 'default'"),
        (dict(seed=5, order=[2, 0, 1]), r"seed=5 has no effect"),
    ]
    for options, message in refused:
        with pytest.raises(ValueError, match=message):
            build(name, features=3, hidden=[8], **options)
        rebuild(name, features=3, hidden=[8], **options)
    for options in (dict(masks=3, order="reverse", order_agnostic=False), dict(seed=5, order="random"),
                    dict(masks=3, seed=5), dict(masks=3, order_agnostic=False)):
        build(name, features=3, hidden=[8], **options)
    orders = {tuple(build(name, features=4, hidden=[8], order="random", seed=s).net.order().tolist()) for s in range(6)}
    assert len(orders) > 1
