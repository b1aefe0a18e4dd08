"""Metrics as JSON lines: one object per line in ``RUN/metrics.jsonl``.

Training lines: ``{"step", "split": "train", "loss", "lr", "grad_norm"[, "bpd"]}`` (``loss`` and ``bpd``
averaged over the steps since the previous line, ``lr`` and ``grad_norm`` those of the last step);
validation lines: ``{"step", "split": "val", "val_nll"[, "kl_gap", "val_bpd"]}``.
Each line is appended with a single write and flushed, so an interruption can at
worst tear the last line, which :func:`read_metrics` skips. A resumed run first
drops every line after its checkpoint's step (rewriting the file atomically),
so the file holds one line per logged step however often the run was resumed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..persistence import atomic_write, naming_path

__all__ = ["MetricsLog", "read_metrics"]

METRICS_FILE = "metrics.jsonl"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics file, skipping a torn last line; ``[]`` if there is no file.

    A record is a JSON object with an integer ``step``; any other line (torn, or garbled by hand) is skipped.
    """
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and type(record.get("step")) is int:
            records.append(record)
    return records


class MetricsLog:
    """Appends metric records to ``run_dir/metrics.jsonl`` (a no-op when ``enabled`` is false)."""

    def __init__(self, run_dir: str | Path, enabled: bool = True):
        self.path = Path(run_dir) / METRICS_FILE
        self.enabled = enabled

    def truncate(self, step: int) -> None:
        """Keep only the records up to and including ``step`` (before resuming from it)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in read_metrics(self.path) if r["step"] <= step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(text))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
        except OSError as e:  # a full disk's error names no file
            raise naming_path(e, self.path) from None

    def records(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)
