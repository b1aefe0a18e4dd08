"""SIGTERM and SIGINT stop ``train`` after the current step, with a checkpoint of that step that resumes exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import invertible
from invertible.cli import main
from invertible.train import TrainConfig, train
from invertible.train import loop
from invertible.train.checkpoint import has_checkpoint, load_checkpoint
from invertible.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
#: far beyond the steps a run reaches before the signal: no periodic checkpoint can hold the interrupted step
CHECKPOINT_EVERY = 1_000_000
#: a tiny RealNVP on a small toy set, a metrics line every step, validation only at the end
FLAGS = ["--model", "realnvp", "-m", "layers=2", "-m", "hidden=[8]", "--data", "moons", "-d", "n_train=2000",
         "-d", "n_val=200", "-d", "n_test=200", "--batch-size", "32", "--schedule", "constant", "--log-every", "1",
         "--eval-every", str(CHECKPOINT_EVERY), "--checkpoint-every", str(CHECKPOINT_EVERY), "--no-progress",
         "--no-plots"]
TIMEOUT_S = 120


def _default_signals() -> None:
    """In the child: the signals' default dispositions (a shell's background job inherits SIGINT ignored)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def _interrupted_run(run: Path, signum: int, progress: int = 5) -> tuple[int, str, int]:
    """Start ``invertible train`` for a million steps, send ``signum`` once ``metrics.jsonl`` reaches step
    ``progress``; returns the exit status, the standard error and the last step the metrics showed before."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "invertible", "train", *FLAGS, "--steps", "1000000", "--out", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_default_signals)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        seen = 0
        while seen < progress:
            if proc.poll() is not None:
                pytest.fail(f"the run ended before the signal (status {proc.returncode}): {proc.stderr.read()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no training progress in {TIMEOUT_S} s")
            seen = max((r["step"] for r in read_metrics(run / "metrics.jsonl")), default=0)
            time.sleep(0.02)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=TIMEOUT_S)
        return proc.returncode, err, seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_run_after_its_step_and_the_resume_ends_as_an_uninterrupted_run(tmp_path, capsys, signum, status):
    run = tmp_path / "run"
    code, err, seen = _interrupted_run(run, signum)
    assert code == status, err[-3000:]
    step = load_checkpoint(run).step
    assert seen <= step < CHECKPOINT_EVERY  # the step it stopped at, which no periodic checkpoint could hold
    name = signal.Signals(signum).name
    assert err.strip().splitlines()[-1] == (f"stopped by {name} at step {step}, which the checkpoint in {run} holds; "
                                            "continue the run with --resume")
    assert max(r["step"] for r in read_metrics(run / "metrics.jsonl")) == step  # every step logged, none lost
    assert not (run / "summary.json").exists()

    steps = ["--steps", str(step + 3)]  # a constant schedule: the number of steps changes nothing before the end
    assert main(["train", *FLAGS, *steps, "--resume", "--out", str(run)]) == 0
    assert main(["train", *FLAGS, *steps, "--out", str(tmp_path / "whole")]) == 0
    capsys.readouterr()
    a, b = load_checkpoint(tmp_path / "whole"), load_checkpoint(run)
    assert a.step == b.step == step + 3
    for i, entries in a.optimizer["state"].items():
        for k, v in entries.items():
            assert torch.equal(v, b.optimizer["state"][i][k]) if isinstance(v, torch.Tensor) else v == b.optimizer["state"][i][k]
    whole, resumed = invertible.load(tmp_path / "whole").state_dict(), invertible.load(run).state_dict()
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert read_metrics(tmp_path / "whole" / "metrics.jsonl") == read_metrics(run / "metrics.jsonl")


def _config(tmp_path: Path, checkpoint_every: int = 0) -> TrainConfig:
    return TrainConfig(model="realnvp", model_options={"layers": 2, "hidden": [8]}, data="moons",
                       data_options={"n_train": 500, "n_val": 100, "n_test": 100}, steps=50, batch_size=32,
                       eval_every=1000, checkpoint_every=checkpoint_every, out=str(tmp_path / "run"),
                       progress=False, plots=False)


def _handlers() -> tuple:
    return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raises ``KeyboardInterrupt``, as in a Python program, for the duration of the test."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_second_signal_while_the_checkpoint_is_written_waits_for_it(tmp_path, monkeypatch, ctrl_c_raises):
    from invertible.train import TrainingInterrupted

    write = loop.save_checkpoint

    def interrupted_write(run_dir, ckpt):
        signal.raise_signal(signal.SIGINT)
        return write(run_dir, ckpt)

    def first(step: int, metrics: dict) -> None:
        if step == 4:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(loop, "save_checkpoint", interrupted_write)
    before = _handlers()
    with pytest.raises(TrainingInterrupted) as info:
        train(_config(tmp_path), callbacks=[first])
    assert info.value.step == 4 and info.value.signum == signal.SIGINT and info.value.exit_status == 130
    assert load_checkpoint(tmp_path / "run").step == 4
    assert _handlers() == before  # a library caller keeps its handlers


def test_a_second_signal_during_the_step_stops_at_once_from_the_last_checkpoint(tmp_path, ctrl_c_raises):
    from invertible.train import TrainingInterrupted

    def twice(step: int, metrics: dict) -> None:
        if step == 4:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # Ctrl-C again: do not wait for the end of a long step

    before = _handlers()
    with pytest.raises(KeyboardInterrupt) as info:
        train(_config(tmp_path, checkpoint_every=3), callbacks=[twice])
    assert not isinstance(info.value, TrainingInterrupted)
    assert load_checkpoint(tmp_path / "run").step == 3
    assert _handlers() == before


def test_a_run_in_another_thread_leaves_the_signal_handlers_alone(tmp_path):
    """Python sets signal handlers only in the main thread: a run in another one installs none and trains."""
    before, errors = _handlers(), []

    def run() -> None:
        try:
            train(_config(tmp_path))
        except BaseException as e:  # noqa: BLE001 (reported by the assertion below)
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=TIMEOUT_S)
    assert not thread.is_alive() and errors == []
    assert load_checkpoint(tmp_path / "run").step == 50 and has_checkpoint(tmp_path / "run")
    assert _handlers() == before


def test_a_second_sigterm_during_the_step_ends_the_process_as_sigterm_does(tmp_path):
    """The displaced handler of SIGTERM is the default one: the second signal kills the process, the checkpoint
    left is the last periodic one."""
    script = f"""
import signal
from invertible.train import TrainConfig, train

def twice(step, metrics):
    if step == 4:
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)

train(TrainConfig(model="realnvp", model_options={{"layers": 2, "hidden": [8]}}, data="moons",
                  data_options={{"n_train": 500, "n_val": 100, "n_test": 100}}, steps=50, batch_size=32,
                  eval_every=1000, checkpoint_every=3, out={str(tmp_path / "run")!r}, progress=False, plots=False),
      callbacks=[twice])
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=TIMEOUT_S,
                          preexec_fn=_default_signals)
    assert proc.returncode == -signal.SIGTERM, proc.stderr[-3000:]
    assert load_checkpoint(tmp_path / "run").step == 3


def test_ctrl_c_before_the_first_checkpoint_does_not_promise_a_resume(tmp_path, monkeypatch, capsys):
    """Ctrl-C while the data load (outside the steps) exits 130 as before; with no checkpoint yet the hint is to
    start again (``--resume`` would find nothing), with one it is to resume."""
    real_load = loop.load_bundle

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "load_bundle", ctrl_c)
    run = ["train", *FLAGS, "--steps", "4", "--out", str(tmp_path / "run")]
    assert main(run) == 130
    assert capsys.readouterr().err == "interrupted; no checkpoint was written: start the run again\n"
    monkeypatch.setattr(loop, "load_bundle", real_load)
    assert main(run) == 0
    monkeypatch.setattr(loop, "load_bundle", ctrl_c)
    capsys.readouterr()
    assert main([*run, "--resume"]) == 130
    assert capsys.readouterr().err == "interrupted; continue the run with --resume\n"
