"""The commands on a float64 flow (``flow.double()`` saved into a run): data and contexts take the flow's dtype."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import invertible
from invertible.cli import main

QUICK = ["--steps", "4", "--batch-size", "32", "--eval-every", "4", "--no-progress", "--no-plots"]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def as_float64(run: Path) -> Path:
    """The run with its flow saved over itself in float64 (``flow.double().save(run)``)."""
    invertible.load(run).double().save(run)
    return run


@pytest.fixture(scope="module")
def conditional_table(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("f64") / "cond"
    assert main(["train", "--data", "engine-gauss", "-d", "conditional=true", "-m", "layers=2", "-m", "hidden=[8]",
                 *QUICK, "--out", str(run)]) == 0
    return as_float64(run)


@pytest.fixture(scope="module")
def class_images(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("f64") / "glow"
    assert main(["train", "--model", "glow", "--data", "digits", "-d", "conditional=true", "-m", "levels=1",
                 "-m", "steps=1", "-m", "hidden=4", *QUICK, "--out", str(run)]) == 0
    return as_float64(run)


@pytest.mark.parametrize("run_fixture, figure", [("conditional_table", "test_nll"), ("class_images", "test_bpd")])
def test_eval_scores_a_float64_flow_as_it_scored_in_float32(run_fixture, figure, request, capsys):
    run = request.getfixturevalue(run_fixture)
    capsys.readouterr()  # a module fixture built here prints its training summary
    code, out, err = run_cli(capsys, "eval", run)
    assert code == 0, err
    summary = json.loads((run / "summary.json").read_text())
    assert json.loads(out)[figure] == pytest.approx(summary[figure], rel=1e-5)


def test_sample_feeds_a_float64_flow_its_context_in_float64(conditional_table, tmp_path, capsys):
    run = conditional_table
    np.save(tmp_path / "c.npy", np.array([0.0, 1.0, 0.0], dtype=np.float32))
    code, _, err = run_cli(capsys, "sample", run, "-n", 4, "--context", tmp_path / "c.npy", "--seed", 2,
                           "--out", tmp_path / "s.npy")
    assert code == 0, err
    samples = np.load(tmp_path / "s.npy")
    assert samples.dtype == np.float64 and samples.shape == (4, 2)
    flow = invertible.load(run)
    torch.manual_seed(2)
    expected = flow.sample(1, torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64).expand(4, 3))[0]
    np.testing.assert_array_equal(samples, expected.numpy())


def test_sample_labels_a_float64_class_conditional_flow(class_images, tmp_path, capsys):
    run = class_images
    code, _, err = run_cli(capsys, "sample", run, "-n", 3, "--label", 2, "--raw", "--out", tmp_path / "s.npy")
    assert code == 0, err
    pixels = np.load(tmp_path / "s.npy")
    assert pixels.shape == (3, 1, 8, 8) and np.isfinite(pixels).all()
    code, _, err = run_cli(capsys, "sample", run, "-n", 3, "--label", 2, "--out", tmp_path / "s.png")
    assert code == 0 and (tmp_path / "s.png").is_file(), err


def test_interpolate_encodes_test_images_for_a_float64_flow(tmp_path, capsys):
    """NICE's first layer is a coupling, whose network refuses float32 images under float64 weights."""
    run = tmp_path / "nice"
    assert main(["train", "--model", "nice", "--data", "digits", "-m", "layers=2", "-m", "hidden=[8]", *QUICK,
                 "--out", str(run)]) == 0
    as_float64(run)
    code, _, err = run_cli(capsys, "interpolate", run, "--pairs", 2, "--steps", 3, "--out", tmp_path / "i.png")
    assert code == 0 and (tmp_path / "i.png").is_file(), err


@pytest.fixture(scope="module")
def float32_table(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("f32") / "table"
    assert main(["train", "--data", "engine-gauss", "-m", "layers=2", "-m", "hidden=[8]", *QUICK,
                 "--out", str(run)]) == 0
    return run


def test_float64_samples_and_decodes_beyond_the_float32_range(float32_table, tmp_path, capsys):
    """The overflow errors and warnings say "sample in float64", which the commands had no way to do."""
    run = float32_table
    capsys.readouterr()
    code, _, err = run_cli(capsys, "sample", run, "-n", 4, "--temperature", 1e39, "--out", tmp_path / "s.npy")
    assert code == 2 and "beyond the torch.float32 range" in err and not (tmp_path / "s.npy").exists()
    code, _, err = run_cli(capsys, "sample", run, "-n", 4, "--temperature", 1e39, "--float64", "--seed", 3,
                           "--out", tmp_path / "s.npy")
    assert code == 0, err
    samples = np.load(tmp_path / "s.npy")
    flow = invertible.load(run).double()
    torch.manual_seed(3)
    expected = flow.sample(4, temperature=1e39)
    assert samples.dtype == np.float64 and np.isfinite(samples).all() and np.abs(samples).max() > 1e38
    np.testing.assert_array_equal(samples, expected.numpy())

    np.save(tmp_path / "z.npy", np.full((2, 2), 1e300))
    code, _, err = run_cli(capsys, "decode", run, "--latents", tmp_path / "z.npy", "--out", tmp_path / "d.npy")
    assert code == 2 and err.strip() == (f"error: --latents {tmp_path / 'z.npy'} holds values beyond the "
                                         "torch.float32 range (+-3.4e+38): pass --float64")
    code, _, err = run_cli(capsys, "decode", run, "--latents", tmp_path / "z.npy", "--float64",
                           "--out", tmp_path / "d.npy")
    assert code == 0, err
    expected = invertible.load(run).double().decode(torch.full((2, 2), 1e300, dtype=torch.float64))
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), expected.detach().numpy())


def test_float64_samples_and_decodes_of_a_learned_dequantizer_run(tmp_path, capsys):
    """``--float64`` cast the model and not the run's learned dequantizer: ``--raw`` and ``.png`` outputs of a
    ``dequantization=variational`` run failed with "Input type (double) and bias type (float) should be the same"."""
    run = tmp_path / "vd"
    assert main(["train", "--model", "glow", "--data", "engine-pixels", "-d", "dequantization=variational",
                 "-m", "levels=1", "-m", "steps=1", "-m", "hidden=4", *QUICK, "--out", str(run)]) == 0
    capsys.readouterr()
    code, _, err = run_cli(capsys, "sample", run, "-n", 4, "--float64", "--raw", "--out", tmp_path / "s.npy")
    assert code == 0, err
    pixels = np.load(tmp_path / "s.npy")
    assert pixels.dtype == np.float64 and np.array_equal(pixels, np.round(pixels)) and pixels.min() >= 0
    code, _, err = run_cli(capsys, "sample", run, "-n", 4, "--float64", "--out", tmp_path / "s.png")
    assert code == 0 and (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG", err
    assert run_cli(capsys, "encode", run, "--out", tmp_path / "z.npy")[0] == 0
    code, _, err = run_cli(capsys, "decode", run, "--latents", tmp_path / "z.npy", "--float64", "--raw",
                           "--out", tmp_path / "x.npy")
    assert code == 0, err
    code, _, err = run_cli(capsys, "decode", run, "--latents", tmp_path / "z.npy", "--raw", "--out", tmp_path / "x32.npy")
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), np.load(tmp_path / "x32.npy"))
