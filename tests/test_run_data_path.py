"""A run trained on a file given by a relative path reads that file again from any working directory: eval, sample
and interpolate by the absolute path its summary records, a resume by the one its checkpoint records; a run
that records none reads ``data`` as given, from the current directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from invertible.cli import main
from invertible.commands._common import run_bundle

from .test_run_preprocess import TRAIN, _cli, _table


def _train_relative(root: Path, monkeypatch, capsys, *extra: str) -> Path:
    """A tiny run on ``root/t.npy``, trained from ``root`` with ``--data t.npy``; the cwd is then ``root/elsewhere``,
    which holds another ``t.npy``."""
    np.save(root / "t.npy", _table())
    monkeypatch.chdir(root)
    assert main([*TRAIN, "--data", "t.npy", "--out", str(root / "run"), "--seed", "1", *extra]) == 0
    (root / "elsewhere").mkdir()
    np.save(root / "elsewhere" / "t.npy", _table(40) + 100.0)
    monkeypatch.chdir(root / "elsewhere")
    capsys.readouterr()
    return root / "run"


def _eval(capsys, *argv) -> dict:
    code, out, err = _cli(capsys, "eval", *argv)
    assert code == 0, err
    return json.loads(out)


def test_eval_finds_the_runs_relative_file_from_another_directory(tmp_path, monkeypatch, capsys) -> None:
    run = _train_relative(tmp_path, monkeypatch, capsys)
    summary = json.loads((run / "summary.json").read_text())
    own = _eval(capsys, run)
    assert own["split"] == "test" and own["rows"] == 30 and own["data"] == "t.npy"
    assert own["test_nll"] == pytest.approx(summary["test_nll"], rel=1e-6)
    assert _eval(capsys, run, "--data", tmp_path / "t.npy") == {**own, "data": str(tmp_path / "t.npy")}
    other = _eval(capsys, run, "--data", "t.npy")  # the file of this directory, another one: scored whole
    assert other["split"] == "all" and other["rows"] == 40
    assert summary["data"] == "t.npy" and summary["data_path"] == str(tmp_path / "t.npy")


def test_a_run_without_a_recorded_path_reads_data_as_given(tmp_path, monkeypatch, capsys) -> None:
    run = _train_relative(tmp_path, monkeypatch, capsys)
    path = run / "summary.json"
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "data_path"}))
    assert _eval(capsys, run)["rows"] == 4  # the 40 rows of ./t.npy, split as the run's data
    monkeypatch.chdir(tmp_path)
    assert _eval(capsys, run)["rows"] == 30


def test_run_bundle_of_sample_and_interpolate_reads_the_recorded_path(tmp_path, monkeypatch, capsys) -> None:
    """sample and interpolate load the run's dataset by :func:`run_bundle` when the run stores too little."""
    run = _train_relative(tmp_path, monkeypatch, capsys)
    there = run_bundle(run, "a test")
    monkeypatch.chdir(tmp_path)
    here = run_bundle(run, "a test")
    assert there.train.shape == (240, 2) and torch.equal(there.train, here.train) and torch.equal(there.test, here.test)


def test_resume_reads_the_recorded_path_from_another_directory(tmp_path, monkeypatch, capsys) -> None:
    run = _train_relative(tmp_path, monkeypatch, capsys, "--checkpoint-every", "5")
    first = json.loads((run / "summary.json").read_text())
    code, _, err = _cli(capsys, *TRAIN[:-1], "--resume", "--out", run, "--steps", "15", "--no-plots")
    assert code == 0, err
    resumed = json.loads((run / "summary.json").read_text())
    assert resumed["steps"] == 15 and resumed["data_path"] == str(tmp_path / "t.npy")
    assert resumed["data_sha256"] == first["data_sha256"]


def test_a_run_whose_data_file_is_gone_says_so(tmp_path, monkeypatch, capsys) -> None:
    """Moved or deleted, the file was called an unknown dataset ("no such built-in name or file") by eval,
    encode, the loads of sample and interpolate, and a resume; another file given by --data is still read."""
    run = _train_relative(tmp_path, monkeypatch, capsys, "--checkpoint-every", "5")
    monkeypatch.chdir(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "t.npy").unlink()  # nothing of that name here either
    (tmp_path / "t.npy").rename(tmp_path / "moved.npy")
    gone = f"error: the run's data file {tmp_path / 't.npy'} no longer exists (moved or deleted): put it back there"
    for argv, advice in ((["eval", run], ", or pass --data FILE to read another"),
                         (["encode", run, "--out", tmp_path / "z.npy"], ", or pass --data FILE to read another"),
                         ([*TRAIN[:-1], "--resume", "--out", run, "--steps", "15"],
                          ": a resumed run reads the data it was trained on")):
        code, out, err = _cli(capsys, *argv)
        assert code == 2 and err.strip() == gone + advice, err
    with pytest.raises(ValueError, match="^the run's data file .* no longer exists \\(moved or deleted\\): put it back there$"):
        run_bundle(run, "a test")
    assert _eval(capsys, run, "--data", tmp_path / "moved.npy")["rows"] == 300


def test_eval_notes_that_the_runs_own_data_changed_since_it_was_trained(tmp_path, monkeypatch, capsys) -> None:
    """A changed file was scored as the run's test split without a word, against the digests its summary keeps."""
    run = _train_relative(tmp_path, monkeypatch, capsys)
    code, _, err = _cli(capsys, "eval", run)
    assert code == 0 and "note" not in err, err
    np.save(tmp_path / "t.npy", _table() * 1.5)
    note = (f"note: the test split(s) of {tmp_path / 't.npy'} differ from those {run} was trained and tested on "
            "(the data changed since): the figures are of the data as they are now")
    code, _, err = _cli(capsys, "eval", run)
    assert code == 0 and note in err, err
    code, _, err = _cli(capsys, "eval", run, "--split", "all")
    assert code == 0 and "the train, val, test split(s) of" in err, err
    code, _, err = _cli(capsys, "eval", run, "--seed", "2")  # another split asked for: not the run's rows anyway
    assert code == 0 and "differ from those" not in err, err
