"""Image models on the command line: train on digits, sample grids (temperature, labels), interpolations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from invertible.cli import main

FAST = ["--data", "digits", "--steps", "3", "--batch-size", "32", "--eval-every", "3", "--no-progress"]


@pytest.fixture(scope="module")
def glow_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("images") / "glow"
    code = main(["train", "--model", "glow", *FAST, "--out", str(run), "-m", "levels=1", "-m", "steps=1", "-m", "hidden=4",
                 "-d", "conditional=true"])
    assert code == 0
    return run


def test_train_reports_bits_per_dim_and_draws_samples(glow_run: Path) -> None:
    summary = json.loads((glow_run / "summary.json").read_text())
    assert 0 < summary["test_bpd"] < 10 and (glow_run / "samples.png").stat().st_size > 0


def test_sample_grid_with_label_and_interpolation(glow_run: Path, tmp_path: Path, capsys) -> None:
    grid = tmp_path / "grid.png"
    assert main(["sample", str(glow_run), "-n", "9", "--temperature", "0.7", "--label", "3", "--out", str(grid)]) == 0
    assert grid.read_bytes()[:4] == b"\x89PNG"
    inter = tmp_path / "inter.png"
    assert main(["interpolate", str(glow_run), "--pairs", "2", "--steps", "4", "--out", str(inter)]) == 0
    assert inter.read_bytes()[:4] == b"\x89PNG"
    assert main(["sample", str(glow_run), "--label", "12", "--out", str(grid)]) == 2
    assert main(["interpolate", str(glow_run), "--out", str(tmp_path / "x.jpg")]) == 2
    assert main(["sample", str(glow_run), "--label", "3", "--temperature", "inf", "--out", str(grid)]) == 2
    assert main(["sample", str(glow_run), "--label", "-1", "--out", str(grid)]) == 2
    err = capsys.readouterr().err
    assert "--label 12 is not a class of this flow: its labels are 0..9" in err and "must end in .png" in err
    assert "--temperature must be a finite number" in err and "--label -1 is not a class of this flow" in err
    assert main(["sample", str(glow_run), "--out", str(grid)]) == 2  # a class-conditional flow names --label too
    assert "class-conditional: pass --label K (K in 0..9) or --context FILE.npy with 10 values" in capsys.readouterr().err


@pytest.mark.parametrize("model,options", [("nice", ["-m", "hidden=[8]", "-m", "layers=2"]),
                                           ("realnvp", ["-m", "levels=2", "-m", "hidden_channels=4", "-m", "blocks=1"])])
def test_nice_and_realnvp_train_on_digits(model: str, options: list[str], tmp_path: Path) -> None:
    assert main(["train", "--model", model, *FAST, "--no-plots", "--out", str(tmp_path / model), *options]) == 0
    assert json.loads((tmp_path / model / "summary.json").read_text())["test_bpd"] > 0


def test_eval_repeats_the_fixed_noise_and_raw_samples_are_pixels(glow_run: Path, tmp_path: Path, capsys) -> None:
    import numpy as np

    summary = json.loads((glow_run / "summary.json").read_text())
    assert main(["eval", str(glow_run)]) == 0
    once = json.loads(capsys.readouterr().out)
    assert abs(once["test_bpd"] - summary["test_bpd"]) < 1e-9  # the same seeded evaluation noise
    assert main(["eval", str(glow_run), "--draws", "3"]) == 0
    averaged = json.loads(capsys.readouterr().out)
    assert averaged["test_bpd"] != once["test_bpd"] and abs(averaged["test_bpd"] - once["test_bpd"]) < 0.1
    assert main(["sample", str(glow_run), "-n", "5", "--label", "1", "--raw", "--out", str(tmp_path / "s.npy")]) == 0
    pixels = np.load(tmp_path / "s.npy")
    assert pixels.shape == (5, 1, 8, 8) and np.array_equal(pixels, np.round(pixels)) and 0 <= pixels.min() and pixels.max() <= 16


def test_interpolate_of_a_bare_saved_model_says_it_needs_the_runs_dataset(glow_run: Path, tmp_path: Path, capsys) -> None:
    """A directory written by flow.save names no dataset: interpolate, which needs its test images, says so."""
    import invertible

    bare = tmp_path / "bare"
    invertible.load(glow_run).save(bare)
    assert main(["interpolate", str(bare), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: interpolate needs the test images of the run's dataset, but {bare} has no config.yaml "
                   "naming its dataset (a run of `invertible train`)")


def test_interpolate_names_a_steps_count_below_two(glow_run: Path, tmp_path: Path, capsys) -> None:
    """A row holds both ends of its interpolation: ``--steps 1`` is refused by the flag's name, before the model loads."""
    capsys.readouterr()
    assert main(["interpolate", str(glow_run), "--steps", "1", "--out", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err.strip() == "error: --steps must be >= 2 (both ends of each row), got 1"
    assert not (tmp_path / "x.png").exists()


def test_eval_of_another_split_of_the_runs_images_counts_the_training_rows_in_it(glow_run, capsys) -> None:
    """``--seed 3`` draws another test split of digits, most of it images the run was trained on; it was scored
    with no word of that. The run's own split, and its training split, get no such note."""
    capsys.readouterr()
    assert main(["eval", str(glow_run)]) == 0
    assert "note" not in capsys.readouterr().err
    assert main(["eval", str(glow_run), "--seed", "3"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["rows"] == 300
    words = err.split("note: ")[1].split(" of the 300 rows read (test) are rows of the run's training split, ")
    assert len(words) == 2 and 150 < int(words[0]) < 300, err  # about 1,347 of 1,797 images train the run
    assert main(["eval", str(glow_run), "--seed", "3", "--split", "train"]) == 0
    assert "note" not in capsys.readouterr().err
