"""``invertible datasets [NAME]``: the built-in datasets and the file types that can be read; with ``NAME``
(a dataset, a file suffix such as ``.csv``, or a file or directory to read), its description and its ``-d`` options
with their defaults."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

from .. import data
from ..data.registry import DATASETS, READERS, file_suffix
from ._common import default_text, describe


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("datasets", help="list the built-in datasets and readable file types", description=__doc__.replace("``", ""))
    p.add_argument("name", nargs="?", help="a dataset, a file suffix or a path: show its description and options")
    p.set_defaults(command=run)


def run(args: argparse.Namespace) -> int:
    if args.name is not None:
        return _describe(args.name)
    for name in data.available():
        doc = (DATASETS[name].__doc__ or "").strip().splitlines()
        print(f"{name:16s} {doc[0].replace('``', '') if doc else ''}")
    if READERS:
        print("files:           " + ", ".join(s or "(no suffix: IDX files, MNIST, CIFAR-10 or PNG directories)" for s in sorted(READERS)))
    return 0


def _describe(name: str) -> int:
    reader = name not in DATASETS
    key = name
    if reader and name.lower() not in READERS and Path(name).exists():  # a file or directory: its suffix's reader
        key = file_suffix(Path(name))
    fn = READERS.get(key.lower()) if reader else DATASETS[name]
    if fn is None:
        raise ValueError(f"unknown dataset or file suffix {name!r}; datasets: {', '.join(data.available())}; "
                         f"file suffixes: {', '.join(s for s in sorted(READERS) if s)}")
    options = {
        key: _default(key, p) for key, p in inspect.signature(fn).parameters.items()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and not (reader and key == "path")
    }
    describe(fn.__doc__, name, "-d", options)
    return 0


def _default(key: str, p: inspect.Parameter) -> str:
    """An option's default as listed: an on/off option whose default ``None`` means "chosen by the other options"
    (``digits_vectors``' ``dequantize``: on unless ``binarize``) is ``auto``, which its description explains."""
    if key == "seed":
        return "set by --seed"
    if p.default is None and str(p.annotation).replace(" ", "") in ("bool|None", "Optional[bool]"):
        return "auto (see above)"
    return default_text(p.default)
