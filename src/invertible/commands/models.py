"""``invertible models``: the registered model presets and their one-line descriptions."""

from __future__ import annotations

import argparse

from .. import models


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list the model presets", description=__doc__.replace("``", ""))
    p.set_defaults(command=run)


def run(args: argparse.Namespace) -> int:
    for name in models.available():
        doc = (models.get(name).__doc__ or "").strip().splitlines()
        print(f"{name:16s} {doc[0].replace('``', '') if doc else ''}")
    return 0
