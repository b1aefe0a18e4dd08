"""The rows a command reads from a trained run's data: a split of a dataset, or every row of a file.

``invertible eval`` scores them and ``invertible encode`` maps them to latents; both select them alike
(see ``eval``'s description): the run's own dataset, a dataset name, or a ``--data`` file, mapped into
the model's space by the run's own preprocessing.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from torch import Tensor

from ..core import Flow, Transform
from ..data import DATASETS, DataBundle, dataset_options, load_rows, rows_options
from ..data import SPLITS as BUNDLE_SPLITS
from ..data.fingerprint import data_fingerprint
from ..data.images import check_pixels, relabel_classes
from ..data.tabular import standardized
from ..train.build import (RAW_KINDS, REBUILDABLE, check_fits, check_shapes, load_bundle, read_preprocess_record,
                           rebuild_preprocess, restore_preprocess, unsaved_preprocess)
from ..train.config import parse_options
from ..train.evaluate import SPLITS, split_tensors
from ._common import add_option_flags, run_classes, run_config, run_data, run_summary, seed_argument

__all__ = ["Rows", "add_row_flags", "check_row_flags", "selected_rows"]


@dataclass
class Rows:
    """Rows of data with what maps them into the model's space and what their figures need.

    ``data`` are in the model's space, or with ``raw`` the raw pixels that ``preprocess`` maps there per batch
    (dequantization); ``log_prob`` is the data's true density (a built-in 2-D density), else ``None``.
    """

    name: str
    split: str
    data: Tensor
    context: Tensor | None
    preprocess: Transform | None
    raw: bool
    levels: int | None
    event_shape: tuple[int, ...]
    log_prob: Callable[[Tensor], Tensor] | None = None
    #: every row of a file as it is, in file order (``split`` is then ``"all"``)
    file_order: bool = False

    def described(self) -> str:
        """Which rows these are, in their order, for messages: "every row of t.npy, in file order", "the train,
        val and test splits of moons, in that order" (``--split all`` of a dataset) or "the test split of moons"."""
        if self.file_order:
            return f"every row of {self.name}, in file order"
        if self.split == "all":
            return f"the train, val and test splits of {self.name}, in that order"
        return f"the {self.split} split of {self.name}"


def add_row_flags(p: argparse.ArgumentParser) -> None:
    """``--data``, ``-d``, ``--split`` and ``--seed``: which rows a command reads (:func:`selected_rows`)."""
    p.add_argument("--data", help="dataset name or file (default: the run's own dataset)")
    add_option_flags(p)
    p.add_argument("--split", choices=SPLITS,
                   help="which split; all: every row (of a --data file: in file order, nothing fitted); default: test, "
                        "but all for a --data file other than the run's (see above)")
    p.add_argument("--seed", type=seed_argument, help="dataset seed (default: the run's)")


def check_row_flags(args: argparse.Namespace, command: str) -> None:
    """``ValueError`` for a ``--batch-size`` below 1, and for model options (``-m``), which ``command`` does not
    take: the model is the run's."""
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.model_option:
        raise ValueError(f"{command} takes no model options: the model is rebuilt from the run")


def selected_rows(flow: Flow, args: argparse.Namespace, run_dir: Path) -> Rows:
    """The rows ``args`` (:func:`add_row_flags`) select from the data of the run in ``run_dir`` (its ``flow``);
    ``args.split`` is set to the split chosen."""
    config = run_config(run_dir)
    own = run_data(run_dir, config, None if args.data else "put it back there, or pass --data FILE to read another")
    data = args.data or own
    if data is None:
        raise ValueError(f"{run_dir} records no dataset; pass --data")
    record = read_preprocess_record(run_dir)
    if args.split is None:
        args.split = _default_split(args, own, record)
    if args.split == "all" and args.data is not None and args.data not in DATASETS and record is not None \
            and record["kind"] in REBUILDABLE:
        return _file_rows(flow, args, config, record, run_dir)
    return _split_rows(flow, args, data, own, config, run_dir)


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


def _split_rows(flow: Flow, args: argparse.Namespace, data: str, own: str | None, config: dict[str, Any],
                run_dir: Path) -> Rows:
    """The rows of split ``args.split`` of dataset ``data``, loaded with its seed, split and checked as for
    training, and mapped through the run's preprocessing (the run's own dataset is ``own``)."""
    own_data = _is_run_data(data, own)
    run_seed, run_options = int(config.get("seed", 0)), config.get("data_options") or {}
    # the run's own data (no --data, or --data naming its dataset or file) are read with its options; another
    # dataset starts from none (they may mean nothing to it, see _dropped_options)
    options = dict(run_options) if own_data else {}
    options.update(parse_options(args.data_option))
    seed = args.seed if args.seed is not None else run_seed
    loaded = load_bundle(data, seed, options)
    same_loading = own_data and seed == run_seed and options == run_options
    if same_loading:
        _note_changed_data(loaded, args.split, data, run_dir)
    elif own_data:
        fixed = seed != run_seed and options == run_options and _noted_fixed_split(loaded, args.split, data, seed, run_dir)
        if not fixed and (loaded.raw or loaded.file_rows is not None) and args.split != "train":
            _note_training_rows(loaded, args.split, load_bundle(data, run_seed, run_options))
    bundle = relabel_classes(loaded, run_classes(run_dir))
    with _dropped_options(config, options, args.data):
        check_fits(flow, bundle)
    if unsaved_preprocess(bundle, run_dir) and (not own_data or seed != run_seed):
        print(f"note: {run_dir} keeps no preprocessing statistics (an older run, or a bare saved model): {data} with "
              f"seed {seed} is standardised by its own training split, so its figures do not compare with the run's",
              file=sys.stderr)
    with _dropped_options(config, options, args.data):
        restore_preprocess(bundle, run_dir, as_trained=same_loading)
    x, context = split_tensors(bundle, args.split)
    if x.shape[0] == 0:
        raise ValueError(f"the {args.split} split of dataset {bundle.name!r} is empty")
    return Rows(data, args.split, x, context, bundle.preprocess, bundle.raw, bundle.levels, tuple(bundle.event_shape),
                bundle.log_prob)


def _kept_digests(bundle: DataBundle, split: str, run_dir: Path) -> list[tuple[str, str | None, str]]:
    """For each split of ``split`` (``all``: every split): its name, the digest the run's summary keeps of it
    (``None`` for runs that keep none) and the digest of ``bundle``'s rows of it."""
    summary = run_summary(run_dir)
    fingerprint = data_fingerprint(bundle)
    names = BUNDLE_SPLITS if split == "all" else (split,)
    return [(name, summary.get(f"data_sha256_{name}"), fingerprint[name]) for name in names]


def _note_changed_data(bundle: DataBundle, split: str, data: str, run_dir: Path) -> None:
    """A ``note:`` when the rows of ``split`` (``all``: any split) of the run's own data, loaded as the run loaded
    them, are not those it was trained and tested on: their digests differ from the ones its summary keeps (the
    file changed since). Runs whose summary keeps no digests are not checked."""
    changed = [name for name, kept, now in _kept_digests(bundle, split, run_dir) if kept is not None and kept != now]
    if changed:
        print(f"note: the {', '.join(changed)} split(s) of {data} differ from those {run_dir} was trained and "
              "tested on (the data changed since): the figures are of the data as they are now", file=sys.stderr)


def _noted_fixed_split(bundle: DataBundle, split: str, data: str, seed: int, run_dir: Path) -> bool:
    """Whether ``--seed`` asked for other splits of the run's own data that the dataset keeps fixed (scikit-learn's
    tables, the UCI files' own splits): the rows of ``split`` are those the run was scored on, by the digests its
    summary keeps (runs that keep none are not checked). Then a ``note:`` says so."""
    if not all(kept == now for _, kept, now in _kept_digests(bundle, split, run_dir)):
        return False
    rows = "rows" if split == "all" else f"{split} rows"
    print(f"note: the splits of {data} are fixed, whatever the seed: --seed {seed} scores the same {rows} as the "
          "run's own seed", file=sys.stderr)
    return True


def _note_training_rows(bundle: DataBundle, split: str, trained: DataBundle) -> None:
    """A ``note:`` when ``split`` of the run's own data, loaded with another seed or other data options, holds
    rows of the training split of ``trained`` (the data loaded as the run loaded them): the figure is then partly
    of rows the model was fitted to. A table split by a seed is compared by its rows' numbers in the file
    (``file_rows``: its standardised values, mapped by another training split's statistics, match no row
    exactly), raw bundles (integer pixels) by their values."""
    if bundle.file_rows is not None and trained.file_rows is not None:
        seen = set(trained.file_rows["train"].tolist())
        names = BUNDLE_SPLITS if split == "all" else (split,)
        numbers = [n for name in names for n in bundle.file_rows[name].tolist()]
        rows, overlap = numbers, sum(n in seen for n in numbers)
    else:
        seen = {row.tobytes() for row in trained.train.flatten(1).numpy()}
        rows = split_tensors(bundle, split)[0].flatten(1).numpy()
        overlap = sum(row.tobytes() in seen for row in rows)
    if overlap:
        print(f"note: {overlap} of the {len(rows)} rows read ({split}) are rows of the run's training split, which "
              "another seed or other split options drew into it: they are not held out (an NLL of them is "
              "optimistic)", file=sys.stderr)


def _file_rows(flow: Flow, args: argparse.Namespace, config: dict[str, Any], record: dict[str, Any],
               run_dir: Path) -> Rows:
    """Every row of file ``args.data``, in file order, mapped by the preprocessing the run's ``record`` rebuilds:
    read as it is, with the run's reading options (``-d`` overrides them), nothing fitted to it."""
    if args.seed is not None:
        raise ValueError("--split all of a file reads every row in file order: --seed, which splits a dataset, does not apply")
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
    raw = record["kind"] in RAW_KINDS
    if raw:
        try:
            check_pixels(data, int(record["levels"]))
        except ValueError as e:
            raise ValueError(f"{name}: {e}, the levels of the data {run_dir} was trained on") from None
    elif preprocess is not None:
        try:
            data = standardized(preprocess, data)
        except ValueError as e:
            raise ValueError(f"{name}: {e} of the data {run_dir} was trained on") from None
    return Rows(name, "all", data.float(), context, preprocess, raw, record.get("levels"), tuple(data.shape[1:]),
                file_order=True)


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
