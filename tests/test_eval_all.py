"""``invertible eval --split all``: every row of the run's own dataset (its three splits), or of a file read as it
is, mapped by the preprocessing the run stores and scored row by row (``--per-row``), nothing fitted to the file."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from invertible import load as load_flow
from invertible.cli import main
from invertible.data import Standardize, load, load_rows
from invertible.models import build
from invertible.train import evaluate_split
from invertible.train.build import PREPROCESS_JSON, PREPROCESS_WEIGHTS, rebuild_preprocess
from invertible.train.evaluate import seeded_rng, split_log_densities, split_tensors

from .test_run_preprocess import IMAGES, TRAIN, _cli, _table

CPU = torch.device("cpu")
#: Five rows near the run's table (10 +- 3, -4 +- 0.2), the first and last ones equal.
NEW = np.array([[10.0, -4.0], [13.0, -4.2], [7.0, -3.8], [10.0, -3.5], [10.0, -4.0]])


def _eval(capsys, *argv) -> dict:
    code, out, err = _cli(capsys, "eval", *argv)
    assert code == 0, err
    return json.loads(out)


def _error(capsys, *argv) -> str:
    code, out, err = _cli(capsys, "eval", *argv)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    return err


def _by_hand(run: Path, rows: np.ndarray, context: np.ndarray | None = None) -> np.ndarray:
    """``log p(x)`` of raw ``rows``: the run's flow at the rows standardised by the statistics the run stores,
    plus the standardisation's log-det."""
    stats = load_file(str(run / PREPROCESS_WEIGHTS))
    z, ladj = Standardize(stats["mean"].double(), stats["std"].double())(torch.from_numpy(rows))
    c = None if context is None else torch.as_tensor(context, dtype=torch.float32)
    with torch.no_grad():
        return (load_flow(run).log_prob(z.float(), c).double() + ladj).numpy()


@pytest.fixture(scope="module")
def table_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny run on a 300 x 2 ``.npy`` table: (run directory, table file)."""
    root = tmp_path_factory.mktemp("table")
    np.save(root / "t.npy", _table())
    assert main([*TRAIN, "--data", str(root / "t.npy"), "--out", str(root / "run"), "--seed", "1"]) == 0
    return root / "run", root / "t.npy"


@pytest.mark.parametrize("conditional", [False, True])
def test_split_all_is_the_three_splits_in_order(conditional) -> None:
    bundle = load("engine-gauss", seed=2, conditional=conditional)
    data, context = split_tensors(bundle, "all")
    assert torch.equal(data, torch.cat([bundle.train, bundle.val, bundle.test]))
    if conditional:
        assert torch.equal(context, torch.cat([bundle.train_context, bundle.val_context, bundle.test_context]))
    else:
        assert context is None
    torch.manual_seed(0)
    flow = build("realnvp", features=2, layers=2, hidden=[8], context_features=3 if conditional else None)
    whole = evaluate_split(flow, bundle, "all", 64, CPU)
    parts = {s: evaluate_split(flow, bundle, s, 64, CPU) for s in ("train", "val", "test")}
    sizes = {s: len(getattr(bundle, s)) for s in parts}
    weighted = sum(parts[s][f"{s}_nll"] * sizes[s] for s in parts) / sum(sizes.values())
    assert whole["all_nll"] == pytest.approx(weighted, rel=1e-12)
    if not conditional:  # the data density is known: the KL gap is averaged over the rows alike
        assert whole["kl_gap"] == pytest.approx(sum(parts[s]["kl_gap"] * sizes[s] for s in parts) / 600, rel=1e-9)
    log_p, _ = split_log_densities(flow, bundle, "all", 64, CPU)
    assert torch.equal(log_p, split_log_densities(flow, bundle, "all", 7, CPU)[0])  # whatever the batch size
    with pytest.raises(ValueError, match="split must be train, val, test or all"):
        split_tensors(bundle, "every")


def test_load_rows_reads_a_table_as_it_is(tmp_path) -> None:
    """Every row in file order, a single row and constant columns included: nothing is split or fitted."""
    np.save(tmp_path / "one.npy", np.array([[1.0, 2.0, 2.0]]))
    data, context = load_rows(tmp_path / "one.npy")
    assert data.dtype == torch.float64 and data.tolist() == [[1.0, 2.0, 2.0]] and context is None
    (tmp_path / "t.csv").write_text("a;label;b\n1;0;5\n2;1;5\n3;0;5\n")
    data, context = load_rows(tmp_path / "t.csv", context_columns="label", delimiter=";")
    assert data.tolist() == [[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]]
    assert context.dtype == torch.float32 and context.tolist() == [[0.0], [1.0], [0.0]]
    with pytest.raises(ValueError, match="bad options for dataset .*standardize.*its options: context_columns$"):
        load_rows(tmp_path / "one.npy", standardize=False)
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="1 non-finite value"):
        load_rows(tmp_path / "nan.npy")
    with pytest.raises(ValueError, match="unsupported file type '.txt'"):
        (tmp_path / "t.txt").write_text("1\n")
        load_rows(tmp_path / "t.txt")


def _pngs(folder: Path, images: np.ndarray, labels: list[int] | None = None) -> None:
    """Write 1xHxW ``images`` as 8-bit grey PNGs (in class sub-folders when ``labels`` are given), named so
    they sort in their order."""
    for i, image in enumerate(images):
        where = folder if labels is None else folder / str(labels[i])
        where.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].astype(np.uint8)).save(where / f"{i:02d}.png")


def test_load_rows_reads_images_with_one_hot_labels(tmp_path) -> None:
    images = np.arange(3 * 16).reshape(3, 1, 4, 4) % 7
    _pngs(tmp_path / "png", images, labels=[0, 1, 1])
    data, context = load_rows(tmp_path / "png", conditional=True, classes=5)
    assert data.shape == (3, 1, 4, 4) and torch.equal(data, torch.as_tensor(images, dtype=torch.float32))
    assert context.tolist() == [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 1, 0, 0, 0]]
    assert load_rows(tmp_path / "png", conditional=True)[1].shape == (3, 2)  # as many classes as class folders
    assert load_rows(tmp_path / "png")[1] is None
    _pngs(tmp_path / "plain", images)
    with pytest.raises(ValueError, match="has no labels for every image, so it cannot be read with conditional=true"):
        load_rows(tmp_path / "plain", conditional=True)


def test_a_file_is_scored_row_by_row_through_the_runs_statistics(table_run, tmp_path, capsys) -> None:
    """Five rows, two of them equal: too few to split (as --split test still says), yet scored with the statistics of
    the run's training split, each row's log-density in file order."""
    run, _ = table_run
    np.save(tmp_path / "new.npy", NEW)
    expected = _by_hand(run, NEW)
    result = _eval(capsys, run, "--data", tmp_path / "new.npy", "--split", "all", "--per-row", tmp_path / "rows.npy")
    assert result["rows"] == 5 and result["split"] == "all" and set(result) == {"data", "split", "rows", "all_nll"}
    assert result["all_nll"] == pytest.approx(-expected.mean(), rel=1e-6)
    per_row = np.load(tmp_path / "rows.npy")
    assert per_row.shape == (5,) and per_row.dtype == np.float64 and per_row[0] == per_row[4]
    np.testing.assert_allclose(per_row, expected, rtol=1e-6)
    assert per_row[1] < per_row[0] and per_row[2] < per_row[0]  # a standard deviation off scores lower
    assert "the val split is empty" in _error(capsys, run, "--data", tmp_path / "new.npy", "--split", "test")
    np.savetxt(tmp_path / "new.csv", NEW, delimiter=",", header="x,y", comments="")
    again = _eval(capsys, run, "--data", tmp_path / "new.csv", "--split", "all", "--per-row", tmp_path / "rows.csv")
    assert again["all_nll"] == result["all_nll"]
    np.testing.assert_allclose(np.loadtxt(tmp_path / "rows.csv"), per_row, rtol=1e-12)


def test_all_of_the_runs_own_data_is_its_three_splits(table_run, capsys) -> None:
    run, table = table_run
    parts = {s: _eval(capsys, run, "--split", s) for s in ("train", "val", "test")}
    assert [parts[s]["rows"] for s in parts] == [240, 30, 30]
    weighted = sum(parts[s][f"{s}_nll"] * parts[s]["rows"] for s in parts) / 300
    whole = _eval(capsys, run, "--split", "all")
    assert whole["rows"] == 300 and whole["all_nll"] == pytest.approx(weighted, rel=1e-9)
    file = _eval(capsys, run, "--data", table, "--split", "all")  # the file read as it is: the same rows, in file order
    assert file["rows"] == 300 and file["all_nll"] == pytest.approx(weighted, rel=1e-6)


def test_a_file_with_a_constant_column_and_a_context_column(tmp_path, capsys) -> None:
    """A conditional run on 3 features and a context column: a new file of the same layout is read with the run's
    context_columns, and a feature constant in it (which training refuses) is scored."""
    rng = np.random.default_rng(2)
    table = np.concatenate([rng.normal(size=(300, 3)) * [1.0, 2.0, 0.5], rng.integers(0, 2, (300, 1))], axis=1)
    np.save(tmp_path / "t.npy", table)
    assert main([*TRAIN, "--data", str(tmp_path / "t.npy"), "--out", str(tmp_path / "run"), "-d", "context_columns=3"]) == 0
    new = np.concatenate([rng.normal(size=(5, 3)), rng.integers(0, 2, (5, 1))], axis=1)
    new[:, 1] = 0.5  # constant in the new file
    np.save(tmp_path / "new.npy", new)
    capsys.readouterr()
    assert "constant in the training split" in _error(capsys, tmp_path / "run", "--data", tmp_path / "new.npy",
                                                      "--split", "test", "-d", "context_columns=3")
    result = _eval(capsys, tmp_path / "run", "--data", tmp_path / "new.npy", "--split", "all",
                   "--per-row", tmp_path / "rows.npy")
    expected = _by_hand(tmp_path / "run", new[:, :3], new[:, 3:])
    assert result["rows"] == 5 and result["all_nll"] == pytest.approx(-expected.mean(), rel=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "rows.npy"), expected, rtol=1e-6)
    np.save(tmp_path / "one.npy", new[:1])
    assert _eval(capsys, tmp_path / "run", "--data", tmp_path / "one.npy", "--split", "all")["all_nll"] == \
        pytest.approx(-expected[0], rel=1e-6)
    err = _error(capsys, tmp_path / "run", "--data", tmp_path / "new.npy", "--split", "all", "-d", "context_columns=[]")
    assert "expects events of shape (3,) but dataset 'new.npy' has (4,) (wrong feature count)" in err


def test_bad_files_and_options_for_split_all(table_run, tmp_path, capsys) -> None:
    run, _ = table_run
    np.save(tmp_path / "new.npy", NEW)
    np.save(tmp_path / "three.npy", np.ones((5, 3)))
    assert "expects events of shape (2,) but dataset 'three.npy' has (3,) (wrong feature count)" in \
        _error(capsys, run, "--data", tmp_path / "three.npy", "--split", "all")
    np.save(tmp_path / "nan.npy", np.array([[1.0, 2.0], [np.inf, 0.0]]))
    assert "non-finite value(s) (NaN or inf), the first at row 1, column 0" in \
        _error(capsys, run, "--data", tmp_path / "nan.npy", "--split", "all")
    assert "-d standardize does not apply to --split all of" in \
        _error(capsys, run, "--data", tmp_path / "new.npy", "--split", "all", "-d", "standardize=false")
    assert "--seed, which splits a dataset, does not apply" in \
        _error(capsys, run, "--data", tmp_path / "new.npy", "--split", "all", "--seed", 3)
    assert "--per-row must end in .npy or .csv, got 'rows.txt'" in \
        _error(capsys, run, "--data", tmp_path / "new.npy", "--split", "all", "--per-row", tmp_path / "rows.txt")
    assert not (tmp_path / "rows.txt").exists()


def test_another_file_is_scored_whole_unless_a_split_is_asked_for(table_run, tmp_path, capsys) -> None:
    """Without --split a file other than the run's data is every row of it, as --split all; the run's own file
    (by another path too), --seed and -d options that split the file give the test split."""
    run, table = table_run
    np.save(tmp_path / "new.npy", np.concatenate([NEW] * 4))
    whole = _eval(capsys, run, "--data", tmp_path / "new.npy", "--split", "all")
    assert _eval(capsys, run, "--data", tmp_path / "new.npy") == whole and whole["rows"] == 20
    assert _eval(capsys, run, "--data", tmp_path / "new.npy", "-d", "context_columns=[]") == whole
    for options, rows in ((["--seed", "3"], 2), (["-d", "test_fraction=0.5"], 10), (["-d", "val_fraction=0.5"], 2)):
        result = _eval(capsys, run, "--data", tmp_path / "new.npy", *options)
        assert result["split"] == "test" and result["rows"] == rows, options
    own = _eval(capsys, run)
    assert own["split"] == "test" and own["rows"] == 30
    for same in (table, Path(os.path.relpath(table)), table.parent / ".." / table.parent.name / table.name):
        assert _eval(capsys, run, "--data", same) == {**own, "data": str(same)}


def test_another_seeds_split_of_the_runs_table_counts_the_training_rows_in_it(table_run, capsys) -> None:
    """--seed 3 on the run's own (seed 1) table draws another test split, most of it rows the run was trained on:
    counted by their row numbers in the file (the standardised values, mapped by another training split's
    statistics, match none), and named in a note; the run's own seed gets no note."""
    run, table = table_run
    perm = lambda seed: torch.randperm(300, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    trained = set(perm(1)[:240].tolist())
    expected = sum(n in trained for n in perm(3)[270:].tolist())
    assert 0 < expected < 30
    code, _, err = _cli(capsys, "eval", run)
    assert code == 0 and "note" not in err, err
    for argv in ((), ("--data", table)):
        code, out, err = _cli(capsys, "eval", run, *argv, "--seed", "3")
        assert code == 0 and json.loads(out)["rows"] == 30
        assert f"note: {expected} of the 30 rows read (test) are rows of the run's training split" in err, err


def test_a_run_without_a_record_splits_the_file_as_before(table_run, tmp_path, capsys) -> None:
    """A run that does not record its preprocessing cannot rebuild it: --split all of a file is its three splits,
    standardised by the file's own training split, with the note of such runs."""
    run, table = table_run
    old = tmp_path / "old"
    shutil.copytree(run, old)
    (old / PREPROCESS_JSON).unlink()
    (old / PREPROCESS_WEIGHTS).unlink()
    np.save(tmp_path / "copy.npy", _table())
    code, out, err = _cli(capsys, "eval", old, "--data", tmp_path / "copy.npy", "--split", "all")
    assert code == 0 and err.startswith("note: ") and json.loads(out)["rows"] == 300


def test_images_of_a_file_are_scored_with_the_runs_dequantization(tmp_path, capsys) -> None:
    """A Glow on 8-level images scores a folder of five PNGs (too few to split) pixel by pixel through its record:
    each row the seeded dequantization estimate of log P(x), its mean in bits/dim too."""
    run = tmp_path / "run"
    assert main([*IMAGES, "-d", "alpha=0.1", "--out", str(run)]) == 0
    images = np.random.default_rng(3).integers(0, 8, (5, 1, 4, 4))
    _pngs(tmp_path / "png", images)
    capsys.readouterr()
    result = _eval(capsys, run, "--data", tmp_path / "png", "--split", "all", "--per-row", tmp_path / "rows.npy")
    preprocess = rebuild_preprocess(json.loads((run / PREPROCESS_JSON).read_text()), run)
    with torch.no_grad(), seeded_rng(0, CPU):
        y, ladj = preprocess(torch.as_tensor(images, dtype=torch.float32))
        expected = (load_flow(run).log_prob(y).double() + ladj.double()).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "rows.npy"), expected, rtol=1e-6)
    assert result["rows"] == 5 and result["all_nll"] == pytest.approx(-expected.mean(), rel=1e-6)
    assert result["all_bpd"] == pytest.approx(result["all_nll"] / (16 * np.log(2)))
    assert _eval(capsys, run, "--data", tmp_path / "png", "--split", "all", "--draws", 2)["all_nll"] != result["all_nll"]
    own = _eval(capsys, run, "--split", "all")  # a dataset name: its three splits
    assert own["rows"] == 96 and "all_bpd" in own
    _pngs(tmp_path / "bright", images + 1)  # a pixel of 8 is beyond the run's 8 levels
    assert "bright: pixel values must be integers in [0, 7], the levels of the data" in \
        _error(capsys, run, "--data", tmp_path / "bright", "--split", "all")


def test_a_row_of_zero_density_gives_strict_json_with_null_and_a_note(table_run, tmp_path, capsys) -> None:
    """A row beyond the float range has log-density -inf: the mean NLL is infinite and is written as null in the
    printed line and in --out (Python's ``Infinity`` is not JSON), with a note counting such rows."""
    run, _ = table_run
    rows = NEW.copy()
    rows[2, 0] = 1e30  # finite once standardised, but its square overflows float32
    np.save(tmp_path / "far.npy", rows)
    code, out, err = _cli(capsys, "eval", run, "--data", tmp_path / "far.npy", "--split", "all",
                          "--out", tmp_path / "e.json", "--per-row", tmp_path / "rows.npy")
    assert code == 0, err
    strict = lambda text: json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert strict(out)["all_nll"] is None and strict((tmp_path / "e.json").read_text())["all_nll"] is None
    assert "note: 1 of 5 rows have a log-density that is not finite" in err
    per_row = np.load(tmp_path / "rows.npy")
    assert per_row[2] == -np.inf and np.isfinite(np.delete(per_row, 2)).all()


def test_a_file_of_binary_rows_gets_the_bits_per_dim_of_a_bernoulli_run(tmp_path, capsys) -> None:
    """A Bernoulli MADE on binarised digits (2 levels, no preprocessing): ``--data FILE`` of 0/1 rows reports
    ``all_bpd = all_nll / (D ln 2)`` as the run's own test split does, and an older run, whose record keeps no
    levels, still scores its own data."""
    run = tmp_path / "run"
    assert main(["train", "--data", "digits_vectors", "-d", "binarize=true", "--model", "bernoulli_made", "-m",
                 "hidden=[8]", "--steps", "2", "--batch-size", "32", "--no-progress", "--no-plots", "--out", str(run)]) == 0
    capsys.readouterr()
    assert json.loads((run / PREPROCESS_JSON).read_text()) == {"kind": "none", "levels": 2}
    bundle = load("digits_vectors", binarize=True)
    rows = np.concatenate([bundle.test[:20].numpy(), bundle.test_context[:20].numpy()], axis=1)
    np.savetxt(tmp_path / "bin.csv", rows, delimiter=",", fmt="%d")
    columns = "context_columns=[" + ",".join(str(64 + k) for k in range(10)) + "]"
    result = _eval(capsys, run, "--data", tmp_path / "bin.csv", "-d", columns)
    assert result["split"] == "all" and result["rows"] == 20
    assert result["all_bpd"] == pytest.approx(result["all_nll"] / (64 * np.log(2)))
    own = _eval(capsys, run)
    assert own["test_bpd"] == pytest.approx(own["test_nll"] / (64 * np.log(2)))
    (run / PREPROCESS_JSON).write_text(json.dumps({"kind": "none"}))  # a record written before records kept levels
    assert _eval(capsys, run) == own


def test_a_value_beyond_float32_once_standardised_is_named_with_its_file_row_and_feature(table_run, tmp_path,
                                                                                         capsys) -> None:
    """Finite in the file but infinite as the model's float32: it was refused as "x contains 1 non-finite value(s)",
    a message that named neither the file nor the row; a value that stays finite (1e30) is still scored."""
    run, table = table_run
    rows = np.load(table)[:10].copy()
    rows[3, 1] = 1e39
    np.save(tmp_path / "over.npy", rows)
    err = _error(capsys, run, "--data", tmp_path / "over.npy")
    assert err.startswith("error: over.npy: 1 value(s) lie beyond the float32 range once standardised, the first at "
                          "row 3, feature 1: 1e+39, "), err
    err = _error(capsys, run, "--data", tmp_path / "over.npy", "-d", "test_fraction=0.5")  # split and fitted to it
    assert err.startswith("error: over.npy, ") and "split (rows in split order): 1 value(s) lie beyond the float32 " \
        "range once standardised" in err, err
    rows[3, 1] = 1e30
    np.save(tmp_path / "huge.npy", rows)
    code, out, err = _cli(capsys, "eval", run, "--data", tmp_path / "huge.npy")
    assert code == 0 and json.loads(out)["rows"] == 10, err
