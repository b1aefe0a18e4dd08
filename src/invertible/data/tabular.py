"""Tabular data from local ``.npy`` and ``.csv`` files: validation, a seeded split, standardisation.

Every row is one sample, every column one feature. The rows are shuffled by
the seed and split into train/validation/test; the features are then
standardised with the *training* mean and standard deviation by the bijection
:class:`Standardize`, which the bundle carries as ``preprocess``. Its log-det
``-sum_i log std_i`` converts likelihoods back to the raw data's units:

    log p_raw(x) = log q(standardize(x)) - sum_i log std_i.

``context_columns`` (a column name or index, or a list of them) moves columns
out of the features into the conditioning input of a conditional flow (they
are left unstandardised).

:func:`~invertible.data.load_rows` reads a table's rows as they are instead, in
file order (:func:`read_npy_rows`, :func:`read_csv_rows`): nothing split off,
nothing fitted, for scoring a file with a trained model.
"""

from __future__ import annotations

import csv
import math
import numbers
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..core import Compose, Transform
from ..transforms import UniformDequantization
from .fingerprint import split_digests
from .registry import SPLITS, DataBundle, check_flag, register_reader, register_rows_reader

__all__ = ["Standardize", "read_npy", "read_csv", "read_npy_rows", "read_csv_rows", "table_bundle", "table_rows",
           "standardized", "fit_float32", "dequantized_standardization", "load_npy", "parse_csv"]


class Standardize(Transform):
    """Fixed affine whitening per feature: ``z = (x - mean) / std``, ``log|det dz/dx| = -sum log std``.

    ``mean`` and ``std`` are buffers (saved in ``state_dict``, never trained)
    with the event shape; build one from data with :meth:`fit`.
    """

    def __init__(self, mean: Tensor, std: Tensor):
        super().__init__()
        mean, std = torch.as_tensor(mean), torch.as_tensor(std)
        if mean.shape != std.shape:
            raise ValueError(f"mean and std must have the same shape, got {tuple(mean.shape)} and {tuple(std.shape)}")
        if not torch.isfinite(mean).all() or not torch.isfinite(std).all() or not (std > 0).all():
            raise ValueError("Standardize needs finite means and finite, strictly positive standard deviations")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    @classmethod
    def fit(cls, x: Tensor) -> "Standardize":
        """Mean and (population) standard deviation of ``x`` over its first dimension."""
        if x.shape[0] < 2:
            raise ValueError(f"need at least 2 rows to estimate a standard deviation, got {x.shape[0]}")
        mean, std = x.mean(0), x.std(0, unbiased=False)
        huge = ~(torch.isfinite(mean) & torch.isfinite(std))
        if huge.any():
            cols = huge.nonzero().flatten().tolist()
            raise ValueError(f"feature(s) {cols} have a mean or standard deviation that overflows {x.dtype} "
                             "(values near its largest number); rescale them first")
        if not (std > 0).all():
            cols = (std <= 0).nonzero().flatten().tolist()
            raise ValueError(f"feature(s) {cols} are constant in the training split; drop them before fitting a density")
        return cls(mean, std)

    def _ladj(self, x: Tensor) -> Tensor:
        return (-torch.log(self.std).sum()).expand(x.shape[0]).to(x.dtype)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return (x - self.mean) / self.std, self._ladj(x)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z * self.std + self.mean, -self._ladj(z)


def fit_float32(x: Tensor) -> Standardize:
    """:meth:`Standardize.fit` of the float64 rows ``x``, its statistics rounded to float32 (the bundles' preprocess).

    ``ValueError`` naming the features whose standard deviation is below the spacing of float32 numbers at their
    mean: rounded to float32, such a mean is off by up to half that spacing, which can be many of their standard
    deviations (a column that is constant up to float64 rounding, ``0.1 + 0.2`` and ``0.3``, has a standard
    deviation near 4e-17 and would be standardised to -3e8, every row the same float32 value).
    """
    exact = Standardize.fit(x)
    big = (exact.mean.abs() > torch.finfo(torch.float32).max) | (exact.std > torch.finfo(torch.float32).max)
    if big.any():
        cols = big.nonzero().flatten().tolist()
        raise ValueError(f"feature(s) {cols} have a mean or standard deviation beyond the largest float32 "
                         f"({torch.finfo(torch.float32).max:.3g}); rescale them first")
    mean = exact.mean.float().abs()
    spacing = (torch.nextafter(mean, torch.full_like(mean, math.inf)) - mean).double()
    fine = exact.std >= spacing
    if not fine.all():
        cols = (~fine).nonzero().flatten().tolist()
        j = cols[0]
        raise ValueError(
            f"feature(s) {cols} vary by less than float32 resolves at their mean (feature {j}: standard deviation "
            f"{float(exact.std[j]):.3g} at mean {float(exact.mean[j]):.9g}, where float32 numbers are "
            f"{float(spacing[j]):.3g} apart); subtract a constant near the mean from them, or drop them, first"
        )
    return exact.float()


def dequantized_standardization(levels: int, pixels: Tensor) -> Compose:
    """Uniform dequantization of integer values ``x`` in ``[0, levels - 1]``, ``y = (x + u) / L``, then the
    standardisation of ``y`` by its exact moments over the training rows ``pixels`` (float64, rounded to float32):

        E[y] = (mean(x) + 1/2) / L,    Var[y] = (var(x) + 1/12) / L^2,

    as ``u ~ U(0, 1)`` is independent of ``x``. No noise is drawn to fit it, and a value that is the same in
    every row still has ``std = 1 / (L sqrt 12)``. This is the map of a table of discrete values
    (``digits_vectors``), applied afresh to every batch as an image's dequantization is (Theis et al. 2016);
    its log-det is ``-d log L - sum_i log std_i``.
    """
    x = pixels.double()
    mean = (x.mean(0) + 0.5) / levels
    std = torch.sqrt(x.var(0, unbiased=False) + 1 / 12) / levels
    return Compose(UniformDequantization(levels), Standardize(mean.float(), std.float()))


def _split_sizes(name: str, n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """The train, validation and test sizes of the ``n`` rows of table ``name``; ``ValueError`` for fractions
    outside ``[0, 1)`` and for fewer than 2 training rows (a standard deviation needs 2)."""
    for option, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(f, (int, float)) or not 0 <= f < 1:
            raise ValueError(f"{option} must lie in [0, 1), got {f!r}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")
    n_val, n_test = math.floor(n * val_fraction), math.floor(n * test_fraction)
    n_train = n - n_val - n_test
    if n_train < 2:
        raise ValueError(f"{name}: {n} rows leave {n_train} for training; need at least 2")
    return n_train, n_val, n_test


def _context_indices(columns: int | str | Sequence[int | str] | None, names: list[str] | None, width: int) -> list[int]:
    """Column indices of ``columns``: one name or index, or a sequence of them."""
    if isinstance(columns, (numbers.Number, str)):  # one column (a float or bool is refused below, by name)
        columns = [columns]
    if columns is None or len(columns) == 0:
        return []
    out = []
    for c in columns:
        if isinstance(c, str):
            if names is None or c not in names:
                known = f"; columns are {names}" if names else " (the file has no header row)"
                raise ValueError(f"unknown context column {c!r}{known}")
            if names.count(c) > 1:
                at = [i for i, name in enumerate(names) if name == c]
                raise ValueError(f"context column {c!r} is ambiguous: the header names columns {at} so; "
                                 "give the column's index instead")
            out.append(names.index(c))
        elif isinstance(c, numbers.Integral) and not isinstance(c, (bool, np.bool_)) and -width <= c < width:
            out.append(int(c) % width)
        else:
            raise ValueError(f"context column {c!r} is not a column name or an index in [-{width}, {width})")
    if len(set(out)) != len(out):
        raise ValueError(f"context columns repeat: {list(columns)}")
    if len(out) >= width:
        raise ValueError("context_columns leave no feature columns to model")
    return out


def table_rows(
    name: str,
    table: np.ndarray,
    context_columns: int | str | Sequence[int | str] | None = None,
    column_names: list[str] | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Validate a numeric ``(rows, columns)`` table: its features (float64) and its ``context_columns``
    (float32, or ``None`` without them), every row in the table's order."""
    if table.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D table (rows, features), got an array of shape {table.shape}")
    if table.shape[0] == 0 or table.shape[1] == 0:
        raise ValueError(f"{name}: the table is empty (shape {table.shape})")
    if not (np.issubdtype(table.dtype, np.number) or table.dtype == np.bool_) or np.iscomplexobj(table):
        raise ValueError(f"{name}: expected real numeric values, got dtype {table.dtype}")
    values = table.astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"{name}: {int(bad.sum())} non-finite value(s) (NaN or inf), the first at row {r}, column {c}")
    ctx_idx = _context_indices(context_columns, column_names, values.shape[1])
    feat_idx = [i for i in range(values.shape[1]) if i not in ctx_idx]
    data = torch.from_numpy(values)
    return data[:, feat_idx], data[:, ctx_idx].float() if ctx_idx else None


def table_bundle(
    name: str,
    table: np.ndarray,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    standardize: bool = True,
    context_columns: int | str | Sequence[int | str] | None = None,
    column_names: list[str] | None = None,
) -> DataBundle:
    """Validate a numeric ``(rows, columns)`` table (:func:`table_rows`), split it by ``seed`` and standardise
    the features.

    The statistics are fitted in float64 and rounded to the float32 the bundle's
    :class:`Standardize` holds; those values are applied to the float64 table
    before the splits are cast to float32, so a feature whose mean is large
    against its spread keeps its precision, and the ``preprocess`` carried (and
    saved with a run) is exactly the map the splits went through.
    """
    standardize = check_flag("standardize", standardize)
    features, context = table_rows(name, table, context_columns, column_names)
    sizes = _split_sizes(name, features.shape[0], val_fraction, test_fraction)
    perm = torch.randperm(features.shape[0], generator=torch.Generator().manual_seed(int(seed)))
    x_train, x_val, x_test = features[perm].split(sizes)
    contexts = [s.contiguous() for s in context[perm].split(sizes)] if context is not None else [None, None, None]
    preprocess, digests = None, None
    if standardize:
        digests = split_digests((x_train, x_val, x_test), tuple(contexts))
        try:
            preprocess = fit_float32(x_train)
        except ValueError as e:  # constant columns: fine for a discrete model (0/1 pixels), which takes them unscaled
            raise ValueError(f"{name}: {e}, or read the table as it is with -d standardize=false (a discrete model, "
                             "such as bernoulli_made on 0/1 columns, takes its values unstandardised)") from None
        x_train, x_val, x_test = (_standardized_split(name, split, preprocess, x)
                                  for split, x in zip(SPLITS, (x_train, x_val, x_test)))
    return DataBundle(
        name=name,
        train=x_train.float().contiguous(),
        val=x_val.float().contiguous(),
        test=x_test.float().contiguous(),
        train_context=contexts[0],
        val_context=contexts[1],
        test_context=contexts[2],
        preprocess=preprocess,
        split_digests=digests,
        file_rows=dict(zip(SPLITS, perm.split(sizes))),
    )


def _standardized_split(name: str, split: str, preprocess: Standardize, x: Tensor) -> Tensor:
    """:func:`standardized` of the ``split`` rows ``x`` of table ``name``, whose errors name both."""
    try:
        return standardized(preprocess, x)
    except ValueError as e:
        raise ValueError(f"{name}, {split} split (rows in split order): {e}") from None


@torch.no_grad()
def standardized(preprocess: Standardize, x: Tensor) -> Tensor:
    """Rows ``x`` standardised in float64 by the float32 statistics of ``preprocess``, as float32: the map
    the splits of :func:`table_bundle` go through (float32 alone would lose a large mean's digits).

    ``ValueError`` naming the first row and feature whose standardised value lies beyond the float32 range: as
    float32 it would be infinite, a value the model refuses as if the data held one."""
    exact = Standardize(preprocess.mean.double(), preprocess.std.double())
    y = exact(x.double())[0]
    over = y.abs() > torch.finfo(torch.float32).max
    if over.any():
        r, c = over.nonzero()[0].tolist()
        raise ValueError(f"{int(over.sum())} value(s) lie beyond the float32 range once standardised, the first at "
                         f"row {r}, feature {c}: {float(x[r, c]):.6g}, {float(y[r, c]):.3g} standard deviations "
                         "from the mean")
    return y.float()


#: The first bytes of every ``.npy`` file (``numpy.lib.format.MAGIC_PREFIX``).
_NPY_MAGIC = b"\x93NUMPY"


def load_npy(path: Path) -> np.ndarray:
    """The array of a ``.npy`` file (no pickled objects); ``ValueError`` for a file that is not one: it must start
    with the format's magic string, else ``np.load`` reads a ``.npz`` archive as one (an ``NpzFile``, not an
    array) and calls any other file pickled data."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_NPY_MAGIC))
            if head != _NPY_MAGIC:
                what = "a .npz archive" if head.startswith(b"PK") else "no .npy header"
                raise ValueError(f"{what}; save one array with numpy.save")
            f.seek(0)
            return np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"cannot read {path} as a .npy array: {e}") from None


@register_reader(".npy")
def read_npy(
    path: str | Path,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    standardize: bool = True,
    context_columns: int | Sequence[int] | None = None,
) -> DataBundle:
    """A 2-D numeric ``.npy`` array, one row per sample (no pickled objects)."""
    path = Path(path)
    return table_bundle(path.name, load_npy(path), seed, val_fraction, test_fraction, standardize, context_columns)


@register_rows_reader(".npy")
def read_npy_rows(path: str | Path, context_columns: int | Sequence[int] | None = None) -> tuple[Tensor, Tensor | None]:
    """Every row of a ``.npy`` table in file order (:func:`table_rows`): nothing fitted, nothing split."""
    path = Path(path)
    return table_rows(path.name, load_npy(path), context_columns)


def parse_csv(path: Path, delimiter: str) -> tuple[np.ndarray, list[str] | None]:
    """The numbers of a CSV file and its header's names (or ``None``), read as UTF-8 whatever the locale; a
    leading byte-order mark (spreadsheets write one) is dropped, so it neither hides a first number's row as a
    header nor sticks to the first name.

    Blank lines (nothing but white space) are skipped; a row of empty cells (``,,``) is a row of missing values,
    refused like any empty cell, so that the rows kept are the file's rows in order. Errors name the file's line.
    """
    rows, lines = [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            for r in reader:
                if len(r) > 1 or (r and r[0].strip()):
                    rows.append(r)
                    lines.append(reader.line_num)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (a CSV file of numbers was expected): {e}") from None
    if not rows:
        raise ValueError(f"{path}: the file is empty")

    def numeric(cell: str) -> bool:
        try:
            float(cell)
            return True
        except ValueError:
            return False

    names = None
    if any(c.strip() and not numeric(c) for c in rows[0]):  # a text cell; an empty one is a missing value
        names = [c.strip() for c in rows[0]]
        rows, lines = rows[1:], lines[1:]
    if not rows:
        raise ValueError(f"{path}: the file has a header but no data rows")
    width = len(rows[0])
    out = np.empty((len(rows), width))
    for i, (row, line) in enumerate(zip(rows, lines)):
        if len(row) != width:
            raise ValueError(f"{path}: line {line} has {len(row)} columns, expected {width}")
        for j, cell in enumerate(row):
            try:
                if "_" in cell:  # Python's float() reads '1_000' as 1000; a table's cell is no Python literal
                    raise ValueError(cell)
                out[i, j] = float(cell)
            except ValueError:
                col = f"{names[j]!r} " if names and j < len(names) else ""
                raise ValueError(
                    f"{path}: column {col}(index {j}) is not numeric: {cell!r} on line {line}; "
                    + _why_not_numeric(cell, delimiter)
                ) from None
    if names is not None and len(names) != width:
        raise ValueError(f"{path}: the header has {len(names)} names but the rows have {width} columns")
    return out, names


def _why_not_numeric(cell: str, delimiter: str) -> str:
    """The likely reason a cell is not a number: a missing value, another delimiter, or text."""
    if not cell.strip():
        return "the cell is empty (a missing value); fill or drop such rows first"
    if "_" in cell:
        return "an underscore is no part of a number here (write 1000, not 1_000)"
    other = next((d for d in (";", "\t", ",", "|") if d != delimiter and d in cell), None)
    if other is not None:
        return f"the file looks {other!r}-delimited: pass -d delimiter={other!r} (in Python: delimiter={other!r})"
    return "only numeric columns can be modelled"


@register_reader(".csv")
def read_csv(
    path: str | Path,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    standardize: bool = True,
    context_columns: int | str | Sequence[int | str] | None = None,
    delimiter: str = ",",
) -> DataBundle:
    """A ``.csv`` file of numeric columns, with an optional header row of column names."""
    path = Path(path)
    table, names = parse_csv(path, delimiter)
    return table_bundle(path.name, table, seed, val_fraction, test_fraction, standardize, context_columns, names)


@register_rows_reader(".csv")
def read_csv_rows(
    path: str | Path, context_columns: int | str | Sequence[int | str] | None = None, delimiter: str = ","
) -> tuple[Tensor, Tensor | None]:
    """Every row of a ``.csv`` table in file order (:func:`table_rows`): nothing fitted, nothing split."""
    path = Path(path)
    table, names = parse_csv(path, delimiter)
    return table_rows(path.name, table, context_columns, names)
