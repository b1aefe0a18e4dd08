"""MAF/IAF/NSF presets: MoG base, batch norm, layer options, one-pass IAF sampling with log-density, save/load."""

import json
import math

import pytest
import torch

import invertible
from invertible.distributions import MixtureOfGaussians
from invertible.models import build
from invertible.nets import MaskedMLP
from invertible.transforms import BatchNorm

from .perturb import perturb


def test_mog_base_integrates_to_one_and_samples():
    torch.manual_seed(0)
    base = MixtureOfGaussians(1, components=3).double()
    with torch.no_grad():
        base.loc.copy_(torch.tensor([[-2.0, 0.0, 3.0]]))
        base.log_scale.copy_(torch.tensor([[-0.5, 0.0, 0.3]]))
        base.logits.copy_(torch.tensor([[0.0, 1.0, -1.0]]))
    grid = torch.linspace(-15, 15, 30001, dtype=torch.float64).unsqueeze(1)
    mass = torch.trapezoid(base.log_prob(grid).exp(), grid[:, 0])
    assert abs(mass.item() - 1.0) < 1e-6
    s = base.sample((20000,))
    assert s.shape == (20000, 1)
    mean = (torch.softmax(base.logits, -1) * base.loc).sum()
    assert abs(s.mean().item() - mean.item()) < 0.06


def test_iaf_sample_and_log_prob_agrees_with_log_prob():
    torch.manual_seed(1)
    flow = build("iaf", features=4, layers=3, hidden=[16], context_features=2).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    ctx = torch.randn(6, 2, dtype=torch.float64)
    x, log_p = flow.sample_and_log_prob(1, ctx)
    torch.testing.assert_close(flow.log_prob(x[0], ctx), log_p[0])


@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_batch_norm_of_a_single_layer_is_refused_as_inert(name):
    """Batch-norm goes between layers: ``layers=1, batch_norm=True`` built one plain layer and recorded
    ``batch_norm: true``. A saved model of it still loads."""
    from invertible.models import rebuild

    with pytest.raises(ValueError, match=r"model option batch_norm=True has no effect: it normalises between layers, "
                                         r"and layers is 1"):
        build(name, features=2, layers=1, batch_norm=True)
    assert not any(isinstance(t, BatchNorm) for t in rebuild(name, features=2, layers=1, batch_norm=True).modules())
    assert any(isinstance(t, BatchNorm) for t in build(name, features=2, layers=2, batch_norm=True).modules())


def test_maf_with_batch_norm_trains_and_round_trips_through_save(tmp_path):
    torch.manual_seed(0)
    flow = build("maf", features=3, layers=3, hidden=[16, 16], batch_norm=True, base="mog", components=4)
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    data = torch.randn(512, 3) @ torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.2]]) + 1.0
    first = None
    for _ in range(60):
        loss = -flow.log_prob(data).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.5
    flow.eval()
    flow.save(tmp_path / "m")
    again = invertible.load(tmp_path / "m")
    torch.testing.assert_close(again.log_prob(data[:10]), flow.log_prob(data[:10]))
    assert math.isfinite(flow.sample(5).sum().item())


def test_files_of_an_older_or_newer_format_are_refused_with_the_reason(tmp_path):
    for name, options in (("maf", {"features": 2, "layers": 2, "hidden": [8]}), ("realnvp", {"features": 2, "layers": 2})):
        build(name, **options).save(tmp_path / name)
        config = json.loads((tmp_path / name / "model.json").read_text())
        assert config["format"] == 2
        (tmp_path / name / "model.json").write_text(json.dumps({**config, "format": 1}))
    with pytest.raises(ValueError, match="saved in format 1.*retrain"):
        invertible.load(tmp_path / "maf")
    invertible.load(tmp_path / "realnvp")  # format 1 realnvp weights mean the same map
    (tmp_path / "realnvp" / "model.json").write_text(json.dumps({**config, "format": 3}))
    with pytest.raises(ValueError, match="format 3; this version of invertible reads up to 2"):
        invertible.load(tmp_path / "realnvp")


def test_maf_starts_as_a_volume_preserving_shear_and_iaf_as_the_identity():
    torch.manual_seed(0)
    x = torch.randn(32, 3)
    maf = build("maf", features=3, layers=2, hidden=[16])
    z, ladj = maf.transform(x)
    assert ladj.eq(0).all() and not torch.allclose(z, x)  # z_i = x_i + m_i(x_<i): log-det exactly 0
    assert maf.config["options"]["init"] is None  # the preset's default is recorded as such
    same = build("maf", features=3, layers=2, hidden=[16], init="identity")
    z, ladj = same.transform(x)
    assert torch.equal(z, x) and ladj.eq(0).all()
    iaf = build("iaf", features=3, layers=2, hidden=[16])
    u, ladj = iaf.transform.inverse(x)
    assert torch.equal(u, x) and ladj.eq(0).all()
    with pytest.raises(ValueError, match="unknown init 'random'"):
        build("maf", features=3, init="random")


def test_iaf_batch_norm_follows_the_samples_it_is_trained_on():
    """IAF's batch-norm sits on the sampling side: training-mode samples move its running statistics."""
    torch.manual_seed(0)
    flow = build("iaf", features=3, layers=3, hidden=[16], batch_norm=True)
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.3)
    norms = [m for m in flow.modules() if isinstance(m, BatchNorm)]
    flow.train()
    x, _ = flow.rsample_and_log_prob(256)
    assert all(not torch.equal(n.running_mean, torch.zeros(3)) for n in norms)
    flow.eval()
    x, log_p = flow.sample_and_log_prob(8)
    torch.testing.assert_close(flow.log_prob(x), log_p, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_batch_norm_sits_between_consecutive_layers_only(name):
    """``layers`` autoregressive layers with one batch norm between each pair: none before the first or after the last."""
    flow = build(name, features=3, layers=3, hidden=[8], batch_norm=True)
    kinds = ["norm" if isinstance(m, BatchNorm) or isinstance(getattr(m, "transform", None), BatchNorm) else "layer"
             for m in flow.transform.transforms]
    assert kinds == ["layer", "norm", "layer", "norm", "layer"]


@pytest.mark.parametrize("name, options", [("maf", {}), ("iaf", {}), ("nsf", {"bins": 4})])
def test_random_permutation_gives_every_layer_its_own_order_and_the_seed_picks_them(name, options):
    def orders(seed: int) -> list[tuple[int, ...]]:
        flow = build(name, features=6, layers=4, hidden=[8], permutation="random", seed=seed, **options)
        return [tuple(m.order().tolist()) for m in flow.modules() if isinstance(m, MaskedMLP)]

    first = orders(0)
    assert len(first) == 4 and len(set(first)) == 4
    assert orders(0) == first and orders(1) != first


def test_maf_options_reach_every_layer():
    """Random hidden degrees, the activation and the scale function are those of the preset's arguments."""
    flow = build("maf", features=3, layers=2, hidden=[12], random_degrees=True, activation="tanh", scale="sigmoid",
                 init="identity").double()
    cycled = MaskedMLP(3, 2, (12,)).hidden_degrees_0
    nets = [m for m in flow.modules() if isinstance(m, MaskedMLP)]
    assert len(nets) == 2 and all(not torch.equal(n.hidden_degrees_0, cycled) for n in nets)
    assert all(isinstance(n.activation, torch.nn.Tanh) for n in nets)
    x = torch.randn(4, 3, dtype=torch.float64)
    _, ladj = flow.transform(x)  # a zero output is beta = log sigmoid(2) under the sigmoid scale, for 3 features x 2 layers
    torch.testing.assert_close(ladj, torch.full((4,), -6 * math.log1p(math.exp(-2.0)), dtype=torch.float64))


@pytest.mark.parametrize("name, options", [("maf", {}), ("nsf", {}), ("nsf", {"kind": "coupling"})])
def test_the_mixture_base_has_the_requested_components(name, options):
    flow = build(name, features=4, layers=2, hidden=[8], base="mog", components=3, **options)
    assert isinstance(flow.base, MixtureOfGaussians) and flow.base.loc.shape == (4, 3)


def test_iaf_samples_in_one_pass_of_each_made():
    """Sampling an IAF calls each MADE once, on the whole batch of noise, and never runs the sequential inverse."""
    flow = build("iaf", features=4, layers=3, hidden=[8])
    nets = [m for m in flow.modules() if isinstance(m, MaskedMLP)]
    calls = []
    for net in nets:
        net.register_forward_hook(lambda module, args, out: calls.append((module, args[0].shape[0])))
        net.sequential = None  # the D-step path must not be taken
    flow.sample(10)
    assert sorted(map(id, (m for m, _ in calls))) == sorted(map(id, nets)) and all(n == 10 for _, n in calls)


def _perturbed_nsf(**options) -> invertible.Flow:
    flow = build("nsf", features=4, hidden=[8], bins=4, **options).double()
    perturb(flow, 0.5)
    return flow


@pytest.mark.parametrize("permutation", ["reverse", "random"])
def test_coupling_nsf_transforms_every_coordinate_with_every_other(permutation):
    """Each random mask leaves ``D // 2`` features alone, the masks vary, and the stack's Jacobian has no zero entry."""
    flow = _perturbed_nsf(kind="coupling", layers=4, permutation=permutation, bound=4.0)
    masks = [tuple(layer.identity_idx.tolist()) for layer in flow.transform.transforms]
    assert all(len(m) == 2 for m in masks) and len(set(masks)) > 1
    x = 0.5 * torch.randn(4, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: flow.transform(v.unsqueeze(0))[0][0], x)
    assert (jac != 0).all()


@pytest.mark.parametrize("kind", ["autoregressive", "coupling"])
def test_nsf_layers_have_the_requested_bound_bins_and_activation(kind):
    """Outside ``[-bound, bound]`` in every coordinate a point is fixed by the whole stack; inside it moves."""
    flow = _perturbed_nsf(kind=kind, layers=3, bound=1.5, activation="tanh")
    layers = flow.transform.transforms
    assert all(layer.bins == 4 for layer in layers)
    assert all(any(isinstance(m, torch.nn.Tanh) for m in layer.modules()) for layer in layers)
    assert not any(isinstance(m, torch.nn.ReLU) for m in flow.modules())
    outside = torch.tensor([[2.0, -2.5, 1.6, -1.9], [2.9, 1.7, -2.2, 2.0]], dtype=torch.float64)
    z, ladj = flow.transform(outside)
    assert torch.equal(z, outside) and (ladj == 0).all()
    inside = torch.tensor([[0.3, -0.6, 0.9, -1.1]], dtype=torch.float64)
    assert not torch.allclose(flow.transform(inside)[0], inside)


@pytest.mark.parametrize("data, data_options", [("checkerboard", ["-d", "n_train=400"]), ("wine", []),
                                                ("digits_vectors", [])])
@pytest.mark.parametrize("model", ["made", "maf", "iaf", "nsf"])
def test_autoregressive_presets_train_from_the_command_line(tmp_path, capsys, model, data, data_options):
    """Each autoregressive preset trains on 2-D, tabular and (dequantised) digit data from the command line,
    and ``invertible eval`` of the saved run scores the test split as the run's summary does."""
    from invertible.cli import main

    model_options = ["-m", "hidden=[8]"] + ([] if model == "made" else ["-m", "layers=1"])
    out = tmp_path / "run"
    assert main(["train", "--model", model, "--data", data, *data_options, *model_options, "--steps", "4",
                 "--batch-size", "32", "--no-progress", "--no-plots", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert math.isfinite(summary["test_nll"]) and summary["model"] == model
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scored["test_nll"] == pytest.approx(summary["test_nll"], rel=1e-6)
