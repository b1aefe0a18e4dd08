"""The training engine: configuration, schedule, batches, the loop, evaluation, run directory."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

import invertible
from invertible.train import TrainConfig, TrainingError, evaluate_split, load_bundle, read_config_file, train
from invertible.train.batches import BatchPlan
from invertible.train.checkpoint import load_checkpoint
from invertible.train.schedule import lr_factor

from .engine_data import discrete_preprocess

TINY = {"layers": 2, "hidden": [8]}


def tiny_config(tmp_path, **kw) -> TrainConfig:
    values = dict(data="engine-gauss", model_options=TINY, steps=20, batch_size=32, lr=3e-3, eval_every=10,
                  out=str(tmp_path / "run"), progress=False, plots=False)
    values.update(kw)
    return TrainConfig(**values)


# -- configuration ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value, words",
    [
        ("steps", 0, "steps must be >= 1"),
        ("steps", 2.5, "steps must be an integer"),
        ("batch_size", True, "batch_size must be an integer"),
        ("lr", -1.0, "lr must be > 0"),
        ("lr", float("nan"), "lr must be a finite number"),
        ("warmup", 50, "warmup (50) must not exceed steps"),
        ("schedule", "linear", "schedule must be 'cosine' or 'constant'"),
        ("grad_clip", 0.0, "grad_clip must be > 0"),
        ("ema", 1.0, "ema (the decay"),
        ("patience", 0, "patience must be >= 1"),
        ("device", "gpu", "device must be auto, cpu"),
        ("model_options", [1], "model_options must be a mapping"),
        ("min_lr_ratio", 2.0, "min_lr_ratio must lie in [0, 1]"),
        ("data", None, "no dataset given"),
        ("seed", 2**32, "seed must be < 2**32 (NumPy's global generator is seeded with it), got 4294967296"),
    ],
)
def test_config_rejects_bad_values(tmp_path, field, value, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        TrainConfig.from_dict({"data": "x", "steps": 20, field: value})


def test_config_files_yaml_and_toml(tmp_path):
    (tmp_path / "a.yaml").write_text("data: engine-gauss\nlr: 1e-3\nbatch-size: 64\nmodel_options: {layers: 3}\n")
    (tmp_path / "b.toml").write_text('[train]\ndata = "engine-gauss"\nlr = 0.002\nsteps = 7\n[train.model_options]\nlayers = 3\n')
    a = TrainConfig.from_dict(read_config_file(tmp_path / "a.yaml"))
    b = TrainConfig.from_dict(read_config_file(tmp_path / "b.toml"))
    assert (a.lr, a.batch_size, a.model_options) == (1e-3, 64, {"layers": 3})
    assert (b.lr, b.steps, b.model_options) == (0.002, 7, {"layers": 3})
    (tmp_path / "c.yaml").write_text("data: x\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match="unknown setting 'learning_rate'"):
        TrainConfig.from_dict(read_config_file(tmp_path / "c.yaml"))
    (tmp_path / "d.yaml").write_text("data: [unclosed\n")
    with pytest.raises(ValueError, match="cannot parse config file"):
        read_config_file(tmp_path / "d.yaml")


def test_config_files_read_option_numbers_as_the_flags_do_and_none_switches_settings_off(tmp_path):
    """PyYAML leaves ``1e-2`` (no dot) and ``1.0e5`` (no exponent sign) strings: inside model_options and
    data_options they reached the presets as text. TOML has no null: ``"none"`` switches a setting off there."""
    (tmp_path / "a.yaml").write_text("data: x\nmodel_options: {bound: 5e0, scale: exp, width: 1.0e5}\n"
                                     "data_options: {alpha: 1e-2, column: '3'}\n")
    a = TrainConfig.from_dict(read_config_file(tmp_path / "a.yaml"))
    assert a.model_options == {"bound": 5.0, "scale": "exp", "width": 1e5}
    assert a.data_options == {"alpha": 0.01, "column": "3"}  # a quoted "3" is text, as a column's name
    (tmp_path / "b.toml").write_text('data = "x"\ngrad_clip = "none"\nema = "None"\npatience = "null"\n'
                                     'threads = "none"\n')
    b = TrainConfig.from_dict(read_config_file(tmp_path / "b.toml"))
    assert (b.grad_clip, b.ema, b.patience, b.threads) == (None, None, None, None)
    with pytest.raises(ValueError, match="lr must be a finite number, got 'none'"):
        TrainConfig.from_dict({"data": "x", "lr": "none"})


def test_a_seed_among_the_data_options_is_refused_for_the_seed_setting():
    from invertible.train.build import load_bundle

    with pytest.raises(ValueError, match="data option seed is set by --seed"):
        load_bundle("moons", 0, {"seed": 5})


def test_schedule_warmup_then_cosine():
    steps, warmup = 100, 10
    f = [lr_factor(s, steps, warmup, "cosine", 0.1) for s in range(steps)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0)
    assert f[55] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # monotone decay after warm-up
    assert lr_factor(100, steps, warmup, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(50, steps, warmup, "constant") == 1.0


def test_batches_depend_only_on_seed_and_step():
    a, b = BatchPlan(100, 16, seed=3), BatchPlan(100, 16, seed=3)
    steps = [0, 5, 6, 7, 20, 13]
    first = [a.indices(s) for s in steps]
    for s, x in zip(steps, first):
        assert torch.equal(x, b.indices(s))  # same batch whatever the order of requests
    epoch = torch.cat([a.indices(s) for s in range(6)])
    assert len(set(epoch.tolist())) == 96  # one epoch draws without replacement
    assert not torch.equal(a.indices(0), a.indices(6))  # a new permutation each epoch
    assert not torch.equal(BatchPlan(100, 16, seed=4).indices(0), a.indices(0))
    shards = [BatchPlan(100, 16, seed=3, rank=r, world_size=2).indices(5) for r in range(2)]
    assert torch.equal(torch.cat(shards), a.indices(5))
    on_device = BatchPlan(100, 16, seed=3, device="meta")  # the epoch's permutation moved once, not each batch
    assert on_device.indices(5).device.type == "meta" and on_device._permutation(0) is on_device._permutation(0)
    with pytest.raises(ValueError, match="divisible"):
        BatchPlan(100, 15, seed=0, world_size=2)
    with pytest.raises(ValueError, match="exceeds the 100 training examples: use a batch size of at most 100"):
        BatchPlan(100, 128, seed=0)


# -- the loop -----------------------------------------------------------------------------
def test_train_writes_a_complete_run(tmp_path):
    config = tiny_config(tmp_path, steps=40, plots=True, ema=0.9)
    summary = train(config)
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "model.json", "model.safetensors",
                 "loss.png", "density.png", "checkpoint/checkpoint.json"):
        assert (run / name).is_file(), name
    for png in ("loss.png", "density.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["steps"] == 40 and on_disk["parameters"] > 0
    assert all(not isinstance(v, dict) for v in on_disk.values())  # flat keys
    # the saved model is the EMA one and reproduces the reported test NLL and KL gap
    flow = invertible.load(run)
    bundle = load_bundle("engine-gauss")
    again = evaluate_split(flow, bundle, "test", 1024, torch.device("cpu"))
    assert again["test_nll"] == pytest.approx(on_disk["test_nll"], rel=1e-6)
    nll = -flow.log_prob(bundle.test).double().mean().item()
    gap = (bundle.log_prob(bundle.test).double() - flow.log_prob(bundle.test).double()).mean().item()
    assert on_disk["test_nll"] == pytest.approx(nll, rel=1e-5)
    assert on_disk["kl_gap"] == pytest.approx(gap, abs=1e-5)
    ckpt = load_checkpoint(run)
    assert all(torch.equal(flow.state_dict()[k], v) for k, v in ckpt.ema.items())
    assert any(not torch.equal(ckpt.model[k], v) for k, v in ckpt.ema.items())  # an average, not the last weights
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == list(range(10, 41, 10))
    assert [r["step"] for r in records if r["split"] == "val"] == [10, 20, 30, 40]
    val = [r["val_nll"] for r in records if r["split"] == "val"]
    assert val[-1] < val[0]


def test_ema_averages_the_weights_after_a_warm_up_and_copies_the_buffers():
    """``theta_ema <- d_t theta_ema + (1 - d_t) theta`` with ``d_t = min(decay, (1 + t) / (10 + t))``."""
    from invertible.train.ema import EMA

    model = torch.nn.BatchNorm1d(1)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, 0.3)
    expected = 0.0
    for t, value in enumerate([1.0, 2.0, 4.0, -3.0, 8.0, 0.5]):  # d_t: 0.1, 0.18, 0.25, 0.3 (the cap), 0.3, 0.3
        with torch.no_grad():
            model.weight.fill_(value)
            model.running_mean.fill_(10 * value)
        ema.update(model)
        d = min(0.3, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * value
        assert ema.model.weight.item() == pytest.approx(expected, rel=1e-6)
        assert ema.model.running_mean.item() == 10 * value
    assert not model.weight.item() == pytest.approx(ema.model.weight.item())


def test_training_lowers_the_nll(tmp_path):
    summary = train(tiny_config(tmp_path, steps=60, lr=1e-2, eval_every=60))
    flow0 = invertible.models.build("realnvp", features=2, **TINY)  # the identity flow at initialisation
    bundle = load_bundle("engine-gauss")
    start = evaluate_split(flow0, bundle, "test", 1024, torch.device("cpu"))["test_nll"]
    assert summary["test_nll"] < start - 0.3


def test_early_stopping_keeps_the_best_weights(tmp_path):
    config = tiny_config(tmp_path, steps=100, eval_every=5, patience=2, min_delta=10.0, lr=1e-2)
    summary = train(config)
    assert summary["stopped_early"] and summary["steps"] == 15 and summary["best_step"] == 5
    best = load_checkpoint(tmp_path / "run").best
    saved = invertible.load(tmp_path / "run").state_dict()
    assert best is not None and all(torch.equal(saved[k], v) for k, v in best.items())
    last = load_checkpoint(tmp_path / "run").model
    assert any(not torch.equal(saved[k], last[k]) for k in last)  # the last weights moved on


def test_bits_per_dim_include_the_preprocessing(tmp_path):
    summary = train(tiny_config(tmp_path, data="engine-discrete", steps=10, batch_size=50))
    flow = invertible.load(tmp_path / "run").double()
    bundle = load_bundle("engine-discrete")
    pre = discrete_preprocess(16, 3).double()
    raw, _ = pre.inverse(bundle.test.double())
    y, ladj = pre(raw)  # log|det dy/dx| = -3 log 16
    torch.testing.assert_close(ladj, torch.full_like(ladj, -3 * math.log(16)))
    nll = -(flow.log_prob(y) + ladj).mean().item()
    assert summary["test_nll"] == pytest.approx(nll, rel=1e-5)
    assert summary["test_bpd"] == pytest.approx(nll / (3 * math.log(2)), rel=1e-5)
    assert "kl_gap" not in summary
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "bpd" in records[0] and "val_bpd" in [r for r in records if r["split"] == "val"][0]


@pytest.mark.parametrize("data, model, options", [("engine-discrete", "realnvp", TINY),
                                                  ("engine-pixels", "glow", {"levels": 1, "steps": 1, "hidden": 4})])
def test_training_bits_per_dim_average_the_same_steps_as_the_loss(tmp_path, data, model, options):
    """A training line's ``bpd`` is its ``loss`` in bits/dim: both the mean over the steps since the last line."""
    train(tiny_config(tmp_path, data=data, model=model, model_options=options, steps=9, batch_size=24, log_every=3))
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in lines if r["split"] == "train"]
    assert [r["step"] for r in records] == [3, 6, 9]
    offset = -3 * math.log(16) if data == "engine-discrete" else 0.0  # log|det dy/dx|: the loss is in model space there
    dims = 3 if data == "engine-discrete" else 16
    for r in records:
        assert r["bpd"] == pytest.approx((r["loss"] - offset) / (dims * math.log(2)), rel=1e-6)


def test_conditional_data_trains_a_conditional_flow(tmp_path):
    summary = train(tiny_config(tmp_path, data_options={"conditional": True}, steps=10))
    flow = invertible.load(tmp_path / "run")
    assert flow.context_features == 3 and math.isfinite(summary["test_nll"])


def test_bad_data_and_options_fail_before_writing(tmp_path):
    with pytest.raises(ValueError, match="train split contains 1 non-finite value"):
        train(tiny_config(tmp_path, data_options={"nonfinite": True}))
    with pytest.raises(ValueError, match="set from the data"):
        train(tiny_config(tmp_path, model_options={"features": 3}))
    with pytest.raises(ValueError, match="unknown model 'nosuch'"):
        train(tiny_config(tmp_path, model="nosuch"))
    with pytest.raises(ValueError, match="unknown dataset 'nosuch'"):
        train(tiny_config(tmp_path, data="nosuch"))
    with pytest.raises(ValueError, match="bad options for model"):
        train(tiny_config(tmp_path, model_options={"depth": 3}))
    assert not (tmp_path / "run").exists()


def test_existing_run_is_not_overwritten(tmp_path):
    train(tiny_config(tmp_path, steps=5, eval_every=5))
    with pytest.raises(TrainingError, match="already holds a run"):
        train(tiny_config(tmp_path, steps=5, eval_every=5))


def test_cuda_request_without_cuda_is_an_error(tmp_path):
    if torch.cuda.is_available():
        summary = train(tiny_config(tmp_path, device="cuda", steps=5, eval_every=5))
        assert summary["device"].startswith("cuda")
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            train(tiny_config(tmp_path, device="cuda"))


def test_thread_setting_is_restored(tmp_path):
    before = torch.get_num_threads()
    train(tiny_config(tmp_path, steps=2, eval_every=2, threads=before + 1))
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="cuda:99"):  # a run that fails at its device, before the process group
        train(tiny_config(tmp_path, out=str(tmp_path / "other"), device="cuda:99", threads=before + 1))
    assert torch.get_num_threads() == before


def test_metrics_reader_skips_a_torn_last_line(tmp_path):
    from invertible.train.metrics import MetricsLog, read_metrics

    log = MetricsLog(tmp_path)
    for step in (1, 2, 3):
        log.write({"step": step, "split": "train", "loss": 1.0 / step})
    with open(log.path, "a") as f:
        f.write('{"step": 4, "spl')  # an interruption in the middle of a write
    assert [r["step"] for r in read_metrics(log.path)] == [1, 2, 3]
    log.truncate(2)
    assert [r["step"] for r in read_metrics(log.path)] == [1, 2]
    assert log.path.read_text().endswith("\n")


def test_metrics_reader_skips_lines_that_are_not_records(tmp_path):
    """A metrics file edited by hand: bytes that are not UTF-8, and lines without an integer step, are skipped."""
    from invertible.train.metrics import MetricsLog, read_metrics

    log = MetricsLog(tmp_path)
    log.write({"step": 1, "split": "train", "loss": 1.0})
    with open(log.path, "ab") as f:
        f.write(b'\xff\xfe\n[1, 2]\n{"split": "train", "loss": 2.0}\n{"step": "x", "split": "val"}\n{"step": true}\n')
    log.write({"step": 2, "split": "val", "val_nll": 0.5})
    assert read_metrics(log.path) == [{"step": 1, "split": "train", "loss": 1.0}, {"step": 2, "split": "val", "val_nll": 0.5}]
    log.truncate(1)
    assert [r["step"] for r in read_metrics(log.path)] == [1]


def test_continuous_flows_refuse_data_on_a_lattice():
    """Discrete values seen as they are (here a shifted, scaled lattice) give an unbounded continuous density."""
    from invertible.data import DataBundle
    from invertible.models import build
    from invertible.train.build import check_fits

    g = torch.Generator().manual_seed(0)
    lattice = (torch.randint(0, 4, (300, 3), generator=g).float() - 1.5) / 1.1
    splits = lattice[:200], lattice[200:250], lattice[250:]
    flow = build("maf", features=3)
    with pytest.raises(ValueError, match="holds only 4 discrete values per dimension and is not dequantized"):
        check_fits(flow, DataBundle("lattice", *splits, levels=4))
    noisy = [s + torch.rand(s.shape, generator=g) / 1.1 for s in splits]  # dequantized: fine
    check_fits(flow, DataBundle("lattice", *noisy, levels=4))
    check_fits(build("bernoulli_made", features=3), DataBundle("bits", *((s > 0).float() for s in splits), levels=2))
    constant = [torch.cat([s[:, :2], torch.full((len(s), 1), 7.0)], 1) for s in noisy]  # an unstandardised table
    with pytest.raises(ValueError, match=r"feature\(s\) \[2\] of dataset 'table' are constant in the training split"):
        check_fits(flow, DataBundle("table", *constant))
    check_fits(build("bernoulli_made", features=3), DataBundle("bits", *(torch.zeros(len(s), 3) for s in splits), levels=2))


def test_loss_curve_of_a_one_step_run_shows_both_points():
    """A line through one point draws nothing: the single training loss gets a marker, like the validation NLL."""
    from invertible.plots import loss_curve

    fig = loss_curve([{"step": 1, "split": "train", "loss": 2.0}, {"step": 1, "split": "val", "val_nll": 2.1}])
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2 and all(line.get_marker() not in ("None", "", None) for line in lines)
    fig = loss_curve([{"step": s, "split": "train", "loss": 1.0 / s} for s in (1, 2, 3)])
    assert fig.axes[0].get_lines()[0].get_marker() in ("None", "", None)  # a curve stays a plain line


def test_the_loss_curve_draws_the_training_loss_in_the_datas_units(tmp_path, monkeypatch):
    """A table of scale 10, standardised: its training loss, in the model's space, is 2 log 10 below the NLL of
    the data the validation curve shows (a gap of units, which looked like under-fitting); the picture shifts it
    by the standardisation's log-det. Raw pixels count their preprocessing in the loss already: no shift."""
    from invertible.data import load
    from invertible.plots import loss_curve
    from invertible.train.pictures import _training_log_det

    np.save(tmp_path / "t.npy", np.random.default_rng(0).normal(size=(400, 2)) * [10.0, 20.0] + 3.0)
    bundle = load(str(tmp_path / "t.npy"))
    shift = _training_log_det(bundle)
    assert shift == pytest.approx(-float(bundle.preprocess.std.log().sum()), rel=1e-6) and shift < -5
    fig = loss_curve([{"step": 1, "split": "train", "loss": 2.0}], train_shift=shift)
    assert fig.axes[0].get_lines()[0].get_ydata()[0] == pytest.approx(2.0 - shift)
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "train loss (data space)"
    assert _training_log_det(load("digits")) == 0.0  # raw pixels
    assert _training_log_det(load("moons")) == 0.0  # no preprocessing
    import invertible.train.pictures as pictures  # the run's loss.png is drawn so
    from invertible.models import build

    figures = {}
    monkeypatch.setattr(pictures, "save_figure", lambda fig, path: figures.__setitem__(path.name, fig))
    pictures.draw_run(tmp_path, build("maf", features=2, layers=1, hidden=[4]), bundle,
                      [{"step": 10, "split": "train", "loss": 1.5}], seed=0)
    assert figures["loss.png"].axes[0].get_lines()[0].get_ydata()[0] == pytest.approx(1.5 - shift)


def test_an_image_grid_draws_images_that_are_not_finite_in_red_and_counts_them():
    """NaN samples (an overflowed inverse) were drawn as nothing: an all-white grid with only its title."""
    from invertible.plots import image_grid

    x = torch.rand(4, 1, 3, 3)
    x[1, 0, 2, 1] = float("nan")
    fig = image_grid(x, nrow=2, title="samples")
    assert fig.axes[0].get_title() == "samples (1 of 4 images not finite, red)"
    canvas = fig.axes[0].get_images()[0].get_array()
    assert canvas.shape[-1] == 3 and np.allclose(canvas[1 + 2, 1 + 3 + 1 + 1], [1.0, 0.0, 0.0])  # row 0, image 1
    assert np.allclose(canvas[0, 0], 0.5)  # the frame: mid-grey, not the ink of binary images
    assert image_grid(torch.rand(2, 1, 3, 3), title="t").axes[0].get_title() == "t"


def test_the_density_panel_is_relative_capped_and_marks_what_is_not_finite():
    """A log-density below float32's exp range drew a uniform dark panel, a spike on a few grid points hid the
    rest, NaN grid points were white holes, and samples outside the window went uncounted."""
    from invertible.plots import density_2d

    class Flow2(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(()))

        def log_prob(self, x):
            lp = -500.0 - 0.5 * x.square().sum(1)  # exp underflowed to 0 in float32
            spike = (x - torch.tensor([0.3, 0.3])).abs().max(1).values < 0.01
            lp = torch.where(spike, lp + 50, lp)
            return torch.where(x[:, 1] > 1.5, torch.full_like(lp, float("nan")), lp)

    data = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    samples = torch.cat([torch.zeros(90, 2), torch.full((10, 2), 100.0)])
    fig = density_2d(Flow2(), data, samples, resolution=100)
    density, _, samples_panel = fig.axes
    assert density.get_title().startswith("learned density (") and "grid points not finite, red)" in density.get_title()
    assert samples_panel.get_title() == "samples (100, 10 outside the window)"
    mesh = density.collections[0]
    values = mesh.get_array()
    assert int(np.ma.count_masked(values)) == int(density.get_title().split("(")[1].split()[0])
    shown = values.compressed()
    assert mesh.norm.vmax < shown.max() and (shown > 0.5 * mesh.norm.vmax).mean() > 0.05  # the Gaussian is visible


def test_pictures_of_a_discrete_model_on_2d_data_skip_the_density(tmp_path):
    """A Bernoulli MADE on 2-D binary data has no density on a continuous grid: ``draw_run`` used to evaluate
    its ``log_prob`` there, which raised, so the run failed after training without a summary."""
    from invertible.data import DataBundle
    from invertible.models import build
    from invertible.train.pictures import draw_run

    g = torch.Generator().manual_seed(0)
    bits = (torch.rand(300, 2, generator=g) < 0.4).float()
    bundle = DataBundle("bits", bits[:200], bits[200:250], bits[250:], levels=2)
    model = build("bernoulli_made", features=2, hidden=[8])
    paths = draw_run(tmp_path, model, bundle, [{"step": 1, "split": "train", "loss": 1.0}], seed=0)
    assert [p.name for p in paths] == ["loss.png"] and (tmp_path / "loss.png").is_file()


def test_density_picture_of_a_standardised_table_is_drawn_in_raw_data_space(tmp_path, monkeypatch):
    """``density.png`` used to show a standardised table in standardised units (data near 0 for a feature near 100),
    unlike ``test_nll``, which is in raw data space; all three panels now share the raw space, where the density
    integrates to ~1 over the drawn grid."""
    import numpy as np

    import invertible.train.pictures as pictures
    from invertible.data.tabular import table_bundle
    from invertible.models import build

    rng = np.random.default_rng(0)
    table = np.stack([rng.normal(100.0, 20.0, 2000), rng.normal(-5.0, 0.5, 2000)], 1).astype(np.float32)
    bundle = table_bundle("table.csv", table, 0, 0.1, 0.5, True, None)
    torch.manual_seed(0)
    flow = build("realnvp", features=2, layers=2, hidden=[8])  # near the identity: q ~ N(0, I) in standardised space
    figures = {}
    monkeypatch.setattr(pictures, "save_figure", lambda fig, path: figures.__setitem__(path.name, fig))
    pictures.draw_run(tmp_path, flow, bundle, [], seed=0)
    density, data, samples = figures["density.png"].axes
    (x0, x1), (y0, y1) = density.get_xlim(), density.get_ylim()
    assert 40 < x0 < 80 < 120 < x1 < 160 and -7 < y0 < -6 < -4 < y1 < -3
    assert all(ax.get_xlim() == (x0, x1) and ax.get_ylim() == (y0, y1) for ax in (data, samples))
    assert data.collections[0].get_array().sum() > 0.98 * len(bundle.test)  # the data lie in view
    assert samples.collections[0].get_array().sum() > 0.9 * len(bundle.test)
    dens = np.asarray(density.collections[0].get_array())
    cell = (x1 - x0) / 199 * (y1 - y0) / 199  # spacing of the 200 x 200 grid points, ends included
    assert 0.95 < dens.sum() * cell < 1.02


def test_density_picture_counts_only_the_finite_samples_it_draws():
    """Non-finite samples cannot be drawn: the samples panel says how many of them were finite."""
    from invertible.models import build
    from invertible.plots import density_2d

    flow = build("realnvp", features=2, layers=2, hidden=[8])
    data = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    samples = data[:10].clone()  # inside the drawn extent, so every finite one lands in the histogram
    fig = density_2d(flow, data, samples, resolution=20)
    assert fig.axes[2].get_title() == "samples (10)"
    samples[:3, 0] = float("nan")
    samples[3, 1] = float("inf")
    fig = density_2d(flow, data, samples, resolution=20)
    assert fig.axes[2].get_title() == "samples (6 of 10 finite)"
    assert fig.axes[2].collections[0].get_array().sum() == 6  # the histogram holds the finite ones


def test_patience_running_out_at_the_last_step_is_no_early_stop(tmp_path):
    """Validations at 5 (the best), 10 and 15 (no improvement of 10 nats): patience 2 is used up exactly at the end."""
    summary = train(tiny_config(tmp_path, steps=15, eval_every=5, patience=2, min_delta=10.0, lr=1e-2))
    assert summary["steps"] == 15 and summary["best_step"] == 5
    assert summary["stopped_early"] is False
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["stopped_early"] is False


def test_an_early_stop_logs_the_training_loss_of_its_last_steps(tmp_path):
    """Stopping at step 8 with lines every 3 steps: steps 7-8 get a line of their own, the mean of their losses."""
    seen: list[float] = []
    summary = train(tiny_config(tmp_path, steps=30, eval_every=4, log_every=3, patience=1, min_delta=10.0),
                    callbacks=[lambda step, out: seen.append(out["loss"])])
    assert summary["stopped_early"] is True and summary["steps"] == 8
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_lines = [r for r in lines if r["split"] == "train"]
    assert [r["step"] for r in train_lines] == [3, 6, 8]
    assert train_lines[-1]["loss"] == pytest.approx((seen[6] + seen[7]) / 2)


@pytest.mark.parametrize("grad_clip", [None, 5.0])
def test_a_non_finite_gradient_of_a_finite_loss_stops_before_the_weights_take_it(tmp_path, monkeypatch, grad_clip):
    """An overflow in the backward pass of step 3 (its loss finite) ends the run at step 3, naming the gradient
    norm; the checkpoint of step 2 stays the last one, finite, and resumes once the gradient is finite again."""
    from invertible.train import loop

    build, backward = loop.build_flow, {"calls": 0, "poison": True}

    def poisoned(*args, **kwargs):
        flow = build(*args, **kwargs)

        def hook(grad):
            backward["calls"] += 1
            return grad * math.inf if backward["poison"] and backward["calls"] == 3 else grad

        next(flow.parameters()).register_hook(hook)
        return flow

    monkeypatch.setattr(loop, "build_flow", poisoned)
    cfg = tiny_config(tmp_path, steps=6, checkpoint_every=1, grad_clip=grad_clip)
    with pytest.raises(TrainingError, match=r"diverged at step 3: the loss is [-+.e\d]+ but its gradient norm is (inf|nan)"):
        train(cfg)
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.step == 2
    assert all(v.isfinite().all() for v in ckpt.model.values() if v.is_floating_point())
    backward["poison"] = False
    assert train(cfg, resume=True)["steps"] == 6


def test_train_refuses_a_config_or_callbacks_of_the_wrong_kind(tmp_path):
    with pytest.raises(TypeError, match="train needs a TrainConfig, got dict"):
        train({"data": "engine-gauss", "out": str(tmp_path / "run")})
    with pytest.raises(TypeError, match="callbacks must be a sequence of callables"):
        train(tiny_config(tmp_path), callbacks=lambda step, out: None)
    with pytest.raises(TypeError, match="callbacks must be a sequence of callables"):
        train(tiny_config(tmp_path), callbacks=["print"])
    assert not (tmp_path / "run").exists()


def test_a_directory_holding_a_saved_model_is_not_overwritten(tmp_path):
    """``Flow.save(DIR)`` then ``train --out DIR``: was the saved weights silently replaced by the run's."""
    invertible.models.build("realnvp", features=2, layers=2, hidden=[4]).save(tmp_path / "run")
    weights = (tmp_path / "run" / "model.safetensors").read_bytes()
    with pytest.raises(TrainingError, match=r"holds a saved model \(model.json\) that the run would overwrite"):
        train(tiny_config(tmp_path, steps=2, eval_every=2))
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == weights
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["model.json", "model.safetensors"]


def test_density_picture_of_a_batch_norm_flow_is_the_saved_density(tmp_path, monkeypatch):
    """``density.png`` of a MAF with batch norm used to be drawn in training mode: every chunk of grid points
    normalised by its own statistics (and the running averages moved), not the density that is tested and saved."""
    import numpy as np

    import invertible.train.pictures as pictures
    from invertible.plots import density_grid

    figures = {}
    monkeypatch.setattr(pictures, "save_figure", lambda fig, path: figures.__setitem__(path.name, fig))
    train(tiny_config(tmp_path, model="maf", model_options={**TINY, "batch_norm": True}, plots=True))
    assert load_bundle("engine-gauss", 0).preprocess is None  # the picture's grid is the flow's own space
    density = figures["density.png"].axes[0]
    extent = (*density.get_xlim(), *density.get_ylim())
    _, _, saved = density_grid(invertible.load(tmp_path / "run"), extent)
    drawn = np.asarray(density.collections[0].get_array()).reshape(saved.shape)
    np.testing.assert_allclose(drawn, saved, rtol=1e-4, atol=1e-12)
