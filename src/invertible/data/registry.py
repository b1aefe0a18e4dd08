"""The dataset registry: every built-in dataset is a function returning a :class:`DataBundle`.

``invertible.data.load(name_or_path, seed=0, **options)`` is the one entry
point the training engine, the command line and the benchmarks use.
``load_rows(path, **options)`` reads every row of a local file as it is (no
split, nothing fitted), for scoring a file with a trained model.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from ..core import Transform

__all__ = ["DataBundle", "SPLITS", "register_dataset", "register_reader", "register_rows_reader", "available", "load",
           "load_rows", "rows_options", "DATASETS", "READERS", "ROWS_READERS"]

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
        split_digests: the SHA-256 of each split (``train``, ``val``, ``test``) with its context, taken
            before a preprocessing fitted to the data mapped it
            (:func:`~invertible.data.fingerprint.split_digests`), set by datasets that fit one, whose
            splits then depend on the fit's float32 rounding; ``None``: the splits are hashed as they are.
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


def available() -> list[str]:
    """Names of the built-in datasets, sorted."""
    return sorted(DATASETS)


def _suffix(path: Path) -> str:
    """The suffix that picks a file's reader: the last two of a ``.gz`` file (``.idx3-ubyte.gz``)."""
    return "".join(path.suffixes[-2:]).lower() if path.suffix == ".gz" else path.suffix.lower()


def _file_reader(name_or_path: str, readers: dict[str, Callable[..., Any]]) -> Callable[..., Any]:
    """The reader in ``readers`` of local file ``name_or_path``, bound to its path; ``ValueError`` for a
    missing file or an unsupported type."""
    path = Path(name_or_path)
    if not path.exists():
        hint = f"; built-in datasets: {', '.join(available())}" if not path.suffix else ""
        raise ValueError(f"unknown dataset {name_or_path!r} (no such built-in name or file){hint}")
    suffix = _suffix(path)
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


def load(name_or_path: str, seed: int = 0, **options: Any) -> DataBundle:
    """A built-in dataset by name, or a local file by path (its suffix picks the reader)."""
    fn = DATASETS[name_or_path] if name_or_path in DATASETS else _file_reader(name_or_path, READERS)
    return _call(fn, name_or_path, seed=seed, **options)


def load_rows(path: str | Path, **options: Any) -> tuple[Tensor, Tensor | None]:
    """Every row of local file ``path`` in file order, as ``(data, context)`` (its suffix picks the reader of
    :data:`ROWS_READERS`): the raw values, nothing fitted to them and nothing split off."""
    return _call(_file_reader(str(path), ROWS_READERS), str(path), **options)


def rows_options(path: str | Path) -> list[str]:
    """The options the rows reader of file ``path`` takes (``context_columns``, ``delimiter``, ...)."""
    return list(inspect.signature(_file_reader(str(path), ROWS_READERS)).parameters)
