"""scikit-learn tabular sets and the MAF paper's UCI readers (on tiny fake files)."""

import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch

from invertible.data import load
from invertible.data.images import _digits_table
from invertible.data.sklearn_tabular import fixed_split


@pytest.mark.parametrize("name, dim", [("wine", 13), ("breast_cancer", 30)])
def test_sklearn_sets_are_standardised_with_fixed_splits(name, dim):
    a, b = load(name, seed=0), load(name, seed=1)
    assert a.event_shape == (dim,)
    torch.testing.assert_close(a.train.mean(0), torch.zeros(dim), atol=1e-4, rtol=0)
    torch.testing.assert_close(a.train.std(0, unbiased=False), torch.ones(dim), atol=1e-3, rtol=0)
    assert a.train_context.shape == (len(a.train), len(a.class_names))
    # the split is fixed: the same rows (labels) land in each split whatever the seed
    assert torch.equal(a.test_context, b.test_context)
    raw, _ = a.preprocess.inverse(a.test)
    assert torch.isfinite(raw).all()


def _raw_rows(name: str) -> np.ndarray:
    """The rows of scikit-learn set ``name`` in float64."""
    from sklearn import datasets

    return getattr(datasets, f"load_{name}")().data.astype(np.float64)


@pytest.mark.parametrize("name", ["wine", "breast_cancer"])
def test_sklearn_sets_are_standardised_in_float64_as_tables_read_from_files(name):
    """The training split's mean and std in float64 (numpy), rounded to float32, applied in float64, then cast."""
    raw = _raw_rows(name)
    splits = dict(zip(("train", "val", "test"), (i.numpy() for i in fixed_split(len(raw)))))
    mean, std = raw[splits["train"]].mean(0).astype(np.float32), raw[splits["train"]].std(0).astype(np.float32)
    bundle = load(name)
    assert np.array_equal(bundle.preprocess.mean.numpy(), mean) and np.array_equal(bundle.preprocess.std.numpy(), std)
    for split, rows in splits.items():
        expected = ((raw[rows] - mean.astype(np.float64)) / std.astype(np.float64)).astype(np.float32)
        assert np.array_equal(getattr(bundle, split).numpy(), expected), split


def test_digits_binarized_and_dequantized():
    binary = load("digits_vectors", binarize=True)
    assert set(binary.train.unique().tolist()) == {0.0, 1.0} and binary.preprocess is None
    deq = load("digits_vectors", seed=3)
    y, _ = deq.preprocess(deq.train)  # uniform noise drawn per batch
    scaled, _ = deq.preprocess.transforms[1].inverse(y)
    frac = scaled * 17 - deq.train
    assert frac.min() >= 0 and frac.max() < 1 and frac.std() > 0.2
    with pytest.raises(ValueError, match="at most one"):
        load("digits_vectors", binarize=True, dequantize=True)


def test_digits_kept_as_integers_are_refused_with_the_settings_that_work():
    """Without noise, the border pixels that are 0 in every image cannot be standardised; the error was the
    table's 'constant features', which named neither the option that caused it nor the two that work."""
    with pytest.raises(ValueError, match=r"digits_vectors with dequantize=false: feature\(s\) \[0, .*\] are constant"
                                         r".*keep dequantize=true \(the default\).*or use binarize=true"):
        load("digits_vectors", dequantize=False)


def test_scikit_learn_tables_split_70_15_15() -> None:
    """``int(0.7 n)`` training rows, ``int(0.15 n)`` validation rows, the rest for the test, disjoint."""
    n = 178  # wine's rows
    train, val, test = fixed_split(n)
    assert (len(train), len(val), len(test)) == (124, 26, 28)
    assert sorted(torch.cat([train, val, test]).tolist()) == list(range(n))


def test_digit_vectors_binarize_above_half_intensity_and_have_17_levels() -> None:
    """Pixels are intensities 0..16 (17 levels); ``binarize`` keeps ``pixel > 8``."""
    pixels = torch.as_tensor(_digits_table()[:, :64], dtype=torch.float32)  # the images of load_digits
    train, _, _ = fixed_split(len(pixels))
    assert torch.equal(load("digits_vectors", binarize=True).train, (pixels[train] > 8).float())
    assert load("digits_vectors").levels == int(pixels.max()) + 1 == 17


def test_uci_readers_follow_the_maf_preprocessing(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "power").mkdir()
    np.save(tmp_path / "power/data.npy", rng.normal(size=(300, 8)))
    p = load("power", root=str(tmp_path))
    assert p.event_shape == (6,) and (len(p.train), len(p.val), len(p.test)) == (243, 27, 30)
    both = torch.cat([p.train, p.val])
    torch.testing.assert_close(both.mean(0), torch.zeros(6), atol=1e-5, rtol=0)

    (tmp_path / "gas").mkdir()
    base = rng.normal(size=(200, 5))
    cols = {"Time": np.arange(200.0), "Meth": rng.normal(size=200), "Eth": rng.normal(size=200)}
    cols.update({f"s{i}": base[:, i] for i in range(5)})
    cols["s5"] = base[:, 0] * 2 + 1e-4 * rng.normal(size=200)  # correlated with s0: one of them goes
    pd.DataFrame(cols).to_pickle(tmp_path / "gas/ethylene_CO.pickle")
    g = load("gas", root=str(tmp_path))
    assert g.event_shape == (5,) and len(g.test) == 20

    (tmp_path / "hepmass").mkdir()
    header = "# label," + ",".join(f"f{i}" for i in range(4))
    train = np.column_stack([rng.integers(0, 2, 100), rng.normal(size=(100, 4))])
    train[:10, 0] = 1
    train[:10, 4] = -9.0  # the smallest value repeated 10 times among signal rows: dropped
    test = np.column_stack([rng.integers(0, 2, 50), rng.normal(size=(50, 4)), np.zeros(50)])
    np.savetxt(tmp_path / "hepmass/1000_train.csv", train, delimiter=",", header=header[2:], comments="# ")
    np.savetxt(tmp_path / "hepmass/1000_test.csv", test, delimiter=",", header=header[2:] + ",mass", comments="# ")
    h = load("hepmass", root=str(tmp_path))
    assert h.event_shape == (3,)
    assert len(h.test) == int((test[:, 0] == 1).sum())

    (tmp_path / "miniboone").mkdir()
    np.save(tmp_path / "miniboone/data.npy", rng.normal(size=(100, 43)))
    assert load("miniboone", root=str(tmp_path)).event_shape == (43,)

    (tmp_path / "BSDS300").mkdir()
    for k in ("train", "validation", "test"):
        np.save(tmp_path / f"BSDS300/{k}.npy", rng.normal(size=(20, 63)))
    assert load("bsds300", root=str(tmp_path)).event_shape == (63,)


def test_power_has_the_maf_codes_noise_and_splits(tmp_path):
    """The MAF code (datasets/power.py) draws the voltage noise before the active-power noise."""
    raw = np.random.default_rng(1).normal(size=(200, 8))
    (tmp_path / "power").mkdir()
    np.save(tmp_path / "power/data.npy", raw)
    rng = np.random.RandomState(42)
    data = raw.copy()
    rng.shuffle(data)
    n = len(data)
    data = np.delete(np.delete(data, 3, axis=1), 1, axis=1)
    voltage_noise = 0.01 * rng.rand(n, 1)
    gap_noise = 0.001 * rng.rand(n, 1)
    data = data + np.hstack((gap_noise, voltage_noise, rng.rand(n, 3), np.zeros((n, 1))))
    test, data = data[-20:], data[:-20]
    val, train = data[-18:], data[:-18]
    both = np.vstack((train, val))
    mu, s = both.mean(0), both.std(0)
    p = load("power", root=str(tmp_path))
    for ours, theirs in ((p.train, train), (p.val, val), (p.test, test)):
        torch.testing.assert_close(ours, torch.as_tensor((theirs - mu) / s, dtype=torch.float32))


def test_uci_missing_files_say_where_to_put_them(tmp_path):
    with pytest.raises(ValueError, match="INVERTIBLE_DATA"):
        load("power", root=str(tmp_path))


def _maf_gas(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The MAF code's datasets/gas.py: drop the targets and time, then the first column of any pair correlated
    above 0.98 until none is left, standardise (pandas' ``std``, ddof 1), last 10% test, last 10% of the rest val."""
    data = frame.drop(columns=["Meth", "Eth", "Time"])
    counts = (data.corr() > 0.98).values.sum(axis=1)
    while np.any(counts > 1):
        data = data.drop(columns=data.columns[np.where(counts > 1)[0][0]])
        counts = (data.corr() > 0.98).values.sum(axis=1)
    data = ((data - data.mean()) / data.std()).values
    n_test = int(0.1 * len(data))
    test, rest = data[-n_test:], data[:-n_test]
    n_val = int(0.1 * len(rest))
    return rest[:-n_val], rest[-n_val:], test


def test_gas_has_the_maf_codes_columns_scaling_and_splits(tmp_path):
    rng = np.random.default_rng(2)
    base = rng.normal(size=(300, 4))
    frame = pd.DataFrame({"Time": np.arange(300.0), "Meth": rng.normal(size=300), "Eth": rng.normal(size=300),
                          **{f"s{i}": base[:, i] * (i + 1) + i for i in range(4)}})
    frame["twin"] = 3 * frame["s0"] + 1e-3 * rng.normal(size=300)  # correlation ~1 with s0: s0, the first, goes
    frame["near"] = frame["s1"] + 0.7 * rng.normal(size=300)  # correlation ~0.94 with s1: both stay
    (tmp_path / "gas").mkdir()
    frame.to_pickle(tmp_path / "gas/ethylene_CO.pickle")
    g = load("gas", root=str(tmp_path))
    assert g.event_shape == (5,)
    for ours, theirs in zip((g.train, g.val, g.test), _maf_gas(frame)):
        torch.testing.assert_close(ours, torch.as_tensor(theirs, dtype=torch.float32))


def test_hepmass_has_the_maf_codes_signal_rows_features_and_splits(tmp_path):
    """datasets/hepmass.py: signal rows (label 1), the test file's trailing column dropped, standardised by the
    training mean and ddof-1 std, features whose *smallest* value occurs more than 5 times dropped."""
    rng = np.random.default_rng(3)
    n = 120
    features = rng.normal(size=(n, 4))
    labels = np.ones(n)
    labels[::4] = 0  # background rows: never used
    signal = np.flatnonzero(labels == 1)
    features[signal[:5], 1] = -50.0  # smallest value 5 times among the signal rows: kept
    features[signal[:6], 2] = -50.0  # 6 times: dropped
    features[signal[:20], 3] = 0.5  # a value in the middle 20 times: kept, only the smallest counts
    features[labels == 0, 0] = 1e3  # background rows far off: they would move the statistics
    test = np.column_stack([np.arange(30) % 3 > 0, rng.normal(size=(30, 4)), np.full(30, 1000.0)])  # + a mass column
    (tmp_path / "hepmass").mkdir()
    header = "label," + ",".join(f"f{i}" for i in range(4))
    train_file, test_file = tmp_path / "hepmass/1000_train.csv", tmp_path / "hepmass/1000_test.csv"
    np.savetxt(train_file, np.column_stack([labels, features]), delimiter=",", header=header, comments="")
    np.savetxt(test_file, test, delimiter=",", header=header + ",mass", comments="")
    train = pd.read_csv(train_file)
    train = train[train[train.columns[0]] == 1].drop(columns=train.columns[0])
    theirs_test = pd.read_csv(test_file)
    theirs_test = theirs_test[theirs_test[theirs_test.columns[0]] == 1].iloc[:, 1:-1]
    mu, s = train.mean(), train.std()
    train, theirs_test = ((train - mu) / s).values, ((theirs_test - mu) / s).values
    keep = [0, 1, 3]
    n_val = int(0.1 * len(train))
    h = load("hepmass", root=str(tmp_path))
    expected = (train[:-n_val][:, keep], train[-n_val:][:, keep], theirs_test[:, keep])
    for ours, theirs in zip((h.train, h.val, h.test), expected):
        torch.testing.assert_close(ours, torch.as_tensor(theirs, dtype=torch.float32))


def test_hepmass_refuses_a_test_file_without_its_trailing_column(tmp_path):
    """A test file of the training file's width would lose a feature to the dropped trailing column."""
    rng = np.random.default_rng(5)
    (tmp_path / "hepmass").mkdir()
    rows = np.column_stack([np.ones(40), rng.normal(size=(40, 4))])
    header = "label," + ",".join(f"f{i}" for i in range(4))
    for name in ("1000_train.csv", "1000_test.csv"):
        np.savetxt(tmp_path / "hepmass" / name, rows, delimiter=",", header=header, comments="")
    with pytest.raises(ValueError, match="1000_test.csv must have one column more than 1000_train.csv.*got 5 and 5"):
        load("hepmass", root=str(tmp_path))


def test_hepmass_refuses_a_file_whose_every_feature_is_discrete(tmp_path):
    """Every feature dropped for its repeated smallest value left a bundle of 0 features."""
    (tmp_path / "hepmass").mkdir()
    rows = np.column_stack([np.ones(40), np.arange(40) % 4, np.arange(40) % 3])
    np.savetxt(tmp_path / "hepmass/1000_train.csv", rows, delimiter=",", header="label,a,b", comments="")
    np.savetxt(tmp_path / "hepmass/1000_test.csv", np.column_stack([rows, np.ones(40)]), delimiter=",",
               header="label,a,b,mass", comments="")
    with pytest.raises(ValueError, match=r"^hepmass: every feature of .*1000_train.csv has its smallest value more "
                                         r"than 5 times .*none is left$"):
        load("hepmass", root=str(tmp_path))


def _fake_h5py(monkeypatch, parts: dict) -> None:
    """A stand-in for h5py whose every ``File`` holds the arrays ``parts`` by name."""

    class File(dict):
        def __init__(self, path, mode):
            super().__init__(parts)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setitem(sys.modules, "h5py", types.SimpleNamespace(File=File))


def test_miniboone_is_normalised_by_train_and_validation_together(tmp_path):
    data = np.random.default_rng(4).normal(size=(200, 43)) * np.linspace(0.1, 5.0, 43) + 7.0
    (tmp_path / "miniboone").mkdir()
    np.save(tmp_path / "miniboone/data.npy", data)
    test, rest = data[-20:], data[:-20]
    val, train = rest[-18:], rest[:-18]
    mu, s = rest.mean(0), rest.std(0)
    m = load("miniboone", root=str(tmp_path))
    for ours, theirs in ((m.train, train), (m.val, val), (m.test, test)):
        torch.testing.assert_close(ours, torch.as_tensor((theirs - mu) / s, dtype=torch.float32))


def test_bsds300_keeps_the_files_own_splits(tmp_path, monkeypatch):
    """train/validation/test, from .npy files or from BSDS300.hdf5 (read through a stand-in for h5py)."""
    parts = {k: np.full((3 + i, 63), float(i)) for i, k in enumerate(("train", "validation", "test"))}
    folder = tmp_path / "BSDS300"
    folder.mkdir()
    for k, a in parts.items():
        np.save(folder / f"{k}.npy", a)
    b = load("bsds300", root=str(tmp_path))
    assert [float(s[0, 0]) for s in (b.train, b.val, b.test)] == [0.0, 1.0, 2.0]
    _fake_h5py(monkeypatch, parts)
    (folder / "BSDS300.hdf5").write_bytes(b"")
    for k in parts:
        (folder / f"{k}.npy").unlink()
    b = load("bsds300", root=str(tmp_path))
    assert [float(s[0, 0]) for s in (b.train, b.val, b.test)] == [0.0, 1.0, 2.0]


def test_bsds300_reads_its_npy_files_beside_an_hdf5_file_without_h5py(tmp_path, monkeypatch):
    """As documented: BSDS300.hdf5 with h5py, otherwise the .npy files (refused although they were there); without
    them the error says to install h5py or save them; an hdf5 file without one of the splits names what it holds."""
    root = _bsds300(tmp_path)
    (tmp_path / "BSDS300/BSDS300.hdf5").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py raises ImportError
    assert len(load("bsds300", root=root).test) == 4
    (tmp_path / "BSDS300/test.npy").unlink()
    with pytest.raises(ValueError, match=r"^bsds300: reading .*BSDS300.hdf5 needs h5py: install it, or save its "
                                         r"datasets as .*BSDS300/test.npy$"):
        load("bsds300", root=root)
    _fake_h5py(monkeypatch, {"train": np.zeros((5, 63)), "test": np.zeros((4, 63))})
    with pytest.raises(ValueError, match=r"^bsds300: .*BSDS300.hdf5 holds no dataset 'validation' \(it holds "
                                         r"'train', 'test'\)$"):
        load("bsds300", root=root)


def _bsds300(tmp_path, **parts) -> str:
    """A BSDS300 folder of train/validation/test ``.npy`` files, 63 columns of noise unless given in ``parts``."""
    folder = tmp_path / "BSDS300"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for k, rows in (("train", 5), ("validation", 3), ("test", 4)):
        np.save(folder / f"{k}.npy", parts.get(k, rng.normal(size=(rows, 63))))
    return str(tmp_path)


def test_bsds300_refuses_a_test_file_shaped_unlike_its_training_file(tmp_path):
    """The files' own splits are read separately: ``load`` refuses a test file of another width, naming the
    dataset and the split, as the training engine does (a bundle of mismatched splits used to be returned)."""
    with pytest.raises(ValueError, match=r"^bsds300: .*BSDS300 \(test\) should be 8x8 patches less one pixel, "
                                         r"\(N, 63\); got \(4, 62\)$"):
        load("bsds300", root=_bsds300(tmp_path, test=np.zeros((4, 62))))


_NAN = np.zeros((4, 63))
_NAN[2, 5] = np.nan


@pytest.mark.parametrize("parts, split, words", [
    ({k: np.zeros(20) for k in ("train", "validation", "test")}, "train",
     r"should hold a non-empty 2-D array \(rows, features\), got shape \(20,\)"),
    ({k: np.zeros((20, 8, 8)) for k in ("train", "validation", "test")}, "train",
     r"should hold a non-empty 2-D array \(rows, features\), got shape \(20, 8, 8\)"),
    ({"test": np.zeros((4, 63, 1))}, "test",
     r"should hold a non-empty 2-D array \(rows, features\), got shape \(4, 63, 1\)"),
    ({"test": _NAN}, "test", r"holds 1 NaN or inf value\(s\), the first at row 2, column 5"),
    ({"validation": np.full((3, 63), "a")}, "validation", r"should hold real numbers, got dtype <U1"),
])
def test_bsds300_files_are_checked_as_tables_naming_the_file(tmp_path, parts, split, words):
    """The other UCI sets' checks: 1-D files made a bundle of event shape (), 3-D ones one of 8x8 patches, a NaN
    gave "the data contain non-finite values" (no file, no split) and text a torch ``TypeError``."""
    with pytest.raises(ValueError, match=rf"^bsds300: .*BSDS300/{split}\.npy {words}$"):
        load("bsds300", root=_bsds300(tmp_path, **parts))


def test_bsds300_hdf5_splits_are_checked_as_tables_naming_the_file(tmp_path, monkeypatch):
    """BSDS300.hdf5 (read through a stand-in for h5py) is checked as its ``.npy`` files are."""
    parts = {"train": np.zeros((5, 63)), "validation": np.zeros((3, 63)), "test": _NAN}
    _fake_h5py(monkeypatch, parts)
    (tmp_path / "BSDS300").mkdir()
    (tmp_path / "BSDS300/BSDS300.hdf5").write_bytes(b"")
    with pytest.raises(ValueError, match=r"^bsds300: .*BSDS300/BSDS300\.hdf5 dataset 'test' holds 1 NaN or inf "
                                         r"value\(s\), the first at row 2, column 5$"):
        load("bsds300", root=str(tmp_path))


def _miniboone(tmp_path, data) -> str:
    (tmp_path / "miniboone").mkdir(exist_ok=True)
    np.save(tmp_path / "miniboone/data.npy", data)
    return str(tmp_path)


@pytest.mark.parametrize("rows, split", [(9, "test"), (10, "validation"), (5, "test")])
def test_uci_tail_split_refuses_too_few_rows_for_a_split(tmp_path, rows, split):
    """``data[-int(0.1 n):]`` is every row when ``int(0.1 n)`` is 0: the test (or validation) split took all rows
    and left the others empty, which surfaced as "non-finite values" (statistics of no rows)."""
    root = _miniboone(tmp_path, np.random.default_rng(0).normal(size=(rows, 43)))
    with pytest.raises(ValueError, match=rf"^miniboone: \d+ rows are too few to hold out the last 10% as the {split} split$"):
        load("miniboone", root=root)
    assert [len(s) for s in (lambda b: (b.train, b.val, b.test))(
        load("miniboone", root=_miniboone(tmp_path, np.random.default_rng(0).normal(size=(11, 43)))))] == [9, 1, 1]


@pytest.mark.parametrize("data, words", [
    (np.ones(30), r"should hold a non-empty 2-D array \(rows, features\), got shape \(30,\)"),
    (np.zeros((0, 3)), r"should hold a non-empty 2-D array \(rows, features\), got shape \(0, 3\)"),
    (np.array([[1.0, 2.0]] * 29 + [[np.nan, 1.0]]), r"holds 1 NaN or inf value\(s\), the first at row 29, column 0"),
    (np.full((30, 2), "a"), r"should hold real numbers, got dtype <U1"),
    (np.column_stack([np.arange(30.0)[:, None] + np.arange(42.0), np.full(30, 4.0)]), r"feature\(s\) \[42\] are constant"),
    (np.column_stack([np.arange(30.0)[:, None] + np.arange(42.0), np.full(30, 1e308) * (np.arange(30) % 2)]),
     r"the mean or standard deviation of feature\(s\) \[42\] overflows the float range"),
    (np.zeros((30, 50)), r"miniboone/data.npy should be the MAF code's cleaned array \(the UCI file has 50 columns, of "
                         r"which it drops 7 and outliers\), \(N, 43\); got \(30, 50\)"),
])
def test_uci_arrays_are_checked_with_errors_that_say_what_is_wrong(tmp_path, data, words):
    """A 1-D array, NaN or a constant feature used to fail as a numpy shape error or "the data contain
    non-finite values" (a division by a zero standard deviation)."""
    with pytest.raises(ValueError, match=rf"^miniboone: .*{words}"):
        load("miniboone", root=_miniboone(tmp_path, data))


def test_uci_npy_files_that_are_not_npy_arrays_are_named(tmp_path):
    root = _miniboone(tmp_path, np.zeros((30, 2)))
    (tmp_path / "miniboone/data.npy").write_text("1,2\n3,4\n")
    with pytest.raises(ValueError, match=r"cannot read .*miniboone/data.npy as a .npy array"):
        load("miniboone", root=root)


def test_gas_without_the_maf_columns_or_with_a_constant_sensor_is_refused(tmp_path):
    (tmp_path / "gas").mkdir()
    path = tmp_path / "gas/ethylene_CO.pickle"
    pd.DataFrame({"Time": np.arange(40.0), "s0": np.arange(40.0) % 7}).to_pickle(path)
    with pytest.raises(ValueError, match=r"^gas: .*the columns Meth, Eth and Time .*missing \['Meth', 'Eth'\]"):
        load("gas", root=str(tmp_path))  # was a pandas KeyError
    rng = np.random.default_rng(0)
    pd.DataFrame({"Time": np.arange(40.0), "Meth": rng.normal(size=40), "Eth": rng.normal(size=40),
                  "s0": rng.normal(size=40), "s1": np.full(40, 2.0)}).to_pickle(path)
    with pytest.raises(ValueError, match=r"^gas: feature\(s\) \[1\] are constant"):
        load("gas", root=str(tmp_path))


@pytest.mark.parametrize("content, words", [
    (b"not a pickle", "invalid load key"),
    (b"", "Ran out of input"),
])
def test_a_gas_file_that_is_not_a_pickle_is_named(tmp_path, content, words):
    """A corrupt or empty ethylene_CO.pickle used to fail as pickle's ``UnpicklingError`` or ``EOFError``."""
    (tmp_path / "gas").mkdir()
    (tmp_path / "gas/ethylene_CO.pickle").write_bytes(content)
    with pytest.raises(ValueError, match=rf"^gas: cannot read .*gas/ethylene_CO\.pickle as a pandas pickle "
                                         rf"\(a DataFrame saved with DataFrame\.to_pickle\): .*{words}"):
        load("gas", root=str(tmp_path))


def _hepmass(tmp_path, train, test) -> str:
    (tmp_path / "hepmass").mkdir(exist_ok=True)
    for name, rows in (("1000_train.csv", train), ("1000_test.csv", test)):
        text = rows if isinstance(rows, str) else "\n".join(",".join(map(str, r)) for r in rows)
        (tmp_path / "hepmass" / name).write_text(f"label,f0,f1,mass\n{text}\n")
    return str(tmp_path)


def test_hepmass_bad_files_give_errors_that_name_the_problem(tmp_path):
    rng = np.random.default_rng(0)
    train = [[1, *rng.normal(size=2)] for _ in range(30)]
    test = [[1, *rng.normal(size=2), 1000] for _ in range(5)]
    with pytest.raises(ValueError, match=r"^hepmass: cannot read .*1000_train.csv as comma-separated numbers"):
        load("hepmass", root=_hepmass(tmp_path, "1,2,x", test))
    with pytest.raises(ValueError, match=r"^hepmass: 0 training and 5 test rows of the signal class"):
        load("hepmass", root=_hepmass(tmp_path, [[0, *r[1:]] for r in train], test))  # was an IndexError
    with pytest.raises(ValueError, match=r"^hepmass: feature\(s\) \[1\] are constant"):
        load("hepmass", root=_hepmass(tmp_path, [[*r[:2], 3.0] for r in train], test))
    with pytest.raises(ValueError, match=r"^hepmass: 9 rows are too few to hold out the last 10% as the validation"):
        load("hepmass", root=_hepmass(tmp_path, train[:9], test))
    with pytest.raises(ValueError, match=r"^hepmass: .*1000_train.csv holds 1 NaN or inf value\(s\), the first at row 2"):
        load("hepmass", root=_hepmass(tmp_path, [*train[:2], [1, float("nan"), 0.5], *train[3:]], test))
    assert load("hepmass", root=_hepmass(tmp_path, train, test)).event_shape == (2,)
