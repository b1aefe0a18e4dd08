"""Class names of image data: a PNG folder's class sub-folders name its labels, and data read for a trained
class-conditional run take the run's label index of each class by name, not their position in the folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from invertible.data import load, load_rows
from invertible.data.images import relabel_classes

from .test_images import _write_idx


def _pngs(folder: Path, classes: dict[str, int], levels: int = 8, seed: int = 0) -> None:
    """``classes[name]`` random 1x4x4 grey PNGs of ``levels`` levels in sub-folder ``name`` of ``folder``."""
    rng = np.random.default_rng(seed)
    for name, count in classes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, levels, (4, 4), dtype=np.uint8)).save(folder / name / f"{i:02d}.png")


def test_a_png_folder_names_its_classes_by_its_sub_folders(tmp_path) -> None:
    _pngs(tmp_path / "abc", {"a": 2, "b": 2, "c": 2})
    bundle = load(str(tmp_path / "abc"), conditional=True, test_fraction=0.0, val_fraction=0.0)
    assert bundle.class_names == ["a", "b", "c"]
    assert load("digits").class_names == [str(i) for i in range(10)]


def test_rows_of_a_folder_take_the_label_index_of_their_class_name(tmp_path) -> None:
    _pngs(tmp_path / "bc", {"b": 2, "c": 1})
    _, context = load_rows(tmp_path / "bc", conditional=True, classes=["a", "b", "c"])
    assert context.tolist() == [[0, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert load_rows(tmp_path / "bc", conditional=True, classes=3)[1].tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 0]]
    _pngs(tmp_path / "bd", {"b": 1, "d": 1})
    with pytest.raises(ValueError, match=r"bd holds class\(es\) 'd' that the model does not know; its classes are "
                                         r"'a', 'b', 'c'"):
        load_rows(tmp_path / "bd", conditional=True, classes=["a", "b", "c"])


def test_a_bundle_is_relabelled_by_class_name(tmp_path) -> None:
    _pngs(tmp_path / "cb", {"b": 3, "c": 3})
    bundle = load(str(tmp_path / "cb"), conditional=True, test_fraction=0.3, val_fraction=0.2)
    moved = relabel_classes(bundle, ["a", "b", "c"])
    assert moved.class_names == ["a", "b", "c"] and moved.context_features == 3
    for split in ("train", "val", "test"):
        before, after = getattr(bundle, f"{split}_context"), getattr(moved, f"{split}_context")
        assert torch.equal(after[:, 0], torch.zeros(len(after))) and torch.equal(after[:, 1:], before)
        assert torch.equal(getattr(moved, split), getattr(bundle, split))
    assert relabel_classes(bundle, None) is bundle and relabel_classes(bundle, ["b", "c"]) is bundle
    with pytest.raises(ValueError, match=r"dataset 'cb' holds class\(es\) 'c' that the model does not know"):
        relabel_classes(bundle, ["a", "b"])


def test_numeric_labels_are_named_by_their_digits(tmp_path) -> None:
    """IDX labels 0..9 are the classes "0".."9": a file whose largest label is 3 still reads as 10 classes."""
    digits = [str(i) for i in range(10)]
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 4, 4), np.uint8), False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([3, 0, 3], np.uint8), False)
    _, context = load_rows(tmp_path / "t10k-images-idx3-ubyte", conditional=True, classes=digits)
    assert context.argmax(1).tolist() == [3, 0, 3] and context.shape == (3, 10)
    bundle = load(str(tmp_path / "t10k-images-idx3-ubyte"), conditional=True, test_fraction=0.0, val_fraction=0.0)
    assert bundle.class_names == ["0", "1", "2", "3"]
    assert torch.equal(relabel_classes(bundle, digits).train_context.argmax(1), bundle.train_context.argmax(1))
    with pytest.raises(ValueError, match=r"holds class\(es\) '3' that the model does not know; its classes are '0', '1'"):
        load_rows(tmp_path / "t10k-images-idx3-ubyte", conditional=True, classes=["0", "1"])
