"""Data-parallel training: ``torchrun --nproc_per_node 2 -m invertible train ...`` on the CPU (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from invertible.train import TrainConfig, train

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
