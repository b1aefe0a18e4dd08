"""Checkpoints and ``resume``: an interrupted-and-resumed run ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import invertible
from invertible.cli import main
from invertible.data import load, sklearn_tabular
from invertible.data.fingerprint import data_fingerprint
from invertible.train import TrainConfig, TrainingError, train
from invertible.train.checkpoint import (
    CHECKPOINT_DIR,
    CHECKPOINT_JSON,
    Checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


class Interrupted(Exception):
    pass


#: (data, data options, model, model options): vectors, a MADE cycling through a pool of mask sets, images
#: dequantized afresh every step, images dequantized by a learned noise flow trained with the model, and a
#: table file (written into the test's directory) the model sees unstandardised.
SETUPS = {
    "table": ("table.npy", {"standardize": False}, "realnvp", {"layers": 2, "hidden": [8]}),
    "vectors": ("engine-gauss", {}, "realnvp", {"layers": 2, "hidden": [8], "actnorm": True}),
    "mask_pool": ("engine-gauss", {}, "made", {"hidden": [8], "masks": 3}),  # the loaded mask set resumes too
    "images": ("engine-pixels", {}, "glow", {"levels": 1, "steps": 1, "hidden": 4}),
    "learned_dequantization": ("engine-pixels", {"dequantization": "variational"}, "glow", {"levels": 1, "steps": 1, "hidden": 4}),
}


def table(rows: int = 300) -> np.ndarray:
    """A seeded table of two features on different scales."""
    return np.random.default_rng(1).normal(size=(rows, 2)) * [3.0, 0.2] + [10.0, -4.0]


def config(tmp_path, name: str, setup: str = "vectors") -> TrainConfig:
    data, data_options, model, options = SETUPS[setup]
    if data.endswith(".npy"):
        data = str(tmp_path / data)
        if not Path(data).exists():  # written once: a test may change it between the start and the resume
            np.save(data, table())
    return TrainConfig(
        data=data, data_options=data_options, model=model, model_options=options, steps=20,
        batch_size=64 if setup in ("vectors", "table") else 24,
        lr=5e-3, warmup=3, ema=0.9, eval_every=4, patience=50, log_every=3, checkpoint_every=5,
        out=str(tmp_path / name), progress=False, plots=False,
    )


def recorder(draws: dict[int, tuple], stop_at: int | None = None):
    """Records one draw of each global generator per step (so restored RNG states matter); may interrupt."""

    def callback(step: int, metrics: dict) -> None:
        draws[step] = (torch.rand(1).item(), np.random.rand(), random.random())
        if step == stop_at:
            raise Interrupted

    return callback


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_resumed_run_is_bit_identical(tmp_path, setup):
    whole: dict[int, tuple] = {}
    train(config(tmp_path, "whole", setup), callbacks=[recorder(whole)])

    parts: dict[int, tuple] = {}
    with pytest.raises(Interrupted):
        train(config(tmp_path, "parts", setup), callbacks=[recorder(parts, stop_at=13)])
    run = tmp_path / "parts"
    assert load_checkpoint(run).step == 10
    assert not (run / "summary.json").exists() and not (run / "model.json").exists()
    torch.manual_seed(123)  # the resumed run must not depend on the state of this process
    train(config(tmp_path, "parts", setup), resume=True, callbacks=[recorder(parts)])

    a, b = load_checkpoint(tmp_path / "whole"), load_checkpoint(run)
    assert a.step == b.step == 20
    assert (a.preprocess is not None) == (setup == "learned_dequantization")
    assert (a.ema_preprocess is not None) == (setup == "learned_dequantization")
    for name in ("model", "ema", "best", "preprocess", "ema_preprocess", "best_preprocess"):
        sa, sb = getattr(a, name) or {}, getattr(b, name) or {}
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    for i, entries in a.optimizer["state"].items():
        for k, v in entries.items():
            assert torch.equal(v, b.optimizer["state"][i][k]) if isinstance(v, torch.Tensor) else v == b.optimizer["state"][i][k]
    fa, fb = invertible.load(tmp_path / "whole"), invertible.load(run)
    assert all(torch.equal(v, fb.state_dict()[k]) for k, v in fa.state_dict().items())
    assert whole == parts  # every generator continued where the checkpoint left it
    strip = lambda path: [{k: v for k, v in json.loads(line).items()} for line in path.read_text().splitlines()]
    assert strip(tmp_path / "whole" / "metrics.jsonl") == strip(run / "metrics.jsonl")  # no duplicated lines
    sa = json.loads((tmp_path / "whole" / "summary.json").read_text())
    sb = json.loads((run / "summary.json").read_text())
    assert sa["test_nll"] == sb["test_nll"] and sa["param_sha256_by_rank"] == sb["param_sha256_by_rank"]
    assert a.data_fingerprint == b.data_fingerprint and a.data_fingerprint.keys() == {"sha256", "train", "val", "test"}
    assert summarised(sa) == summarised(sb) == a.data_fingerprint


def summarised(summary: dict) -> dict[str, str]:
    """The data's fingerprint as a run's summary records it (``data_sha256``, ``data_sha256_<split>``)."""
    return {"sha256": summary["data_sha256"], **{s: summary[f"data_sha256_{s}"] for s in ("train", "val", "test")}}


def file_row(path: Path, split: str) -> int:
    """The index in the table file ``path`` of the first row of its ``split`` (seed 0's split)."""
    rows = np.load(path).astype(np.float32)
    first = getattr(load(str(path), standardize=False), split)[0].numpy()
    return int(np.flatnonzero((rows == first).all(1))[0])


@pytest.mark.parametrize("standardize", [False, True])
def test_resume_refuses_data_changed_in_the_val_split(tmp_path, capsys, standardize):
    """One validation row edited since the checkpoint leaves the training split (and its statistics) as they
    were, yet the resumed run would validate, pick its best weights and stop on other data: refused in one line.
    The data restored, the run resumes and ends as an uninterrupted run does."""
    cfg = config(tmp_path, "run", "table")
    cfg.data_options = {"standardize": standardize}
    with pytest.raises(Interrupted):
        train(cfg, callbacks=[recorder({}, stop_at=13)])
    path = Path(cfg.data)
    edited = table()
    edited[file_row(path, "val"), 1] += 0.5
    np.save(path, edited)
    code = main(["train", "--resume", "--out", cfg.out, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.strip() == (f"error: cannot resume: the data of {cfg.out} changed since its checkpoint: the val split of "
                           f"{cfg.data!r} differs; train a new run or restore the data")
    assert load_checkpoint(cfg.out).step == 10  # the checkpoint is left as it was
    np.save(path, table())
    resumed = train(cfg, resume=True)
    cfg.out = str(tmp_path / "whole")
    whole = train(cfg)
    assert resumed["test_nll"] == whole["test_nll"] and resumed["param_sha256_by_rank"] == whole["param_sha256_by_rank"]
    assert summarised(resumed) == summarised(whole) == data_fingerprint(load(cfg.data, standardize=False))


def test_resume_names_every_split_a_moved_row_changed(tmp_path):
    """A validation row swapped with a test row changes neither the training split nor its statistics."""
    cfg = config(tmp_path, "run", "table")
    cfg.data_options = {}
    with pytest.raises(Interrupted):
        train(cfg, callbacks=[recorder({}, stop_at=6)])
    path, swapped = Path(cfg.data), table()
    i, j = file_row(path, "val"), file_row(path, "test")
    swapped[[i, j]] = swapped[[j, i]]
    np.save(path, swapped)
    with pytest.raises(TrainingError, match=r"changed since its checkpoint: the val and test splits of '.*table\.npy' differ; train a new run"):
        train(cfg, resume=True)


def test_the_fingerprint_covers_the_data_before_their_standardisation(tmp_path):
    """A table standardised or not has one fingerprint, that of the rows the file holds as split: a refit whose
    statistics differ by float32 rounding (and the standardised values with them) leaves it as it was."""
    path = tmp_path / "t.npy"
    np.save(path, table())
    standardised, plain = load(str(path)), load(str(path), standardize=False)
    assert not torch.equal(standardised.train, plain.train)
    assert data_fingerprint(standardised) == data_fingerprint(plain)
    standardised.train = standardised.train + 1e-6  # what a refit one rounding step away would give
    assert data_fingerprint(standardised) == data_fingerprint(plain)
    plain.train = plain.train.flip(0)  # the same rows in another order are other batches
    assert data_fingerprint(plain)["train"] != data_fingerprint(standardised)["train"]
    rows, labels = table(40).astype(np.float32), np.arange(40) % 2  # the built-in tables (wine, ...) alike
    built_in = [sklearn_tabular._bundle("t", rows, labels, ["a", "b"], standardize=s) for s in (True, False)]
    assert not torch.equal(built_in[0].val, built_in[1].val)
    assert data_fingerprint(built_in[0]) == data_fingerprint(built_in[1])


def test_a_checkpoint_without_a_fingerprint_resumes_as_before(tmp_path):
    """A checkpoint written before checkpoints held the data's fingerprint resumes unchecked, on the data as they
    are now, and the checkpoints written after it hold their fingerprint."""
    cfg = config(tmp_path, "run", "table")
    with pytest.raises(Interrupted):
        train(cfg, callbacks=[recorder({}, stop_at=13)])
    old = load_checkpoint(cfg.out)
    assert old.data_fingerprint is not None
    old.data_fingerprint = None
    save_checkpoint(cfg.out, old)
    assert "data_fingerprint" not in json.loads((Path(cfg.out) / CHECKPOINT_DIR / CHECKPOINT_JSON).read_text())
    edited = table()
    edited[file_row(Path(cfg.data), "val"), 1] += 0.5
    np.save(cfg.data, edited)
    summary = train(cfg, resume=True)
    assert summary["steps"] == 20
    now = data_fingerprint(load(cfg.data, standardize=False))
    assert summarised(summary) == load_checkpoint(cfg.out).data_fingerprint == now


def test_a_damaged_fingerprint_is_a_corrupt_checkpoint(tmp_path):
    with pytest.raises(Interrupted):
        train(config(tmp_path, "run", "table"), callbacks=[recorder({}, stop_at=6)])
    record_path = tmp_path / "run" / CHECKPOINT_DIR / CHECKPOINT_JSON
    record_path.write_text(json.dumps({**json.loads(record_path.read_text()), "data_fingerprint": ["ab"]}))
    with pytest.raises(ValueError, match="corrupt checkpoint record .*: bad field 'data_fingerprint'"):
        load_checkpoint(tmp_path / "run")


@pytest.mark.parametrize("field, value", [("optimizer", "adam"), ("optimizer", {"state": {}}),
                                          ("optimizer", {"param_groups": [], "state": []}),
                                          ("rng", []), ("rng", {"numpy": None})])
def test_a_damaged_optimizer_or_rng_record_is_a_corrupt_checkpoint(tmp_path, field, value):
    with pytest.raises(Interrupted):
        train(config(tmp_path, "run", "table"), callbacks=[recorder({}, stop_at=6)])
    record_path = tmp_path / "run" / CHECKPOINT_DIR / CHECKPOINT_JSON
    record_path.write_text(json.dumps({**json.loads(record_path.read_text()), field: value}))
    with pytest.raises(ValueError, match=f"corrupt checkpoint record .*: bad field '{field}'"):
        load_checkpoint(tmp_path / "run")


def test_every_section_of_a_checkpoint_round_trips(tmp_path):
    """Each tensor section (model, EMA, best, preprocessing, its EMA, the best step's preprocessing and the fitted
    one), the optimizer's tensor and scalar state, the RNG states and the records come back as saved: the resume test
    above only sees a section whose loss changes the end of a run (a best preprocessing dropped from the file is
    masked by any later best)."""
    g = torch.Generator().manual_seed(0)
    names = ("model", "ema", "best", "preprocess", "ema_preprocess", "best_preprocess", "fitted_preprocess")
    sections = {name: {f"{name}.w": torch.randn(3, 2, generator=g), "n": torch.tensor(i)} for i, name in enumerate(names)}
    optimizer = {"state": {0: {"step": torch.tensor(7.0), "exp_avg": torch.randn(4, generator=g), "count": 3}},
                 "param_groups": [{"lr": 0.01, "params": [0]}]}
    rng = rng_state()
    fingerprint = {"sha256": "ab", "train": "cd", "val": "ef", "test": "01"}
    ckpt = Checkpoint(step=7, optimizer=optimizer, rng=rng, scheduler={"last": 7}, state={"best_val": 1.5},
                      config={"model": "realnvp"}, data_fingerprint=fingerprint, **sections)
    save_checkpoint(tmp_path, ckpt)
    back = load_checkpoint(tmp_path)
    assert (back.step, back.scheduler, back.state, back.config) == (7, {"last": 7}, {"best_val": 1.5}, {"model": "realnvp"})
    assert back.data_fingerprint == fingerprint
    for name, saved in sections.items():
        loaded = getattr(back, name)
        assert loaded is not None and loaded.keys() == saved.keys(), name
        assert all(torch.equal(loaded[k], v) for k, v in saved.items()), name
    state = back.optimizer["state"][0]
    assert torch.equal(state["step"], torch.tensor(7.0)) and torch.equal(state["exp_avg"], optimizer["state"][0]["exp_avg"])
    assert state["count"] == 3 and back.optimizer["param_groups"] == optimizer["param_groups"]
    draws = []
    for states in (rng, back.rng):  # the loaded generator states continue exactly as the saved ones
        set_rng_state(states)
        draws.append((torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()))
    assert draws[0] == draws[1]


def test_a_checkpoint_without_the_dequantizer_average_resumes_from_its_dequantizer(tmp_path):
    """A checkpoint written before the EMA covered a learned dequantizer resumes with a warning, the average of the
    noise flow starting from the checkpoint's noise-flow weights."""
    from safetensors.torch import load_file

    from invertible.train.build import PREPROCESS_WEIGHTS

    cfg = config(tmp_path, "run", "learned_dequantization")
    cfg.patience = None  # the saved noise flow is then the average, not the best step's
    with pytest.raises(Interrupted):
        train(cfg, callbacks=[recorder({}, stop_at=12)])
    run = tmp_path / "run"
    old = load_checkpoint(run)
    assert old.step == 10 and old.ema_preprocess is not None and old.best_preprocess is None
    old.ema_preprocess = None
    save_checkpoint(run, old)
    cfg.steps = 10  # no further step: the final noise flow is the restored average
    with pytest.warns(UserWarning, match="holds no EMA of the trained preprocessing; its average starts from the "
                                         "preprocessing weights of step 10"):
        train(cfg, resume=True)
    resumed = load_checkpoint(run).ema_preprocess
    saved = load_file(str(run / PREPROCESS_WEIGHTS))
    assert resumed.keys() == old.preprocess.keys() == saved.keys()
    assert all(torch.equal(resumed[k], v) and torch.equal(saved[k], v) for k, v in old.preprocess.items())


def test_checkpoint_files_are_consistent_after_interruption(tmp_path):
    with pytest.raises(Interrupted):
        train(config(tmp_path, "run"), callbacks=[recorder({}, stop_at=12)])
    directory = tmp_path / "run" / CHECKPOINT_DIR
    assert sorted(p.name for p in directory.iterdir()) == [CHECKPOINT_JSON, "state-00000010.safetensors"]


def test_a_write_killed_midway_leaves_no_file_behind_once_resumed(tmp_path):
    """kill -9 while a checkpoint is written leaves its temporary files; the next checkpoint clears them."""
    with pytest.raises(Interrupted):
        train(config(tmp_path, "run"), callbacks=[recorder({}, stop_at=12)])
    directory = tmp_path / "run" / CHECKPOINT_DIR
    (directory / ".state-00000015.safetensors.k9x2ab.tmp").write_bytes(b"half a tensor file")
    (directory / f".{CHECKPOINT_JSON}.q1w2e3.tmp").write_text('{"step": 1')
    assert load_checkpoint(tmp_path / "run").step == 10  # the committed checkpoint is untouched
    train(config(tmp_path, "run"), resume=True)
    assert sorted(p.name for p in directory.iterdir()) == [CHECKPOINT_JSON, "state-00000020.safetensors"]


def test_resume_errors(tmp_path):
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(config(tmp_path, "empty"), resume=True)
    with pytest.raises(Interrupted):
        train(config(tmp_path, "run"), callbacks=[recorder({}, stop_at=6)])
    changed = config(tmp_path, "run")
    changed.batch_size = 32
    with pytest.raises(TrainingError, match="cannot resume: batch_size is 32 but the checkpoint has 64"):
        train(changed, resume=True)
    tensors = next((tmp_path / "run" / CHECKPOINT_DIR).glob("state-*.safetensors"))
    data = bytearray(tensors.read_bytes())
    data[-5] ^= 0xFF
    tensors.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its recorded SHA-256"):
        train(config(tmp_path, "run"), resume=True)
    (tmp_path / "run" / CHECKPOINT_DIR / CHECKPOINT_JSON).write_text("{not json")
    with pytest.raises(ValueError, match="corrupt checkpoint record"):
        train(config(tmp_path, "run"), resume=True)


def test_failed_start_leaves_no_checkpoint_and_can_be_rerun(tmp_path):
    with pytest.raises(Interrupted):
        train(config(tmp_path, "run"), callbacks=[recorder({}, stop_at=4)])
    run = tmp_path / "run"
    assert not (run / CHECKPOINT_DIR).exists() and not (run / "summary.json").exists()
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(config(tmp_path, "run"), resume=True)
    train(config(tmp_path, "run"))  # a fresh start replaces the lines of the failed attempt
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len([s for s in steps if s == 3]) == 1


def test_a_format_1_maf_checkpoint_is_refused(tmp_path):
    cfg = config(tmp_path, "maf")
    cfg.model, cfg.model_options = "maf", {"layers": 2, "hidden": [8]}
    with pytest.raises(Interrupted):
        train(cfg, callbacks=[recorder({}, stop_at=6)])
    record_path = tmp_path / "maf" / CHECKPOINT_DIR / CHECKPOINT_JSON
    record = json.loads(record_path.read_text())
    assert record["format"] == 2
    load_checkpoint(tmp_path / "maf")
    record_path.write_text(json.dumps({**record, "format": 1}))
    with pytest.raises(ValueError, match="'maf' model saved in format 1"):
        train(cfg, resume=True)


@pytest.mark.parametrize("ema, words", [(0.99, "ema is 0.99 but the checkpoint has 0.9"),
                                        (None, "ema is none but the checkpoint has 0.9")])
def test_resume_refuses_another_ema(tmp_path, ema, words):
    """A new decay would average two averages; dropping the average would throw the kept one away."""
    with pytest.raises(Interrupted):
        train(config(tmp_path, "run"), callbacks=[recorder({}, stop_at=6)])
    changed = config(tmp_path, "run")
    changed.ema = ema
    with pytest.raises(TrainingError, match=f"cannot resume: {words}"):
        train(changed, resume=True)
    assert load_checkpoint(tmp_path / "run").step == 5  # the checkpoint is left as it was


def test_resume_refuses_to_add_an_ema(tmp_path):
    plain = config(tmp_path, "run")
    plain.ema = None
    with pytest.raises(Interrupted):
        train(plain, callbacks=[recorder({}, stop_at=6)])
    with pytest.raises(TrainingError, match="cannot resume: ema is 0.9 but the checkpoint has none"):
        train(config(tmp_path, "run"), resume=True)


def early_stopping(tmp_path) -> TrainConfig:
    """Validations every 4 steps that never improve by 10 nats: patience 2 stops the run at step 12 of 40."""
    cfg = config(tmp_path, "run")
    cfg.steps, cfg.patience, cfg.min_delta = 40, 2, 10.0
    return cfg


def test_a_larger_patience_continues_a_run_that_stopped_early(tmp_path):
    summary = train(early_stopping(tmp_path))
    assert summary["stopped_early"] and summary["steps"] == 12 and summary["best_step"] == 4
    patient = early_stopping(tmp_path)
    patient.patience = 4  # two more validations without improvement: 16 and 20
    summary = train(patient, resume=True)
    assert summary["stopped_early"] and summary["steps"] == 20 and summary["best_step"] == 4
    saved = invertible.load(tmp_path / "run").state_dict()
    best = load_checkpoint(tmp_path / "run").best
    assert best is not None and all(torch.equal(saved[k], v) for k, v in best.items())  # still the step-4 weights


def test_resuming_without_patience_ends_on_the_last_weights(tmp_path):
    """The best weights kept under patience 50 are not the model of a run resumed with early stopping off."""
    train(config(tmp_path, "run"))
    assert load_checkpoint(tmp_path / "run").best is not None
    unlimited = config(tmp_path, "run")
    unlimited.steps, unlimited.patience = 30, None
    summary = train(unlimited, resume=True)
    assert not summary["stopped_early"] and summary["steps"] == 30
    ckpt = load_checkpoint(tmp_path / "run")
    saved = invertible.load(tmp_path / "run").state_dict()
    assert ckpt.best is None and all(torch.equal(saved[k], v) for k, v in ckpt.ema.items())  # the EMA of step 30


def test_patience_first_turned_on_at_a_resume_counts_from_the_resume(tmp_path):
    """A run without early stopping keeps no best weights, so its validations before the resume cannot be the best
    the new patience returns to: the stop is counted from the resume, and the saved model is the weights of the
    best step the summary names (was: stopped at once, saving the last weights under an older best_step)."""
    plain = early_stopping(tmp_path)
    plain.steps, plain.patience = 12, None  # validations at 4 (the best), 8 and 12 without a 10-nat improvement
    first = train(plain)
    assert first["best_step"] == 4 and not first["stopped_early"]
    patient = early_stopping(tmp_path)  # patience 2 on a run that has counted two validations without improvement
    summary = train(patient, resume=True)
    assert summary["stopped_early"] and summary["steps"] == 24 and summary["best_step"] == 16
    ckpt = load_checkpoint(tmp_path / "run")
    saved = invertible.load(tmp_path / "run").state_dict()
    assert ckpt.best is not None and all(torch.equal(saved[k], v) for k, v in ckpt.best.items())
    val = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    best = {r["step"]: r["val_nll"] for r in val if r["split"] == "val"}
    assert summary["best_val_nll"] == best[16]


def test_a_checkpoint_rewritten_at_its_step_leaves_the_committed_one_whole_when_its_record_fails(tmp_path, monkeypatch):
    """A finished run resumed without patience writes its step-20 checkpoint again, without the best weights. A full
    disk at the record (the tensors written) leaves the committed checkpoint readable; was: its tensor file replaced,
    the record's SHA-256 no longer matched, and the run could not be resumed."""
    from invertible.train import checkpoint

    train(config(tmp_path, "run"))
    before = load_checkpoint(tmp_path / "run")
    assert before.step == 20 and before.best is not None

    def full_disk(path, obj):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint, "write_json", full_disk)
    unlimited = config(tmp_path, "run")
    unlimited.patience = None
    with pytest.raises(OSError, match="No space left"):
        train(unlimited, resume=True)
    monkeypatch.undo()
    after = load_checkpoint(tmp_path / "run")
    assert after.step == 20 and after.best is not None
    assert all(torch.equal(after.model[k], v) for k, v in before.model.items())
    summary = train(unlimited, resume=True)  # the disk freed, the rewrite goes through and clears the other file
    assert summary["steps"] == 20 and load_checkpoint(tmp_path / "run").best is None
    assert len(list((tmp_path / "run" / CHECKPOINT_DIR).glob("state-*.safetensors"))) == 1


def test_a_run_stopped_early_at_a_checkpoint_step_writes_its_checkpoint_once(tmp_path, monkeypatch):
    """Early stopping at step 12, a multiple of checkpoint_every: the checkpoint after the loop is the only one
    of step 12, under its usual name."""
    from invertible.train import loop

    steps: list[int] = []
    save = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", lambda run, ckpt: steps.append(ckpt.step) or save(run, ckpt))
    cfg = early_stopping(tmp_path)
    cfg.checkpoint_every = 4
    assert train(cfg)["steps"] == 12
    assert steps == [4, 8, 12]
    names = [p.name for p in (tmp_path / "run" / CHECKPOINT_DIR).iterdir()]
    assert sorted(names) == [CHECKPOINT_JSON, "state-00000012.safetensors"]


def test_a_run_configured_with_tuples_resumes_from_the_same_config(tmp_path):
    """The checkpoint's JSON holds ``hidden=(8,)`` as ``[8]``; the config the run was started with resumes it
    (was: refused, ``model_options is {'hidden': (8,)} but the checkpoint has {'hidden': [8]}``)."""
    cfg = config(tmp_path, "run")
    cfg.model_options = {"layers": 2, "hidden": (8,)}
    with pytest.raises(Interrupted):
        train(cfg, callbacks=[recorder({}, stop_at=12)])
    assert train(cfg, resume=True)["steps"] == 20
    cfg.model_options = {"layers": 2, "hidden": (4,)}
    with pytest.raises(TrainingError, match=r"cannot resume: model_options is \{'layers': 2, 'hidden': \(4,\)\}"):
        train(cfg, resume=True)


def test_a_run_holding_an_inert_model_option_resumes(tmp_path, monkeypatch):
    """A run started before ``build`` refused options without effect (here RealNVP's image ``levels`` on vectors)
    resumes: its model options cannot change on resume, so refusing them would strand the run."""
    cfg = config(tmp_path, "run", "table")
    cfg.model_options = {**cfg.model_options, "levels": 3}
    with pytest.raises(ValueError, match="model option levels=3 has no effect"):
        train(cfg)
    with monkeypatch.context() as m:
        m.setattr(invertible.models, "build", invertible.models.rebuild)  # as before the refusal
        with pytest.raises(Interrupted):
            train(cfg, callbacks=[recorder({}, stop_at=13)])
    assert train(cfg, resume=True)["steps"] == 20


def test_config_yaml_keeps_the_settings_a_resume_changed(tmp_path, capsys):
    """A resume with another ``steps`` and ``lr`` rewrote ``config.yaml`` with the new values alone, as if the whole
    run had used them; it now also records the step of each resume that changed settings and what they were before
    it (a resume that changes nothing adds nothing), and ``config.yaml`` still resumes and configures a run."""
    cfg = dataclasses.replace(config(tmp_path, "run", "table"), steps=10)
    train(cfg)
    path = Path(cfg.out) / "config.yaml"
    assert "resumed" not in yaml.safe_load(path.read_text())
    train(dataclasses.replace(cfg, steps=16, lr=1e-3), resume=True)
    written = yaml.safe_load(path.read_text())
    assert (written["steps"], written["lr"]) == (16, 1e-3)
    assert written["resumed"] == [{"step": 10, "before": {"steps": 10, "lr": 5e-3}}]
    assert main(["train", "--resume", "--out", cfg.out, "--steps", "20"]) == 0
    assert main(["train", "--resume", "--out", cfg.out]) == 0  # nothing changed: nothing added
    written = yaml.safe_load(path.read_text())
    assert written["steps"] == 20
    assert written["resumed"] == [{"step": 10, "before": {"steps": 10, "lr": 5e-3}}, {"step": 16, "before": {"steps": 16}}]
    assert TrainConfig.from_dict(written) == dataclasses.replace(cfg, steps=20, lr=1e-3)


def test_a_weight_decay_changed_at_a_resume_is_the_one_the_resumed_steps_use(tmp_path):
    """The optimiser's state from the checkpoint carries the weight decay it was trained with: a resume with
    another ``weight_decay`` recorded it in config.yaml and trained on with the old one, weights and all."""
    for name, decay in (("same", 0.0), ("decayed", 0.5)):
        first = config(tmp_path, name)
        first.steps = 10
        train(first)
        resumed = config(tmp_path, name)
        resumed.weight_decay = decay
        train(resumed, resume=True)
    ckpt = load_checkpoint(tmp_path / "decayed")
    assert {g["weight_decay"] for g in ckpt.optimizer["param_groups"]} == {0.5}
    same = invertible.load(tmp_path / "same").state_dict()
    decayed = invertible.load(tmp_path / "decayed").state_dict()
    assert any(not torch.equal(same[k], decayed[k]) for k in same)


def test_a_nan_validation_is_never_the_best(tmp_path, monkeypatch):
    """A NaN validation NLL became the best: every comparison with it is false, so each later validation counted as
    no improvement, patience stopped the run and the model saved was the weights of the NaN step."""
    import invertible.train.loop as loop

    evaluate, calls = loop.evaluate_split, []

    def first_nan(flow, bundle, split, *args, **kwargs):
        result = evaluate(flow, bundle, split, *args, **kwargs)
        if split == "val":
            calls.append(split)
            if len(calls) == 1:
                result["val_nll"] = float("nan")
        return result

    monkeypatch.setattr(loop, "evaluate_split", first_nan)
    cfg = config(tmp_path, "run")
    cfg.steps, cfg.patience = 20, 2
    summary = train(cfg)
    assert summary["best_step"] != 4 and math.isfinite(summary["best_val_nll"])


def test_a_checkpoint_of_more_gpus_than_this_machine_has_restores_the_generators_it_can(monkeypatch):
    """``torch.cuda.set_rng_state_all`` set one state per GPU of the saving machine: a run checkpointed on a node of
    8 GPUs failed to resume on one. (CUDA stood in for by monkeypatching: this machine may have none.)"""
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.full((4,), i, dtype=torch.uint8) for i in range(8)])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((device, int(state[0]))))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: pytest.fail("set one state per GPU here"))
    set_rng_state(rng_state())
    assert restored == [(0, 0)]


def test_a_cpu_run_on_a_machine_with_gpus_saves_no_cuda_generators(monkeypatch):
    """``get_rng_state_all`` started CUDA on every visible GPU to save generators a CPU run never used."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("CUDA started by a CPU run"))
    assert "cuda" not in rng_state()
