"""``--split all`` and per-row log-densities: every row of the run's own dataset (its three splits), or of a file
read as it is, mapped by the preprocessing the run stores and scored row by row, nothing fitted to the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from invertible.data import load, load_rows
from invertible.models import build
from invertible.train import evaluate_split
from invertible.train.evaluate import split_log_densities, split_tensors

CPU = torch.device("cpu")


@pytest.mark.parametrize("conditional", [False, True])
def test_split_all_is_the_three_splits_in_order(conditional) -> None:
    bundle = load("engine-gauss", seed=2, conditional=conditional)
    data, context = split_tensors(bundle, "all")
    assert torch.equal(data, torch.cat([bundle.train, bundle.val, bundle.test]))
    if conditional:
        assert torch.equal(context, torch.cat([bundle.train_context, bundle.val_context, bundle.test_context]))
    else:
        assert context is None
    torch.manual_seed(0)
    flow = build("realnvp", features=2, layers=2, hidden=[8], context_features=3 if conditional else None)
    whole = evaluate_split(flow, bundle, "all", 64, CPU)
    parts = {s: evaluate_split(flow, bundle, s, 64, CPU) for s in ("train", "val", "test")}
    sizes = {s: len(getattr(bundle, s)) for s in parts}
    weighted = sum(parts[s][f"{s}_nll"] * sizes[s] for s in parts) / sum(sizes.values())
    assert whole["all_nll"] == pytest.approx(weighted, rel=1e-12)
    if not conditional:  # the data density is known: the KL gap is averaged over the rows alike
        assert whole["kl_gap"] == pytest.approx(sum(parts[s]["kl_gap"] * sizes[s] for s in parts) / 600, rel=1e-9)
    log_p, _ = split_log_densities(flow, bundle, "all", 64, CPU)
    assert torch.equal(log_p, split_log_densities(flow, bundle, "all", 7, CPU)[0])  # whatever the batch size
    with pytest.raises(ValueError, match="split must be train, val, test or all"):
        split_tensors(bundle, "every")


def test_load_rows_reads_a_table_as_it_is(tmp_path) -> None:
    """Every row in file order, a single row and constant columns included: nothing is split or fitted."""
    np.save(tmp_path / "one.npy", np.array([[1.0, 2.0, 2.0]]))
    data, context = load_rows(tmp_path / "one.npy")
    assert data.dtype == torch.float64 and data.tolist() == [[1.0, 2.0, 2.0]] and context is None
    (tmp_path / "t.csv").write_text("a;label;b\n1;0;5\n2;1;5\n3;0;5\n")
    data, context = load_rows(tmp_path / "t.csv", context_columns="label", delimiter=";")
    assert data.tolist() == [[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]]
    assert context.dtype == torch.float32 and context.tolist() == [[0.0], [1.0], [0.0]]
    with pytest.raises(ValueError, match="bad options for dataset .*standardize.*its options: context_columns$"):
        load_rows(tmp_path / "one.npy", standardize=False)
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="1 non-finite value"):
        load_rows(tmp_path / "nan.npy")
    with pytest.raises(ValueError, match="unsupported file type '.txt'"):
        (tmp_path / "t.txt").write_text("1\n")
        load_rows(tmp_path / "t.txt")


def _pngs(folder: Path, images: np.ndarray, labels: list[int] | None = None) -> None:
    """Write 1xHxW ``images`` as 8-bit grey PNGs (in class sub-folders when ``labels`` are given), named so
    they sort in their order."""
    for i, image in enumerate(images):
        where = folder if labels is None else folder / str(labels[i])
        where.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].astype(np.uint8)).save(where / f"{i:02d}.png")


def test_load_rows_reads_images_with_one_hot_labels(tmp_path) -> None:
    images = np.arange(3 * 16).reshape(3, 1, 4, 4) % 7
    _pngs(tmp_path / "png", images, labels=[0, 1, 1])
    data, context = load_rows(tmp_path / "png", conditional=True, classes=5)
    assert data.shape == (3, 1, 4, 4) and torch.equal(data, torch.as_tensor(images, dtype=torch.float32))
    assert context.tolist() == [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 1, 0, 0, 0]]
    assert load_rows(tmp_path / "png", conditional=True)[1].shape == (3, 2)  # as many classes as class folders
    assert load_rows(tmp_path / "png")[1] is None
    _pngs(tmp_path / "plain", images)
    with pytest.raises(ValueError, match="has no labels for every image, so it cannot be read with conditional=true"):
        load_rows(tmp_path / "plain", conditional=True)
