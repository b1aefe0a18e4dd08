"""The MAF paper's density-estimation benchmarks, read from local files with the paper's preprocessing.

Papamakarios, Pavlakou & Murray, "Masked Autoregressive Flow for Density
Estimation", NeurIPS 2017, Appendix D, following their released code
(github.com/gpapamak/maf, ``datasets/``). Nothing is downloaded: pass
``root`` (or set ``INVERTIBLE_DATA``) to a directory with the layout of that code:

    power/data.npy                  gas/ethylene_CO.pickle
    hepmass/1000_train.csv          hepmass/1000_test.csv
    miniboone/data.npy              BSDS300/BSDS300.hdf5  (or train.npy, validation.npy, test.npy)

Splits and normalisation are the paper's: the last 10% of the rows is the test
set and the last 10% of the rest the validation set, except HEPMASS (its own
test file) and BSDS300 (its own splits). The data come already in the model's
space (``preprocess`` is ``None``), as in the paper's reported numbers.

Files are checked before that preprocessing: a ``ValueError`` names a file that
is not a 2-D table of finite numbers or not of the paper's width (POWER 8 columns, the
cleaned MINIBOONE 43, BSDS300 63), a constant feature (its standardisation
would divide by zero) or one whose statistics overflow, and a table too short for the tail
split to leave every split a row (``data[-int(0.1 * N):]`` is every row when ``N < 10``).
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from .registry import DataBundle, register_dataset
from .tabular import load_npy

__all__ = ["power", "gas", "hepmass", "miniboone", "bsds300"]


def _root(root: str | None, sub: str) -> Path:
    base = Path(root or os.environ.get("INVERTIBLE_DATA", "data"))
    path = base / sub
    if not path.exists():
        raise ValueError(f"{path} not found: pass root=DIR (-d root=DIR on the command line) or set INVERTIBLE_DATA to the folder holding {sub!r}")
    return path


def _table(name: str, array: np.ndarray, where: object) -> np.ndarray:
    """``array`` (read from ``where``) unchanged, or ``ValueError`` unless it is a non-empty 2-D table of real
    numbers without NaN or inf."""
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"{name}: {where} should hold a non-empty 2-D array (rows, features), got shape {array.shape}")
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{name}: {where} should hold real numbers, got dtype {array.dtype}")
    bad = ~np.isfinite(array)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{name}: {where} holds {int(bad.sum())} NaN or inf value(s), the first at row {r}, column {c}")
    return array


def _load(name: str, path: Path) -> np.ndarray:
    """The 2-D numeric array of the ``.npy`` file ``path`` (:func:`_table`)."""
    return _table(name, load_npy(path), path)


def _load_csv(name: str, path: Path) -> np.ndarray:
    """The numbers of the CSV file ``path`` after its header line (:func:`_table`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # numpy warns of an empty file; _table refuses it
        try:
            array = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        except ValueError as e:
            raise ValueError(f"{name}: cannot read {path} as comma-separated numbers after a header line: {e}") from None
    return _table(name, array, path)


def _load_pickle(name: str, path: Path) -> object:
    """The object of the pandas pickle ``path``; ``ValueError`` naming the file when it is not one (a truncated
    download or another file under its name fails in ``pickle`` with a message that names no file)."""
    import pandas as pd

    try:
        return pd.read_pickle(path)
    except (pickle.UnpicklingError, AttributeError, EOFError, ImportError, IndexError, ValueError) as e:
        raise ValueError(f"{name}: cannot read {path} as a pandas pickle (a DataFrame saved with "
                         f"DataFrame.to_pickle): {e}") from None


def _last(name: str, data: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``data`` before its last 10% and that last 10% (the MAF code's ``data[-int(0.1 * N):]``),
    or ``ValueError`` when either would be empty (``data[-0:]`` is every row)."""
    n = int(0.1 * data.shape[0])
    if n == 0 or n == data.shape[0]:
        raise ValueError(f"{name}: {data.shape[0]} rows are too few to hold out the last 10% as the {what} split")
    return data[:-n], data[-n:]


def _tail_split(name: str, data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Last 10% test, last 10% of the rest validation (the MAF code's split)."""
    rest, test = _last(name, data, "test")
    train, val = _last(name, rest, "validation")
    return train, val, test


def _check_scale(name: str, mu: np.ndarray, s: np.ndarray) -> None:
    """``ValueError`` naming the features whose standard deviation ``s`` is zero (constant: no density), or whose
    mean ``mu`` or standard deviation overflowed the float range (values near it: the feature became all zeros)."""
    if not (s > 0).all():
        cols = np.flatnonzero(~(s > 0)).tolist()
        raise ValueError(f"{name}: feature(s) {cols} are constant where the statistics are taken; "
                         "their standardisation divides by zero")
    huge = ~(np.isfinite(mu) & np.isfinite(s))
    if huge.any():
        raise ValueError(f"{name}: the mean or standard deviation of feature(s) {np.flatnonzero(huge).tolist()} "
                         "overflows the float range; scale those columns down first")


def _bundle(name: str, train: np.ndarray, val: np.ndarray, test: np.ndarray) -> DataBundle:
    t = [torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32) for a in (train, val, test)]
    for split, part in zip(("train", "validation", "test"), t):
        if not torch.isfinite(part).all():
            raise ValueError(f"{name}: the {split} split holds values beyond the float32 range (+-3.4e38)")
    return DataBundle(name=name, train=t[0], val=t[1], test=t[2])


def _width(name: str, data: np.ndarray, where: object, width: int, what: str) -> np.ndarray:
    """``data`` unchanged, or ``ValueError`` unless it has ``width`` columns (the file ``what`` the paper used)."""
    if data.shape[1] != width:
        raise ValueError(f"{name}: {where} should be {what}, (N, {width}); got {data.shape}")
    return data


def _normalise_by_train_and_val(name: str, train, val, test):
    both = np.vstack((train, val))
    with np.errstate(over="ignore"):  # an overflow is refused by _check_scale
        mu, s = both.mean(0), both.std(0)
    _check_scale(name, mu, s)
    return (train - mu) / s, (val - mu) / s, (test - mu) / s


@register_dataset("power")
def power(seed: int = 0, root: str | None = None) -> DataBundle:
    """UCI household electric power: 8 columns in data.npy, 6 features after dropping 2, with the paper's dithering noise (seed 42).

    The columns kept are global active power, voltage, the three sub-meterings and
    the time; the noise is ``U[0, 0.001)``, ``U[0, 0.01)``, ``U[0, 1)`` (x3) and none,
    drawn from ``RandomState(42)`` after the shuffle, voltage first, so the splits
    are the MAF code's numbers.
    """
    path = _root(root, "power/data.npy")
    data = _width("power", _load("power", path), path, 8, "the household power table")
    rng = np.random.RandomState(42)
    rng.shuffle(data)
    n = data.shape[0]
    data = np.delete(np.delete(data, 3, axis=1), 1, axis=1)
    voltage = 0.01 * rng.rand(n, 1)
    active_power = 0.001 * rng.rand(n, 1)
    noise = np.hstack((active_power, voltage, rng.rand(n, 3), np.zeros((n, 1))))
    return _bundle("power", *_normalise_by_train_and_val("power", *_tail_split("power", data + noise)))


def _drop_correlated(frame):
    """Drop the first of any pair of columns with correlation > 0.98, until none is left (MAF's gas.py)."""
    while True:
        counts = (frame.corr() > 0.98).values.sum(axis=1)
        if not np.any(counts > 1):
            return frame
        frame = frame.drop(frame.columns[np.where(counts > 1)[0][0]], axis=1)


@register_dataset("gas")
def gas(seed: int = 0, root: str | None = None) -> DataBundle:
    """UCI gas sensors (ethylene + CO): 8 features after removing the targets, time and correlated sensors."""
    import pandas as pd

    frame = _load_pickle("gas", _root(root, "gas/ethylene_CO.pickle"))
    missing = [c for c in ("Meth", "Eth", "Time") if c not in getattr(frame, "columns", ())]
    if not isinstance(frame, pd.DataFrame) or missing:
        raise ValueError(f"gas: ethylene_CO.pickle should hold a DataFrame with the columns Meth, Eth and Time "
                         f"(the MAF code's), missing {missing}")
    frame = frame.drop(columns=["Meth", "Eth", "Time"])
    _table("gas", frame.values, "ethylene_CO.pickle")
    _check_scale("gas", frame.mean().values, frame.std().values)
    frame = _drop_correlated(frame)
    frame = (frame - frame.mean()) / frame.std()
    return _bundle("gas", *_tail_split("gas", frame.values))


@register_dataset("hepmass")
def hepmass(seed: int = 0, root: str | None = None) -> DataBundle:
    """UCI HEPMASS: signal events (label 1) of the 1000-mass files, 21 features after dropping discrete ones."""
    folder = _root(root, "hepmass")
    train, test = (_load_csv("hepmass", folder / f) for f in ("1000_train.csv", "1000_test.csv"))
    if test.shape[1] != train.shape[1] + 1:
        raise ValueError(f"{folder}: 1000_test.csv must have one column more than 1000_train.csv (the trailing "
                         f"column the MAF code drops), got {test.shape[1]} and {train.shape[1]}")
    train = train[train[:, 0] == 1][:, 1:]
    test = test[test[:, 0] == 1][:, 1:-1]  # the test file has one extra trailing column
    if len(train) < 2 or len(test) == 0:
        raise ValueError(f"hepmass: {len(train)} training and {len(test)} test rows of the signal class (label 1 in "
                         "the first column); need 2 or more and 1 or more")
    with np.errstate(over="ignore"):  # an overflow is refused by _check_scale
        mu, s = train.mean(0), train.std(0, ddof=1)
    _check_scale("hepmass", mu, s)
    train, test = (train - mu) / s, (test - mu) / s
    # the MAF code drops a feature when its *smallest* value occurs more than 5 times
    keep = [i for i, col in enumerate(train.T) if sorted(Counter(col).items())[0][1] <= 5]
    if not keep:
        raise ValueError(f"hepmass: every feature of {folder / '1000_train.csv'} has its smallest value more than 5 "
                         "times among the signal rows (a discrete feature, which the MAF code drops): none is left")
    train, test = train[:, keep], test[:, keep]
    return _bundle("hepmass", *_last("hepmass", train, "validation"), test)


@register_dataset("miniboone")
def miniboone(seed: int = 0, root: str | None = None) -> DataBundle:
    """UCI MiniBooNE particle identification: 43 features (the paper's cleaned data.npy)."""
    path = _root(root, "miniboone/data.npy")
    data = _width("miniboone", _load("miniboone", path), path, 43, "the MAF code's cleaned array (the UCI file has 50 "
                  "columns, of which it drops 7 and outliers)")
    return _bundle("miniboone", *_normalise_by_train_and_val("miniboone", *_tail_split("miniboone", data)))


@register_dataset("bsds300")
def bsds300(seed: int = 0, root: str | None = None) -> DataBundle:
    """BSDS300 natural-image patches: 63-D (8x8 patches, one pixel dropped), the file's own splits, each checked
    as a table (:func:`_table`)."""
    folder = _root(root, "BSDS300")
    keys = ("train", "validation", "test")
    path = folder / "BSDS300.hdf5"
    try:
        import h5py
    except ImportError:
        h5py = None
    from_hdf5 = path.exists() and h5py is not None
    if from_hdf5:
        with h5py.File(path, "r") as f:
            absent = [k for k in keys if k not in f]
            if absent:
                raise ValueError(f"bsds300: {path} holds no dataset {', '.join(map(repr, absent))} (it holds "
                                 f"{', '.join(map(repr, f.keys())) or 'none'})")
            parts = [_table("bsds300", np.asarray(f[k]), f"{path} dataset {k!r}") for k in keys]
    else:
        files = [folder / f"{k}.npy" for k in keys]
        missing = [str(p) for p in files if not p.exists()]
        if missing and path.exists():
            raise ValueError(f"bsds300: reading {path} needs h5py: install it, or save its datasets as "
                             f"{', '.join(missing)}")
        if missing:
            raise ValueError(f"bsds300: need {path} or {', '.join(missing)}")
        parts = [_load("bsds300", p) for p in files]
    where = path if from_hdf5 else folder
    return _bundle("bsds300", *(_width("bsds300", part, f"{where} ({k})", 63, "8x8 patches less one pixel")
                                for k, part in zip(keys, parts)))
