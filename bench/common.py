"""Shared pieces of the benchmarks: timing, the results header, markdown tables."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import math
import os
import platform
import random
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import torch

RESULTS = Path(__file__).parent / "results"
#: How to install the peer libraries the benchmarks compare with.
EXTRA = "pip install -e '.[bench]'"


def require(*modules: str) -> None:
    """Exit with a message naming the ``bench`` extra when a peer library of a suite is not importable.

    Called before any work, so a run does not train for an hour and then fail on a missing peer.
    """
    missing = []
    for m in dict.fromkeys(modules):
        try:
            importlib.import_module(m)
        except ImportError as e:
            missing.append(f"{m} ({e})")
    if missing:
        raise SystemExit(f"peer libraries not installed: {', '.join(missing)}; install them with {EXTRA}")


def csv_list(text: str) -> list[str]:
    """``argparse`` type of a comma-separated list: empty items are dropped, and a list with no item is an error
    (an empty name would otherwise be read as a name: ``""`` as a dataset is the path of the current directory)."""
    items = [t for t in text.split(",") if t]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def positive(text: str) -> int:
    """``argparse`` type of a count that must be at least 1 (rounds, repeats, steps, ...)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """``argparse`` type of a finite number above 0 (learning rate, gradient-norm clip)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def check_device(parser: argparse.ArgumentParser, device: str) -> None:
    """A usage error for a device torch cannot allocate on (a bad name, or CUDA on a machine without it)."""
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError, NotImplementedError) as e:
        parser.error(f"--device {device!r}: {str(e).splitlines()[0]}")


def add_out(parser: argparse.ArgumentParser, default: str | None, option: str = "--out", what: str = "") -> None:
    """The results-file option (a bare name: ``bench/results/NAME.md``) and ``--force`` to overwrite one."""
    parser.add_argument(option, default=default, help=f"results file name under bench/results/, without .md{what}; "
                        "an existing file is refused unless --force")
    parser.add_argument("--force", action="store_true", help="overwrite an existing results file")


def results_path(name: str) -> Path:
    """``bench/results/NAME.md``; ``name`` must be a bare file name (no directory, no ``.md``)."""
    if not name or name in {".", ".."} or Path(name).name != name or "\\" in name or name.endswith(".md"):
        raise ValueError(f"results name must be a bare file name (no directory, no .md suffix), got {name!r}")
    return RESULTS / f"{name}.md"


def check_out(parser: argparse.ArgumentParser, name: str, force: bool, option: str = "--out") -> None:
    """Refuse (as a usage error, before any work) a bad results name or an existing file without ``--force``."""
    try:
        path = results_path(name)
    except ValueError as e:
        parser.error(f"{option}: {e}")
    if path.exists() and not force:
        parser.error(f"{option}: {path} exists (a recorded result); choose another name or pass --force to overwrite it")


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


def command() -> str:
    """The command line of this run, as ``python -m bench SUITE ...``."""
    return "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def header(title: str, packages: Sequence[str] = ("invertible", "torch", "zuko", "nflows", "normflows")) -> str:
    """Markdown header: title, date, machine, threads, library versions and the command that made it."""
    cpu = platform.processor() or platform.machine()
    vs = ", ".join(f"{k} {v}" for k, v in versions(packages).items())
    cmd = command()
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
    """Write ``bench/results/NAME.md`` and print it (:func:`check_out` refuses an existing one first)."""
    path = results_path(name)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)
    print(f"written to {path}")
    return path


ORDER_SEED = 0  # seed of the per-round timing order: reruns time in the same orders


def round_order(unit: str = "model") -> str:
    """The sentence a results file uses for the timing order of :func:`rounds_ms`."""
    return f"each round times every {unit} once, in a random order (seeded, the same on every run)"


def rounds_ms(
    fns: dict[str, Callable[[], object]],
    rounds: int,
    calls: int = 1,
    warmup: int = 3,
    sync: Callable[[], None] | None = None,
    seed: int = ORDER_SEED,
) -> dict[str, list[float]]:
    """Milliseconds per call of each function in each of ``rounds`` rounds.

    Every function first runs ``warmup`` times (allocator, thread pool, lazy
    initialisation). Each round then times every function once (``calls``
    back-to-back calls, the mean taken), in a fresh order drawn from a
    ``random.Random(seed)``: no function always runs right after the same
    other one, so what one leaves behind (caches, allocator, CPU frequency)
    does not favour or penalise the next systematically, and a load change
    within a round is spread over all of them. ``sync`` (e.g.
    ``torch.cuda.synchronize``) runs before and after each timing.
    Returns ``{name: [ms of round 0, ms of round 1, ...]}``: index ``i`` of
    every list is the same round, so per-round ratios pair like with like.
    """
    if rounds < 1 or calls < 1 or warmup < 0:
        raise ValueError(f"rounds and calls must be >= 1 and warmup >= 0, got {rounds}, {calls}, {warmup}")
    sync = sync or (lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    rng = random.Random(seed)
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for _ in range(rounds):
        for name in rng.sample(names, len(names)):
            sync()
            t0 = time.perf_counter()
            for _ in range(calls):
                fns[name]()
            sync()
            times[name].append((time.perf_counter() - t0) * 1e3 / calls)
    return times
