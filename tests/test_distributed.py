"""Data-parallel training launched by ``torchrun`` with 2 CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from invertible.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["--data", "engine-gauss", "-m", "layers=2", "-m", "hidden=[8]", "-m", "actnorm=true", "--steps", "12",
            "--batch-size", "32", "--lr", "5e-3", "--eval-every", "6", "--log-every", "3", "--checkpoint-every", "6",
            "--device", "cpu", "--threads", "1", "--no-progress"]

# The registered test datasets live in this test package, so the launched processes import it first.
LAUNCHER = f"""
import sys
sys.path[:0] = [{str(ROOT / 'src')!r}, {str(ROOT)!r}]
import tests.engine_data
from invertible.cli import main
raise SystemExit(main())
"""


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    script = tmp_path / "launch.py"
    script.write_text(LAUNCHER)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         "train", *SETTINGS, "--out", str(run)],
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["launch.py", "run"]

    # Two shards of 16 average to the gradient of the whole batch of 32: one process gives the same run.
    single = train(TrainConfig(data="engine-gauss", model_options={"layers": 2, "hidden": [8], "actnorm": True}, steps=12,
                               batch_size=32, lr=5e-3, eval_every=6, log_every=3, device="cpu", progress=False,
                               plots=False, out=str(tmp_path / "single")))
    assert summary["test_nll"] == pytest.approx(single["test_nll"], rel=1e-4)
