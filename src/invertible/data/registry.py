"""The dataset registry: every built-in dataset is a function returning a :class:`DataBundle`.

``invertible.data.load(name_or_path, seed=0, **options)`` is the one entry
point the training engine, the command line and the benchmarks use.
Every bundle it returns has passed :func:`check_splits` (tensors, finite values,
one event shape and context width across the splits, raw pixels in the domain of
their dequantizer), whether its splits were drawn from one table or read from
separate files. ``load_rows(path, **options)`` reads every row of a local file as
it is (no split, nothing fitted), for scoring a file with a trained model.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ..core import Compose, Transform
from ..seeding import check_seed
from ..transforms import UniformDequantization, VariationalDequantization

__all__ = ["DataBundle", "SPLITS", "register_dataset", "register_reader", "register_rows_reader", "available", "load",
           "load_rows", "rows_options", "dataset_options", "check_splits", "check_seed", "check_flag", "raw_dequantizer",
           "DATASETS", "READERS", "ROWS_READERS"]

#: The splits of a :class:`DataBundle`, in order: its ``train``, ``val`` and ``test`` tensors (and contexts).
SPLITS = ("train", "val", "test")


@dataclass
class DataBundle:
    """Train/validation/test splits of one dataset and what is known about it.

    Attributes:
        name: dataset name.
        train, val, test: float tensors of shape ``(n, *event_shape)``, already
            preprocessed into the space the model sees (unless ``raw``).
        train_context, val_context, test_context: conditioning tensors
            ``(n, context_features)`` (one-hot labels, features) or ``None``.
        log_prob: the exact log-density of the data distribution in the model's
            space, where known in closed form; then ``KL(p || q)`` is estimated
            without bias as ``mean(log p(x) - log q(x))`` over test samples.
        sampler: draws ``n`` fresh samples with a seed (generated datasets).
        levels: number of discrete values per dimension (256 for 8-bit images),
            or ``None`` for continuous data; set when bits/dim are meaningful.
        preprocess: the bijection from raw data to the model's space whose
            log-det must be added to report likelihoods of the raw data
            (standardisation, dequantisation + logit), or ``None``.
        raw: the splits hold the raw data (integer pixels) and ``preprocess``
            is stochastic (dequantisation noise): the model sees
            ``y, ladj = preprocess(x)``, applied afresh to every batch, so
            each step draws new noise (RealNVP, Glow, Flow++), and
            ``log q(y) + ladj`` estimates the bound on ``log P(x)``.
        class_names: the names of the classes, in label order (the columns of one-hot class contexts).
        numbered_classes: ``class_names`` are the names that the files give their numeric labels
            (CIFAR-10's ``batches.meta``), so the label numbers ``"0"``, ``"1"``, ... name the same
            classes (:func:`~invertible.data.images.relabel_classes`).
        picture_shape: the ``(C, H, W)`` of images that the vectors of a vector dataset are
            (``digits_vectors``: ``(1, 8, 8)``), by which a run draws its samples as pictures;
            ``None`` for other data.
        split_digests: the SHA-256 of each split (``train``, ``val``, ``test``) with its context, taken
            before a preprocessing fitted to the data mapped it
            (:func:`~invertible.data.fingerprint.split_digests`), set by datasets that fit one, whose
            splits then depend on the fit's float32 rounding; ``None``: the splits are hashed as they are.
        file_rows: for a table split by a seed, the row numbers in its file of each split's rows (``train``,
            ``val``, ``test``): the splits of two seeds then compare row by row, which their standardised
            values, mapped by statistics of different training splits, do not; ``None`` for other data.
    """

    name: str
    train: Tensor
    val: Tensor
    test: Tensor
    train_context: Tensor | None = None
    val_context: Tensor | None = None
    test_context: Tensor | None = None
    log_prob: Callable[[Tensor], Tensor] | None = None
    sampler: Callable[[int, int], Tensor] | None = None
    levels: int | None = None
    preprocess: Transform | None = None
    class_names: list[str] | None = None
    numbered_classes: bool = False
    raw: bool = False
    split_digests: dict[str, str] | None = None
    picture_shape: tuple[int, int, int] | None = None
    file_rows: dict[str, Tensor] | None = None

    def __post_init__(self) -> None:
        if self.raw and self.preprocess is None:
            raise ValueError(f"dataset {self.name!r}: raw=True needs a preprocess to map the raw data to the model's space")

    @property
    def event_shape(self) -> torch.Size:
        return self.train.shape[1:]

    @property
    def context_features(self) -> int | None:
        return None if self.train_context is None else self.train_context.shape[-1]


DATASETS: dict[str, Callable[..., DataBundle]] = {}
#: File suffixes -> reader of a local file into a DataBundle (``.npy``, ``.csv``, IDX, ...).
READERS: dict[str, Callable[..., DataBundle]] = {}
#: File suffixes -> reader of every row of a local file, in file order, as ``(data, context)``: raw values
#: (nothing fitted, nothing split), for scoring a file with a trained model.
ROWS_READERS: dict[str, Callable[..., tuple[Tensor, Tensor | None]]] = {}


def register_dataset(name: str) -> Callable[[Callable[..., DataBundle]], Callable[..., DataBundle]]:
    """Decorator: register a built-in dataset function ``fn(seed=0, **options) -> DataBundle``."""

    def decorate(fn: Callable[..., DataBundle]) -> Callable[..., DataBundle]:
        if name in DATASETS:
            raise ValueError(f"a dataset named {name!r} is already registered")
        DATASETS[name] = fn
        return fn

    return decorate


def register_reader(*suffixes: str) -> Callable[[Callable[..., DataBundle]], Callable[..., DataBundle]]:
    """Decorator: register a reader ``fn(path, seed=0, **options) -> DataBundle`` for file suffixes."""

    def decorate(fn: Callable[..., DataBundle]) -> Callable[..., DataBundle]:
        for s in suffixes:
            READERS[s.lower()] = fn
        return fn

    return decorate


def register_rows_reader(*suffixes: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a reader ``fn(path, **options) -> (data, context)`` of every row of a file, for
    :func:`load_rows`."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for s in suffixes:
            ROWS_READERS[s.lower()] = fn
        return fn

    return decorate


def check_flag(name: str, value: Any) -> bool:
    """``value`` of the on/off option ``name``, or ``ValueError`` naming it unless ``value`` is a bool: a string
    such as ``"false"`` (or a misspelt ``-d standardize=flase``) is truthy and would switch the option on."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def available() -> list[str]:
    """Names of the built-in datasets, sorted."""
    return sorted(DATASETS)


def file_suffix(path: Path) -> str:
    """The suffix that picks a file's reader: the last two of a ``.gz`` file (``.idx3-ubyte.gz``)."""
    return "".join(path.suffixes[-2:]).lower() if path.suffix == ".gz" else path.suffix.lower()


def _file_reader(name_or_path: str, readers: dict[str, Callable[..., Any]]) -> Callable[..., Any]:
    """The reader in ``readers`` of local file ``name_or_path``, bound to its path; ``ValueError`` for a
    missing file or an unsupported type."""
    path = Path(name_or_path)
    if not path.exists():
        hint = f"; built-in datasets: {', '.join(available())}" if not path.suffix else ""
        raise ValueError(f"unknown dataset {name_or_path!r} (no such built-in name or file){hint}")
    suffix = file_suffix(path)
    if suffix not in readers:
        raise ValueError(f"cannot read {path}: unsupported file type {suffix!r}; readers exist for {sorted(readers)}")
    return functools.partial(readers[suffix], path)


def _call(fn: Callable[..., Any], name_or_path: str, **options: Any) -> Any:
    """``fn(**options)``, or ``ValueError`` naming the options ``fn`` takes when it does not take these."""
    try:
        inspect.signature(fn).bind(**options)
    except TypeError as e:
        names = [k for k in inspect.signature(fn).parameters if k != "seed"]
        raise ValueError(f"bad options for dataset {name_or_path!r}: {e}; its options: {', '.join(names) or 'none'}") from None
    return fn(**options)


def _check_tensor(name: str, split: str, t: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"dataset {name!r}: the {split} split is a {type(t).__name__}, not a tensor")
    if not t.is_floating_point():
        raise ValueError(f"dataset {name!r}: the {split} split has dtype {t.dtype}; expected floating point")
    bad = (~torch.isfinite(t)).sum().item()
    if bad:
        raise ValueError(f"dataset {name!r}: the {split} split contains {bad} non-finite value(s) (NaN or inf)")


def raw_dequantizer(bundle: DataBundle) -> UniformDequantization | VariationalDequantization | None:
    """The dequantizer that the preprocessing of a ``raw`` bundle begins with (the step that sees the raw
    pixels), or ``None`` (data stored in the model's space, another preprocessing)."""
    if not bundle.raw or bundle.preprocess is None:
        return None
    p = bundle.preprocess
    first = p.transforms[0] if isinstance(p, Compose) and len(p) else p
    return first if isinstance(first, (UniformDequantization, VariationalDequantization)) else None


def off_pixels(values: Tensor, levels: int) -> Tensor:
    """The mask of ``values`` that are not integer pixels in ``[0, levels - 1]`` (NaN included)."""
    return (values < 0) | (values > levels - 1) | (values != torch.round(values))


def _check_pixels(name: str, split: str, t: Tensor, levels: int) -> None:
    """``ValueError`` unless the raw split ``t`` holds integers in ``[0, levels - 1]``, the dequantizer's domain."""
    bad = off_pixels(t, levels)
    if bad.any():
        raise ValueError(f"dataset {name!r}: the {split} split must hold integer pixel values in [0, {levels - 1}] "
                         f"(the levels of its dequantization); {int(bad.sum())} value(s) are not, e.g. {t[bad][0].item():g}")


def check_splits(bundle: DataBundle) -> None:
    """Raise ``ValueError`` unless every split of ``bundle`` is a finite floating-point tensor with the train
    split's event shape, with a context exactly where the train split has one (its rows and width matching),
    and, for a raw bundle, unless every pixel lies in the domain of the dequantizer that maps it. Empty splits
    pass (``test_fraction=0``); the training engine refuses them
    (:func:`~invertible.train.build.check_bundle`)."""
    _check_tensor(bundle.name, "train", bundle.train)
    shape = tuple(bundle.train.shape[1:])
    for split in SPLITS:
        t = getattr(bundle, split)
        _check_tensor(bundle.name, split, t)
        if tuple(t.shape[1:]) != shape:
            raise ValueError(f"dataset {bundle.name!r}: the {split} split has event shape {tuple(t.shape[1:])}, the train split {shape}")
        c = getattr(bundle, f"{split}_context")
        if (c is None) != (bundle.train_context is None):
            raise ValueError(f"dataset {bundle.name!r}: a context is given for some splits but not for {split}")
        if c is not None:
            _check_tensor(bundle.name, f"{split} context", c)
            if c.dim() != 2 or c.shape[0] != t.shape[0] or c.shape[1] != bundle.train_context.shape[1]:
                raise ValueError(
                    f"dataset {bundle.name!r}: the {split} context has shape {tuple(c.shape)}; expected ({t.shape[0]}, {bundle.train_context.shape[1]})"
                )
    dequantizer = raw_dequantizer(bundle)
    if dequantizer is not None:
        for split in SPLITS:
            _check_pixels(bundle.name, split, getattr(bundle, split), dequantizer.levels)


def load(name_or_path: str, seed: int = 0, **options: Any) -> DataBundle:
    """A built-in dataset by name, or a local file by path (its suffix picks the reader), checked by
    :func:`check_splits`: a ``TypeError`` when the dataset returns no :class:`DataBundle`, a ``ValueError`` naming
    the split that is not finite or not shaped like the train split (a separate test file of another width), and a
    ``ValueError`` for a ``seed`` :func:`~invertible.seeding.check_seed` refuses (an integer in ``[0, 2**64 - 1]``)."""
    seed = check_seed(seed)
    fn = DATASETS[name_or_path] if name_or_path in DATASETS else _file_reader(name_or_path, READERS)
    bundle = _call(fn, name_or_path, seed=seed, **options)
    if not isinstance(bundle, DataBundle):
        raise TypeError(f"dataset {name_or_path!r} returned a {type(bundle).__name__}, not a DataBundle")
    check_splits(bundle)
    return bundle


def load_rows(path: str | Path, **options: Any) -> tuple[Tensor, Tensor | None]:
    """Every row of local file ``path`` in file order, as ``(data, context)`` (its suffix picks the reader of
    :data:`ROWS_READERS`): the raw values, nothing fitted to them and nothing split off."""
    return _call(_file_reader(str(path), ROWS_READERS), str(path), **options)


def rows_options(path: str | Path) -> list[str]:
    """The options the rows reader of file ``path`` takes (``context_columns``, ``delimiter``, ...)."""
    return list(inspect.signature(_file_reader(str(path), ROWS_READERS)).parameters)


def dataset_options(name_or_path: str) -> list[str]:
    """The ``-d`` options that :func:`load` of built-in dataset or local file ``name_or_path`` takes
    (``seed`` included); ``ValueError`` as :func:`load` for a name that is neither."""
    fn = DATASETS[name_or_path] if name_or_path in DATASETS else _file_reader(name_or_path, READERS)
    return list(inspect.signature(fn).parameters)
