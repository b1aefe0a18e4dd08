"""``invertible eval RUN``: exact NLL (nats), KL gap and bits/dim of a trained flow on a dataset split.

The data are mapped into the model's space by the run's own preprocessing: a
table given by --data, or split by another --seed, is standardised with the
statistics of the run's training split, so a shifted table scores worse. Data
preprocessed otherwise than the run's (a standardised table for a run trained
with -d standardize=false) are refused.

``--split all`` scores every row: the run's own dataset (or a dataset name)
as its train, val and test splits together, in that order; a file given by
--data as it is, every row in file order, nothing split off or fitted to it
(no minimum row count, constant columns scored), mapped by the preprocessing
the run stores (none, a table's standardisation, images). Such a file is
read with those of the run's data options that say how to read it
(context_columns, delimiter, conditional); -d overrides them. --per-row
FILE writes every row's log-density (nats, raw data space) in the order
scored: the anomaly scores of a file.

Without --split, the run's own data (no --data, or --data naming it) and a
dataset name are scored on their test split; a file other than the run's,
which the model never saw any of, is scored whole (as --split all), unless
--seed or a -d option that splits or fits it (test_fraction, standardize, ...)
asks for a split, or the run stores no preprocessing it can rebuild (then
the file is split and standardised by its own training split).
The result names the split and the number of rows scored. A note says
when the run's own images, split by another --seed or -d option, put rows
the run was trained on into the split scored (how many), and when the run's
own data, loaded as it loaded them, changed since it was trained.

Images of a class-conditional run take the label index that their class's
name (a PNG class folder; "0", "1", ... for numeric labels) has among the
classes the run was trained on (summary.json's class_names), so a folder
lacking some of them is scored under the right labels; a class the run does
not know is refused. Runs that record no class names read labels as before.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..persistence import load, report_json, write_json
from ..train.distributed import resolve_device
from ..train.evaluate import row_log_densities, summarize
from ._common import check_array_path, existing_run, run_config, save_array
from ._rows import add_row_flags, check_row_flags, selected_rows


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="evaluate a trained flow on a dataset", description=__doc__.replace("``", ""))
    p.add_argument("run", metavar="RUN", help="run directory (or a directory written by flow.save)")
    add_row_flags(p)
    p.add_argument("--batch-size", type=int, default=1024, help="evaluation batch size (default: %(default)s)")
    p.add_argument("--draws", type=int, default=1,
                   help="dequantization noise draws to average over (image data; seeded, so the figure is reproducible; "
                        "default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--out", help="also write the results to this JSON file")
    p.add_argument("--per-row", metavar="FILE", help="write each row's log-density (nats) to FILE (.npy or .csv)")
    p.set_defaults(command=run)


def run(args: argparse.Namespace) -> int:
    check_row_flags(args, "eval")
    if args.out and Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a directory; give the path of the JSON file to write")
    if args.per_row:
        check_array_path(args.per_row, "--per-row")
    run_dir = existing_run(args.run)
    device = resolve_device(args.device)
    flow = load(run_dir, map_location=device)
    rows = selected_rows(flow, args, run_dir)
    _check_draws(args.draws, rows.raw, rows.name)
    log_p, gap = row_log_densities(flow, rows.data, rows.context, rows.preprocess, rows.raw, args.batch_size, device,
                                   args.draws, rows.log_prob)
    summary = summarize(rows.split, log_p, gap, rows.levels, rows.event_shape)
    result = {"data": args.data or run_config(run_dir).get("data"), "split": rows.split, "rows": log_p.numel(), **summary}
    off = int((~torch.isfinite(log_p)).sum())
    if off:
        print(f"note: {off} of {log_p.numel()} rows have a log-density that is not finite (-inf: zero density, or "
              "a row beyond the float range); the figures they enter are not finite and are written as null",
              file=sys.stderr)
    print(report_json(result))
    if args.out:
        write_json(args.out, result, report=True)
    if args.per_row:
        save_array(args.per_row, log_p.numpy(), "--per-row")
        print(f"wrote the log-densities of {log_p.numel()} rows ({rows.described()}) to {args.per_row}",
              file=sys.stderr)
    return 0


def _check_draws(draws: int, raw: bool, data: str) -> None:
    """``ValueError`` for ``--draws`` above 1 on data that are not raw pixels: only those get fresh dequantization
    noise per draw (tables have none; images read with ``raw=false`` were dequantized once, with the dataset's seed)."""
    if draws > 1 and not raw:
        raise ValueError(f"--draws {draws} averages dequantization noise draws of raw pixels, but {data} is scored as it "
                         "is (a table, or images dequantized once with -d raw=false): leave --draws out")
