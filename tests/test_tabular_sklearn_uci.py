"""scikit-learn tabular sets and the MAF paper's UCI readers (on tiny fake files)."""

import numpy as np
import pandas as pd
import pytest
import torch

from invertible.data import load


@pytest.mark.parametrize("name, dim", [("wine", 13), ("breast_cancer", 30), ("digits_vectors", 64)])
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


def test_digits_binarized_and_dequantized():
    binary = load("digits_vectors", binarize=True)
    assert set(binary.train.unique().tolist()) == {0.0, 1.0} and binary.preprocess is None
    deq = load("digits_vectors", seed=3)
    raw, _ = deq.preprocess.inverse(deq.train)
    frac = raw - raw.floor()
    assert frac.std() > 0.2  # uniform noise present
    with pytest.raises(ValueError, match="at most one"):
        load("digits_vectors", binarize=True, dequantize=True)


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
    np.save(tmp_path / "miniboone/data.npy", rng.normal(size=(100, 4)))
    assert load("miniboone", root=str(tmp_path)).event_shape == (4,)

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
