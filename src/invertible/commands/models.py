"""``invertible models [NAME]``: the registered model presets and their one-line descriptions;
with ``NAME``, that preset's description and its ``-m`` options with their defaults."""

from __future__ import annotations

import argparse
import inspect
import re

from .. import models

#: Options the training engine sets from the data (see ``invertible.train.build``).
_FROM_DATA = ("features", "event_shape", "context_features")


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
    cls = models.get(args.name)
    doc = inspect.cleandoc(cls.__doc__ or args.name).replace("``", "")
    print(re.sub(r":\w+:`~?([^`]+)`", r"\1", doc))  # Sphinx roles such as :class:`~x.Y` as plain names
    print("\noptions (-m key=value):")
    for key, default in models.preset_options(args.name).items():
        if key in _FROM_DATA:
            shown = "set from the data"
        else:
            shown = "required" if default is inspect.Parameter.empty else repr(default)
        print(f"  {key:20s} {shown}")
    return 0
