"""The ``invertible`` command line: every subcommand, and one-line errors with exit status 2 for bad input."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import invertible
from invertible.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--data", "engine-gauss", "-m", "layers=2", "-m", "hidden=[8]", "--steps", "10",
         "--batch-size", "32", "--eval-every", "5", "--no-progress", "--no-plots"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_error(capsys, words: str, *argv: str) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert words in lines[0], err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main([*TRAIN, "--out", str(run), "--seed", "1"]) == 0
    return run


def test_train_then_sample_and_eval(trained, capsys, tmp_path):
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["steps"] == 10 and summary["model"] == "realnvp"
    assert invertible.load(trained).config["options"]["hidden"] == [8]

    code, _, err = run_cli(capsys, "sample", trained, "-n", 50, "--out", tmp_path / "s.npy", "--seed", 3)
    assert code == 0 and "wrote 50 samples" in err
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (50, 2) and np.isfinite(samples).all()
    run_cli(capsys, "sample", trained, "-n", 50, "--out", tmp_path / "t.npy", "--seed", 3)
    assert np.array_equal(samples, np.load(tmp_path / "t.npy"))  # seeded
    run_cli(capsys, "sample", trained, "-n", 50, "--out", tmp_path / "cold.npy", "--seed", 3, "--temperature", 0.5)
    flow = invertible.load(trained)
    with torch.no_grad():  # same seed, half the temperature: the latents are halved
        u, _ = flow.transform(torch.as_tensor(samples))
        u_cold, _ = flow.transform(torch.as_tensor(np.load(tmp_path / "cold.npy")))
    torch.testing.assert_close(u_cold, 0.5 * u, atol=1e-5, rtol=1e-4)

    code, out, _ = run_cli(capsys, "eval", trained, "--out", tmp_path / "e.json")
    result = json.loads(out)
    assert code == 0 and result["test_nll"] == pytest.approx(summary["test_nll"], rel=1e-6)
    assert json.loads((tmp_path / "e.json").read_text()) == result
    code, out, _ = run_cli(capsys, "eval", trained, "--split", "val")
    assert code == 0 and "val_nll" in json.loads(out)


def test_config_file_with_flag_overrides(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: engine-gauss\nsteps: 8\nbatch_size: 16\nlr: 1e-3\nmodel_options: {layers: 2, hidden: [4]}\n"
                   "progress: false\nplots: false\neval_every: 4\n")
    code, out, _ = run_cli(capsys, "train", "--config", cfg, "--steps", 6, "-m", "hidden=[6]", "--out", tmp_path / "r")
    assert code == 0 and json.loads(out)["steps"] == 6
    resolved = (tmp_path / "r" / "config.yaml").read_text()
    assert "steps: 6" in resolved and "batch_size: 16" in resolved and "lr: 0.001" in resolved
    assert invertible.load(tmp_path / "r").config["options"]["hidden"] == [6]
    assert invertible.load(tmp_path / "r").config["options"]["layers"] == 2
    cfg.write_text(cfg.read_text() + "grad_clip: 1.0\nema: 0.9\n")
    code, _, _ = run_cli(capsys, "train", "--config", cfg, "--grad-clip", "none", "--ema", "None", "--out", tmp_path / "q")
    resolved = (tmp_path / "q" / "config.yaml").read_text()
    assert code == 0 and "grad_clip: null" in resolved and "ema: null" in resolved


def test_resume_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "r"
    assert main([*TRAIN, "--out", str(run), "--checkpoint-every", "5"]) == 0
    capsys.readouterr()
    # resuming reads the run's settings; more steps continue the same run
    code, out, _ = run_cli(capsys, "train", "--resume", "--out", run, "--steps", 14, "--no-progress")
    assert code == 0 and json.loads(out)["steps"] == 14
    assert_error(capsys, "cannot resume: steps is 5 but the run has done 14", "train", "--resume", "--out", run, "--steps", 5)
    assert_error(capsys, "cannot resume: ema is 0.5 but the checkpoint has none", "train", "--resume", "--out", run, "--ema", 0.5)
    # another model is named as such, not as the bad options that the run's (planar takes no hidden) are for it
    assert_error(capsys, "cannot resume: model is 'planar' but the checkpoint has 'realnvp'",
                 "train", "--resume", "--out", run, "--model", "planar")
    (run / "config.yaml").unlink()  # the checkpoint records the settings too
    code, out, _ = run_cli(capsys, "train", "--resume", "--out", run, "--steps", 16, "--no-progress")
    assert code == 0 and json.loads(out)["steps"] == 16


def test_plots_and_progress_can_be_turned_back_on_at_a_resume(tmp_path, capsys):
    """The resumed run's config.yaml says no pictures and no bar; --plots and --progress override it."""
    run = tmp_path / "r"
    assert main([*TRAIN, "--out", str(run)]) == 0
    assert not (run / "loss.png").exists() and "plots: false" in (run / "config.yaml").read_text()
    capsys.readouterr()
    code, _, err = run_cli(capsys, "train", "--resume", "--out", run, "--steps", 12, "--plots", "--progress")
    assert code == 0 and "train: 100%" in err
    assert (run / "loss.png").stat().st_size > 0 and (run / "density.png").stat().st_size > 0
    resolved = (run / "config.yaml").read_text()
    assert "plots: true" in resolved and "progress: true" in resolved
    code, _, _ = run_cli(capsys, "train", "--resume", "--out", run, "--steps", 14, "--no-plots", "--no-compile")
    assert code == 0 and "plots: false" in (run / "config.yaml").read_text()


def test_every_subcommand_is_runnable_and_documents_its_options():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"train", "sample", "eval", "models", "datasets"} <= set(subparsers.choices)
    for name, sub in subparsers.choices.items():
        assert callable(sub.get_default("command")), f"{name} does not set_defaults(command=...)"
        undocumented = [a.option_strings or a.dest for a in sub._actions if not a.help]
        assert not undocumented, f"{name}: options without help: {undocumented}"


def test_listing_commands(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0 and {"nice", "realnvp"} <= {line.split()[0] for line in out.splitlines()}
    code, out, _ = run_cli(capsys, "datasets")
    assert code == 0 and "engine-gauss" in out
    code, out, _ = run_cli(capsys, "models", "maf")  # one preset: its description and its -m options
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("Masked Autoregressive Flow")
    options = dict(line.split(None, 1) for line in lines[lines.index("options (-m key=value):") + 1 :])
    assert options["features"] == "set from the data" and options["layers"] == "5" and options["permutation"] == "'reverse'"
    assert ":class:" not in out
    assert_error(capsys, "unknown model 'nosuch'", "models", "nosuch")
    code, out, _ = run_cli(capsys, "datasets", "digits_vectors")  # one dataset: its -d options
    options = dict(line.split(None, 1) for line in out.splitlines()[out.splitlines().index("options (-d key=value):") + 1 :])
    # dequantize's default None means "on unless binarize", which the description says: listed as auto, not None
    assert code == 0 and options == {"seed": "set by --seed", "dequantize": "auto (see above)", "binarize": "False"}
    code, out, _ = run_cli(capsys, "datasets", ".csv")
    assert code == 0 and "context_columns" in out and "path" not in out.split("options (-d key=value):")[1]
    assert_error(capsys, "unknown dataset or file suffix 'nosuch'", "datasets", "nosuch")


def test_bad_input_gives_one_line_and_exit_2(trained, tmp_path, capsys):
    assert_error(capsys, "unknown model 'nosuch'", *TRAIN, "--model", "nosuch", "--out", tmp_path / "a")
    assert_error(capsys, "unexpected keyword argument 'depth'; its options: features, context_features, layers",
                 *TRAIN, "-m", "depth=3", "--out", tmp_path / "a")
    assert_error(capsys, "unknown dataset 'nosuch'", *TRAIN, "--data", "nosuch", "--out", tmp_path / "a")
    assert_error(capsys, "unexpected keyword argument 'binarize'; its options: n, features, nonfinite, conditional",
                 *TRAIN, "-d", "binarize=true", "--out", tmp_path / "a")
    assert_error(capsys, "model 'glow' takes images; dataset 'engine-gauss' holds vectors of shape (2,)",
                 *TRAIN, "--model", "glow", "--out", tmp_path / "a")
    assert_error(capsys, "holds only 2 discrete values per dimension and is not dequantized",
                 *TRAIN, "--data", "digits_vectors", "-d", "binarize=true", "--model", "maf", "--out", tmp_path / "a")
    assert_error(capsys, "lr must be > 0", *TRAIN, "--lr", "-1", "--out", tmp_path / "a")
    assert_error(capsys, "ema (the decay", *TRAIN, "--ema", "2", "--out", tmp_path / "a")
    assert_error(capsys, "must look like key=value", *TRAIN, "-m", "layers", "--out", tmp_path / "a")
    assert_error(capsys, "non-finite", *TRAIN, "-d", "nonfinite=true", "--out", tmp_path / "a")
    assert_error(capsys, "config file not found", *TRAIN, "--config", tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("model: [maf\n")
    assert_error(capsys, "cannot parse config file", *TRAIN, "--config", tmp_path / "bad.yaml")  # one line, not YAML's picture
    assert_error(capsys, "nothing to resume", *TRAIN, "--resume", "--out", tmp_path / "a")
    assert not (tmp_path / "a").exists()
    (tmp_path / "empty").mkdir()
    for missing in (tmp_path / "a", tmp_path / "empty"):  # no config.yaml to read the dataset from either
        assert_error(capsys, f"nothing to resume: no checkpoint in {missing}", "train", "--resume", "--out", missing)
    if not torch.cuda.is_available():
        assert_error(capsys, "CUDA is not available", *TRAIN, "--device", "cuda", "--out", tmp_path / "a")
    # wrong feature count: the 2-D model on 3-D data
    assert_error(capsys, "wrong feature count", "eval", trained, "--data", "engine-gauss", "-d", "features=3")
    assert_error(capsys, "does not exist", "sample", tmp_path / "missing", "-n", 5, "--out", tmp_path / "s.npy")
    assert_error(capsys, "does not exist", "eval", tmp_path / "missing")
    assert_error(capsys, "-n must be >= 1", "sample", trained, "-n", 0, "--out", tmp_path / "s.npy")
    assert_error(capsys, "this flow is unconditional", "sample", trained, "--context", tmp_path / "c.npy", "--out", tmp_path / "s.npy")
    assert_error(capsys, "a .png grid needs an image model; this one draws vectors of shape (2,)", "sample", trained,
                 "--out", tmp_path / "s.png")
    assert_error(capsys, "this flow is unconditional; --label 0 needs a class-conditional flow", "sample", trained, "--label", 0,
                 "--out", tmp_path / "s.npy")
    assert not (tmp_path / "s.npy").exists()
    (tmp_path / "file").write_text("")
    assert_error(capsys, "cannot make the directory", *TRAIN, "--out", tmp_path / "file")
    assert_error(capsys, "cannot make the directory", "sample", trained, "-n", 5, "--out", tmp_path / "file" / "s.npy")



def test_sample_refuses_an_output_it_cannot_write_before_drawing(trained, tmp_path, capsys, monkeypatch):
    """A wrong ``--out`` suffix, or a picture grid of a vector model, stops before any sample is drawn."""
    from invertible.commands import sample

    def draw(*args):
        raise AssertionError("sampled before the output was checked")

    monkeypatch.setattr(sample, "_draw", draw)
    assert_error(capsys, "--out must end in .npy or .csv, got 's.txt'", "sample", trained, "--out", tmp_path / "s.txt")
    assert_error(capsys, "a .png grid needs an image model; this one draws vectors of shape (2,)", "sample", trained,
                 "--out", tmp_path / "s.png")
    assert_error(capsys, "--out must end in .npy or .csv", "sample", tmp_path / "missing", "--out", tmp_path / "s")


def test_a_warning_is_one_line_without_a_source_location(trained, tmp_path, capsys):
    """Samples that overflow are written with a ``warning:`` line, not Python's ``FILE:LINE: RuntimeWarning`` and
    the source line inside torch's decorator that issued it."""
    code, out, err = run_cli(capsys, "sample", trained, "-n", 20, "--temperature", "1e37", "--out", tmp_path / "s.npy")
    assert code == 0 and (tmp_path / "s.npy").is_file()
    warning, wrote = err.strip().splitlines()
    assert re.match(r"warning: \d+ of 20 sample\(s\) are not finite", warning) and ".py:" not in warning, err
    assert wrote.startswith("wrote 20 samples"), err


@pytest.mark.parametrize("device", ["foo", "meta", "cpu:0"])
def test_every_command_refuses_a_device_it_does_not_take_in_one_line(trained, tmp_path, capsys, device):
    """train checked --device; eval, sample, encode and decode passed it to torch.device: a traceback (exit 1)
    for 'foo', and 'meta' failed inside the first evaluation."""
    for argv in (["eval", trained], ["sample", trained, "-n", "2", "--out", tmp_path / "s.npy"],
                 ["encode", trained, "--out", tmp_path / "z.npy"]):
        assert_error(capsys, f"device must be auto, cpu, cuda, cuda:N or mps, got '{device}'", *argv, "--device", device)


def test_eval_with_another_seed_of_a_dataset_of_fixed_splits_says_it_scores_the_same_rows(trained, tmp_path, capsys):
    """wine's splits do not depend on the seed: --seed 3 printed the run's own test NLL with no word of why."""
    run = tmp_path / "wine"
    assert main(["train", "--data", "wine", "--steps", "2", "--batch-size", "32", "-m", "layers=1", "-m", "hidden=[8]",
                 "--no-progress", "--no-plots", "--out", str(run)]) == 0
    capsys.readouterr()
    _, plain, err = run_cli(capsys, "eval", run)
    assert "note:" not in err
    code, seeded, err = run_cli(capsys, "eval", run, "--seed", "3")
    assert code == 0 and json.loads(seeded)["test_nll"] == json.loads(plain)["test_nll"]
    assert err.strip() == ("note: the splits of wine are fixed, whatever the seed: --seed 3 scores the same test rows "
                           "as the run's own seed")
    code, _, err = run_cli(capsys, "eval", trained, "--seed", "3")  # engine-gauss draws its rows from the seed
    assert code == 0 and "note:" not in err


def test_eval_refuses_a_directory_as_out_before_scoring(trained, tmp_path, capsys, monkeypatch):
    """``eval --out DIR`` is refused at once (it failed after the whole evaluation, naming a temporary file)."""
    from invertible.commands import eval as eval_command

    def score(*args):
        raise AssertionError("scored before --out was checked")

    monkeypatch.setattr(eval_command, "selected_rows", score)
    assert_error(capsys, f"--out {tmp_path} is a directory; give the path of the JSON file to write", "eval", trained,
                 "--out", tmp_path)

def test_eval_on_other_data_names_the_run_options_it_drops(tmp_path, capsys):
    run = tmp_path / "cond"
    assert main([*TRAIN, "-d", "conditional=true", "--out", str(run)]) == 0
    capsys.readouterr()
    assert_error(capsys, "(the run was trained with -d conditional=true, which --data does not carry over)",
                 "eval", run, "--data", "engine-gauss-other")
    code, out, _ = run_cli(capsys, "eval", run, "--data", "engine-gauss-other", "-d", "conditional=true")
    assert code == 0 and "test_nll" in json.loads(out)


def test_eval_of_the_runs_own_dataset_named_by_data_reads_it_with_the_runs_options(tmp_path, capsys):
    """``--data`` naming the run's own dataset is scored as without ``--data``: it was read without the run's
    ``-d`` options, so a conditional run's own data came without their contexts and were refused."""
    run = tmp_path / "cond"
    assert main([*TRAIN, "-d", "conditional=true", "--out", str(run)]) == 0
    capsys.readouterr()
    _, plain, _ = run_cli(capsys, "eval", run)
    code, named, err = run_cli(capsys, "eval", run, "--data", "engine-gauss")
    assert code == 0, err
    assert json.loads(named)["test_nll"] == json.loads(plain)["test_nll"]



def test_eval_on_another_dataset_names_no_run_option_that_dataset_does_not_take(tmp_path, capsys):
    """A toy run's -d n_train=... means nothing to digits: the shape refusal of eval --data digits blamed it
    (``the run was trained with -d n_train=200, which --data does not carry over``); only options the other
    dataset takes are named."""
    run = tmp_path / "moons"
    assert main(["train", "--data", "moons", "-d", "n_train=200", "-d", "n_val=50", "-d", "n_test=50", "--model", "maf",
                 "-m", "layers=1", "-m", "hidden=[8]", "--steps", "2", "--batch-size", "32", "--no-progress", "--no-plots",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the model expects events of shape (2,) but dataset 'digits' has (1, 8, 8)"), err
    assert "carry over" not in err and "n_train" not in err, err


@pytest.mark.parametrize("flag, value", [("-m", "hidden=[8"), ("-d", "context_columns=[label")])
def test_an_option_value_yaml_cannot_read_is_a_one_line_error(tmp_path, capsys, flag, value):
    """YAML's complaint spans several lines (the problem, then a picture of the spot)."""
    assert main([*TRAIN, flag, value, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: cannot read the value of option '{value}': expected ',' or ']'"), err


def test_usage_errors_are_one_line(capsys):
    for argv in (["train", "--steps", "x"], ["train", "--no-such-flag"], ["nosuchcommand"], ["eval"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: "), err


def test_corrupt_run_files(trained, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("model.json", "config.yaml", "model.safetensors"):
        (broken / name).write_bytes((trained / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"garbage")
    assert_error(capsys, "corrupt model weights", "sample", broken, "-n", 5, "--out", tmp_path / "s.npy")
    (broken / "model.json").write_text("{")
    assert_error(capsys, "corrupt model config", "eval", broken)
    half = tmp_path / "half"
    half.mkdir()
    assert_error(capsys, "did not finish", "sample", half, "-n", 5, "--out", tmp_path / "s.npy")
    # a corrupt checkpoint cannot be resumed
    run = tmp_path / "r"
    assert main([*TRAIN, "--out", str(run)]) == 0
    capsys.readouterr()
    config = (run / "config.yaml").read_bytes()
    (run / "config.yaml").write_bytes(config[:30])  # cut inside a key: YAML's complaint spans several lines
    assert_error(capsys, "corrupt run config", "eval", run)
    assert_error(capsys, "corrupt run config", "train", "--resume", "--out", run, "--steps", 12, "--no-progress")
    (run / "config.yaml").write_bytes(config.split(b"\nlr:")[0] + b"\nlr:")  # cut after a key: lr reads as null
    for command in (("eval", run), ("train", "--resume", "--out", run, "--steps", 12, "--no-progress")):
        assert_error(capsys, f"corrupt run config {run / 'config.yaml'}: lr must be a finite number, got None", *command)
    (run / "config.yaml").write_bytes(b"\xff" + config)
    assert_error(capsys, f"corrupt run config {run / 'config.yaml'}", "eval", run)
    (tmp_path / "latin.yaml").write_bytes(b"model: \xe9\n")
    assert_error(capsys, "cannot parse config file", *TRAIN, "--config", tmp_path / "latin.yaml", "--out", tmp_path / "l")
    (run / "config.yaml").write_bytes(config)
    (run / "checkpoint" / "checkpoint.json").write_text("[]")
    assert_error(capsys, "corrupt checkpoint record", "train", "--resume", "--out", run, "--steps", 12, "--no-progress")


def test_python_dash_m_runs_the_command_line():
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "invertible", "train", "--model", "nosuch", "--data", "x"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: ") and "Traceback" not in proc.stderr



def test_a_reader_that_went_away_ends_the_command_quietly():
    """``invertible models | head -1``: no error line for the closed pipe, the status of a SIGPIPE death (141)."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with subprocess.Popen([sys.executable, "-m", "invertible", "models"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env) as proc:
        proc.stdout.close()  # before the command has written anything: its first write meets a closed pipe
        err = proc.stderr.read()
        assert proc.wait(timeout=120) == 141 and err == ""


def test_table_files_and_built_in_toys(tmp_path, capsys):
    rng = np.random.default_rng(1)
    table = rng.normal(size=(300, 2)) * [3.0, 0.2] + [10.0, -4.0]
    np.save(tmp_path / "t.npy", table)
    code, out, _ = run_cli(capsys, *TRAIN[:1], "--data", tmp_path / "t.npy", *TRAIN[3:], "--out", tmp_path / "r")
    assert code == 0 and np.isfinite(json.loads(out)["test_nll"])
    # samples in the model's (standardised) space by default, in the file's units with --raw
    run_cli(capsys, "sample", tmp_path / "r", "-n", 2000, "--out", tmp_path / "model.npy")
    assert np.allclose(np.load(tmp_path / "model.npy").mean(0), 0.0, atol=0.5)
    run_cli(capsys, "sample", tmp_path / "r", "-n", 2000, "--out", tmp_path / "raw.csv", "--raw")
    raw = np.loadtxt(tmp_path / "raw.csv", delimiter=",")
    assert raw.shape == (2000, 2) and np.allclose(raw.mean(0), [10.0, -4.0], atol=1.0)
    np.save(tmp_path / "three.npy", rng.normal(size=(100, 3)))
    assert_error(capsys, "wrong feature count", "eval", tmp_path / "r", "--data", tmp_path / "three.npy")
    (tmp_path / "nan.csv").write_text("a,b\n1,2\n3,nan\n5,6\n" + "1,1\n" * 20)
    assert_error(capsys, "non-finite", *TRAIN[:1], "--data", tmp_path / "nan.csv", *TRAIN[3:], "--out", tmp_path / "n")
    code, out, _ = run_cli(capsys, "train", "--data", "checkerboard", "-d", "n_train=512", "-d", "n_val=128",
                           "-d", "n_test=128", "--steps", 3, "--batch-size", 64, "--no-progress", "--no-plots", "--out", tmp_path / "c")
    assert code == 0 and "kl_gap" in json.loads(out)


def test_a_table_of_few_integer_values_trains_with_a_warning_that_its_density_is_degenerate(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "levels.npy", rng.integers(0, 4, size=(300, 2)))
    np.save(tmp_path / "counts.npy", rng.integers(0, 1000, size=(300, 2)))  # integers, but many values per feature
    code, _, err = run_cli(capsys, *TRAIN[:1], "--data", tmp_path / "levels.npy", *TRAIN[3:], "--out", tmp_path / "a")
    assert code == 0
    assert "warning: every feature of dataset 'levels.npy' takes at most 4 distinct values in the training split" in err
    assert "dequantize the values first" in err
    code, _, err = run_cli(capsys, *TRAIN[:1], "--data", tmp_path / "counts.npy", *TRAIN[3:], "--out", tmp_path / "b")
    assert code == 0 and "warning" not in err


def test_sample_contexts_of_a_flow_on_real_valued_contexts(tmp_path, capsys):
    """--label is a one-hot context: refused for a flow trained on real-valued contexts, which take --context
    (one row for every sample, or one row per sample); a bad --context file is named by its own shape."""
    run = tmp_path / "cond"
    code, _, err = run_cli(capsys, *TRAIN, "-d", "conditional=true", "--out", run)
    assert code == 0, err
    assert_error(capsys, "not one-hot class labels: pass --context FILE.npy", "sample", run, "--label", 1,
                 "--out", tmp_path / "s.npy")
    assert not (tmp_path / "s.npy").exists()
    np.save(tmp_path / "c.npy", np.array([0.0, 1.0, 0.0]))
    code, _, err = run_cli(capsys, "sample", run, "-n", 4, "--context", tmp_path / "c.npy", "--out", tmp_path / "s.npy")
    assert code == 0, err
    assert np.load(tmp_path / "s.npy").shape == (4, 2)
    for values, words in [(np.zeros(5), "--context has shape (5,); expected (3,) or (4, 3)"),
                          (np.zeros((1, 3)), "--context has shape (1, 3); expected (3,) or (4, 3)"),
                          (np.array(["a", "b", "c"]), "holds values of dtype <U1; expected real numbers")]:
        np.save(tmp_path / "bad.npy", values)
        assert_error(capsys, words, "sample", run, "-n", 4, "--context", tmp_path / "bad.npy", "--out", tmp_path / "b.npy")
    (tmp_path / "script.py").write_text("print(1)\n")  # was "This file contains pickled (object) data..."
    assert_error(capsys, f"cannot read {tmp_path / 'script.py'} as a .npy array: no .npy header", "sample", run,
                 "-n", 4, "--context", tmp_path / "script.py", "--out", tmp_path / "b.npy")


def test_sample_draws_from_the_models_own_sampler(tmp_path, capsys):
    """A MADE ensemble samples its mixture; the Bernoulli MADE (no base noise) samples and refuses a temperature."""
    quick = ["--steps", "4", "--batch-size", "32", "--no-progress", "--no-plots"]
    run = tmp_path / "made"
    assert main(["train", "--data", "engine-gauss", "--model", "made", "-m", "masks=3", "-m", "hidden=[8]", *quick,
                 "--out", str(run)]) == 0
    code, _, _ = run_cli(capsys, "sample", run, "-n", 64, "--out", tmp_path / "m.npy", "--seed", 3)
    assert code == 0
    made = invertible.load(run)
    torch.manual_seed(3)
    expected = made.sample(64)  # each sample from one mask set of the ensemble
    np.testing.assert_allclose(np.load(tmp_path / "m.npy"), expected.numpy(), rtol=1e-6)

    run = tmp_path / "bernoulli"
    assert main(["train", "--data", "digits_vectors", "-d", "binarize=true", "--model", "bernoulli_made",
                 "-m", "hidden=[8]", *quick, "--out", str(run)]) == 0
    code, _, err = run_cli(capsys, "sample", run, "-n", 5, "--label", 2, "--out", tmp_path / "b.npy")
    assert code == 0, err
    bits = np.load(tmp_path / "b.npy")
    assert bits.shape == (5, 64) and set(np.unique(bits)) <= {0.0, 1.0}
    assert_error(capsys, "a BernoulliMADE has none", "sample", run, "-n", 5, "--label", 2, "--temperature", 0.5,
                 "--out", tmp_path / "c.npy")


@pytest.mark.parametrize("command", [
    ["sample", "RUN", "--out", "s.npy"], ["interpolate", "RUN", "--out", "i.png"], ["eval", "RUN"],
    ["encode", "RUN", "--out", "z.npy"], ["fit-density", "--target", "u1", "--out", "fd"],
    ["vae", "--data", "digits", "--out", "fd"],
])
def test_every_seed_flag_refuses_a_seed_that_torch_would_wrap(tmp_path, capsys, command):
    """``--seed -1`` drew seed 2**64 - 1's numbers in sample and interpolate (and fit-density, vae), which train,
    eval and encode refused; now the flag refuses it before anything runs or is written."""
    argv = [str(tmp_path / a) if a in ("RUN", "s.npy", "i.png", "z.npy", "fd") else a for a in command]
    for seed in ("-1", "18446744073709551616", "1.5"):
        with pytest.raises(SystemExit) as stop:  # a usage error, as argparse reports it
            main([*argv, "--seed", seed])
        assert stop.value.code == 2
        assert capsys.readouterr().err.startswith(
            f"error: argument --seed: must be an integer in [0, 2**64 - 1], got '{seed}'")
    assert list(tmp_path.iterdir()) == []
