"""``invertible eval RUN``: exact NLL (nats), KL gap and bits/dim of a trained flow on a dataset split.

The data are mapped into the model's space by the run's own preprocessing: a
table given by --data, or split by another --seed, is standardised with the
statistics of the run's training split, so a shifted table scores worse. Data
preprocessed otherwise than the run's (a standardised table for a run trained
with -d standardize=false) are refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from typing import Any, Iterator

from ..persistence import load, write_json
from ..train.build import check_fits, load_bundle, restore_preprocess, unsaved_preprocess
from ..train.config import parse_options
from ..train.distributed import resolve_device
from ..train.evaluate import evaluate_split
from ._common import add_option_flags, existing_run, run_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="evaluate a trained flow on a dataset", description=__doc__.replace("``", ""))
    p.add_argument("run", metavar="RUN", help="run directory (or a directory written by flow.save)")
    p.add_argument("--data", help="dataset name or file (default: the run's own dataset)")
    add_option_flags(p)
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="which split (default test)")
    p.add_argument("--seed", type=int, help="dataset seed (default: the run's)")
    p.add_argument("--batch-size", type=int, default=1024, help="evaluation batch size")
    p.add_argument("--draws", type=int, default=1,
                   help="dequantization noise draws to average over (image data; seeded, so the figure is reproducible)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--out", help="also write the results to this JSON file")
    p.set_defaults(command=run)


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    run_dir = existing_run(args.run)
    config = run_config(run_dir)
    data = args.data or config.get("data")
    if data is None:
        raise ValueError(f"{run_dir} records no dataset; pass --data")
    options = dict(config.get("data_options") or {}) if args.data is None else {}
    options.update(parse_options(args.data_option))
    if args.model_option:
        raise ValueError("eval takes no model options: the model is rebuilt from the run")
    seed = args.seed if args.seed is not None else int(config.get("seed", 0))
    bundle = load_bundle(data, seed, options)
    device = resolve_device(args.device)
    flow = load(run_dir, map_location=device)
    with _dropped_options(config, options, args.data):
        check_fits(flow, bundle)
    if unsaved_preprocess(bundle, run_dir) and (data != config.get("data") or seed != int(config.get("seed", 0))):
        print(f"note: {run_dir} keeps no preprocessing statistics (an older run, or a bare saved model): {data} with "
              f"seed {seed} is standardised by its own training split, so this NLL does not compare with the run's",
              file=sys.stderr)
    with _dropped_options(config, options, args.data):
        restore_preprocess(bundle, run_dir)
    result = {"data": data, "split": args.split, **evaluate_split(flow, bundle, args.split, args.batch_size, device, args.draws)}
    print(json.dumps(result))
    if args.out:
        write_json(args.out, result)
    return 0


@contextmanager
def _dropped_options(config: dict[str, Any], options: dict[str, Any], data: str | None) -> Iterator[None]:
    """A ``ValueError`` in the block (data that do not fit the run) names the run's data options that
    ``--data``, which starts from none, left out: the new data set may need them."""
    try:
        yield
    except ValueError as e:
        dropped = sorted(set(config.get("data_options") or {}) - set(options)) if data else []
        if dropped:
            raise ValueError(f"{e} (the run was trained with -d {', '.join(dropped)}, which --data does not carry over)") from None
        raise
