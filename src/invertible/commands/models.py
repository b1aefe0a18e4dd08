"""``invertible models [NAME]``: the registered model presets and their one-line descriptions;
with ``NAME``, that preset's description and its ``-m`` options with their defaults."""

from __future__ import annotations

import argparse

from .. import models
from ._common import default_text, describe


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list the model presets", description=__doc__.replace("``", ""))
    p.add_argument("name", nargs="?", help="a preset: show its description and options")
    p.set_defaults(command=run)


def run(args: argparse.Namespace) -> int:
    if args.name is None:
        for name in models.available():
            doc = (models.get(name).__doc__ or "").strip().splitlines()
            print(f"{name:16s} {doc[0].replace('``', '') if doc else ''}")
        return 0
    from ..train.build import SET_BY_DATA  # only when describing one preset

    options = {key: "set from the data" if key in SET_BY_DATA else default_text(default)
               for key, default in models.preset_options(args.name).items()}
    describe(models.get(args.name).__doc__, args.name, "-m", options)
    return 0
