"""Image training with fresh dequantization noise per batch: the noise, the reported bits/dim, resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from invertible import Compose, Flow
from invertible.data import load
from invertible.distributions import StandardLogistic
from invertible.models import build
from invertible.train import TrainConfig, evaluate_split, train

from . import engine_data  # noqa: F401  (registers engine-pixels)

GLOW = {"levels": 1, "steps": 1, "hidden": 4}
CPU = torch.device("cpu")


def test_consecutive_batches_see_fresh_noise_for_the_same_image(tmp_path, monkeypatch) -> None:
    seen: list[torch.Tensor] = []
    forward = Flow.forward

    def recording(self, x, context=None):
        seen.append(x.detach().clone())
        return forward(self, x, context)

    monkeypatch.setattr(Flow, "forward", recording)
    bundle = load("engine-pixels")
    n = len(bundle.train)
    config = TrainConfig(data="engine-pixels", model="glow", model_options=GLOW, steps=2, batch_size=n, eval_every=100,
                         out=str(tmp_path / "run"), progress=False, plots=False)
    train(config)
    pre = bundle.preprocess
    first, second = seen[0], seen[1]  # every step holds all training images, in a new order
    pixels_1, pixels_2 = pre.inverse(first)[0], pre.inverse(second)[0]
    key = lambda p: [tuple(row.tolist()) for row in p.flatten(1)]
    index_2 = {k: i for i, k in enumerate(key(pixels_2))}
    assert sorted(index_2) == sorted(key(bundle.train)) == sorted(key(pixels_1))
    match = torch.tensor([index_2[k] for k in key(pixels_1)])
    assert not torch.equal(match, torch.arange(n))  # a reshuffled batch, matched image by image
    torch.testing.assert_close(pixels_2[match], pixels_1)
    levels = bundle.levels
    noise = lambda y: pre[1].inverse(y)[0] * levels - pre.inverse(y)[0]  # u in [0, 1): y = logit((x + u) / L)
    u_1, u_2 = noise(first), noise(second)
    assert ((u_1 >= 0) & (u_1 < 1)).all()
    assert (u_2[match] != u_1).flatten(1).all(1).all(), "an image got the same dequantization noise in two steps"
    assert not torch.allclose(u_1, u_2, atol=1e-3)  # nor does a batch position keep its noise


def test_uniform_model_reports_log2_levels_and_untrained_glow_agrees_with_fixed_noise() -> None:
    bundle = load("digits", alpha=0.0)
    assert bundle.raw and bundle.levels == 17
    uniform = Flow(Compose(), StandardLogistic((1, 8, 8)))  # uniform on (0, 1) after the logit
    result = evaluate_split(uniform, bundle, "test", 128, CPU, draws=2)
    assert math.isclose(result["test_bpd"], math.log2(17), abs_tol=1e-4)

    torch.manual_seed(0)
    glow = build("glow", event_shape=[1, 8, 8], levels=1, steps=2, hidden=8)
    fresh = load("digits")
    once = load("digits", raw=False)  # the same images dequantized once with another noise draw
    glow(once.train[:256])  # ActNorm initialisation
    a = evaluate_split(glow, fresh, "test", 128, CPU)
    b = evaluate_split(glow, once, "test", 128, CPU)
    assert a == evaluate_split(glow, fresh, "test", 64, CPU)  # fixed evaluation noise, whatever the batch size
    assert math.isclose(a["test_bpd"], b["test_bpd"], abs_tol=0.02) and a["test_bpd"] != b["test_bpd"]
    averaged = evaluate_split(glow, fresh, "test", 128, CPU, draws=3)["test_bpd"]
    assert averaged != a["test_bpd"] and math.isclose(averaged, a["test_bpd"], abs_tol=0.02)
    with pytest.raises(ValueError, match="draws"):
        evaluate_split(glow, fresh, "test", 128, CPU, draws=0)


def test_training_loss_is_the_dequantized_nll_of_the_pixels(tmp_path) -> None:
    config = TrainConfig(data="engine-pixels", model="glow", model_options=GLOW, steps=4, batch_size=24, lr=1e-3,
                         eval_every=2, log_every=1, out=str(tmp_path / "run"), progress=False, plots=False)
    summary = train(config)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["split"] == "train"]
    for r in steps:
        assert math.isclose(r["bpd"], r["loss"] / (16 * math.log(2)), rel_tol=1e-9)
    assert 0 < summary["test_bpd"] < 2 * math.log2(8)
    assert math.isclose(summary["test_bpd"], summary["test_nll"] / (16 * math.log(2)), rel_tol=1e-9)


def test_raw_bundle_needs_a_preprocess() -> None:
    from invertible.data import DataBundle

    x = torch.zeros(4, 1, 2, 2)
    with pytest.raises(ValueError, match="raw=True needs a preprocess"):
        DataBundle("pixels", x, x, x, levels=2, raw=True)


def test_learned_dequantization_trains_with_the_model_and_is_restored_by_eval(tmp_path, capsys) -> None:
    from invertible.cli import main
    from invertible.train.build import PREPROCESS_WEIGHTS

    untrained = load("engine-pixels", dequantization="variational").preprocess.state_dict()
    run = tmp_path / "run"
    config = TrainConfig(data="engine-pixels", data_options={"dequantization": "variational"}, model="glow",
                         model_options=GLOW, steps=6, batch_size=24, lr=1e-2, eval_every=3, out=str(run),
                         progress=False, plots=False)
    summary = train(config)
    trained = load_file(str(run / PREPROCESS_WEIGHTS))
    moved = [k for k, v in untrained.items() if k.endswith("weight") and not torch.equal(v, trained[k])]
    assert moved, "the noise flow's weights did not train"
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["test_nll"] == summary["test_nll"]  # the trained noise flow, same draws
    (run / PREPROCESS_WEIGHTS).unlink()
    assert main(["eval", str(run)]) == 2
    assert "holds no preprocess.safetensors" in capsys.readouterr().err


def test_early_stopping_keeps_the_learned_dequantizer_of_the_best_step(tmp_path, capsys) -> None:
    from invertible.cli import main

    run = tmp_path / "run"
    # min_delta so large that only the first validation (step 3) counts as the best
    config = TrainConfig(data="engine-pixels", data_options={"dequantization": "variational"}, model="glow",
                         model_options=GLOW, steps=9, batch_size=24, lr=1e-2, eval_every=3, patience=10,
                         min_delta=1e9, out=str(run), progress=False, plots=False)
    summary = train(config)
    assert summary["best_step"] == 3
    capsys.readouterr()
    assert main(["eval", str(run), "--split", "val"]) == 0
    assert json.loads(capsys.readouterr().out)["val_nll"] == pytest.approx(summary["best_val_nll"], abs=1e-9)


@pytest.mark.parametrize("patience", [None, 10])
def test_ema_averages_the_learned_dequantizer_with_the_model(tmp_path, capsys, monkeypatch, patience) -> None:
    """With ``ema`` the saved noise flow is the average of its weights over the steps, computed here independently
    (``d_t = min(decay, (1 + t) / (10 + t))``), not the last step's; validation and test used that average. With
    early stopping (only the first validation, at step 3, counts as the best) it is the average of that step."""
    from invertible.cli import main
    from invertible.train import loop
    from invertible.train.build import PREPROCESS_WEIGHTS

    weights: list[dict[str, torch.Tensor]] = []  # the noise flow's parameters, initially and after each step
    bundles = []
    original = loop.load_bundle

    def snapshot(*_: object) -> None:
        weights.append({k: p.detach().double().clone() for k, p in bundles[0].preprocess.named_parameters()})

    def recording_load(*args, **kwargs):
        bundles.append(original(*args, **kwargs))
        snapshot()
        return bundles[-1]

    monkeypatch.setattr(loop, "load_bundle", recording_load)
    decay, run = 0.5, tmp_path / "run"
    config = TrainConfig(data="engine-pixels", data_options={"dequantization": "variational"}, model="glow",
                         model_options=GLOW, steps=6, batch_size=24, lr=1e-2, eval_every=3, ema=decay, patience=patience,
                         min_delta=1e9, out=str(run), progress=False, plots=False)
    summary = train(config, callbacks=[snapshot])
    assert len(weights) == 7  # the initial weights and those after each step
    assert summary["best_step"] == 3
    chosen = 6 if patience is None else 3  # the step whose average is saved
    average = dict(weights[0])
    for t, after in enumerate(weights[1 : chosen + 1]):
        d = min(decay, (1 + t) / (10 + t))
        average = {k: d * v + (1 - d) * after[k] for k, v in average.items()}
    saved = load_file(str(run / PREPROCESS_WEIGHTS))
    for k, v in average.items():
        torch.testing.assert_close(saved[k].double(), v, rtol=1e-5, atol=1e-7)
    assert any(not torch.allclose(saved[k].double(), v) for k, v in weights[chosen].items())  # not that step's own
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0  # the saved model with the saved (averaged) noise flow
    assert json.loads(capsys.readouterr().out)["test_nll"] == summary["test_nll"]
    assert main(["eval", str(run), "--split", "val"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    validated = next(r["val_nll"] for r in records if r["split"] == "val" and r["step"] == chosen)
    assert json.loads(capsys.readouterr().out)["val_nll"] == validated


def test_learned_dequantization_needs_per_batch_noise() -> None:
    with pytest.raises(ValueError, match="needs raw=true"):
        load("digits", dequantization="variational", raw=False)
    with pytest.raises(ValueError, match="unknown dequantization"):
        load("digits", dequantization="gaussian")


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_raw_pixels_outside_the_dequantizers_levels_are_refused_when_loaded(split) -> None:
    """The engine checks a raw bundle's pixels once, when it loads them, for every split (the training batches
    then skip the dequantizer's own check): an error naming the dataset, the split and a bad value."""
    from invertible.data import DataBundle
    from invertible.data.images import image_preprocess
    from invertible.train.build import check_bundle

    splits = {s: torch.randint(0, 4, (6, 1, 2, 2)).float() for s in ("train", "val", "test")}
    check_bundle(DataBundle("pixels", **splits, levels=4, preprocess=image_preprocess(4), raw=True))
    for bad in (4.0, -1.0, 2.5):
        splits[split][2, 0, 1, 0] = bad
        with pytest.raises(ValueError, match=rf"dataset 'pixels': the {split} split must hold integer pixel values in "
                                             rf"\[0, 3\] \(the levels of its dequantization\); 1 value\(s\) are not, e\.g\. {bad:g}$"):
            check_bundle(DataBundle("pixels", **splits, levels=4, preprocess=image_preprocess(4), raw=True))
        splits[split][2, 0, 1, 0] = 1.0


def test_training_batches_skip_the_preprocessing_checks(tmp_path, monkeypatch) -> None:
    """The pixels were checked when loaded, so the training steps run the dequantizer and the logit without their
    per-call checks; evaluation after training runs them again."""
    from invertible.transforms import Logit, UniformDequantization

    seen: dict[str, list[bool]] = {"logit": [], "dequantize": []}
    logit, check = Logit.forward, UniformDequantization._check

    def logit_recording(self, x, context=None):
        seen["logit"].append(self.validate)
        return logit(self, x, context)

    def check_recording(self, x):
        seen["dequantize"].append(self.validate)
        return check(self, x)

    monkeypatch.setattr(Logit, "forward", logit_recording)
    monkeypatch.setattr(UniformDequantization, "_check", check_recording)
    config = TrainConfig(data="engine-pixels", model="glow", model_options=GLOW, steps=2, batch_size=24, eval_every=100,
                         out=str(tmp_path / "run"), progress=False, plots=False)
    train(config)
    for calls in seen.values():  # two training steps, the validation of the last step, the test
        assert calls[:3] == [False, False, False] and calls[-1] is True


def test_a_batch_outside_the_logits_domain_stops_training_with_the_logits_error(tmp_path, monkeypatch) -> None:
    """``alpha=0`` and dequantization noise exactly 0 (forced here: the built-in dequantizers keep it in ``(0, 1)``)
    put a pixel 0 at the edge of the logit's domain: the loss is not finite, and the step's preprocessing,
    replayed with its checks on, names the cause."""
    from invertible.transforms import UniformDequantization

    monkeypatch.setattr(UniformDequantization, "_noise", lambda self, x, context: (torch.zeros_like(x), x.new_zeros(len(x))))
    config = TrainConfig(data="engine-pixels", data_options={"alpha": 0.0}, model="glow", model_options=GLOW, steps=2,
                         batch_size=24, out=str(tmp_path / "run"), progress=False, plots=False)
    with pytest.raises(ValueError, match=r"Logit\(alpha=0.0\) needs values in \(0, 1\); got \d+ outside, e\.g\. 0$"):
        train(config)
