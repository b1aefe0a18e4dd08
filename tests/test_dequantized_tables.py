"""``digits_vectors``: integer pixels kept raw behind a per-batch uniform dequantization and a standardisation by the
exact moments of the dequantized values, so a file of integer rows is scored by the same bound (with bits/dim) and
samples mapped back to the data's units are integer pixels; a run draws its samples as the 8x8 images they are."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from sklearn.datasets import load_digits

from invertible.cli import main
from invertible.persistence import file_sha256
from invertible.data import Standardize, load
from invertible.data.sklearn_tabular import fixed_split
from invertible.data.tabular import dequantized_standardization
from invertible.models import build
from invertible.plots import image_grid
from invertible.train import pictures
from invertible.train.pictures import draw_run
from invertible.train.build import PREPROCESS_JSON, PREPROCESS_WEIGHTS, rebuild_preprocess
from invertible.transforms import UniformDequantization

from .test_run_preprocess import _cli

#: a class-conditional one-layer MAF on the digits, a few steps
TRAIN = ["train", "--data", "digits_vectors", "--model", "maf", "-m", "layers=1", "-m", "hidden=[8]", "--steps", "3",
         "--batch-size", "32", "--no-progress", "--no-plots"]
#: the context columns of a file of 64 pixels followed by 10 one-hot label columns
LABEL_COLUMNS = "context_columns=[" + ",".join(str(64 + k) for k in range(10)) + "]"


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("digits") / "run"
    assert main([*TRAIN, "--out", str(run)]) == 0
    return run


def _pixel_rows(path: Path, rows: np.ndarray, labels: np.ndarray, fmt: str = "%d") -> None:
    np.savetxt(path, np.concatenate([rows, np.eye(10)[labels]], axis=1), delimiter=",", fmt=fmt)


def test_the_splits_hold_the_integer_pixels_of_the_fixed_split() -> None:
    digits = load_digits()
    bundle = load("digits_vectors")
    i_train, _, i_test = fixed_split(len(digits.data))
    assert bundle.raw and bundle.levels == 17
    assert torch.equal(bundle.train, torch.as_tensor(digits.data[i_train.numpy()], dtype=torch.float32))
    assert torch.equal(bundle.test, torch.as_tensor(digits.data[i_test.numpy()], dtype=torch.float32))
    assert torch.equal(load("digits_vectors", seed=5).train, bundle.train)  # no noise drawn by the dataset


def test_the_standardisation_holds_the_exact_moments_of_the_dequantized_training_pixels() -> None:
    """``E[(x + u) / 17] = (mean x + 1/2) / 17`` and ``Var = (var x + 1/12) / 17^2`` (float64, rounded to float32);
    fresh noise through the whole map then gives features of mean near 0 and standard deviation near 1."""
    bundle = load("digits_vectors")
    dequantize, standardize = bundle.preprocess.transforms
    assert isinstance(dequantize, UniformDequantization) and dequantize.levels == 17
    x = bundle.train.double().numpy()
    np.testing.assert_array_equal(standardize.mean.numpy(), ((x.mean(0) + 0.5) / 17).astype(np.float32))
    np.testing.assert_array_equal(standardize.std.numpy(), (np.sqrt(x.var(0) + 1 / 12) / 17).astype(np.float32))
    torch.manual_seed(0)
    y, ladj = bundle.preprocess(bundle.train.repeat(20, 1))
    assert y.mean(0).abs().max() < 0.02 and (y.std(0) - 1).abs().max() < 0.02
    expected = -64 * np.log(17) - np.log(standardize.std.double().numpy()).sum()
    assert ladj[0].item() == pytest.approx(expected, rel=1e-6)
    pixels, _ = bundle.preprocess.inverse(y)
    assert torch.equal(pixels, bundle.train.repeat(20, 1))  # the noise stays inside each pixel's bin


def test_a_pixel_constant_in_every_row_keeps_the_noise_as_its_spread() -> None:
    standardize = dequantized_standardization(17, torch.zeros(10, 1)).transforms[1]
    assert standardize.mean.item() == pytest.approx(0.5 / 17) and standardize.std.item() == pytest.approx(1 / (17 * 12**0.5))


def test_the_run_records_the_map_and_rebuilds_it_without_the_data(digits_run) -> None:
    record = json.loads((digits_run / PREPROCESS_JSON).read_text())
    assert record == {"kind": "dequantized_table", "levels": 17, "dequantization": "uniform", "features": 64,
                      "weights_sha256": file_sha256(digits_run / PREPROCESS_WEIGHTS)}
    stored = load_file(str(digits_run / PREPROCESS_WEIGHTS))
    own = load("digits_vectors").preprocess.transforms[1]
    assert torch.equal(stored["transforms.1.mean"], own.mean) and torch.equal(stored["transforms.1.std"], own.std)
    rebuilt = rebuild_preprocess(record, digits_run)
    assert isinstance(rebuilt.transforms[0], UniformDequantization) and rebuilt.transforms[0].levels == 17
    assert isinstance(rebuilt.transforms[1], Standardize) and torch.equal(rebuilt.transforms[1].std, own.std)


def test_a_file_of_integer_pixels_is_scored_by_the_bound_of_the_test_split(digits_run, tmp_path, capsys) -> None:
    """A file of the test split's rows gets the test split's NLL (the same seeded noise) and its bits/dim; a file of
    dequantized (non-integer) rows is refused, naming the levels."""
    code, out, err = _cli(capsys, "eval", digits_run)
    assert code == 0, err
    own = json.loads(out)
    bundle = load("digits_vectors")
    labels = bundle.test_context.argmax(1).numpy()
    _pixel_rows(tmp_path / "test.csv", bundle.test.numpy(), labels)
    code, out, err = _cli(capsys, "eval", digits_run, "--data", tmp_path / "test.csv", "-d", LABEL_COLUMNS)
    assert code == 0, err
    scored = json.loads(out)
    assert scored["rows"] == len(bundle.test)
    assert scored["all_nll"] == pytest.approx(own["test_nll"], rel=1e-6)
    assert scored["all_bpd"] == pytest.approx(scored["all_nll"] / (64 * np.log(2)))
    _pixel_rows(tmp_path / "noisy.csv", bundle.test.numpy() + 0.5, labels, fmt="%g")
    code, out, err = _cli(capsys, "eval", digits_run, "--data", tmp_path / "noisy.csv", "-d", LABEL_COLUMNS)
    assert code == 2 and "must be integers in [0, 16], the levels of the data" in err, err


def test_raw_samples_are_integer_pixels(digits_run, tmp_path, capsys) -> None:
    code, _, err = _cli(capsys, "sample", digits_run, "-n", "50", "--label", "3", "--raw", "--out", tmp_path / "s.npy")
    assert code == 0, err
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (50, 64)
    assert np.array_equal(samples, np.round(samples)) and samples.min() >= 0 and samples.max() <= 16
    code, _, err = _cli(capsys, "sample", digits_run, "-n", "50", "--label", "3", "--out", tmp_path / "z.npy")
    assert code == 0 and "uniform dequantization of 17 levels and a standardisation of 64 features" in err, err
    assert not np.array_equal(np.load(tmp_path / "z.npy"), np.round(np.load(tmp_path / "z.npy")))


def test_latents_of_the_test_split_decode_to_its_integer_pixels(digits_run, tmp_path, capsys) -> None:
    """encode dequantizes the rows (seeded noise); decode --raw maps the latents back and quantizes them, so the
    round trip gives the test split's pixels exactly."""
    code, _, err = _cli(capsys, "encode", digits_run, "--split", "test", "--out", tmp_path / "z.npy")
    assert code == 0, err
    bundle = load("digits_vectors")
    np.save(tmp_path / "c.npy", bundle.test_context.numpy())
    code, _, err = _cli(capsys, "decode", digits_run, "--latents", tmp_path / "z.npy", "--context", tmp_path / "c.npy",
                        "--raw", "--out", tmp_path / "x.npy")
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), bundle.test.numpy())


@pytest.mark.parametrize("model, options", [("maf", {}), ("bernoulli_made", {"binarize": True})])
def test_a_run_on_digit_vectors_draws_its_samples_as_8x8_pictures(model, options, tmp_path, monkeypatch) -> None:
    """``samples.png``: a row of 8 per class, each sample mapped back to its pixels (17 levels for the flow, at
    temperature 0.7; 0/1 for the Bernoulli MADE, which has no temperature) and shown as the 8x8 image it is."""
    drawn = {}

    def grid(pixels, nrow, title, row_labels):
        drawn.update(pixels=pixels, title=title, labels=row_labels)
        return image_grid(pixels, nrow=nrow, title=title, row_labels=row_labels)

    monkeypatch.setattr(pictures, "image_grid", grid)
    bundle = load("digits_vectors", **options)
    flow = build(model, features=64, context_features=10, hidden=[8], **({"layers": 1} if model == "maf" else {}))
    paths = draw_run(tmp_path, flow, bundle, [{"step": 1, "loss": 1.0}], seed=0)
    assert [p.name for p in paths] == ["loss.png", "samples.png"] and paths[1].stat().st_size > 0
    pixels = drawn["pixels"]
    assert pixels.shape == (80, 1, 8, 8) and drawn["labels"] == [str(k) for k in range(10)]
    levels = pixels * (bundle.levels - 1)
    assert torch.equal(levels, levels.round()) and pixels.min() >= 0 and pixels.max() <= 1
    assert drawn["title"] == ("samples, T = 0.7" if model == "maf" else "samples")


def test_a_table_of_features_draws_no_samples_picture(tmp_path) -> None:
    flow = build("maf", features=13, context_features=3, layers=1, hidden=[8])
    paths = draw_run(tmp_path, flow, load("wine"), [{"step": 1, "loss": 1.0}], seed=0)
    assert [p.name for p in paths] == ["loss.png"]


def test_sample_and_interpolate_draw_digit_vectors_as_pictures(digits_run, tmp_path, capsys) -> None:
    """The run's summary keeps the 8x8 shape of its vectors, by which ``sample --out FILE.png`` (and decode) draw a
    grid, as ``interpolate`` does from the dataset; a table of features, or a corrupt shape, is refused in one line."""
    assert json.loads((digits_run / "summary.json").read_text())["picture_shape"] == [1, 8, 8]
    code, _, err = _cli(capsys, "sample", digits_run, "-n", "16", "--label", "7", "--out", tmp_path / "s.png")
    assert code == 0 and (tmp_path / "s.png").stat().st_size > 0, err
    code, _, err = _cli(capsys, "interpolate", digits_run, "--pairs", "2", "--steps", "4", "--out", tmp_path / "i.png")
    assert code == 0 and (tmp_path / "i.png").stat().st_size > 0, err
    bad = tmp_path / "bad"
    shutil.copytree(digits_run, bad)
    summary = json.loads((bad / "summary.json").read_text())
    (bad / "summary.json").write_text(json.dumps({**summary, "picture_shape": [1, 8, 9]}))
    code, _, err = _cli(capsys, "sample", bad, "-n", "4", "--label", "7", "--out", tmp_path / "b.png")
    assert code == 2 and "corrupt run summary" in err and "picture_shape [1, 8, 9]" in err, err


def test_a_run_on_a_table_of_features_draws_no_grid(tmp_path, capsys) -> None:
    run = tmp_path / "wine"
    assert main(["train", "--data", "wine", "--model", "maf", "-m", "layers=1", "-m", "hidden=[8]", "--steps", "2",
                 "--batch-size", "32", "--no-progress", "--no-plots", "--out", str(run)]) == 0
    assert json.loads((run / "summary.json").read_text())["picture_shape"] is None
    code, _, err = _cli(capsys, "sample", run, "-n", "4", "--label", "0", "--out", tmp_path / "w.png")
    assert code == 2 and "a .png grid needs an image model" in err, err
    code, _, err = _cli(capsys, "interpolate", run, "--out", tmp_path / "i.png")
    assert code == 2 and "does not hold images" in err, err


@pytest.mark.parametrize("record, message", [
    ({"levels": 17, "dequantization": "uniform"},
     "corrupt preprocessing record .*: a 'dequantized_table' record with no features$"),
    ({"levels": 17, "dequantization": "variational", "features": 64}, "unknown dequantization 'variational'"),
    ({"levels": 1, "dequantization": "uniform", "features": 64}, "levels must be >= 2, got 1"),
    ({"levels": 17, "dequantization": "uniform", "features": 63},
     r"does not fit the uniform dequantization of 17 levels and a standardisation of 63 features .*size mismatch "
     r"for transforms.1.mean.*; size mismatch for transforms.1.std"),
])
def test_a_corrupt_dequantized_table_record_is_refused_in_one_line(digits_run, tmp_path, capsys, record,
                                                                    message) -> None:
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    (run / PREPROCESS_JSON).write_text(json.dumps({"kind": "dequantized_table", **record}))
    code, out, err = _cli(capsys, "sample", run, "-n", "2", "--label", "1", "--raw", "--out", tmp_path / "s.npy")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err


def test_a_bernoulli_made_on_binarized_digits_draws_a_grid_but_has_no_latents_to_interpolate(tmp_path, capsys) -> None:
    """A Bernoulli MADE has no latent space: interpolate refuses it in one line, as encode and decode do (it raised
    an AttributeError once digit vectors became pictures); its samples still make a grid."""
    run = tmp_path / "made"
    assert main(["train", "--data", "digits_vectors", "-d", "binarize=true", "--model", "bernoulli_made", "-m",
                 "hidden=[8]", "--steps", "2", "--batch-size", "32", "--no-progress", "--no-plots", "--out", str(run)]) == 0
    capsys.readouterr()
    code, out, err = _cli(capsys, "interpolate", run, "--out", tmp_path / "i.png")
    assert code == 2 and out == "" and err.strip() == f"error: {run} holds a BernoulliMADE, a model of discrete data with no latent space"
    code, _, err = _cli(capsys, "sample", run, "-n", "8", "--label", "2", "--out", tmp_path / "s.png")
    assert code == 0 and (tmp_path / "s.png").stat().st_size > 0, err


def test_a_run_that_recorded_another_preprocessing_of_its_own_dataset_is_told_to_train_again(
        digits_run, tmp_path, capsys) -> None:
    """A run of ``digits_vectors`` from before the dataset kept integer pixels records a plain standardisation.
    Loaded with the run's own options the dataset cannot give it, so the advice to load it "with the run's data
    options" led nowhere (data loaded with other options still get it)."""
    run = tmp_path / "old"
    shutil.copytree(digits_run, run)
    (run / PREPROCESS_JSON).write_text(json.dumps({"kind": "standardize", "features": 64}))
    save_file({"mean": torch.zeros(64), "std": torch.ones(64)}, str(run / PREPROCESS_WEIGHTS))
    code, _, err = _cli(capsys, "eval", run)
    assert code == 2 and err.strip() == (
        f"error: {run} was trained on data with a standardisation of 64 features, but dataset 'digits_vectors' has "
        "uniform dequantization of 17 levels and a standardisation of 64 features: the dataset, loaded with the "
        "run's own options, preprocesses otherwise than when the run was trained: train the run again"), err
