"""Data-parallel training: ``torchrun --nproc_per_node 2 -m invertible train ...`` on the CPU (gloo)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import invertible
from invertible.cli import main
from invertible.train import TrainConfig, train
from invertible.train.checkpoint import has_checkpoint, load_checkpoint
from invertible.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    table = tmp_path / "table.npy"
    rng = np.random.default_rng(0)
    np.save(table, rng.normal(size=(400, 3)) @ np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 2.0]]) + 5)
    run = tmp_path / "run"
    settings = dict(data=str(table), model_options={"layers": 2, "hidden": [8], "actnorm": True}, steps=12,
                    batch_size=32, lr=5e-3, eval_every=6, log_every=3, checkpoint_every=6, device="cpu", threads=1)
    flags = ["--data", str(table), "-m", "layers=2", "-m", "hidden=[8]", "-m", "actnorm=true", "--steps", "12",
             "--batch-size", "32", "--lr", "5e-3", "--eval-every", "6", "--log-every", "3", "--checkpoint-every", "6",
             "--device", "cpu", "--threads", "1", "--no-progress", "--out", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "invertible", "train", *flags],
        capture_output=True, text=True, env=env, timeout=240, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 12
    digests = summary["param_sha256_by_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]  # the replicas stayed identical
    assert proc.stdout.count('"test_nll"') == 1  # only rank 0 reports
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [3, 6, 9, 12]  # written once, by rank 0
    assert sorted(p.name for p in (run / "checkpoint").iterdir()) == ["checkpoint.json", "state-00000012.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "table.npy"]

    # Two shards of 16 average to the gradient of the whole batch of 32: one process gives the same run, up to
    # float summation order (Adam's first steps amplify it to ~1e-4 of the NLL; a shard's gradient alone is ~5 %)
    single = train(TrainConfig(**settings, progress=False, plots=False, out=str(tmp_path / "single")))
    assert summary["test_nll"] == pytest.approx(single["test_nll"], rel=1e-3)
    alone = [json.loads(line) for line in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    train_loss = lambda lines: [r["loss"] for r in lines if r["split"] == "train"]
    assert train_loss(records) == pytest.approx(train_loss(alone), rel=1e-3)  # the whole batch's loss, not rank 0's shard


_RELEASE_WORKER = """
import gc, json, os, sys
from torch.nn.parallel import DistributedDataParallel
from invertible.train import TrainConfig, loop

table, out, ports = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
real_teardown, alive = loop.teardown, []

def teardown(runtime):  # how many DDP wrappers are still reachable when the process group goes
    gc.collect()
    alive.append(sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects()))
    real_teardown(runtime)

def stop(step, metrics):
    if step == 3:
        raise KeyboardInterrupt

loop.teardown = teardown
settings = dict(data=table, model_options={"layers": 2, "hidden": [8]}, steps=4, batch_size=32, eval_every=2,
                log_every=2, checkpoint_every=2, device="cpu", threads=1, progress=False, plots=False)
loop.train(TrainConfig(**settings, out=os.path.join(out, "finished")))
os.environ["MASTER_PORT"] = ports[1]
try:
    loop.train(TrainConfig(**settings, out=os.path.join(out, "stopped")), callbacks=[stop])
except KeyboardInterrupt:
    pass
print(json.dumps(alive))
"""


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports free now (held open together while they are picked, so none is given twice)."""
    import socket

    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def _run_pair(tmp_path: Path, worker: str, ports: list[int]) -> list[tuple[int, str, str]]:
    """``worker.py table.npy out<rank> PORTS`` as ranks 0 and 1 of a gloo group on ``ports[0]``: (code, out, err)."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "table.npy", rng.normal(size=(200, 3)))
    (tmp_path / "worker.py").write_text(worker)
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(ports[0]),
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
        procs.append(subprocess.Popen([sys.executable, "worker.py", "table.npy", f"out{rank}", ",".join(map(str, ports))],
                                      cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            proc.kill()
    return results


_COMPILE_REFUSED_WORKER = """
import gc, json, sys
import torch
from torch.nn.parallel import DistributedDataParallel
from invertible.train import TrainConfig, TrainingError, loop

real_teardown, alive = loop.teardown, []

def teardown(runtime):
    gc.collect()
    alive.append(sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects()))
    real_teardown(runtime)

def refuse(*args, **kwargs):  # what torch.compile does on a Python it does not support
    raise RuntimeError("torch.compile is not supported on Python 3.15+")

loop.teardown, torch.compile = teardown, refuse
try:
    loop.train(TrainConfig(data=sys.argv[1], model_options={"layers": 2, "hidden": [8]}, steps=2, batch_size=32,
                           device="cpu", threads=1, compile=True, progress=False, plots=False, out=sys.argv[2]))
except TrainingError as e:
    print(json.dumps([alive, str(e)]))
"""


@pytest.mark.slow
def test_replica_released_when_compile_is_refused(tmp_path):
    """A ``torch.compile`` that refuses this Python stops the run while the trainer is being built; the
    error's traceback kept that trainer, and with it the DDP wrapper, alive past the process group."""
    for rank, (code, out, err) in enumerate(_run_pair(tmp_path, _COMPILE_REFUSED_WORKER, _free_ports(1))):
        assert code == 0, f"rank {rank}: {err[-3000:]}"
        alive, message = json.loads(out)
        assert message.startswith("torch.compile is not available here")
        assert alive == [0], f"rank {rank}: a DDP wrapper alive at teardown"


@pytest.mark.slow
def test_replica_released_before_the_process_group(tmp_path):
    """Each process drops its DDP wrapper before the gloo group is destroyed, after a finished and a stopped run.

    A wrapper left alive holds the group's last reference from C++; its destructor then joined the group's
    worker threads holding the GIL, and a worker still releasing a collective's tensors waited for the GIL:
    ``torchrun ... train`` hung at exit in about one run in eight.
    """
    results = _run_pair(tmp_path, _RELEASE_WORKER, _free_ports(2))
    for rank, (code, out, err) in enumerate(results):
        assert code == 0, f"rank {rank}: {err[-3000:]}"
        assert json.loads(out) == [0, 0], f"rank {rank}: DDP wrappers alive at teardown (finished run, stopped run)"


_OTHER_DATA_WORKER = """
import os, sys
import numpy as np
from invertible.train import TrainConfig, TrainingError, loop

rank = os.environ["RANK"]
os.makedirs(f"node{rank}")
os.chdir(f"node{rank}")  # each rank in its own directory, as on its own node
np.save("table.npy", np.random.default_rng(int(rank)).normal(size=(200, 3)))  # a stale copy: other values
try:
    loop.train(TrainConfig(data="table.npy", model_options={"layers": 2, "hidden": [8]}, steps=2, batch_size=32,
                           device="cpu", threads=1, progress=False, plots=False, out=os.path.join("..", sys.argv[2])))
except TrainingError as e:
    print(e)
"""


@pytest.mark.slow
def test_ranks_that_read_different_data_are_stopped(tmp_path):
    """Every rank reads the data itself: ranks whose files differed trained together without a word."""
    for code, out, err in _run_pair(tmp_path, _OTHER_DATA_WORKER, _free_ports(1)):
        assert code == 0 and "the processes read different data as table.npy (its digest differs between ranks)" in out, err


_FULL_DISK_WORKER = """
import errno, sys
from invertible.train import TrainConfig, TrainingError, loop, metrics

write = metrics.MetricsLog.write

def full(self, record):  # rank 0 alone writes: its disk fills up at step 4
    if record["step"] >= 4:
        raise OSError(errno.ENOSPC, "No space left on device")
    write(self, record)

metrics.MetricsLog.write = full
try:
    loop.train(TrainConfig(data=sys.argv[1], model_options={"layers": 2, "hidden": [8]}, steps=8, batch_size=32,
                           log_every=2, eval_every=4, device="cpu", threads=1, progress=False, plots=False,
                           out=sys.argv[2]))
except (OSError, TrainingError) as e:
    print(type(e).__name__, e)
"""


@pytest.mark.slow
def test_a_metrics_line_rank_0_cannot_write_stops_every_rank_in_one_line(tmp_path):
    """A full disk at a later line of metrics.jsonl: rank 1 went on to the next collective and died of the lost
    peer with a gloo traceback."""
    (rank0, out0, err0), (rank1, out1, err1) = _run_pair(tmp_path, _FULL_DISK_WORKER, _free_ports(1))
    assert rank0 == rank1 == 0, err0 + err1
    assert out0.strip() == "OSError [Errno 28] No space left on device", out0 + err0
    assert out1.strip().startswith("TrainingError rank 0 could not write out1/metrics.jsonl"), out1 + err1


_SIGNAL_WORKER = """
import json, os, signal, sys
from invertible.train import TrainConfig, TrainingInterrupted, loop
from invertible.train.checkpoint import load_checkpoint

table, out, ports = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
rank = int(os.environ["RANK"])

def sigterm_on_rank_1_after(at):  # callbacks run after the step's all-reduce: the next step's carries the signal
    def callback(step, metrics):
        if rank == 1 and step == at:
            signal.raise_signal(signal.SIGTERM)
    return callback

settings = dict(data=table, model_options={"layers": 2, "hidden": [8]}, steps=6, batch_size=32, eval_every=100,
                log_every=1, checkpoint_every=0, device="cpu", threads=1, progress=False, plots=False)
results = []
for port, at in zip(ports, (3, 6)):
    os.environ["MASTER_PORT"] = port
    run = os.path.join(out, f"at{at}")
    try:
        loop.train(TrainConfig(**settings, out=run), callbacks=[sigterm_on_rank_1_after(at)])
        results.append(None)
    except TrainingInterrupted as e:
        results.append([e.step, e.signum, load_checkpoint(run).step if rank == 0 else None])
print(json.dumps(results))
"""


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_every_rank_after_the_next_step(tmp_path):
    """SIGTERM on rank 1 after step 3 reaches rank 0 in the all-reduce of step 4's loss: both stop after step 4,
    rank 0 checkpoints it. One after the last step's all-reduce is counted once more after the final checkpoint:
    both raise at step 6, and neither goes on to the test evaluation alone."""
    for rank, (code, out, err) in enumerate(_run_pair(tmp_path, _SIGNAL_WORKER, _free_ports(2))):
        assert code == 0, f"rank {rank}: {err[-3000:]}"
        checkpoint = (lambda step: step) if rank == 0 else (lambda step: None)
        assert json.loads(out) == [[4, signal.SIGTERM, checkpoint(4)], [6, signal.SIGTERM, checkpoint(6)]], f"rank {rank}"


def _torchrun(flags: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 -m invertible train FLAGS`` on the CPU."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "invertible", "train", "--device", "cpu", "--threads", "1", "--no-progress", *flags],
        capture_output=True, text=True, env=env, timeout=120, cwd=cwd,
    )


@pytest.mark.slow
def test_batch_norm_pools_the_global_batch(tmp_path):
    """MAF's batch norm normalises each shard by the statistics of the whole global batch: the replicas' running
    averages stay equal, and two processes train as one process on the same batches does. Rank 0 alone draws
    the density picture, with the running averages (pooling there would wait for the other rank for ever)."""
    rng = np.random.default_rng(1)
    np.save(tmp_path / "table.npy", rng.normal(size=(400, 2)) * [1.0, 3.0] + [0.0, 2.0])
    settings = dict(data=str(tmp_path / "table.npy"), model="maf",
                    model_options={"layers": 3, "hidden": [8], "batch_norm": True}, steps=12, batch_size=32,
                    eval_every=6, log_every=3, device="cpu", threads=1)
    proc = _torchrun(["--data", "table.npy", "--model", "maf", "-m", "layers=3", "-m", "hidden=[8]",
                      "-m", "batch_norm=true", "--steps", "12", "--batch-size", "32", "--eval-every", "6",
                      "--log-every", "3", "--out", "run"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    digests = summary["param_sha256_by_rank"]
    assert digests[0] == digests[1]  # the running mean and variance included
    assert (tmp_path / "run" / "density.png").is_file()
    assert "warning" not in proc.stderr
    single = train(TrainConfig(**settings, progress=False, plots=False, out=str(tmp_path / "single")))
    train_loss = lambda run: [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                              if r["split"] == "train"]
    # shard statistics instead of the batch's make the loss differ by ~1 %
    assert train_loss(tmp_path / "run") == pytest.approx(train_loss(tmp_path / "single"), rel=1e-5)
    assert summary["test_nll"] == pytest.approx(single["test_nll"], rel=1e-3)


@pytest.mark.slow
def test_a_run_directory_rank_0_cannot_write_stops_every_rank_in_one_line(tmp_path):
    """Only rank 0 writes: ``--out`` naming a file used to fail there alone, and rank 1 died in its next collective
    with a gloo traceback ("Connection closed by peer"); now it stops with a one-line error pointing to rank 0's."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "table.npy", rng.normal(size=(200, 2)))
    (tmp_path / "taken").write_text("not a directory")
    proc = _torchrun(["--data", "table.npy", "-m", "layers=2", "-m", "hidden=[8]", "--steps", "4", "--batch-size", "32",
                      "--no-plots", "--out", "taken"], tmp_path)
    assert proc.returncode != 0
    assert "error: cannot make the directory taken: a file of that name exists" in proc.stderr  # rank 0
    assert "error: rank 0 could not write the run directory taken (its error says why)" in proc.stderr  # rank 1
    # the metrics file too (a full disk): rank 1 died in its next collective
    (tmp_path / "run" / "metrics.jsonl").mkdir(parents=True)
    proc = _torchrun(["--data", "table.npy", "-m", "layers=2", "-m", "hidden=[8]", "--steps", "4", "--batch-size", "32",
                      "--no-plots", "--out", "run"], tmp_path)
    assert proc.returncode != 0 and "[rank1]" not in proc.stderr, proc.stderr[-3000:]  # no worker's traceback
    assert "error: cannot write run/metrics.jsonl: it is a directory" in proc.stderr  # rank 0
    assert "error: rank 0 could not write run/metrics.jsonl (its error says why)" in proc.stderr  # rank 1
    assert "[rank1]: Traceback" not in proc.stderr and "Connection closed" not in proc.stderr
    assert (tmp_path / "taken").read_text() == "not a directory"


def test_normalization_pools_only_when_synchronized(monkeypatch):
    """ActNorm and BatchNorm make no collective call in a process group unless ``synchronize_normalization`` asked
    for it (``invertible train`` does under ``torchrun``): in a user's own distributed program, a training-mode
    pass on one rank would otherwise wait for the others for ever."""
    import torch.distributed as dist

    from invertible.models import build
    from invertible.transforms import ActNorm
    from invertible.transforms.normalization import synchronize_normalization

    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", lambda t, op=None: calls.append(op))  # one rank: the sum is t itself
    x = torch.randn(16, 2)
    torch.manual_seed(0)
    plain = build("maf", features=2, layers=2, hidden=[8], batch_norm=True).train().log_prob(x)
    ActNorm(2).train()(x)
    assert calls == []
    torch.manual_seed(0)
    flow = build("maf", features=2, layers=2, hidden=[8], batch_norm=True).train()
    assert synchronize_normalization(flow) == 1
    pooled = flow.log_prob(x)
    assert calls  # the peak, the count and the two sums
    assert torch.allclose(pooled, plain)  # one rank's global batch is its own
    actnorm, calls[:] = ActNorm(2).train(), []
    synchronize_normalization(actnorm)
    actnorm(x)
    assert calls


#: a tiny RealNVP on a small toy set, a metrics line every step; no validation or periodic checkpoint before the end
_STOP_EVERY = 1_000_000
_STOP_FLAGS = ["--model", "realnvp", "-m", "layers=2", "-m", "hidden=[8]", "--data", "moons", "-d", "n_train=2000",
               "-d", "n_val=200", "-d", "n_test=200", "--batch-size", "32", "--schedule", "constant", "--log-every", "1",
               "--eval-every", str(_STOP_EVERY), "--checkpoint-every", str(_STOP_EVERY), "--no-plots"]
_STOP_TIMEOUT_S = 180


def _workers(launcher: int) -> dict[int, int]:
    """The process id of each rank that the ``torchrun`` process ``launcher`` started, by rank (Linux ``/proc``)."""
    ranks = {}
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0") if ppid == launcher else []
        except (OSError, ValueError, IndexError):  # not a process, or one that ended meanwhile
            continue
        ranks.update((int(v[5:]), int(entry.name)) for v in environ if v.startswith(b"RANK="))
    return ranks


def _stopped_torchrun(cwd: Path, run: str, target: str, progress: int = 5) -> tuple[int, str, int]:
    """``torchrun --nproc_per_node 2 ... train`` for a million steps; once ``metrics.jsonl`` reaches step ``progress``,
    SIGTERM to ``target`` ("rank 1" or the "torchrun" launcher). Returns torchrun's exit status, its standard error and
    the last step the metrics showed before the signal. Every process is killed if the run does not end in time."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    launcher = subprocess.Popen(
        # a loaded host may take longer than torchrun's default 30 s to finish the step and its checkpoint
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--shutdown-timeout",
         str(_STOP_TIMEOUT_S), "-m", "invertible", "train", "--device", "cpu", "--threads", "1", "--no-progress",
         *_STOP_FLAGS, "--steps", str(_STOP_EVERY), "--out", run],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    workers: dict[int, int] = {}
    try:
        deadline, seen = time.monotonic() + _STOP_TIMEOUT_S, 0
        while seen < progress or len(workers) < 2:
            if launcher.poll() is not None:
                pytest.fail(f"torchrun ended before the signal (status {launcher.returncode}): "
                            f"{launcher.stderr.read()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no training progress in {_STOP_TIMEOUT_S} s")
            workers = workers if len(workers) == 2 else _workers(launcher.pid)
            seen = max((r["step"] for r in read_metrics(cwd / run / "metrics.jsonl")), default=0)
            time.sleep(0.05)
        os.kill(workers[1] if target == "rank 1" else launcher.pid, signal.SIGTERM)
        _, err = launcher.communicate(timeout=_STOP_TIMEOUT_S)
        return launcher.returncode, err, seen
    finally:
        for pid in [*workers.values()]:  # in sessions of their own: killing torchrun would leave them running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if launcher.poll() is None:
            launcher.kill()
            launcher.communicate()


@pytest.mark.slow
def test_sigterm_to_one_rank_or_to_torchrun_stops_every_rank_after_the_same_step(tmp_path, capsys):
    """SIGTERM to one worker only, or to ``torchrun`` (which forwards it to every worker), ends both ranks after the
    same step, with the checkpoint of that step; the resume ends as the uninterrupted run does. The ranks learn of
    the signal in the all-reduce of a step's loss; before, the signalled rank died at once and the run lost every
    step since its last periodic checkpoint (here: all of them)."""
    stopped = {}
    for target, run in (("rank 1", "one-rank"), ("torchrun", "launcher")):
        code, err, seen = _stopped_torchrun(tmp_path, run, target)
        assert code == 1, err[-3000:]  # torchrun reports the workers' status 143, or its own signal, as a failure
        assert has_checkpoint(tmp_path / run), f"{target}: no checkpoint; {err[-3000:]}"
        step = load_checkpoint(tmp_path / run).step
        assert seen <= step < _STOP_EVERY  # the step it stopped at, which no periodic checkpoint could hold
        assert (f"stopped by SIGTERM at step {step}, which the checkpoint in {run} holds; continue the run with "
                "--resume") in err.splitlines()
        assert "[rank0]:" not in err and "[rank1]:" not in err, err[-3000:]  # no worker's traceback (a lost peer)
        assert max(r["step"] for r in read_metrics(tmp_path / run / "metrics.jsonl")) == step  # none lost
        assert not (tmp_path / run / "summary.json").exists()
        stopped[run] = step

    steps = ["--steps", str(max(stopped.values()) + 3)]  # a constant schedule: the number of steps changes nothing
    for flags in ([*steps, "--out", "whole"], [*steps, "--resume", "--out", "one-rank"]):
        proc = _torchrun([*_STOP_FLAGS, *flags], tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    whole = invertible.load(tmp_path / "whole").state_dict()
    resumed = invertible.load(tmp_path / "one-rank").state_dict()
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert read_metrics(tmp_path / "whole" / "metrics.jsonl") == read_metrics(tmp_path / "one-rank" / "metrics.jsonl")

    # the other number of processes that --resume allows: the same run up to float summation order
    assert main(["train", "--device", "cpu", "--threads", "1", "--no-progress", *_STOP_FLAGS, *steps, "--resume",
                 "--out", str(tmp_path / "launcher")]) == 0
    capsys.readouterr()
    alone = invertible.load(tmp_path / "launcher").state_dict()
    assert all(torch.allclose(whole[k], alone[k], rtol=1e-4, atol=1e-5) for k in whole)
