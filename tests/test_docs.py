"""The examples of README.md and docs/*.md: every Python snippet runs (with its training loops cut
to a few steps), and every ``invertible`` command line parses, with -m / -d keys its preset and
dataset take."""

from __future__ import annotations

import inspect
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from invertible import models
from invertible.cli import build_parser
from invertible.data.registry import DATASETS

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)

# What a snippet runs for minutes or minutes of steps is cut to a few, so the test stays short:
# (document, text in its snippet, what the test runs instead). Each text must still be in its snippet.
SHORTER = [
    ("README.md", "range(2000)", "range(3)"),
    ("variational.md", "steps=10_000", "steps=3, eval_samples=2000"),
]


def blocks(lang: str | None = None) -> list[tuple[str, int, str]]:
    """(document, index, body) of the fenced blocks of every document, those in ``lang`` if given."""
    found = []
    for path in DOCS:
        for i, (tag, body) in enumerate(FENCE.findall(path.read_text())):
            if lang is None or tag == lang:
                found.append((path.name, i, body))
    return found


PYTHON = blocks("python")


@pytest.mark.parametrize("doc,index,body", PYTHON, ids=[f"{d}:{i}" for d, i, _ in PYTHON])
def test_python_snippet_runs(doc, index, body, tmp_path, monkeypatch):
    for name, text, shorter in SHORTER:
        if name == doc and text in body:
            body = body.replace(text, shorter)
    monkeypatch.chdir(tmp_path)  # snippets write files (flow.save) and read the files they name
    rows = np.random.default_rng(0).normal(size=(60, 3))
    labels = np.arange(60) % 3
    with open("measurements.csv", "w") as f:  # the table of docs/data.md, with its "label" column
        f.write("a,b,c,label\n")
        f.writelines(",".join(f"{v:.4f}" for v in row) + f",{k}\n" for row, k in zip(rows, labels))
    torch.manual_seed(0)
    exec(compile(body, f"{doc}:{index}", "exec"), {"__name__": "__docs__"})


def test_every_cut_still_applies():
    for name, text, _ in SHORTER:
        assert any(doc == name and text in body for doc, _, body in PYTHON), f"{name} has no snippet with {text!r}"


def command_lines() -> list[tuple[str, list[str]]]:
    """The ``invertible ...`` lines of the fenced blocks, comments dropped and [optional] flags kept."""
    lines = []
    for doc, _, body in blocks():
        for line in body.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("invertible ") and "..." not in line:
                lines.append((doc, shlex.split(re.sub(r"\[(--[^]]*)\]", r"\1", line))[1:]))
    return lines


def options(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1].split("=")[0] for i, a in enumerate(argv) if a == flag]


@pytest.mark.parametrize("doc,argv", command_lines(), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_documented_command_parses(doc, argv):
    args = build_parser().parse_args(argv)
    assert hasattr(args, "command"), argv
    if argv[0] in ("models", "datasets") and args.name is not None:
        assert args.name in (models.available() if argv[0] == "models" else DATASETS), argv
    if argv[0] == "train" and "--resume" not in argv and "--config" not in argv:
        preset = models.preset_options(args.model or "realnvp")
        assert set(options(argv, "-m")) <= set(preset), (argv, sorted(preset))
        if args.data in DATASETS:
            takes = inspect.signature(DATASETS[args.data]).parameters
            assert set(options(argv, "-d")) <= set(takes), (argv, sorted(takes))
