"""Bad input to the variational API and commands: clear errors at the public boundary, never a silent number."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from invertible.cli import main as cli
from invertible.variational import approximation, fit, get_target
from invertible.variational.data import load_images
from invertible.variational.vae import VAE, evaluate_vae, train_vae

ROOT = Path(__file__).resolve().parents[1]
BINARY = (torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.5).float()


@pytest.mark.parametrize("options, message", [
    ({"latent": 0}, "latent must be a positive integer, got 0"),
    ({"latent": -1}, "latent must be a positive integer, got -1"),
    ({"context": 0, "posterior": "planar", "layers": 1}, "context must be a positive integer, got 0"),
    ({"likelihood": "logistic", "levels": 1}, "the logistic likelihood needs levels >= 2 grey levels, got 1"),
])
def test_vae_refuses_bad_sizes(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        VAE((1, 4, 4), hidden=8, **options)


@pytest.mark.parametrize("seed", [True, 2.5, -1, 2**64])
def test_load_images_refuses_the_seeds_that_load_refuses(seed) -> None:
    """docs/data.md's seed rule: ``True`` was seed 1, ``2**64`` was taken, ``-1`` failed as numpy's "expected
    non-negative integer" and ``2.5`` as a ``TypeError``."""
    words = rf"^seed must be an integer in \[0, 2\*\*64 - 1\], got {re.escape(repr(seed))}$"
    with pytest.raises(ValueError, match=words):
        load_images("digits", seed=seed)
    assert torch.equal(load_images("digits", seed=np.uint64(2**64 - 1)).test, load_images("digits", seed=2**64 - 1).test)


@pytest.mark.parametrize("x, message", [
    (torch.rand(12, 1, 4, 4), r"x has \d+ value\(s\) other than 0 and 1: the bernoulli decoder needs binary images"),
    (2 * BINARY, r"x has \d+ value\(s\) other than 0 and 1"),
    (torch.full((3, 1, 4, 4), float("nan")), r"x contains 48 non-finite value\(s\)"),
    (BINARY.reshape(12, 16), r"x has shape \(12, 16\); expected \(n, 1, 4, 4\)"),
    (BINARY[:0], "x holds no images"),
])
def test_evaluate_vae_refuses_images_its_decoder_cannot_score(x, message) -> None:
    """Grey levels under a Bernoulli decoder used to give a finite "log-likelihood" of no distribution, and NaN
    pixels a report that the model had diverged."""
    model = VAE((1, 4, 4), latent=2, hidden=8)
    with pytest.raises(ValueError, match=message):
        evaluate_vae(model, x, k=2)


def test_train_vae_refuses_grey_levels_for_a_bernoulli_decoder() -> None:
    model = VAE((1, 4, 4), latent=2, hidden=8)
    with pytest.raises(ValueError, match=r"train has \d+ value\(s\) other than 0 and 1"):
        train_vae(model, torch.rand(12, 1, 4, 4), steps=1, batch_size=4)


@pytest.mark.parametrize("likelihood", ["gaussian", "logistic"])
def test_grey_level_likelihoods_take_values_in_the_unit_interval(likelihood) -> None:
    model = VAE((1, 4, 4), latent=2, hidden=8, likelihood=likelihood, levels=17)
    grey = torch.randint(0, 17, (12, 1, 4, 4)) / 16.0
    assert evaluate_vae(model, grey, k=2)["iw_samples"] == 2  # grey levels are fine here
    with pytest.raises(ValueError, match=rf"values outside \[0, 1\] .*the {likelihood} likelihood"):
        evaluate_vae(model, 255 * grey, k=2)


@pytest.mark.parametrize("option, value", [("k", 1.5), ("chunk", 0)])
def test_evaluate_vae_refuses_bad_counts(option, value) -> None:
    model = VAE((1, 4, 4), latent=2, hidden=8)
    with pytest.raises(ValueError, match=f"{option} must be a positive integer, got {value}"):
        evaluate_vae(model, BINARY, **{"k": 2, option: value})


def test_a_target_refuses_points_that_are_not_on_the_plane() -> None:
    """A 3-D flow fitted to a 2-D energy used to get an ELBO and a "KL" (U1 read the norm of all three coordinates)."""
    q = approximation("planar", 2, features=3)
    with pytest.raises(ValueError, match=r"the target 'u1' is a density on the plane: .*got \(8, 3\)"):
        fit(q, get_target("u1"), steps=1, batch_size=8, eval_samples=10)
    with pytest.raises(ValueError, match=r"got \(5,\)"):
        get_target("u2")(torch.zeros(5))


def test_get_target_needs_a_name() -> None:
    with pytest.raises(TypeError, match="the target name must be a string"):
        get_target(None)


@pytest.mark.parametrize("clip", [0.0, -1.0])
def test_fit_refuses_a_clip_norm_that_is_not_positive(clip) -> None:
    """``clip_grad_norm_`` with a negative norm flips the gradient (ascent on the ELBO's negative), and 0 zeroes it."""
    with pytest.raises(ValueError, match=f"clip_grad must be positive .*got {clip}"):
        fit(approximation("planar", 2), get_target("u1"), steps=1, clip_grad=clip)


@pytest.mark.parametrize("command", [
    ["fit-density", "--target", "u2", "--layers", "2", "--steps", "30", "--eval-samples", "100"],
    ["vae", "--data", "digits", "--latent", "3", "--hidden", "16", "--steps", "3", "--iw-samples", "2", "--test-size", "10"],
])
def test_a_diverged_run_leaves_out_free_for_the_rerun_it_suggests(tmp_path, capsys, command) -> None:
    """The error says to lower the learning rate; the partial log it wrote used to make the same --out refused.
    The directories the run created are removed (an empty one stayed behind); one that was there stays."""
    out = tmp_path / "new" / "run"
    assert cli([*command, "--lr", "1e6", "--out", str(out)]) == 2
    assert "lower the learning rate" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    out.mkdir(parents=True)
    assert cli([*command, "--lr", "1e6", "--out", str(out)]) == 2
    assert out.is_dir() and list(out.iterdir()) == []
    assert cli([*command, "--lr", "1e-3", "--out", str(out)]) == 0
    assert (out / "summary.json").is_file() and (out / "metrics.jsonl").read_text()


def test_an_interrupted_run_leaves_no_partial_results(tmp_path, monkeypatch, capsys) -> None:
    import invertible.variational.vae as vae

    def interrupted(model, x, k=500, chunk=20):
        raise KeyboardInterrupt

    monkeypatch.setattr(vae, "evaluate_vae", interrupted)
    out = tmp_path / "run"
    argv = ["vae", "--data", "digits", "--latent", "3", "--hidden", "16", "--steps", "2", "--out", str(out)]
    assert cli(argv) == 130
    assert not out.exists()


@pytest.mark.parametrize("command", [
    ["fit-density", "--target", "u1", "--layers", "2", "--steps", "1000000"],
    ["vae", "--data", "digits", "--latent", "3", "--hidden", "16", "--steps", "1000000", "--test-size", "10"],
])
def test_sigterm_leaves_out_free_for_the_same_command(tmp_path, command) -> None:
    """``kill`` used to end the process at once, leaving the partial ``metrics.jsonl`` that made the same
    command refuse the same ``--out``; now the results are removed and the exit status is SIGTERM's, 143."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "invertible", *command, "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1] == f"stopped by SIGTERM; what it had written to {out} was removed"
    assert not out.exists()


def test_reinforce_with_one_sample_a_step_is_refused_before_out_is_created(tmp_path, capsys) -> None:
    argv = ["fit-density", "--target", "u1", "--estimator", "reinforce", "--batch-size", "1", "--steps", "2"]
    assert cli([*argv, "--out", str(tmp_path / "run")]) == 2
    message = "error: --estimator reinforce needs --batch-size >= 2 (its leave-one-out baseline), got 1"
    assert capsys.readouterr().err.strip() == message
    assert not (tmp_path / "run").exists()


def test_the_split_of_a_seed_is_the_same_with_and_without_binarizing() -> None:
    """The binarizing noise was drawn before the split only when binarizing, so a bernoulli run and a logistic run
    of one seed had other test images (72 of 359 shared on digits at seed 0). A binary pixel is 1 with the
    probability of its grey level, so the same images have every black pixel off and every white pixel on."""
    grey, binary = load_images("digits", binarize=False, seed=3), load_images("digits", binarize=True, seed=3)
    assert grey.test.shape == binary.test.shape and set(binary.test.unique().tolist()) == {0.0, 1.0}
    assert not bool(binary.test[grey.test == 0].any()) and bool(binary.test[grey.test == 1].all())
