"""From names to objects: load and check a dataset, build the flow that fits it."""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from .. import data as data_registry
from .. import models
from ..core import Compose, Flow, Transform
from ..data import SPLITS, DataBundle, Standardize
from ..data.images import image_preprocess
from ..data.registry import DATASETS, check_splits, dataset_options, off_pixels, raw_dequantizer
from ..persistence import atomic_write, file_sha256, read_json, read_tensors, state_tensors, write_json
from ..transforms import Logit, UniformDequantization, VariationalDequantization

__all__ = ["load_bundle", "check_bundle", "raw_dequantizer", "build_flow", "check_fits", "check_shapes", "trainable_preprocess",
           "save_preprocess", "restore_preprocess", "unsaved_preprocess", "preprocess_record", "describe_preprocess",
           "read_preprocess_record", "rebuild_preprocess", "fitted_state", "adopt_fitted_state", "data_path",
           "reopened_data", "PREPROCESS_WEIGHTS", "PREPROCESS_JSON"]

#: The state of a run's preprocessing, beside ``model.safetensors``: the fitted statistics of a
#: standardisation, the weights of a learned dequantizer.
PREPROCESS_WEIGHTS = "preprocess.safetensors"
#: What a run's preprocessing is (``kind`` and its settings; ``"none"`` for data the model saw as they
#: were): enough, with :data:`PREPROCESS_WEIGHTS`, to rebuild it without the data.
PREPROCESS_JSON = "preprocess.json"
#: The key of :data:`PREPROCESS_JSON` that holds the SHA-256 of :data:`PREPROCESS_WEIGHTS`, when there is one.
WEIGHTS_DIGEST = "weights_sha256"
#: The keys that a record of each kind holds (:func:`preprocess_record`), checked when one is read.
_RECORD_KEYS = {"standardize": ("features",), "image": ("levels", "alpha", "dequantization", "event_shape"),
                "dequantized_table": ("levels", "dequantization", "features"), "custom": ("type",)}
#: Preprocessing kinds that :func:`rebuild_preprocess` builds from a record alone.
REBUILDABLE = ("none", "standardize", "image", "dequantized_table")
#: Preprocessing kinds applied to the raw data per batch (dequantization noise): their data are integer pixels.
RAW_KINDS = ("image", "dequantized_table")
#: The dequantizers of image bundles, by the ``dequantization`` option that chooses them.
_DEQUANTIZERS = {UniformDequantization: "uniform", VariationalDequantization: "variational"}

#: Model options that the engine sets from the data and a user cannot give.
SET_BY_DATA = ("features", "event_shape", "context_features")


def check_bundle(bundle: DataBundle) -> None:
    """Raise ``ValueError`` unless ``bundle`` passes :func:`~invertible.data.registry.check_splits` (finite
    values, one event shape, matching contexts, raw pixels in the domain of their dequantizer: every split, once,
    since the training batches of such a bundle skip the per-call checks of its preprocessing, see
    :func:`~invertible.train.train`) and :func:`_check_trainable`."""
    check_splits(bundle)
    _check_trainable(bundle)


def _check_trainable(bundle: DataBundle) -> None:
    """``ValueError`` for what a checked bundle may hold but the engine cannot train on or score: an event shape
    that is neither a vector nor an image, an empty split."""
    shape = tuple(bundle.train.shape[1:])
    if len(shape) not in (1, 3):
        raise ValueError(f"dataset {bundle.name!r}: event shape {shape} is neither a vector (D,) nor an image (C, H, W)")
    for split in SPLITS:
        if getattr(bundle, split).shape[0] == 0:
            raise ValueError(f"dataset {bundle.name!r}: the {split} split is empty")


def load_bundle(name: str, seed: int = 0, options: dict[str, Any] | None = None) -> DataBundle:
    """``invertible.data.load(name, seed, **options)`` (which checks the splits) followed by the rest of
    :func:`check_bundle`."""
    if options and "seed" in options:  # the loader's own argument: it failed as one given twice
        raise ValueError("data option seed is set by --seed (the setting seed), not by -d or data_options")
    bundle = data_registry.load(name, seed=seed, **(options or {}))
    _check_trainable(bundle)
    return bundle


def data_path(name: str) -> str | None:
    """The absolute path of dataset ``name`` when it is a file or directory, not a built-in dataset (``None``
    then): a run records it beside ``name`` as given, which is relative to the directory the training ran in."""
    return None if name in data_registry.DATASETS else os.path.abspath(name)


def reopened_data(name: str, recorded: Any, gone: str | None = None) -> str:
    """Where a run's dataset ``name`` (as given to the training) is read again: the absolute path ``recorded``
    by :func:`data_path` at training time while it exists, so that a relative ``name`` is found from any working
    directory; ``name`` itself otherwise (a built-in dataset, a run that records no path, a file since moved).

    ``gone`` (the data are to be read): when neither ``recorded`` nor ``name`` exists from here, a ``ValueError``
    says that the run's file was moved or deleted, with ``gone`` as the advice, instead of the loader's
    "unknown dataset" for ``name``."""
    if isinstance(recorded, str) and recorded and Path(recorded).exists():
        return recorded
    if gone is not None and isinstance(recorded, str) and recorded and not Path(name).exists():
        raise ValueError(f"the run's data file {recorded} no longer exists (moved or deleted): {gone}")
    return name


def build_flow(model: str, options: dict[str, Any], bundle: DataBundle, resumed: bool = False) -> Flow:
    """Build preset ``model`` for the data: ``features=D`` for vectors, ``event_shape=(C, H, W)`` for images.
    ``resumed`` (the options of a run being continued) lets be an option without effect under the others, which
    :func:`~invertible.models.build` refuses: a run started before it did so resumes as it was built."""
    clash = [k for k in SET_BY_DATA if k in options]
    if clash:
        raise ValueError(f"model option(s) {', '.join(clash)} are set from the data and cannot be given")
    shape = tuple(bundle.event_shape)
    size = {"features": shape[0]} if len(shape) == 1 else {"event_shape": list(shape)}
    key, kinds = next(iter(size)), {"features": "vectors", "event_shape": "images"}
    takes = models.preset_options(model)
    if key not in takes:
        accepted = " and ".join(kinds[k] for k in kinds if k in takes)
        raise ValueError(f"model {model!r} takes {accepted}; dataset {bundle.name!r} holds {kinds[key]} of shape {shape}")
    make = models.rebuild if resumed else models.build
    flow = make(model, **size, context_features=bundle.context_features, **options)
    check_fits(flow, bundle)
    levels = _table_lattice(bundle) if isinstance(flow, Flow) and not isinstance(flow, models.BernoulliMADE) else None
    if levels is not None:
        warnings.warn(
            f"every feature of dataset {bundle.name!r} takes at most {levels} distinct values in the training split: "
            "a continuous flow's density on discrete data grows without bound as it fits them, so its NLL means "
            "little; dequantize the values first (add uniform noise in [0, 1) to integers), or model 0/1 data with "
            "bernoulli_made",
            RuntimeWarning,
            stacklevel=2,
        )
    return flow


def check_fits(flow: Flow, bundle: DataBundle) -> None:
    """The flow's event shape and context size must match the data's; a continuous flow needs continuous data,
    a Bernoulli MADE binary data (every split checked here once: the training steps skip its per-call checks)."""
    check_shapes(flow, bundle.name, tuple(bundle.event_shape), bundle.context_features)
    if isinstance(flow, models.BernoulliMADE):
        for split in SPLITS:
            try:
                flow._check(getattr(bundle, split), getattr(bundle, f"{split}_context"))
            except (TypeError, ValueError) as e:
                hint = _standardised_bits(bundle, split) or _binarize_hint(bundle)
                raise ValueError(f"dataset {bundle.name!r}, {split} split: {e}{hint}") from None
    if isinstance(flow, Flow) and _on_a_lattice(bundle):
        raise ValueError(
            f"dataset {bundle.name!r} holds only {bundle.levels} discrete values per dimension and is not dequantized: "
            "a continuous flow's density on them grows without bound (negative bits/dim); use dequantized data or a "
            "discrete model (bernoulli_made)"
        )
    constant = _constant_features(bundle) if isinstance(flow, Flow) else []
    if constant:
        raise ValueError(
            f"feature(s) {constant} of dataset {bundle.name!r} are constant in the training split: a continuous "
            "flow's density on them grows without bound; drop them before fitting a density"
        )


@torch.no_grad()
def _standardised_bits(bundle: DataBundle, split: str) -> str:
    """The reason, for a Bernoulli MADE's error, when ``split`` holds 0/1 values before the bundle's standardisation
    (a table is standardised unless read with ``standardize=false``); ``""`` otherwise."""
    if bundle.raw or not isinstance(bundle.preprocess, Standardize):
        return ""
    x, _ = bundle.preprocess.inverse(getattr(bundle, split))
    if not ((x.round() == 0) | (x.round() == 1)).all() or (x - x.round()).abs().max() > 1e-3:
        return ""
    return ("; the table holds 0s and 1s, but the model sees them standardised (a table's default): "
            "read it as it is with -d standardize=false")


def _binarize_hint(bundle: DataBundle) -> str:
    """The option, for a Bernoulli MADE's error, of a built-in dataset whose loader can binarize its values
    (``binarize``, as ``digits_vectors`` takes); ``""`` for any other data."""
    if bundle.name not in DATASETS or "binarize" not in dataset_options(bundle.name):
        return ""
    return f"; dataset {bundle.name!r} reads its values as 0s and 1s with -d binarize=true"


def check_shapes(flow: Flow, name: str, event_shape: tuple[int, ...], context_features: int | None) -> None:
    """``ValueError`` unless the flow's event shape and context size are those of data set ``name``."""
    if tuple(flow.event_shape) != tuple(event_shape):
        raise ValueError(
            f"the model expects events of shape {tuple(flow.event_shape)} but dataset {name!r} has "
            f"{tuple(event_shape)} (wrong feature count)"
        )
    if flow.context_features != context_features:
        raise ValueError(
            f"the model takes context_features={flow.context_features} but dataset {name!r} has "
            f"context_features={context_features}"
        )


def _on_a_lattice(bundle: DataBundle) -> bool:
    """Discrete data the model sees as they are: at most ``levels`` distinct values in every dimension, no noise
    added per batch (standardised or scaled lattices included)."""
    if bundle.levels is None or bundle.raw:
        return False
    return all(torch.unique(column).numel() <= bundle.levels for column in bundle.train.flatten(1).T)


def _table_lattice(bundle: DataBundle) -> int | None:
    """The largest number of distinct values of a feature of a table with no recorded levels (a file) when every
    feature takes few of them (at most 256 and a tenth of the training rows): discrete data that
    :func:`_on_a_lattice` cannot see, as the file says nothing of its levels. ``None`` for other data."""
    train = bundle.train
    if bundle.levels is not None or bundle.raw or train.dim() != 2 or train.shape[0] < 20:
        return None
    limit, largest = min(256, train.shape[0] // 10), 0
    for column in train.T:  # a continuous table stops at its first column
        largest = max(largest, torch.unique(column).numel())
        if largest > limit:
            return None
    return largest or None


def _constant_features(bundle: DataBundle) -> list[int]:
    """Features of vector data with one value in the whole training split (standardising refuses them already;
    unstandardised tables reach here). Pixels with per-batch noise still to come are not features of this kind."""
    if bundle.raw or bundle.train.dim() != 2 or bundle.train.shape[0] < 2:
        return []
    return (bundle.train.amin(0) == bundle.train.amax(0)).nonzero().flatten().tolist()


def trainable_preprocess(bundle: DataBundle) -> list[torch.nn.Parameter]:
    """Parameters of a preprocessing that is applied to every batch and learns (Flow++'s variational dequantizer)."""
    if not bundle.raw or bundle.preprocess is None:
        return []
    return [p for p in bundle.preprocess.parameters() if p.requires_grad]


def _has_state(bundle: DataBundle) -> bool:
    """Whether ``bundle``'s preprocessing holds tensors (fitted statistics, trained weights) a run must keep."""
    return bundle.preprocess is not None and bool(bundle.preprocess.state_dict())


def preprocess_record(bundle: DataBundle) -> dict[str, Any]:
    """What ``bundle``'s preprocessing is, as JSON: ``{"kind": "none"}``, ``"standardize"`` (with its number of
    features), ``"image"`` (levels, logit alpha, dequantizer, image shape), ``"dequantized_table"`` (levels,
    dequantizer, number of features: :func:`~invertible.data.tabular.dequantized_standardization`) or
    ``"custom"`` (its class name); the
    first two also keep the ``levels`` of discrete data (binarised digits: 2), by which a file scored through the
    record alone gets its bits/dim."""
    p = bundle.preprocess
    parts = list(p.transforms) if isinstance(p, Compose) else []
    if len(parts) == 2 and type(parts[0]) in _DEQUANTIZERS and isinstance(parts[1], Logit):
        return {"kind": "image", "levels": parts[0].levels, "alpha": parts[1].alpha,
                "dequantization": _DEQUANTIZERS[type(parts[0])], "event_shape": list(bundle.event_shape)}
    if len(parts) == 2 and type(parts[0]) is UniformDequantization and isinstance(parts[1], Standardize):
        return {"kind": "dequantized_table", "levels": parts[0].levels, "dequantization": "uniform",
                "features": parts[1].mean.numel()}
    if p is not None and not isinstance(p, Standardize):
        return {"kind": "custom", "type": type(p).__name__}
    record: dict[str, Any] = {"kind": "none"} if p is None else {"kind": "standardize", "features": p.mean.numel()}
    if bundle.levels is not None and not off_pixels(bundle.train, bundle.levels).any():
        record["levels"] = int(bundle.levels)
    return record


def _mapping(record: dict[str, Any]) -> dict[str, Any]:
    """The part of a preprocessing record that says how data are mapped: all of it but the digest of the state
    (:data:`WEIGHTS_DIGEST`) and the ``levels`` of data mapped without a dequantizer, which describe the data,
    not the map (and which older records lack)."""
    record = {k: v for k, v in record.items() if k != WEIGHTS_DIGEST}
    return record if record.get("kind") in RAW_KINDS else {k: v for k, v in record.items() if k != "levels"}


def describe_preprocess(record: dict[str, Any]) -> str:
    """A preprocessing record in words, for messages."""
    kind = record.get("kind")
    if kind == "none":
        return "no preprocessing"
    if kind == "standardize":
        return f"a standardisation of {record.get('features')} features"
    if kind == "image":
        return (f"{record.get('dequantization')} dequantization of {record.get('levels')} levels and a logit "
                f"with alpha={record.get('alpha')}")
    if kind == "dequantized_table":
        return (f"{record.get('dequantization')} dequantization of {record.get('levels')} levels and a "
                f"standardisation of {record.get('features')} features")
    return f"a {record.get('type')} preprocessing"


def save_preprocess(bundle: DataBundle, run_dir: str | Path) -> None:
    """Write what ``bundle``'s preprocessing is (:data:`PREPROCESS_JSON`, also when there is none) and its
    state (:data:`PREPROCESS_WEIGHTS`, when it holds one) into ``run_dir``."""
    record = preprocess_record(bundle)
    if _has_state(bundle):
        tensors = state_tensors(bundle.preprocess)
        weights = Path(run_dir) / PREPROCESS_WEIGHTS
        atomic_write(weights, lambda tmp: save_file(tensors, tmp))
        record[WEIGHTS_DIGEST] = file_sha256(weights)
    write_json(Path(run_dir) / PREPROCESS_JSON, record)


def _preprocess_state(run_dir: str | Path, record: dict[str, Any] | None) -> dict[str, Tensor]:
    """The tensors of the run's :data:`PREPROCESS_WEIGHTS`; ``ValueError`` when their file is not the one its
    ``record`` was written with (its SHA-256, :data:`WEIGHTS_DIGEST`; runs written before records held it are
    not checked): changed bytes would map the data by wrong statistics, or samples to NaN, without a word."""
    path = Path(run_dir) / PREPROCESS_WEIGHTS
    digest = None if record is None else record.get(WEIGHTS_DIGEST)
    if digest is not None and path.is_file() and file_sha256(path) != digest:
        raise ValueError(f"corrupt run preprocessing {path}: it is not the file {PREPROCESS_JSON} was written with "
                         "(its SHA-256 differs)")
    return read_tensors(path, "run preprocessing")


def read_preprocess_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The preprocessing record of the run in ``run_dir``, or ``None`` for a run written before runs kept one
    (or a bare saved model); ``ValueError`` for a corrupt record."""
    path = Path(run_dir) / PREPROCESS_JSON
    if not path.is_file():
        return None
    record = read_json(path, "preprocessing record")
    if not isinstance(record.get("kind"), str):
        raise ValueError(f"corrupt preprocessing record {path}: no kind")
    missing = [key for key in _RECORD_KEYS.get(record["kind"], ()) if key not in record]
    if missing:
        raise ValueError(f"corrupt preprocessing record {path}: a {record['kind']!r} record with no "
                         f"{', '.join(missing)}")
    return record


def rebuild_preprocess(record: dict[str, Any], run_dir: str | Path) -> Transform | None:
    """The preprocessing of the run in ``run_dir`` built from its ``record`` (a kind in :data:`REBUILDABLE`)
    and its stored state, without the data; ``None`` for a run whose data had no preprocessing."""
    path = Path(run_dir) / PREPROCESS_JSON
    kind = record.get("kind")
    if kind not in REBUILDABLE:
        raise ValueError(f"{path}: {describe_preprocess(record)} cannot be rebuilt without its data")
    if kind == "none":
        return None
    try:
        if kind == "standardize":
            features = int(record["features"])
            preprocess: Transform = Standardize(torch.zeros(features), torch.ones(features))
        elif kind == "dequantized_table":
            if record["dequantization"] != "uniform":
                raise ValueError(f"unknown dequantization {record['dequantization']!r}")
            features = int(record["features"])
            standardize = Standardize(torch.zeros(features), torch.ones(features))  # the run's state is loaded below
            preprocess = Compose(UniformDequantization(int(record["levels"])), standardize)
        else:
            preprocess = image_preprocess(int(record["levels"]), float(record["alpha"]), str(record["dequantization"]),
                                          tuple(int(n) for n in record["event_shape"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"corrupt preprocessing record {path}: {e}") from None
    if preprocess.state_dict():
        weights = Path(run_dir) / PREPROCESS_WEIGHTS
        if not weights.is_file():
            raise ValueError(f"{run_dir} records {describe_preprocess(record)} but holds no {PREPROCESS_WEIGHTS}")
        try:
            preprocess.load_state_dict(_preprocess_state(run_dir, record))
        except RuntimeError as e:
            raise ValueError(f"{weights} does not fit the {describe_preprocess(record)} of {path}: "
                             f"{_load_error(e)}") from None
    return preprocess.eval()


def unsaved_preprocess(bundle: DataBundle, run_dir: str | Path) -> bool:
    """Whether ``bundle`` has fitted preprocessing statistics that ``run_dir`` does not hold (a run written
    before runs kept them, or a bare saved model): :func:`restore_preprocess` then leaves the bundle's own."""
    run_dir = Path(run_dir)
    kept = (run_dir / PREPROCESS_WEIGHTS).is_file() or (run_dir / PREPROCESS_JSON).is_file()
    return _has_state(bundle) and not trainable_preprocess(bundle) and not kept


def _check_record(bundle: DataBundle, run_dir: str | Path, as_trained: bool = False) -> dict[str, Any] | None:
    """The run's preprocessing record; ``ValueError`` when ``bundle``'s preprocessing is not the one it
    records (runs without a record are not checked). ``as_trained``: the bundle was loaded with the run's own
    seed and data options, so other options would not help: the dataset preprocesses otherwise than it did
    (``digits_vectors`` before it kept integer pixels), and the message says so."""
    record = read_preprocess_record(run_dir)
    own = preprocess_record(bundle)
    if record is not None and _mapping(record) != _mapping(own):
        advice = ("the dataset, loaded with the run's own options, preprocesses otherwise than when the run was "
                  "trained: train the run again" if as_trained else "load it with the run's data options")
        raise ValueError(f"{run_dir} was trained on data with {describe_preprocess(record)}, but dataset "
                         f"{bundle.name!r} has {describe_preprocess(own)}: {advice}")
    return record


def restore_preprocess(bundle: DataBundle, run_dir: str | Path, as_trained: bool = False) -> DataBundle:
    """Give ``bundle`` the preprocessing of the run in ``run_dir``: its fitted statistics and trained weights.

    Splits already in the model's space (a standardised table) are then re-mapped, in float64, back to
    raw data by the bundle's own preprocessing (a deterministic bijection) and forward by the run's, so a
    table of another file or split seed is seen through the statistics the model was trained behind. A
    run that holds no statistics (see :func:`unsaved_preprocess`) leaves the bundle as it is. Data whose
    preprocessing is not the one the run recorded (:data:`PREPROCESS_JSON`) are a ``ValueError``: a run
    trained on unstandardised data would score standardised data in another space. ``as_trained``: ``bundle``
    was loaded with the run's own seed and data options (see :func:`_check_record`'s message).
    """
    record = _check_record(bundle, run_dir, as_trained)
    path = Path(run_dir) / PREPROCESS_WEIGHTS
    if bundle.preprocess is None:
        if path.is_file():
            raise ValueError(f"{run_dir} was trained behind a preprocessing ({PREPROCESS_WEIGHTS}), but dataset "
                             f"{bundle.name!r} has none: load it with the run's data options")
        return bundle
    if not path.is_file():
        if trainable_preprocess(bundle) or (record is not None and _has_state(bundle)):
            raise ValueError(f"dataset {bundle.name!r} has a fitted or trained preprocessing, but {run_dir} holds "
                             f"no {PREPROCESS_WEIGHTS}")
        return bundle
    _take_state(bundle, _preprocess_state(run_dir, record), path)
    return bundle


def fitted_state(bundle: DataBundle) -> dict[str, Tensor] | None:
    """The state of ``bundle``'s preprocessing when it is fitted to the data and not trained (a table's
    standardisation statistics), or ``None``."""
    if not _has_state(bundle) or trainable_preprocess(bundle):
        return None
    return state_tensors(bundle.preprocess)


def adopt_fitted_state(bundle: DataBundle, stored: dict[str, Tensor], where: str | Path) -> None:
    """Give ``bundle`` the fitted preprocessing state ``stored`` (from ``where``), or ``ValueError`` when its
    own, freshly fitted, differs beyond float32 rounding (the data changed since ``stored`` was fitted).

    Within rounding the splits are re-mapped through ``stored``, so training goes on in the same space.
    """
    fresh = fitted_state(bundle)
    if fresh is None or fresh.keys() != stored.keys() or any(fresh[k].shape != stored[k].shape for k in fresh):
        raise ValueError(f"the preprocessing state in {where} does not fit the preprocessing of dataset {bundle.name!r}")
    apart = [k for k in sorted(fresh) if not _within_rounding(bundle.preprocess, k, fresh, stored)]
    if apart:
        raise ValueError(f"the data's preprocessing statistics ({', '.join(apart)}) differ from those in {where}: "
                         f"dataset {bundle.name!r} changed since they were fitted")
    _take_state(bundle, stored, where)


def _within_rounding(preprocess: Transform, key: str, a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    """Whether tensor ``key`` of two states of ``preprocess`` agree up to float32 rounding: a relative
    ``2 eps`` (``eps = 2^-23``); a standardisation's mean also up to ``2 eps`` of its standard deviation,
    the scale it is seen at (a mean of 1e-17 is 0)."""
    x, y = a[key].double(), b[key].double()
    tolerance = 2 * torch.finfo(torch.float32).eps * torch.maximum(x.abs(), y.abs())
    if isinstance(preprocess, Standardize) and key == "mean":
        tolerance = tolerance + 2 * torch.finfo(torch.float32).eps * a["std"].double()
    return bool(((x - y).abs() <= tolerance).all())


def _take_state(bundle: DataBundle, state: dict[str, Tensor], where: str | Path) -> None:
    """Load ``state`` into ``bundle``'s preprocessing; splits already in the model's space are re-mapped, in
    float64, back to raw data by the bundle's own preprocessing and forward by the new state."""
    own = None if bundle.raw else copy.deepcopy(bundle.preprocess)  # raw splits are mapped per batch: nothing to re-map
    try:
        bundle.preprocess.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{where} does not fit the preprocessing of dataset {bundle.name!r}: {_load_error(e)}") from None
    bundle.preprocess.eval()
    if own is not None and not _same_state(own, bundle.preprocess):
        device = bundle.train.device  # the preprocessing may sit on the training device, the splits elsewhere
        old, new = own.double().eval().to(device), copy.deepcopy(bundle.preprocess).double().to(device)
        with torch.no_grad():
            for split in SPLITS:
                y = getattr(bundle, split)
                setattr(bundle, split, new(old.inverse(y.double())[0])[0].to(y.dtype).contiguous())


def _load_error(e: RuntimeError) -> str:
    """``load_state_dict``'s error on one line: its list of missing, unexpected and mismatched tensors."""
    lines = [line.strip() for line in str(e).splitlines()]
    return "; ".join(line.rstrip(".") for line in lines[1:] if line) or lines[0]


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Whether two modules of one kind hold equal tensors."""
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)
