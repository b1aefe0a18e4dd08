"""``invertible datasets``: the built-in datasets and the file types that can be read."""

from __future__ import annotations

import argparse

from .. import data
from ..data.registry import DATASETS, READERS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("datasets", help="list the built-in datasets and readable file types", description=__doc__.replace("``", ""))
    p.set_defaults(command=run)


def run(args: argparse.Namespace) -> int:
    for name in data.available():
        doc = (DATASETS[name].__doc__ or "").strip().splitlines()
        print(f"{name:16s} {doc[0].replace('``', '') if doc else ''}")
    if READERS:
        print("files:           " + ", ".join(s or "(no suffix)" for s in sorted(READERS)))
    return 0
