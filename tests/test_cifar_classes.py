"""CIFAR-10's class names: the ``label_names`` of ``batches.meta`` name the numeric labels, "0".."9" without it,
and runs that recorded the numbers (before the names were read) still read their data by label."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from invertible.cli import main
from invertible.data import load, load_rows
from invertible.data.images import number_names, relabel_classes

from .test_image_classes import TRAIN, _by_hand, _cli

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_LABELS = [3, 0, 9, 1, 3, 2, 8, 0, 5, 9, 4, 6, 7, 3, 1, 0]
TEST_LABELS = [9, 0, 3, 3]


def _cifar(folder: Path, meta: bytes | None) -> Path:
    """A two-batch CIFAR-10 python folder of random 3x32x32 images (labels above) and ``meta`` as batches.meta."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    parts = {"data_batch_1": TRAIN_LABELS[:10], "data_batch_2": TRAIN_LABELS[10:], "test_batch": TEST_LABELS}
    for name, labels in parts.items():
        batch = {b"data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8), b"labels": labels}
        (folder / name).write_bytes(pickle.dumps(batch))
    if meta is not None:
        (folder / "batches.meta").write_bytes(meta)
    return folder


def _meta(key, names) -> bytes:
    return pickle.dumps({key: names, b"num_cases_per_batch": 10000, b"num_vis": 3072})


@pytest.mark.parametrize("key, names", [
    (b"label_names", [n.encode() for n in NAMES]),  # CIFAR-10's own file, read with bytes
    ("label_names", NAMES),
    (b"label_names", NAMES),
], ids=["bytes", "str", "bytes-key-str-names"])
def test_cifar_classes_are_named_by_batches_meta(tmp_path, key, names) -> None:
    folder = _cifar(tmp_path / "cifar-10-batches-py", _meta(key, names))
    bundle = load(str(folder), conditional=True, val_fraction=0.0)
    assert bundle.class_names == NAMES and bundle.numbered_classes
    assert bundle.train_context.shape == (16, 10) and bundle.test_context.argmax(1).tolist() == TEST_LABELS
    _, context = load_rows(folder, conditional=True, classes=NAMES)
    assert context.argmax(1).tolist() == TRAIN_LABELS + TEST_LABELS
    _, shifted = load_rows(folder, conditional=True, classes=["extra", *NAMES])
    assert shifted.argmax(1).tolist() == [i + 1 for i in TRAIN_LABELS + TEST_LABELS]  # by name, not position


def test_runs_that_recorded_label_numbers_read_cifar_by_label(tmp_path) -> None:
    folder = _cifar(tmp_path / "c", _meta(b"label_names", [n.encode() for n in NAMES]))
    digits = number_names(10)
    _, context = load_rows(folder, conditional=True, classes=digits)
    assert context.argmax(1).tolist() == TRAIN_LABELS + TEST_LABELS and context.shape[1] == 10
    bundle = load(str(folder), conditional=True, val_fraction=0.25)
    moved = relabel_classes(bundle, digits)
    assert moved.class_names == digits
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(moved, f"{split}_context"), getattr(bundle, f"{split}_context"))
    assert relabel_classes(bundle, NAMES) is bundle
    with pytest.raises(ValueError, match="holds class"):  # names that are neither the run's nor its numbers
        relabel_classes(bundle, ["0", "1"])


@pytest.mark.parametrize("meta, why", [
    (None, None),
    (b"not a pickle", "not a readable pickle"),
    (pickle.dumps(["airplane"]), "not a dict"),
    (pickle.dumps({b"num_vis": 3072}), "no label_names"),
    (_meta(b"label_names", [1, 2, 3]), "no label_names"),
    (_meta(b"label_names", [b"\xff"] * 10), "not UTF-8"),
    (_meta(b"label_names", NAMES[:9]), "are not 10 or more"),
    (_meta(b"label_names", ["cat"] * 10), "are not 10 or more"),
], ids=["absent", "garbage", "list", "no-key", "ints", "not-utf8", "too-few", "repeated"])
def test_cifar_without_usable_meta_names_its_classes_by_number(tmp_path, meta, why) -> None:
    folder = _cifar(tmp_path / "c", meta)
    if why is None:
        bundle = load(str(folder), conditional=True)
    else:
        with pytest.warns(UserWarning, match=f"batches.meta is ignored.*{why}"):
            bundle = load(str(folder), conditional=True)
    assert bundle.class_names == number_names(10) and not bundle.numbered_classes
    assert bundle.test_context.argmax(1).tolist() == TEST_LABELS


def test_a_cifar_run_samples_by_class_name_and_an_old_run_evaluates_as_before(tmp_path, capsys) -> None:
    folder = _cifar(tmp_path / "cifar", _meta(b"label_names", [n.encode() for n in NAMES]))
    run = tmp_path / "run"
    assert main([*TRAIN, "--data", str(folder), "--out", str(run)]) == 0
    assert json.loads((run / "summary.json").read_text())["class_names"] == NAMES
    for label in ("cat", "3"):
        assert _cli(capsys, "sample", run, "-n", "2", "--label", label, "--out", tmp_path / f"{label}.npy")[0] == 0
    assert np.array_equal(np.load(tmp_path / "cat.npy"), np.load(tmp_path / "3.npy"))

    old = tmp_path / "old"  # the same run as recorded before the names were read: classes "0".."9"
    shutil.copytree(run, old)
    summary = json.loads((old / "summary.json").read_text())
    (old / "summary.json").write_text(json.dumps({**summary, "class_names": number_names(10)}))
    images, _ = load_rows(folder)
    expected = _by_hand(old, images, TRAIN_LABELS + TEST_LABELS)
    for r in (run, old):
        code, _, err = _cli(capsys, "eval", r, "--data", folder, "--split", "all", "--per-row", tmp_path / "all.npy")
        assert code == 0, err
        np.testing.assert_allclose(np.load(tmp_path / "all.npy"), expected, rtol=1e-6)
    code, _, err = _cli(capsys, "sample", old, "-n", "2", "--label", "3", "--out", tmp_path / "old.png")
    assert code == 0, err  # a .png grid reads the run's data, relabelled to the run's numbered classes
