"""``import invertible`` settles oneMKL's VML kernels, so a fresh process's first parallel unary op is exact."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: In a fresh process: the first call of every VML function (float32 and float64) on two threads' chunks,
#: against the same values computed afterwards in chunks small enough for one thread.
SCRIPT = """
import torch
import invertible
from invertible.vml import VML_FUNCTIONS

torch.set_num_threads(2)
bad = []
for dtype in (torch.float32, torch.float64):
    x = torch.linspace(0.1, 0.9, 4800, dtype=dtype)
    for name in VML_FUNCTIONS:
        f = getattr(torch, name)
        first = f(x)
        alone = torch.cat([f(part) for part in x.split(1000)])
        if not torch.equal(first, alone):
            bad.append(f"{name}/{dtype}: {(first - alone).abs().max().item():.1e}")
print(" ".join(bad) or "exact")
"""


def test_the_first_parallel_call_of_every_vml_function_is_exact() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    for (out, err), p in zip(results, procs):
        assert p.returncode == 0, err
        assert out.strip() == "exact"


def test_the_warm_up_calls_every_function_on_the_cpu_whatever_the_default_device(monkeypatch) -> None:
    """Under ``torch.set_default_device("cuda")`` it must not start CUDA at import: every call is on a CPU tensor,
    once per function for float32 and float64."""
    import torch

    from invertible import vml

    calls = []
    for name in vml.VML_FUNCTIONS:
        monkeypatch.setattr(torch, name, lambda x, name=name: calls.append((name, x.device.type, x.dtype)))
    with torch.device("meta"):
        vml.warm_up()
    assert calls == [(name, "cpu", dtype) for dtype in (torch.float32, torch.float64) for name in vml.VML_FUNCTIONS]
