"""A run keeps the preprocessing of its data (what it is, and the standardisation of its training split): eval
and sample map other tables through it, sample needs no data file, and a resume refuses data that changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
import torch
from safetensors.torch import load_file, save_file

from invertible import load as load_flow
from invertible.cli import main
from invertible.persistence import file_sha256
from invertible.data import Standardize, load
from invertible.train import TrainConfig, TrainingError, train
from invertible.train.build import PREPROCESS_JSON, PREPROCESS_WEIGHTS, adopt_fitted_state, restore_preprocess, save_preprocess
from invertible.train.checkpoint import load_checkpoint, save_checkpoint

TRAIN = ["train", "-m", "layers=2", "-m", "hidden=[8]", "--steps", "10", "--batch-size", "32", "--eval-every", "5",
         "--no-progress", "--no-plots"]


def _table(rows: int = 300) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.normal(size=(rows, 2)) * [3.0, 0.2] + [10.0, -4.0]


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _nll(capsys, *argv) -> float:
    code, out, err = _cli(capsys, "eval", *argv)
    assert code == 0, err
    return json.loads(out)["test_nll"]


@pytest.fixture(scope="module")
def table_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    """A tiny run on a 300 x 2 ``.npy`` table: (run directory, table file, summary)."""
    root = tmp_path_factory.mktemp("table")
    np.save(root / "t.npy", _table())
    assert main([*TRAIN, "--data", str(root / "t.npy"), "--out", str(root / "run"), "--seed", "1"]) == 0
    summary = json.loads((root / "run" / "summary.json").read_text())
    return root / "run", root / "t.npy", summary


def test_the_run_keeps_the_statistics_of_its_training_split(table_run) -> None:
    run, table, _ = table_run
    stored = load_file(str(run / PREPROCESS_WEIGHTS))
    own = load(str(table), seed=1).preprocess
    assert set(stored) == {"mean", "std"}
    assert torch.equal(stored["mean"], own.mean) and torch.equal(stored["std"], own.std)


def test_eval_scores_a_shifted_table_through_the_runs_statistics(table_run, tmp_path, capsys) -> None:
    run, table, summary = table_run
    assert _nll(capsys, run) == summary["test_nll"]
    assert _nll(capsys, run, "--data", table) == summary["test_nll"]
    shifted = _table()
    shifted[:, 0] += 10.0  # 3.3 training standard deviations
    np.save(tmp_path / "shifted.npy", shifted)
    code, out, err = _cli(capsys, "eval", run, "--data", tmp_path / "shifted.npy")  # another file: every row
    assert code == 0 and err == ""
    assert json.loads(out)["rows"] == 300 and json.loads(out)["all_nll"] > summary["test_nll"] + 3.0


def test_eval_on_another_split_seed_uses_the_runs_statistics(table_run, capsys) -> None:
    run, table, _ = table_run
    raw = _table()
    rows = torch.from_numpy(raw[torch.randperm(300, generator=torch.Generator().manual_seed(5)).numpy()][270:])
    trained = load(str(table), seed=1).preprocess  # the statistics of the run's training split
    z, ladj = Standardize(trained.mean.double(), trained.std.double())(rows)
    with torch.no_grad():
        expected = -(load_flow(run).log_prob(z.float()).double() + ladj).mean().item()
    assert _nll(capsys, run, "--seed", 5) == pytest.approx(expected, rel=1e-5)


def test_raw_samples_use_the_runs_statistics_when_the_file_changed(table_run, tmp_path, capsys) -> None:
    run, table, _ = table_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    moved = tmp_path / "t.npy"
    np.save(moved, _table() * [1.0, 5.0] + [100.0, 0.0])  # the file the run names now holds other data
    config = (copy / "config.yaml").read_text().replace(str(table), str(moved))
    (copy / "config.yaml").write_text(config)
    assert _cli(capsys, "sample", copy, "-n", 50, "--seed", 3, "--out", tmp_path / "z.npy")[0] == 0
    assert _cli(capsys, "sample", copy, "-n", 50, "--seed", 3, "--raw", "--out", tmp_path / "x.npy")[0] == 0
    trained = load(str(table), seed=1).preprocess  # the statistics of the run's training split
    z = torch.from_numpy(np.load(tmp_path / "z.npy"))
    expected = trained.inverse(z)[0].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), expected, rtol=1e-6)


def test_a_run_without_statistics_falls_back_with_a_note(table_run, tmp_path, capsys) -> None:
    run, table, summary = table_run
    old = tmp_path / "old"
    shutil.copytree(run, old)
    (old / PREPROCESS_WEIGHTS).unlink()  # as written before runs kept their preprocessing
    (old / PREPROCESS_JSON).unlink()
    code, out, err = _cli(capsys, "eval", old)
    assert code == 0 and err == "" and json.loads(out)["test_nll"] == summary["test_nll"]
    shifted = _table()
    shifted[:, 0] += 10.0
    np.save(tmp_path / "shifted.npy", shifted)
    code, out, err = _cli(capsys, "eval", old, "--data", tmp_path / "shifted.npy")
    assert code == 0 and len(err.strip().splitlines()) == 1
    assert err.startswith("note: ") and "standardised by its own training split" in err
    assert json.loads(out)["test_nll"] == pytest.approx(summary["test_nll"], abs=1e-4)  # the old, shift-blind figure
    assert "note: " in _cli(capsys, "eval", old, "--seed", 5)[2]


def test_data_without_the_runs_preprocessing_is_refused(table_run, tmp_path, capsys) -> None:
    run, table, _ = table_run
    code, _, err = _cli(capsys, "eval", run, "--data", table, "-d", "standardize=false")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "was trained on data with a standardisation of 2 features" in err and "has no preprocessing" in err
    old = tmp_path / "old"
    shutil.copytree(run, old)
    (old / PREPROCESS_JSON).unlink()  # a run written before runs recorded their preprocessing
    code, _, err = _cli(capsys, "eval", old, "--data", table, "-d", "standardize=false")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "was trained behind a preprocessing" in err and "has none" in err


def test_restore_remaps_standardised_splits_in_float64(tmp_path) -> None:
    """Another seed's splits re-standardised by the run's statistics match the raw rows mapped directly,
    even for a feature of mean 3e6 (where float32 raw values are 0.25 apart)."""
    raw = _table()
    raw[:, 0] = raw[:, 0] / 3.0 + 3e6
    np.save(tmp_path / "t.npy", raw)
    save_preprocess(load(str(tmp_path / "t.npy"), seed=0), tmp_path)
    bundle = restore_preprocess(load(str(tmp_path / "t.npy"), seed=7), tmp_path)
    stored = load_file(str(tmp_path / PREPROCESS_WEIGHTS))
    assert torch.equal(bundle.preprocess.mean, stored["mean"]) and torch.equal(bundle.preprocess.std, stored["std"])
    rows = torch.from_numpy(raw[torch.randperm(300, generator=torch.Generator().manual_seed(7)).numpy()])
    direct = Standardize(stored["mean"].double(), stored["std"].double())(rows)[0].float()
    torch.testing.assert_close(torch.cat([bundle.train, bundle.val, bundle.test]), direct, rtol=0, atol=1e-6)
    assert bundle.train.dtype == torch.float32 and bundle.train.is_contiguous()


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    """A tiny run on the table of :func:`table_run` trained with ``-d standardize=false``."""
    root = tmp_path_factory.mktemp("plain")
    np.save(root / "t.npy", _table())
    assert main([*TRAIN, "--data", str(root / "t.npy"), "--out", str(root / "run"), "--seed", "1",
                 "-d", "standardize=false"]) == 0
    summary = json.loads((root / "run" / "summary.json").read_text())
    return root / "run", root / "t.npy", summary


def test_a_run_records_its_preprocessing_also_when_there_is_none(table_run, plain_run) -> None:
    digest = file_sha256(table_run[0] / PREPROCESS_WEIGHTS)
    assert json.loads((table_run[0] / PREPROCESS_JSON).read_text()) == {"kind": "standardize", "features": 2,
                                                                      "weights_sha256": digest}
    run = plain_run[0]
    assert json.loads((run / PREPROCESS_JSON).read_text()) == {"kind": "none"}
    assert not (run / PREPROCESS_WEIGHTS).exists()


def test_raw_points_that_overflow_in_the_datas_units_are_warned_of(table_run, tmp_path) -> None:
    """Finite model-space points times the table's scale (about 3 for the first column) can exceed float32: the
    flow's warning counts only the points that were not finite before that map (20 of 50 written as 21, say)."""
    import argparse

    from invertible.commands.sample import write_points

    points = torch.tensor([[3e38, 0.0], [float("inf"), 0.0], [1.0, 0.0]])
    args = argparse.Namespace(out=str(tmp_path / "s.npy"), run=str(table_run[0]), device="cpu", float64=False,
                              label=None, context=None, raw=True)
    with pytest.warns(RuntimeWarning, match=r"^1 more of 3 samples are not finite in the data's units: mapping them "
                                            r"back through the run's preprocessing overflowed the torch.float32 range"):
        assert write_points(args, 3, lambda flow, context, device: points, "samples", "samples") == 0
    assert (~np.isfinite(np.load(tmp_path / "s.npy")).all(1)).tolist() == [True, True, False]


def test_a_run_without_preprocessing_refuses_standardised_data(plain_run, tmp_path, capsys) -> None:
    """``--data`` does not carry the run's ``-d standardize=false`` over to another file it splits: the table comes
    standardised, which the model never saw; it is refused, not scored in the wrong space under a note that calls
    the run an older one. The run's own file is read with the run's options, as eval without ``--data`` reads it."""
    run, table, summary = plain_run
    code, out, err = _cli(capsys, "eval", run, "--data", table)
    assert code == 0 and err == "" and json.loads(out)["test_nll"] == summary["test_nll"]
    other = tmp_path / "u.npy"
    shutil.copy(table, other)
    code, out, err = _cli(capsys, "eval", run, "--data", other, "--split", "test")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {run} was trained on data with no preprocessing, but dataset 'u.npy' has a "
                          "standardisation of 2 features")
    assert err.rstrip().endswith("(the run was trained with -d standardize=false, which --data does not carry over)")
    code, out, err = _cli(capsys, "eval", run, "--data", other, "--split", "test", "-d", "standardize=false")
    assert code == 0 and err == "" and json.loads(out)["test_nll"] == summary["test_nll"]
    # the run's own options: no preprocessing, and no note of one; the only note counts the run's training rows
    code, out, err = _cli(capsys, "eval", run, "--seed", 5)
    assert code == 0 and json.loads(out)["test_nll"] != summary["test_nll"]
    assert len(err.splitlines()) == 1 and "are rows of the run's training split" in err, err


def test_a_record_without_its_statistics_is_refused(table_run, tmp_path, capsys) -> None:
    run, table, _ = table_run
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / PREPROCESS_WEIGHTS).unlink()  # the record says standardised: the statistics must be there
    code, _, err = _cli(capsys, "eval", broken, "--data", table)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "note:" not in err
    assert f"holds no {PREPROCESS_WEIGHTS}" in err


def _without_data(run: Path, tmp_path: Path, name: str) -> Path:
    """A copy of ``run`` whose config names a data file that no longer exists (moved or deleted)."""
    copy = tmp_path / name
    shutil.copytree(run, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["data"] = str(tmp_path / "gone.npy")
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    return copy


def test_raw_samples_need_no_data_file(table_run, plain_run, tmp_path, capsys) -> None:
    run, table, _ = table_run
    gone = _without_data(run, tmp_path, "gone")
    assert _cli(capsys, "sample", gone, "-n", 50, "--seed", 3, "--out", tmp_path / "z.npy")[0] == 0
    code, _, err = _cli(capsys, "sample", gone, "-n", 50, "--seed", 3, "--raw", "--out", tmp_path / "x.npy")
    assert code == 0, err
    trained = load(str(table), seed=1).preprocess
    expected = trained.inverse(torch.from_numpy(np.load(tmp_path / "z.npy")))[0].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), expected, rtol=1e-6)
    plain = _without_data(plain_run[0], tmp_path, "plain")  # no preprocessing: raw samples are the model's
    assert _cli(capsys, "sample", plain, "-n", 50, "--seed", 3, "--out", tmp_path / "pz.npy")[0] == 0
    assert _cli(capsys, "sample", plain, "-n", 50, "--seed", 3, "--raw", "--out", tmp_path / "px.npy")[0] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "px.npy"), np.load(tmp_path / "pz.npy"))


def test_raw_samples_of_an_older_run_still_load_its_data(table_run, tmp_path, capsys) -> None:
    run, _, _ = table_run
    old = tmp_path / "old"
    shutil.copytree(run, old)
    (old / PREPROCESS_JSON).unlink()  # written before runs recorded their preprocessing
    assert _cli(capsys, "sample", run, "-n", 50, "--seed", 3, "--raw", "--out", tmp_path / "new.npy")[0] == 0
    assert _cli(capsys, "sample", old, "-n", 50, "--seed", 3, "--raw", "--out", tmp_path / "old.npy")[0] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "old.npy"), np.load(tmp_path / "new.npy"))
    code, _, err = _cli(capsys, "sample", _without_data(old, tmp_path, "old-gone"), "--raw", "--out", tmp_path / "o.npy")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "unknown dataset" in err


def test_samples_in_the_standardised_space_say_so(table_run, plain_run, tmp_path, capsys) -> None:
    """Without ``--raw`` the samples of a standardised table are in the model's space (mean 0, std 1): a note
    on stderr says so and names ``--raw``, also for an older run that does not record its preprocessing; raw
    samples and the samples of a run whose data had no preprocessing get none."""
    run, table, _ = table_run
    code, _, err = _cli(capsys, "sample", run, "-n", 400, "--out", tmp_path / "z.npy")
    assert code == 0 and err.splitlines()[1:] == [
        "note: the samples are in the space the model saw, after a standardisation of 2 features; "
        "pass --raw for the data's own units"]
    assert np.abs(np.load(tmp_path / "z.npy").mean(0)).max() < 1.0  # the data's means are 10 and -4
    old = tmp_path / "old"
    shutil.copytree(run, old)
    (old / PREPROCESS_JSON).unlink()
    code, _, err = _cli(capsys, "sample", old, "-n", 5, "--out", tmp_path / "o.npy")
    assert code == 0 and len(err.splitlines()) == 2
    assert err.splitlines()[1].startswith(f"note: {old} does not record its data's preprocessing (an older run)")
    assert err.splitlines()[1].endswith("pass --raw for the data's own units")
    for source in (run, old):
        code, _, err = _cli(capsys, "sample", source, "-n", 400, "--raw", "--out", tmp_path / "x.npy")
        assert code == 0 and "note:" not in err, err
        np.testing.assert_allclose(np.load(tmp_path / "x.npy").mean(0), [10.0, -4.0], atol=1.0)
    code, _, err = _cli(capsys, "sample", plain_run[0], "-n", 5, "--out", tmp_path / "p.npy")
    assert code == 0 and "note:" not in err, err


IMAGES = ["train", "--model", "glow", "-m", "levels=1", "-m", "steps=1", "-m", "hidden=4", "--data", "engine-pixels",
          "--steps", "4", "--batch-size", "24", "--eval-every", "4", "--no-progress", "--no-plots"]


@pytest.fixture(scope="module", params=["uniform", "variational"])
def image_run(request, tmp_path_factory) -> Path:
    """A tiny Glow on 8-level 1x4x4 images with ``-d alpha=0.1`` and the dequantizer of the parameter."""
    run = tmp_path_factory.mktemp("images") / request.param
    assert main([*IMAGES, "-d", "alpha=0.1", "-d", f"dequantization={request.param}", "--out", str(run)]) == 0
    return run


def test_image_samples_need_no_data(image_run, tmp_path, capsys) -> None:
    """Raw pixels and a .png grid come from the run's record and stored dequantizer alone; the same pixels as the
    path that loads the data, which runs without a record still take."""
    record = json.loads((image_run / PREPROCESS_JSON).read_text())
    # only the learned dequantizer has a state, whose file's digest the record keeps
    digest = {"weights_sha256": file_sha256(image_run / PREPROCESS_WEIGHTS)} if image_run.name == "variational" else {}
    assert record == {"kind": "image", "levels": 8, "alpha": 0.1, "dequantization": image_run.name,
                      "event_shape": [1, 4, 4], **digest}
    gone = _without_data(image_run, tmp_path, "gone")
    code, _, err = _cli(capsys, "sample", gone, "-n", 9, "--out", tmp_path / "grid.png")
    assert code == 0 and (tmp_path / "grid.png").stat().st_size > 0, err
    assert _cli(capsys, "sample", gone, "-n", 20, "--seed", 4, "--raw", "--out", tmp_path / "new.npy")[0] == 0
    pixels = np.load(tmp_path / "new.npy")
    assert pixels.shape == (20, 1, 4, 4) and set(np.unique(pixels)) <= set(range(8))
    old = tmp_path / "old"
    shutil.copytree(image_run, old)
    (old / PREPROCESS_JSON).unlink()
    assert _cli(capsys, "sample", old, "-n", 20, "--seed", 4, "--raw", "--out", tmp_path / "old.npy")[0] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "old.npy"), pixels)


def test_images_of_another_logit_are_refused(image_run, capsys) -> None:
    """``--data`` naming another dataset, without the run's ``-d alpha=0.1``, logit-transforms the pixels with
    alpha 0.05: another space. The run's own dataset is read with the run's options."""
    dequantization = f"dequantization={image_run.name}"
    code, _, err = _cli(capsys, "eval", image_run, "--data", "engine-pixels-other", "-d", dequantization)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "levels and a logit with alpha=0.1, but dataset 'engine-pixels' has" in err and "alpha=0.05" in err
    assert "(the run was trained with -d alpha=0.1, which --data does not carry over)" in err
    trained = json.loads((image_run / "summary.json").read_text())["test_nll"]
    for extra in (["--data", "engine-pixels-other", "-d", "alpha=0.1", "-d", dequantization], ["--data", "engine-pixels"]):
        code, out, err = _cli(capsys, "eval", image_run, *extra)
        assert code == 0 and err == "" and json.loads(out)["test_nll"] == trained


class _Stop(Exception):
    pass


def _stop_at(step: int):
    """A training callback that interrupts the run after ``step`` steps."""

    def callback(done: int, metrics: dict) -> None:
        if done == step:
            raise _Stop

    return callback


def _interrupted_table_run(tmp_path: Path) -> TrainConfig:
    """A table run interrupted after 7 of 12 steps, its checkpoint at step 5: its config."""
    np.save(tmp_path / "t.npy", _table())
    config = TrainConfig(data=str(tmp_path / "t.npy"), model="realnvp", model_options={"layers": 2, "hidden": [8]},
                         steps=12, batch_size=32, eval_every=4, checkpoint_every=5, seed=1, out=str(tmp_path / "run"),
                         progress=False, plots=False)
    with pytest.raises(_Stop):
        train(config, callbacks=[_stop_at(7)])
    return config


def test_checkpoints_hold_the_statistics_and_resume_refuses_changed_data(tmp_path, capsys) -> None:
    config = _interrupted_table_run(tmp_path)
    ckpt = load_checkpoint(config.out)
    fitted = load(config.data, seed=1).preprocess
    assert ckpt.step == 5 and ckpt.preprocess is None and ckpt.fitted_preprocess.keys() == {"mean", "std"}
    assert torch.equal(ckpt.fitted_preprocess["mean"], fitted.mean) and torch.equal(ckpt.fitted_preprocess["std"], fitted.std)
    np.save(config.data, _table() * [1.0, 1.01])  # the file changed since the run started
    code, _, err = _cli(capsys, "train", "--resume", "--out", config.out, "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("error: cannot resume: the data's preprocessing statistics (mean, std) differ from those in ")
    assert err.rstrip().endswith("dataset 't.npy' changed since they were fitted")
    np.save(config.data, _table())  # back as it was: the run resumes and keeps the statistics it started with
    assert _cli(capsys, "train", "--resume", "--out", config.out, "--no-progress")[0] == 0
    stored = load_file(str(Path(config.out) / PREPROCESS_WEIGHTS))
    assert torch.equal(stored["mean"], fitted.mean) and torch.equal(stored["std"], fitted.std)


def test_resume_keeps_the_stored_statistics_within_float32_rounding(tmp_path) -> None:
    """Statistics fitted afresh one float32 step away from the stored ones (another summation order) are rounding:
    the run resumes in the stored space, and saves it."""
    config = _interrupted_table_run(tmp_path)
    ckpt = load_checkpoint(config.out)
    nudged = {k: torch.nextafter(v, v * 2) for k, v in ckpt.fitted_preprocess.items()}  # one step away from zero
    ckpt.fitted_preprocess = nudged
    save_checkpoint(config.out, ckpt)
    summary = train(config, resume=True)
    stored = load_file(str(Path(config.out) / PREPROCESS_WEIGHTS))
    assert torch.equal(stored["mean"], nudged["mean"]) and torch.equal(stored["std"], nudged["std"])
    assert summary["steps"] == 12
    ckpt.fitted_preprocess = {k: v * (1 + 1e-5) for k, v in nudged.items()}  # beyond rounding
    save_checkpoint(config.out, ckpt)
    with pytest.raises(TrainingError, match=r"cannot resume: the data's preprocessing statistics \(mean, std\) differ"):
        train(config, resume=True)


def test_an_older_checkpoint_without_statistics_resumes_as_before(tmp_path) -> None:
    config = _interrupted_table_run(tmp_path)
    ckpt = load_checkpoint(config.out)
    ckpt.fitted_preprocess = None  # written before checkpoints held the statistics (or the data's fingerprint)
    ckpt.data_fingerprint = None
    save_checkpoint(config.out, ckpt)
    np.save(config.data, _table() * [1.0, 1.01])
    assert train(config, resume=True)["steps"] == 12  # not checked: the statistics of the file as it is now
    stored = load_file(str(Path(config.out) / PREPROCESS_WEIGHTS))
    assert torch.equal(stored["std"], load(config.data, seed=1).preprocess.std)


def test_a_mean_near_zero_is_compared_at_the_scale_of_its_std(tmp_path) -> None:
    """A centred feature's mean (1e-17) differs between two fits by far more than its own float32 step, yet by
    nothing at the scale the standardised data see; a shift of a thousandth of a standard deviation is no rounding."""
    table = _table()
    train_rows = torch.randperm(300, generator=torch.Generator().manual_seed(0))[:240].numpy()  # seed 0's split
    table[:, 0] -= table[train_rows, 0].mean()
    np.save(tmp_path / "t.npy", table)
    fitted = load(str(tmp_path / "t.npy")).preprocess
    assert 0 < abs(fitted.mean[0]) < 1e-12
    close = {"mean": fitted.mean + torch.tensor([1e-9, 0.0]), "std": fitted.std.clone()}
    bundle = load(str(tmp_path / "t.npy"))
    adopt_fitted_state(bundle, close, "the checkpoint")
    assert torch.equal(bundle.preprocess.mean, close["mean"])
    far = {"mean": fitted.mean + torch.tensor([1e-3, 0.0]) * fitted.std, "std": fitted.std.clone()}
    with pytest.raises(ValueError, match=r"statistics \(mean\) differ from those in the checkpoint"):
        adopt_fitted_state(load(str(tmp_path / "t.npy")), far, "the checkpoint")


@pytest.mark.parametrize("damage, words", [
    ("weights", f"records a standardisation of 2 features but holds no {PREPROCESS_WEIGHTS}"),
    ("record", "corrupt preprocessing record"),
    ("kind", "corrupt preprocessing record"),
])
def test_raw_samples_of_a_damaged_record_are_refused(table_run, tmp_path, capsys, damage, words) -> None:
    run = tmp_path / "run"
    shutil.copytree(table_run[0], run)
    if damage == "weights":
        (run / PREPROCESS_WEIGHTS).unlink()
    else:
        (run / PREPROCESS_JSON).write_text('{"kind": "standardize"}' if damage == "record" else '{"features": 2}')
    code, _, err = _cli(capsys, "sample", run, "--raw", "--out", tmp_path / "x.npy")
    assert code == 2 and len(err.strip().splitlines()) == 1 and words in err
    assert not (tmp_path / "x.npy").exists()


@pytest.mark.parametrize("record", ["[1, 2]", '{"features": 2}', '{"kind": "standardize"}'])
@pytest.mark.parametrize("command", ["sample", "decode"])
def test_points_in_model_space_of_a_damaged_record_are_refused_before_a_file_is_written(
        table_run, tmp_path, capsys, record, command) -> None:
    """Without ``--raw`` the record is read only for the closing note: that note used to fail after the file
    was written, so the command exited 2 with its output left behind."""
    run = tmp_path / "run"
    shutil.copytree(table_run[0], run)
    (run / PREPROCESS_JSON).write_text(record)
    np.save(tmp_path / "z.npy", np.zeros((3, 2), dtype=np.float32))
    given = ["-n", "3"] if command == "sample" else ["--latents", tmp_path / "z.npy"]
    code, _, err = _cli(capsys, command, run, *given, "--out", tmp_path / "x.npy")
    assert code == 2 and err.strip().splitlines() == [err.strip()] and "corrupt preprocessing record" in err
    assert not (tmp_path / "x.npy").exists()


def test_a_changed_preprocessing_state_is_refused_by_every_command_that_reads_it(table_run, tmp_path, capsys) -> None:
    """``preprocess.safetensors`` was read unchecked: a NaN std made ``sample --raw`` write NaN columns (exit 0) and
    changed bytes made ``eval`` score by wrong statistics. Its record keeps its SHA-256 now; a record written
    before it did is read as before."""
    run = tmp_path / "run"
    shutil.copytree(table_run[0], run)
    stats = load_file(str(run / PREPROCESS_WEIGHTS))
    stats["std"][1] = float("nan")
    save_file(stats, str(run / PREPROCESS_WEIGHTS))
    np.save(tmp_path / "z.npy", np.zeros((3, 2), dtype=np.float32))
    words = f"error: corrupt run preprocessing {run / PREPROCESS_WEIGHTS}: it is not the file preprocess.json was written with"
    for argv in (["sample", run, "-n", 3, "--raw", "--out", tmp_path / "s.npy"],
                 ["decode", run, "--latents", tmp_path / "z.npy", "--raw", "--out", tmp_path / "d.npy"],
                 ["eval", run], ["eval", run, "--data", table_run[1], "--split", "all"],
                 ["encode", run, "--out", tmp_path / "e.npy"]):
        code, out, err = _cli(capsys, *argv)
        assert code == 2 and out == "" and err.strip().splitlines() == [err.strip()] and err.startswith(words), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "z.npy"]
    shutil.copy(table_run[0] / PREPROCESS_WEIGHTS, run / PREPROCESS_WEIGHTS)  # the file it was written with
    assert _cli(capsys, "sample", run, "-n", 3, "--raw", "--out", tmp_path / "s.npy")[0] == 0
    record = json.loads((run / PREPROCESS_JSON).read_text())
    del record["weights_sha256"]  # a run written before records kept the digest
    (run / PREPROCESS_JSON).write_text(json.dumps(record))
    stats["std"][1] = 2.0
    save_file(stats, str(run / PREPROCESS_WEIGHTS))
    assert _nll(capsys, run) != _nll(capsys, table_run[0])  # read unchecked, as before
