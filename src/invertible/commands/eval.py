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
The result names the split and the number of rows scored.

Images of a class-conditional run take the label index that their class's
name (a PNG class folder; "0", "1", ... for numeric labels) has among the
classes the run was trained on (summary.json's class_names), so a folder
lacking some of them is scored under the right labels; a class the run does
not know is refused. Runs that record no class names read labels as before.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor

from ..core import Flow
from ..data import DATASETS, dataset_options, load_rows, rows_options
from ..data.images import check_pixels, relabel_classes
from ..data.tabular import standardized
from ..persistence import load, report_json, write_json
from ..train.build import (REBUILDABLE, check_fits, check_shapes, load_bundle, read_preprocess_record,
                           rebuild_preprocess, restore_preprocess, unsaved_preprocess)
from ..train.config import parse_options
from ..train.distributed import resolve_device
from ..train.evaluate import SPLITS, row_log_densities, split_log_densities, summarize
from ._common import add_option_flags, check_array_path, existing_run, run_classes, run_config, run_data, save_array


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="evaluate a trained flow on a dataset", description=__doc__.replace("``", ""))
    p.add_argument("run", metavar="RUN", help="run directory (or a directory written by flow.save)")
    p.add_argument("--data", help="dataset name or file (default: the run's own dataset)")
    add_option_flags(p)
    p.add_argument("--split", choices=SPLITS,
                   help="which split; all: every row (of a --data file: in file order, nothing fitted); default: test, "
                        "but all for a --data file other than the run's (see above)")
    p.add_argument("--seed", type=int, help="dataset seed (default: the run's)")
    p.add_argument("--batch-size", type=int, default=1024, help="evaluation batch size")
    p.add_argument("--draws", type=int, default=1,
                   help="dequantization noise draws to average over (image data; seeded, so the figure is reproducible)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--out", help="also write the results to this JSON file")
    p.add_argument("--per-row", metavar="FILE", help="write each row's log-density (nats) to FILE (.npy or .csv)")
    p.set_defaults(command=run)


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.model_option:
        raise ValueError("eval takes no model options: the model is rebuilt from the run")
    if args.out and Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a directory; give the path of the JSON file to write")
    if args.per_row:
        check_array_path(args.per_row, "--per-row")
    run_dir = existing_run(args.run)
    config = run_config(run_dir)
    own = run_data(run_dir, config)
    data = args.data or own
    if data is None:
        raise ValueError(f"{run_dir} records no dataset; pass --data")
    device = resolve_device(args.device)
    flow = load(run_dir, map_location=device)
    record = read_preprocess_record(run_dir)
    if args.split is None:
        args.split = _default_split(args, own, record)
    if args.split == "all" and args.data is not None and args.data not in DATASETS and record is not None \
            and record["kind"] in REBUILDABLE:
        log_p, summary = _score_file(flow, args, config, record, run_dir, device)
    else:
        log_p, summary = _score_split(flow, args, data, own, config, run_dir, device)
    result = {"data": args.data or config.get("data"), "split": args.split, "rows": log_p.numel(), **summary}
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
        print(f"wrote the log-densities of {log_p.numel()} rows to {args.per_row}", file=sys.stderr)
    return 0


def _default_split(args: argparse.Namespace, own: str | None, record: dict[str, Any] | None) -> str:
    """``all`` for a ``--data`` file other than the run's own data ``own`` (:func:`run_data`), read as it is
    through the run's rebuildable preprocessing ``record`` with no ``--seed`` and no ``-d`` option beyond those
    that say how to read it; ``test`` otherwise (the run's own data, a dataset name, a split asked for, an older
    run)."""
    if args.data is None or args.data in DATASETS or _is_run_data(args.data, own):
        return "test"
    if record is None or record["kind"] not in REBUILDABLE or args.seed is not None:
        return "test"
    reading = set(rows_options(args.data))
    return "all" if set(parse_options(args.data_option)) <= reading else "test"


def _is_run_data(data: str, own: str | None) -> bool:
    """Whether ``--data`` names the run's own dataset ``own`` (:func:`run_data`: a file by the absolute path the
    run recorded, else as the training was given it): the same name, or a path to the same file."""
    if own is None or own in DATASETS:
        return data == own
    return data == own or Path(data).resolve() == Path(own).resolve()


def _score_split(flow: Flow, args: argparse.Namespace, data: str, own: str | None, config: dict[str, Any],
                 run_dir: Path, device: torch.device) -> tuple[Tensor, dict[str, float]]:
    """Per-row log-densities and the summary of a split of dataset ``data``, loaded with its seed, split and
    checked as for training, and mapped through the run's preprocessing (the run's own dataset is ``own``)."""
    options = dict(config.get("data_options") or {}) if args.data is None else {}
    options.update(parse_options(args.data_option))
    seed = args.seed if args.seed is not None else int(config.get("seed", 0))
    bundle = relabel_classes(load_bundle(data, seed, options), run_classes(run_dir))
    with _dropped_options(config, options, args.data):
        check_fits(flow, bundle)
    if unsaved_preprocess(bundle, run_dir) and (not _is_run_data(data, own) or seed != int(config.get("seed", 0))):
        print(f"note: {run_dir} keeps no preprocessing statistics (an older run, or a bare saved model): {data} with "
              f"seed {seed} is standardised by its own training split, so this NLL does not compare with the run's",
              file=sys.stderr)
    with _dropped_options(config, options, args.data):
        restore_preprocess(bundle, run_dir)
    _check_draws(args.draws, bundle.raw, data)
    log_p, gap = split_log_densities(flow, bundle, args.split, args.batch_size, device, args.draws)
    return log_p, summarize(args.split, log_p, gap, bundle.levels, bundle.event_shape)


def _score_file(flow: Flow, args: argparse.Namespace, config: dict[str, Any], record: dict[str, Any], run_dir: Path,
                device: torch.device) -> tuple[Tensor, dict[str, float]]:
    """Per-row log-densities and the summary of every row of file ``args.data``, in file order, mapped by the
    preprocessing the run's ``record`` rebuilds: read as it is, with the run's reading options (``-d`` overrides
    them), nothing fitted to it."""
    if args.seed is not None:
        raise ValueError("--split all of a file scores every row in file order: --seed, which splits a dataset, does not apply")
    takes = rows_options(args.data)
    given = parse_options(args.data_option)
    unknown = sorted(set(given) - set(takes))
    if unknown:
        raise ValueError(f"-d {', '.join(unknown)} does not apply to --split all of {args.data}, which is read as it is "
                         f"and mapped by the run's preprocessing; its options: {', '.join(takes) or 'none'}")
    options = {k: v for k, v in (config.get("data_options") or {}).items() if k in takes}
    if "classes" in takes and flow.context_features is not None:
        options["classes"] = run_classes(run_dir) or flow.context_features
    options.update(given)
    data, context = load_rows(args.data, **options)
    name = Path(args.data).name
    check_shapes(flow, name, tuple(data.shape[1:]), None if context is None else context.shape[1])
    preprocess = rebuild_preprocess(record, run_dir)
    raw = record["kind"] == "image"
    if raw:
        try:
            check_pixels(data, int(record["levels"]))
        except ValueError as e:
            raise ValueError(f"{name}: {e}, the levels of the images {run_dir} was trained on") from None
    elif preprocess is not None:
        data = standardized(preprocess, data)
    _check_draws(args.draws, raw, name)
    log_p, _ = row_log_densities(flow, data.float(), context, preprocess, raw, args.batch_size, device, args.draws)
    return log_p, summarize("all", log_p, None, record.get("levels"), tuple(data.shape[1:]))


def _check_draws(draws: int, raw: bool, data: str) -> None:
    """``ValueError`` for ``--draws`` above 1 on data that are not raw pixels: only those get fresh dequantization
    noise per draw (tables have none; images read with ``raw=false`` were dequantized once, with the dataset's seed)."""
    if draws > 1 and not raw:
        raise ValueError(f"--draws {draws} averages dequantization noise draws of raw pixels, but {data} is scored as it "
                         "is (a table, or images dequantized once with -d raw=false): leave --draws out")


@contextmanager
def _dropped_options(config: dict[str, Any], options: dict[str, Any], data: str | None) -> Iterator[None]:
    """A ``ValueError`` in the block (data that do not fit the run) names the run's data options that
    ``--data``, which starts from none, left out and that its loader takes: the new data set may need them
    (options another dataset has no use for, the ``n_train`` of a toy run scored on digits, would mislead)."""
    try:
        yield
    except ValueError as e:
        given = config.get("data_options") or {}
        dropped = sorted(set(given) & set(dataset_options(data)) - set(options)) if data else []
        if dropped:
            flags = " ".join(f"-d {key}={_flag_value(given[key])}" for key in dropped)
            raise ValueError(f"{e} (the run was trained with {flags}, which --data does not carry over)") from None
        raise


def _flag_value(value: Any) -> str:
    """A data option's value as ``-d KEY=VALUE`` takes it: a string as it is, anything else in JSON
    (``false``, ``0.1``, ``[8, 8]``), which the flag reads back as YAML."""
    return value if isinstance(value, str) else json.dumps(value)
