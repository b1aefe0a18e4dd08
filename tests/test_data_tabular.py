"""Tabular readers: validation errors, the seeded split, and standardisation with its log-det."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from invertible import Flow
from invertible.data import DataBundle, Standardize, load, load_rows
from invertible.data.registry import DATASETS
from invertible.distributions import StandardNormal


def _table(rows: int = 100, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, 3)) * np.array([1.0, 10.0, 0.1]) + np.array([5.0, -3.0, 0.0])


def _write_csv(path: Path, table: np.ndarray, header: list[str] | None = None) -> Path:
    lines = [",".join(header)] if header else []
    lines += [",".join(repr(float(v)) for v in row) for row in table]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_npy_split_and_standardisation(tmp_path: Path) -> None:
    raw = _table()
    np.save(tmp_path / "t.npy", raw)
    b = load(str(tmp_path / "t.npy"), seed=1)
    assert (len(b.train), len(b.val), len(b.test)) == (80, 10, 10)
    torch.testing.assert_close(b.train.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(b.train.std(0, unbiased=False), torch.ones(3), atol=1e-5, rtol=0)
    # the splits partition the original rows, which the preprocessing's inverse gives back
    back = torch.cat([b.preprocess.inverse(s)[0] for s in (b.train, b.val, b.test)]).double()
    order = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
    np.testing.assert_allclose(order(back.numpy()), order(raw), rtol=1e-5, atol=1e-5)
    again, other = load(str(tmp_path / "t.npy"), seed=1), load(str(tmp_path / "t.npy"), seed=2)
    assert torch.equal(again.test, b.test) and not torch.equal(other.test, b.test)


def test_standardize_logdet_converts_likelihoods(tmp_path: Path) -> None:
    """log p_raw(x) = log q(standardize(x)) + ladj: a N(0, I) on the standardised data is N(mean, diag(std^2)) on the raw."""
    raw = _table(200)
    np.save(tmp_path / "t.npy", raw)
    b = load(str(tmp_path / "t.npy"))
    mean, std = b.preprocess.mean.double(), b.preprocess.std.double()
    x = torch.from_numpy(raw[:5])
    flow = Flow(b.preprocess.double(), StandardNormal(3))
    expected = torch.distributions.Normal(mean, std).log_prob(x).sum(-1)
    torch.testing.assert_close(flow.log_prob(x), expected)
    assert math.isclose(float(b.preprocess(x)[1][0]), -float(std.log().sum()), rel_tol=1e-9)


def test_standardisation_keeps_the_precision_of_features_far_from_zero(tmp_path: Path) -> None:
    """A feature of mean 3e6 and std 1 is standardised before the float32 cast (whose spacing there is 0.25)."""
    raw = _table(400)
    raw[:, 0] += 3e6
    np.save(tmp_path / "t.npy", raw)
    b = load(str(tmp_path / "t.npy"))
    assert b.train.dtype == b.preprocess.std.dtype == torch.float32
    assert b.train[:, 0].unique().numel() == len(b.train)
    # every row is mapped by the one affine z = (x - mean) / std: sorted, z is a line in x up to float32 rounding
    x, z = np.sort(raw[:, 0]), np.sort(torch.cat([b.train, b.val, b.test])[:, 0].double().numpy())
    slope, intercept = np.polyfit(x - 3e6, z, 1)
    assert np.abs(z - (slope * (x - 3e6) + intercept)).max() < 1e-5
    assert math.isclose(slope, 1 / float(b.preprocess.std[0]), rel_tol=1e-5)


@pytest.mark.parametrize("column, spacing", [
    (np.where(np.arange(400) % 2 == 0, 0.1 + 0.2, 0.3), "2.98e-08"),  # constant up to float64 rounding
    (45.1234567 + 1e-6 * np.random.default_rng(1).standard_normal(400), "3.81e-06"),  # spread below float32's spacing
])
def test_a_feature_finer_than_float32_at_its_mean_is_refused(tmp_path: Path, column: np.ndarray, spacing: str) -> None:
    """Rounded to float32, the mean of such a feature is off by many of its standard deviations (the first column
    would be standardised to -3e8 in every row): a ``ValueError`` naming it, not a table the model cannot fit."""
    raw = _table(400)
    raw[:, 1] = column
    np.save(tmp_path / "t.npy", raw)
    with pytest.raises(ValueError, match=rf"feature\(s\) \[1\] vary by less than float32 resolves at their mean "
                                         rf"\(feature 1: .* where float32 numbers are {spacing} apart\)"):
        load(str(tmp_path / "t.npy"))


def test_the_carried_standardisation_is_the_map_the_splits_went_through(tmp_path: Path) -> None:
    """The float32 statistics of ``preprocess`` (what a run saves) standardise the rows exactly, even at a mean of 3e6."""
    raw = _table(400)
    raw[:, 0] += 3e6
    np.save(tmp_path / "t.npy", raw)
    b = load(str(tmp_path / "t.npy"), seed=4)
    rows = raw[torch.randperm(400, generator=torch.Generator().manual_seed(4)).numpy()]
    mapped = Standardize(b.preprocess.mean.double(), b.preprocess.std.double())(torch.from_numpy(rows))[0].float()
    assert torch.equal(mapped, torch.cat([b.train, b.val, b.test]))


def test_csv_header_context_columns_and_raw_mode(tmp_path: Path) -> None:
    raw = _table(50)
    path = _write_csv(tmp_path / "t.csv", raw, ["a", "b", "label"])
    b = load(str(path), context_columns=["label"], val_fraction=0.2, test_fraction=0.0, standardize=False)
    assert b.event_shape == (2,) and b.context_features == 1 and b.preprocess is None
    assert (len(b.train), len(b.val), len(b.test)) == (40, 10, 0)
    full = np.concatenate([b.train.numpy(), b.train_context.numpy()], 1)
    for row in full[:5]:  # every training row is a row of the file, context attached to its features
        assert np.isclose(raw, row, rtol=1e-6).all(1).any()
    headless = load(str(_write_csv(tmp_path / "h.csv", raw)), context_columns=[-1])
    assert headless.event_shape == (2,) and headless.context_features == 1


@pytest.mark.parametrize("column", ["label", 2, -1])
def test_a_single_context_column_needs_no_list(tmp_path: Path, column: str | int) -> None:
    raw = _table(20)
    path = _write_csv(tmp_path / "t.csv", raw, ["a", "b", "label"])
    b = load(str(path), context_columns=column, val_fraction=0.0, test_fraction=0.0, standardize=False)
    listed = load(str(path), context_columns=[column], val_fraction=0.0, test_fraction=0.0, standardize=False)
    assert b.event_shape == (2,) and b.context_features == 1
    assert torch.equal(b.train, listed.train) and torch.equal(b.train_context, listed.train_context)
    assert np.isin(b.train_context.numpy(), raw[:, 2].astype(np.float32)).all()


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty"),
        ("a,b\n", "no data rows"),
        ("1,2\n3,x\n5,6\n", "not numeric: 'x' on line 2; only numeric columns"),
        ("1,2\n3,1_000\n5,6\n", "not numeric: '1_000' on line 2; an underscore is no part of a number"),
        ("1_0,2\n3,4\n5,6\n", "not numeric: '1_0' on line 1"),  # a number-like first row is data, not a header
        ("a,b\n1,2\n3,\n5,6\n", "the cell is empty \\(a missing value\\)"),
        ("1;2\n3;4\n5;6\n", "looks ';'-delimited: pass -d delimiter=';'"),
        ("a,name\n1,foo\n2,bar\n", "'name'"),
        ("1,2\n3,nan\n5,6\n7,8\n", "non-finite"),
        ("1,2\n3,inf\n5,6\n7,8\n", "non-finite"),
        ("1,2\n3\n5,6\n", "columns"),
        ("1,2\n1,3\n1,4\n1,5\n", "constant"),
    ],
)
def test_csv_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load(str(path), val_fraction=0.0, test_fraction=0.0)


@pytest.mark.parametrize("content, line", [
    ("a,b\n1,2\n,\n3,4\n", 3),  # a row of empty cells: missing values, not a blank line to skip
    ("a,b\n1,2\n \t, \n3,4\n", 3),
    ("a,b\n\n\n1,2\n,5\n", 5),  # blank lines skipped, but counted in the line number
    ("\n1,2\n\n3,\n", 4),
])
def test_a_row_of_missing_values_is_refused_on_its_own_line(tmp_path: Path, content: str, line: int) -> None:
    """The rows read are the file's rows in order (``load_rows`` scores them one for one): a row of empty cells
    used to be dropped silently, and an error after a blank line named a line too early."""
    path = tmp_path / "gaps.csv"
    path.write_text(content)
    for read in (lambda: load_rows(str(path)), lambda: load(str(path), val_fraction=0.0, test_fraction=0.0)):
        with pytest.raises(ValueError, match=rf"on line {line}; the cell is empty \(a missing value\)"):
            read()


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros(10), "2-D"),
        (np.zeros((4, 2, 2)), "2-D"),
        (np.zeros((0, 3)), "empty"),
        (np.array([["a", "b"], ["c", "d"]]), "numeric"),
        (np.array([[1.0, np.nan], [2.0, 3.0], [4.0, 5.0]]), "non-finite"),
    ],
)
def test_npy_errors(tmp_path: Path, array: np.ndarray, message: str) -> None:
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(ValueError, match=message):
        load(str(tmp_path / "bad.npy"), val_fraction=0.0, test_fraction=0.0)


def test_bad_files_and_options(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="cannot read"):
        load(str(tmp_path / "obj.npy"))
    (tmp_path / "junk.npy").write_bytes(b"not a numpy file")
    with pytest.raises(ValueError, match="cannot read"):
        load(str(tmp_path / "junk.npy"))
    np.save(tmp_path / "t.npy", _table(10))
    for options, message in [
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "must be < 1"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"context_columns": [7]}, "context column"),
        ({"context_columns": ["x"]}, "no header"),
        ({"context_columns": [0, 1, 2]}, "no feature"),
    ]:
        with pytest.raises(ValueError, match=message):
            load(str(tmp_path / "t.npy"), **options)
    for standardize in (True, False):  # one training row is too few, standardised or not
        with pytest.raises(ValueError, match="at least 2"):
            load(str(tmp_path / "t.npy"), val_fraction=0.5, test_fraction=0.45, standardize=standardize)


def test_a_context_column_name_that_the_header_repeats_is_refused(tmp_path: Path) -> None:
    """It used to take the first of the columns of that name, silently; the other stays a feature."""
    path = _write_csv(tmp_path / "dupe.csv", _table(40), ["a", "a", "c"])
    with pytest.raises(ValueError, match=r"^context column 'a' is ambiguous: the header names columns \[0, 1\] so; "
                                         r"give the column's index instead$"):
        load(str(path), context_columns="a")
    with pytest.raises(ValueError, match="is ambiguous"):
        load_rows(str(path), context_columns=["c", "a"])
    bundle = load(str(path), context_columns=1)  # by index
    assert bundle.train.shape[1] == 2 and bundle.train_context.shape[1] == 1
    assert load(str(path), context_columns="c").train_context.shape[1] == 1


def test_a_file_that_is_not_one_npy_array_is_named(tmp_path: Path) -> None:
    """A ``.npz`` archive saved under a ``.npy`` name used to reach the table checks as an ``NpzFile`` (an
    ``AttributeError``); any other file was called pickled data, with advice to load it unsafely."""
    with open(tmp_path / "archive.npy", "wb") as f:
        np.savez(f, x=_table(10))
    (tmp_path / "text.npy").write_text("1,2\n3,4\n")
    (tmp_path / "empty.npy").write_bytes(b"")
    cases = (("archive.npy", "a .npz archive"), ("text.npy", "no .npy header"), ("empty.npy", "no .npy header"))
    for name, what in cases:
        path = tmp_path / name
        words = rf"^cannot read {re.escape(str(path))} as a \.npy array: {what}; save one array with numpy\.save$"
        for read in (load, load_rows):
            with pytest.raises(ValueError, match=words):
                read(str(path))


def test_standardize_rejects_bad_statistics() -> None:
    with pytest.raises(ValueError):
        Standardize(torch.zeros(2), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError):
        Standardize(torch.zeros(2), torch.ones(3))


def test_context_columns_keep_the_order_they_are_given_in(tmp_path: Path) -> None:
    i = np.arange(20.0)
    raw = np.column_stack([i, 100 + i, 200 + i])  # row i: (i, 100 + i, 200 + i)
    b = load(str(_write_csv(tmp_path / "t.csv", raw, ["a", "b", "c"])), context_columns=["c", "a"], val_fraction=0.0,
             test_fraction=0.0, standardize=False)
    row = b.train[:, 0] - 100
    assert torch.equal(b.train_context, torch.stack([200 + row, row], 1))


def test_a_header_may_hold_names_that_look_like_numbers(tmp_path: Path) -> None:
    raw = _table(10)
    b = load(str(_write_csv(tmp_path / "t.csv", raw, ["year", "2019", "2020"])), context_columns="2020",
             val_fraction=0.0, test_fraction=0.0, standardize=False)
    assert len(b.train) == 10 and b.event_shape == (2,) and b.context_features == 1


def test_a_first_row_with_a_missing_value_is_no_header(tmp_path: Path) -> None:
    """A cell left empty is a missing value, not a column name: the row is reported, not dropped as a header."""
    path = tmp_path / "t.csv"
    path.write_text("1,,3\n4,5,6\n7,8,9\n1,2,4\n")
    for read in (load, load_rows):
        with pytest.raises(ValueError, match="line 1; the cell is empty"):
            read(str(path))
    path.write_text("a,,c\n4,5,6\n7,8,9\n1,2,4\n")  # a header with one unnamed column is still a header
    assert load_rows(str(path))[0].shape == (3, 3)


def test_a_byte_order_mark_is_no_header(tmp_path: Path) -> None:
    """A spreadsheet's "CSV UTF-8" starts with a byte-order mark: the first row of numbers is data (it used to be
    taken for a header, its row silently dropped), and a header's first name is the name without the mark."""
    table = _table(rows=10)
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + _write_csv(tmp_path / "plain.csv", table).read_bytes())
    features, _ = load_rows(str(path))
    np.testing.assert_array_equal(features.numpy(), table)
    assert load(str(path), val_fraction=0.0, test_fraction=0.0, standardize=False).train.shape == (10, 3)
    path.write_bytes(b"\xef\xbb\xbf" + _write_csv(tmp_path / "named.csv", table, ["a", "b", "c"]).read_bytes())
    features, context = load_rows(str(path), context_columns="a")
    np.testing.assert_array_equal(context.numpy(), table[:, :1].astype(np.float32))


def test_a_file_that_is_not_utf8_text_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("temp\xe9rature,b\n1,2\n3,4\n5,6\n".encode("latin-1"))
    words = rf"^{re.escape(str(path))}: not UTF-8 text \(a CSV file of numbers was expected\)"
    for read in (load, load_rows):
        with pytest.raises(ValueError, match=words):
            read(str(path))


def _splits(**changes) -> dict:
    base = dict(train=torch.zeros(6, 3), val=torch.zeros(2, 3), test=torch.zeros(2, 3),
                train_context=torch.zeros(6, 2), val_context=torch.zeros(2, 2), test_context=torch.zeros(2, 2))
    return {**base, **changes}


@pytest.mark.parametrize("changes, words", [
    (dict(test=torch.tensor([[0.0, float("nan"), 0.0], [0.0, 0.0, 0.0]])),
     r"the test split contains 1 non-finite value\(s\) \(NaN or inf\)$"),
    (dict(test=torch.zeros(2, 4)), r"the test split has event shape \(4,\), the train split \(3,\)"),
    (dict(test=torch.zeros(2, 3, dtype=torch.long)), "the test split has dtype torch.int64; expected floating point"),
    (dict(test_context=None), "a context is given for some splits but not for test"),
    (dict(test_context=torch.zeros(3, 2)), r"the test context has shape \(3, 2\); expected \(2, 2\)"),
    (dict(val_context=torch.zeros(2, 5)), r"the val context has shape \(2, 5\); expected \(2, 2\)"),
])
def test_load_checks_the_splits_a_dataset_gives(monkeypatch, changes: dict, words: str) -> None:
    """``load`` checks every bundle it returns, as the training engine does: a separately given test set (or
    context) that is not finite or not shaped like the training split is a ``ValueError`` naming the split."""
    monkeypatch.setitem(DATASETS, "given-splits", lambda seed=0: DataBundle("given-splits", **_splits(**changes)))
    with pytest.raises(ValueError, match=rf"^dataset 'given-splits': {words}"):
        load("given-splits")
    empty = _splits(test=torch.zeros(0, 3), test_context=torch.zeros(0, 2))
    monkeypatch.setitem(DATASETS, "given-splits", lambda seed=0: DataBundle("given-splits", **empty))
    assert load("given-splits").test.shape == (0, 3)  # an empty split (test_fraction=0) is for the engine to refuse


def test_load_refuses_a_dataset_that_returns_no_bundle(monkeypatch) -> None:
    monkeypatch.setitem(DATASETS, "no-bundle", lambda seed=0: {"train": torch.zeros(4, 2)})
    with pytest.raises(TypeError, match="^dataset 'no-bundle' returned a dict, not a DataBundle$"):
        load("no-bundle")


@pytest.mark.parametrize("name, options, option", [
    ("table.csv", {"standardize": "false"}, "standardize"),
    ("table.npy", {"standardize": "flase"}, "standardize"),
    ("digits_vectors", {"binarize": "false"}, "binarize"),
    ("digits_vectors", {"dequantize": "no"}, "dequantize"),
    ("digits_vectors", {"binarize": 1}, "binarize"),
    ("digits", {"conditional": "nope"}, "conditional"),
    ("digits", {"raw": 0.5}, "raw"),
    ("mnist", {"conditional": "flase"}, "conditional"),
])
def test_an_on_off_option_that_is_not_a_bool_is_refused(tmp_path: Path, name: str, options: dict, option: str) -> None:
    """A string is truthy: ``standardize="false"`` standardised, ``binarize="false"`` binarised and
    ``conditional="nope"`` made the built-in images class-conditional, silently."""
    _write_csv(tmp_path / "table.csv", _table())
    np.save(tmp_path / "table.npy", _table())
    source = name if name in DATASETS else str(tmp_path / name)
    with pytest.raises(ValueError, match=rf"^{option} must be true or false, got {re.escape(repr(options[option]))}$"):
        load(source, **options)
    with pytest.raises(ValueError, match=r"^standardize must be true or false"):
        load(str(tmp_path / "table.csv"), standardize=None)


def test_the_image_readers_refuse_on_off_options_that_are_not_bools(tmp_path: Path) -> None:
    """``conditional="false"`` made a class-conditional bundle, ``raw="false"`` one of raw pixels."""
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") * 3 + bytes(8))
    assert load(str(path), test_fraction=0.0, val_fraction=0.0).train.shape == (2, 1, 2, 2)
    for read, option in ((lambda: load(str(path), conditional="false"), "conditional"),
                         (lambda: load(str(path), raw="false"), "raw"),
                         (lambda: load_rows(str(path), conditional="false"), "conditional")):
        with pytest.raises(ValueError, match=rf"^{option} must be true or false, got 'false'$"):
            read()


@pytest.mark.parametrize("column, words", [
    (np.tile([1e308, -1e308], 20), r"feature\(s\) \[1\] have a mean or standard deviation that overflows torch\.float64"),
    (1e40 + 1e34 * np.arange(40.0), r"feature\(s\) \[1\] have a mean or standard deviation beyond the largest float32"),
])
def test_features_too_large_for_their_statistics_are_named(tmp_path: Path, column: np.ndarray, words: str) -> None:
    """A standard deviation that overflows is NaN or inf: it was reported as "feature(s) [] are constant", and a
    mean beyond float32 as statistics that are not finite, naming no feature."""
    np.save(tmp_path / "big.npy", np.column_stack([np.arange(40.0), column]))
    with pytest.raises(ValueError, match=rf"^big\.npy: {words}.*; rescale them first"):
        load(str(tmp_path / "big.npy"), val_fraction=0.0, test_fraction=0.0)


@pytest.mark.parametrize("suffix", ["csv", "npy"])
def test_too_few_rows_and_constant_features_name_the_file(tmp_path: Path, suffix: str) -> None:
    """As every other table error does: "1 rows leave 1 for training" and "feature(s) [0] are constant" named
    no file."""
    def write(name: str, table: np.ndarray) -> str:
        path = tmp_path / f"{name}.{suffix}"
        if suffix == "csv":
            _write_csv(path, table)
        else:
            np.save(path, table)
        return str(path)

    with pytest.raises(ValueError, match=rf"^one\.{suffix}: 1 rows leave 1 for training; need at least 2$"):
        load(write("one", _table(1)))
    constant = np.column_stack([np.full(20, 7.0), np.arange(20.0)])
    with pytest.raises(ValueError, match=rf"^constant\.{suffix}: feature\(s\) \[0\] are constant in the training "
                                         r"split; drop them .*-d standardize=false"):
        load(write("constant", constant))


def test_numpy_integers_name_context_columns(tmp_path: Path) -> None:
    """An index from numpy (``np.argmax``, an index array) failed as "'numpy.int64' object is not iterable"."""
    path = _write_csv(tmp_path / "t.csv", _table(30))
    plain = load_rows(str(path), context_columns=[2])
    for columns in (np.int64(2), np.array([2]), [np.int32(-1)]):
        rows = load_rows(str(path), context_columns=columns)
        assert torch.equal(rows[0], plain[0]) and torch.equal(rows[1], plain[1])
    assert load_rows(str(path), context_columns=np.array([0, 2]))[1].shape == (30, 2)
    with pytest.raises(ValueError, match=r"context column True is not a column name or an index"):
        load_rows(str(path), context_columns=[True])
    # a single float or bool (-d context_columns=1.5): was "object of type 'float' has no len()"
    for column in (1.5, True, np.float64(2.0)):
        with pytest.raises(ValueError, match=rf"^context column {re.escape(repr(column))} is not a column name or an "
                                             r"index in \[-3, 3\)$"):
            load_rows(str(path), context_columns=column)
