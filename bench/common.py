"""Shared pieces of the benchmarks: timing, the results header, markdown tables."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import torch

RESULTS = Path(__file__).parent / "results"


def versions(packages: Sequence[str]) -> dict[str, str]:
    """Installed versions of ``packages`` ("missing" where not installed)."""
    out = {}
    for p in packages:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            try:  # a source checkout on PYTHONPATH, not installed
                out[p] = importlib.import_module(p).__version__ + " (source)"
            except (ImportError, AttributeError):
                out[p] = "missing"
    return out


def header(title: str, packages: Sequence[str] = ("invertible", "torch", "zuko", "nflows", "normflows")) -> str:
    """Markdown header: title, date, machine, threads, library versions and the command that made it."""
    cpu = platform.processor() or platform.machine()
    vs = ", ".join(f"{k} {v}" for k, v in versions(packages).items())
    cmd = "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return (
        f"# {title}\n\n"
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}\n"
        f"- machine: {platform.system()} {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}\n"
        f"- versions: {vs}\n"
        f"- command: `{cmd}`\n\n"
    )


def table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A markdown table of dict rows (floats shown with 4 significant digits)."""
    columns = list(columns or rows[0].keys())

    def fmt(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write(name: str, text: str) -> Path:
    """Write ``bench/results/NAME.md`` and print it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text)
    print(text)
    print(f"written to {path}")
    return path


def time_ms(fn: Callable[[], object], repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)
