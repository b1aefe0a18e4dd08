"""The examples of README.md and docs/*.md: every Python snippet runs (with its training loops cut
to a few steps), every ``invertible`` command line parses, with -m / -d keys its preset and
dataset take, every ``python -m bench`` command parses, every results file cited exists, and the
settings table of docs/engine.md has TrainConfig's fields, flags and defaults."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

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


def results_cited() -> list[tuple[str, str]]:
    """(document, file name) of every results file a document cites: ``bench/results/NAME`` with its
    ``{a,b}`` alternatives expanded, and a bare ``NAME.md`` in backticks (the results files' short names)."""
    cited = []
    for path in DOCS:
        text = path.read_text()
        for pattern in re.findall(r"bench/results/([\w{},.-]+\.(?:md|jsonl))", text):
            names = [pattern]
            while any("{" in n for n in names):
                names = [n[: n.index("{")] + alt + n[n.index("}") + 1 :]
                         for n in names for alt in n[n.index("{") + 1 : n.index("}")].split(",")]
            cited += [(path.name, n) for n in names]
        docs = {p.name for p in DOCS}
        cited += [(path.name, n) for n in re.findall(r"`([\w-]+\.md)`", text) if n not in docs]
    return cited


def test_cited_results_files_exist():
    cited = results_cited()
    assert len(cited) > 30  # the pattern still finds the citations
    missing = sorted({(doc, name) for doc, name in cited if not (ROOT / "bench" / "results" / name).is_file()})
    assert not missing, f"results files cited but not in bench/results: {missing}"


def bench_command_lines() -> list[tuple[str, list[str]]]:
    """The ``python -m bench ...`` commands of the documents (fenced lines, continuations joined, and
    inline code), without the ones that elide arguments (``...``) or list alternatives (``2|1``)."""
    found = []
    for path in DOCS:
        text = path.read_text()
        commands = [m for body in (b for d, _, b in blocks() if d == path.name)
                    for m in re.findall(r"python -m bench .*", body.replace("\\\n", " "))]
        commands += [" ".join(m.split()) for m in re.findall(r"`(python -m bench [^`]*)`", text)]
        for line in commands:
            line = re.sub(r"\$\(seq (\d+) (\d+)\)", lambda m: " ".join(map(str, range(int(m[1]), int(m[2]) + 1))),
                          line.split("#")[0])
            if "..." not in line and "|" not in line:
                found.append((path.name, shlex.split(line)[3:]))
    return found


class _Parsed(Exception):
    """Raised in place of running a benchmark once its arguments have parsed."""


@pytest.mark.parametrize("doc,argv", bench_command_lines(), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_documented_bench_command_parses(doc, argv, monkeypatch):
    from bench.__main__ import main

    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        parse(self, args, namespace)  # a bad option exits with status 2 here
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(_Parsed):
        main(argv)


def engine_settings_table() -> list[tuple[list[str], list[str], list[str]]]:
    """(settings, flags, defaults) of each row of the settings table of docs/engine.md."""
    text = (ROOT / "docs" / "engine.md").read_text()
    rows = []
    for line in text.split("## Settings")[1].split("\n## ")[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            rows.append(tuple([v.strip().strip("`") for v in c.split(", ")] for c in cells[:3]))
    return rows


# words of the default column that stand for a value derived at run time (None in TrainConfig)
DERIVED = {"required", "none", "auto", "runs/MODEL-DATA"}


def test_engine_settings_table_matches_the_config():
    from invertible.train import TrainConfig

    rows = engine_settings_table()
    defaults = {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(TrainConfig)}
    assert sorted(s for settings, _, _ in rows for s in settings) == sorted(defaults)
    train = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    for settings, flags, documented in rows:
        for flag in flags:
            for name in ([flag.replace("[no-]", ""), flag.replace("[no-]", "no-")] if "[no-]" in flag
                         else [flag.split()[0]]):
                assert name in train._option_string_actions, (settings, name)
        if len(documented) == 1 and documented != ["required"]:  # one default for each ("on"); "required" is data's
            documented = documented * len(settings)
        for setting, text in zip(settings, documented):
            value = yaml.safe_load(text)
            value = float(value) if isinstance(value, str) and re.fullmatch(r"[\d.]+e-?\d+", value) else value
            assert defaults[setting] == value or (text in DERIVED and defaults[setting] is None), (setting, text)
