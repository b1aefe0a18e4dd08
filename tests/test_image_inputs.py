"""Image data as users hand it over: integer pixel tensors, image files with odd contents, and the bits/dim of a run."""

from __future__ import annotations

import json
import math
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import invertible
from invertible.cli import main
from invertible.data import load
from invertible.data.images import image_preprocess
from invertible.transforms import UniformDequantization, VariationalDequantization


def _idx(path: Path, array: np.ndarray) -> None:
    """``array`` as an IDX file: magic ``00 00 type ndim``, big-endian sizes, the values big-endian."""
    codes = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
    kind = f"{array.dtype.kind}{array.dtype.itemsize}"
    head = bytes([0, 0, codes[kind], array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    path.write_bytes(head + array.astype(array.dtype.newbyteorder(">")).tobytes())


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
@pytest.mark.parametrize("variational", [False, True])
def test_dequantizers_take_integer_pixel_tensors(dtype: torch.dtype, variational: bool) -> None:
    """``uint8`` images (and other integer or boolean pixels) are dequantized as their float values are."""
    torch.manual_seed(0)
    levels = 2 if dtype == torch.bool else 17
    pixels = torch.randint(0, levels, (3, 1, 4, 4)).to(dtype)
    dequantize = VariationalDequantization(levels, (1, 4, 4)) if variational else UniformDequantization(levels)
    with torch.random.fork_rng():
        y, ladj = dequantize(pixels)
    expected_y, expected_ladj = dequantize(pixels.float())
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, expected_y)
    torch.testing.assert_close(ladj, expected_ladj)
    with torch.random.fork_rng():
        z, ladj = image_preprocess(levels)(pixels)
    torch.testing.assert_close((z, ladj), image_preprocess(levels)(pixels.float()))
    with pytest.raises(TypeError, match="real pixel values, got dtype torch.complex64"):
        dequantize(pixels.to(torch.complex64))
    if variational:  # a float64 model takes them as float64 (they were cast to the default float32, and failed)
        dequantize.double()
        with torch.random.fork_rng():
            y, ladj = dequantize(pixels)
        assert y.dtype == ladj.dtype == torch.float64
        torch.testing.assert_close((y, ladj), dequantize(pixels.double()))


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (2, 1, 6, 6), (2, 16)])
def test_variational_dequantization_names_images_of_another_shape(shape: tuple[int, ...]) -> None:
    dequantize = VariationalDequantization(17, (1, 4, 4))
    message = f"variational dequantization of images (1, 4, 4) got a batch of shape {shape}; expected (batch, 1, 4, 4)"
    with pytest.raises(ValueError) as e:
        dequantize(torch.zeros(shape))
    assert str(e.value) == message
    with pytest.raises(ValueError) as e:
        dequantize.inverse(torch.full(shape, 0.5))
    assert str(e.value) == message


@pytest.mark.parametrize("labels, message", [
    (np.zeros((6, 1), np.uint8), "expected an IDX vector of integer labels (n,), got uint8 values of shape (6, 1)"),
    (np.full(6, 1.5, np.float32), "expected an IDX vector of integer labels (n,), got >f4 values of shape (6,)"),
    (np.array([0, 1, -1, 2, 0, 1], np.int8), "labels must be >= 0, got -1"),
])
def test_idx_labels_that_are_not_class_numbers_are_refused(tmp_path: Path, labels: np.ndarray, message: str) -> None:
    _idx(tmp_path / "train-images-idx3-ubyte", np.zeros((6, 4, 4), np.uint8))
    _idx(tmp_path / "train-labels-idx1-ubyte", labels)
    with pytest.raises(ValueError) as e:
        load(str(tmp_path), conditional=True)
    assert str(e.value) == f"{tmp_path / 'train-labels-idx1-ubyte'}: {message}"


def test_idx_images_scaled_to_the_unit_interval_are_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "scaled-images-idx3-ubyte"
    _idx(path, np.random.default_rng(0).random((6, 4, 4)).astype(np.float32))
    with pytest.raises(ValueError) as e:
        load(str(path))
    assert str(e.value) == ("dataset 'scaled-images-idx3-ubyte': pixel values must be integers in [0, 255]; its values "
                            "lie in [0, 1] (pixels scaled to the unit interval?): pass the integer pixels, round(x * 255)")
    _idx(path, np.full((6, 4, 4), 300, np.int16))
    with pytest.raises(ValueError) as e:
        load(str(path))
    assert str(e.value) == "dataset 'scaled-images-idx3-ubyte': pixel values must be integers in [0, 255]"


def test_palette_pngs_are_read_as_the_colours_they_name(tmp_path: Path) -> None:
    """A palette PNG stores indices into its palette; the reader gives the intensities or colours they stand for."""
    rng = np.random.default_rng(0)
    grey, colour = tmp_path / "grey", tmp_path / "colour"
    grey.mkdir(), colour.mkdir()
    shades = rng.integers(0, 256, (3, 8, 8)).astype(np.uint8)
    for i, a in enumerate(shades):
        im = Image.fromarray(255 - a, mode="P")  # index k is the grey 255 - k
        im.putpalette([255 - k for k in range(256) for _ in range(3)])
        im.save(grey / f"{i}.png")
        assert np.array_equal(np.asarray(Image.open(grey / f"{i}.png")), 255 - a)
    rgb = rng.integers(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    for i, a in enumerate(rgb):
        Image.fromarray(a).quantize(16).save(colour / f"{i}.png")
    read = load(str(grey), test_fraction=0.0, val_fraction=0.0).train
    assert read.shape == (3, 1, 8, 8)
    assert sorted(read.flatten().tolist()) == sorted(shades.flatten().astype(float).tolist())
    read = load(str(colour), test_fraction=0.0, val_fraction=0.0).train
    expected = np.stack([np.asarray(Image.open(colour / f"{i}.png").convert("RGB")).transpose(2, 0, 1) for i in range(3)])
    assert read.shape == (3, 3, 8, 8)
    assert sorted(map(tuple, read.flatten(1).tolist())) == sorted(map(tuple, expected.reshape(3, -1).astype(float).tolist()))


@pytest.mark.parametrize("damage", ["truncated", "not an image"])
def test_an_unreadable_png_is_named(tmp_path: Path, damage: str) -> None:
    """PIL's error for a truncated file, "image file is truncated", named no file: in a folder of thousands of
    PNGs the bad one could not be found."""
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    bad = tmp_path / "2.png"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"plain text")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bad))}: cannot read it as a PNG image: "):
        load(str(tmp_path))


def test_pngs_are_found_whatever_the_case_of_their_suffix(tmp_path: Path) -> None:
    """Files named ``.PNG`` (as cameras and Windows write them) were not found: a folder of them was "no IDX files,
    CIFAR-10 batches or PNG images", and a folder of both kinds lost the upper-case ones."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 8, 8), dtype=np.uint8)
    for i, a in enumerate(images):
        Image.fromarray(a).save(tmp_path / f"{i}.PNG" if i % 2 else tmp_path / f"{i}.png", format="PNG")
    read = load(str(tmp_path), test_fraction=0.0, val_fraction=0.0).train
    assert read.shape == (4, 1, 8, 8)
    assert sorted(read.flatten(1).tolist()) == sorted(images.reshape(4, -1).astype(float).tolist())


def test_pngs_of_several_shapes_are_refused_with_an_example_file_of_each(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "a" / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(tmp_path / "b" / "grey.png")
    Image.fromarray(rng.integers(0, 256, (9, 8, 3), dtype=np.uint8)).save(tmp_path / "b" / "tall.png")
    with pytest.raises(ValueError) as e:
        load(str(tmp_path))
    assert str(e.value) == (
        f"PNG images in {tmp_path} differ in shape (channels, height, width): (1, 8, 8): 1 file(s), e.g. b/grey.png; "
        "(3, 8, 8): 3 file(s), e.g. a/0.png; (3, 9, 8): 1 file(s), e.g. b/tall.png"
    )


def test_the_bits_per_dim_of_a_run_count_the_levels_and_the_logit(tmp_path: Path, capsys) -> None:
    """``test_bpd`` of a Glow run on digits against a hand computation: the uniform noise of evaluation draw 0, the
    logit of RealNVP with ``alpha``, ``-d log 17`` of the dequantization and the logit's log-det."""
    run = tmp_path / "glow"
    assert main(["train", "--model", "glow", "--data", "digits", "--steps", "2", "--batch-size", "32", "--no-plots",
                 "--no-progress", "-m", "levels=1", "-m", "steps=1", "-m", "hidden=4", "-d", "alpha=0.1",
                 "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    capsys.readouterr()
    flow = invertible.load(run).eval()
    x = load("digits").test.double()
    torch.manual_seed(0)  # the evaluation's noise, drawn for the whole test split at once
    u = torch.rand(x.shape).double()
    alpha, d = 0.1, 64
    p = alpha + (1 - 2 * alpha) * (x + u) / 17
    y = torch.log(p) - torch.log1p(-p)
    ladj = -d * math.log(17) + (math.log(1 - 2 * alpha) - torch.log(p) - torch.log1p(-p)).flatten(1).sum(1)
    with torch.no_grad():
        log_p = flow.log_prob(y.float()).double() + ladj
    bpd = -log_p.mean().item() / (d * math.log(2))
    assert summary["test_bpd"] == pytest.approx(bpd, rel=1e-5)
    assert summary["test_nll"] == pytest.approx(-log_p.mean().item(), rel=1e-5)
    assert main(["eval", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["test_bpd"] == pytest.approx(bpd, rel=1e-5)


@pytest.mark.parametrize("content, message", [
    (lambda whole: whole[: len(whole) // 2],
     " is not a readable CIFAR-10 python batch (UnpicklingError: pickle data was truncated)"),
    (lambda whole: pickle.dumps({b"data": np.zeros((4, 3000), np.uint8), b"labels": [0] * 4}),
     ": a CIFAR-10 batch holds data of shape (n, 3072) and n labels, got data of shape (4, 3000) and labels of shape (4,)"),
    (lambda whole: pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3}),
     ": a CIFAR-10 batch holds data of shape (n, 3072) and n labels, got data of shape (4, 3072) and labels of shape (3,)"),
    (lambda whole: pickle.dumps([1, 2]), " is not a CIFAR-10 python batch (no data/labels)"),
])
def test_a_cifar_batch_that_is_cut_short_or_malformed_is_refused_by_name(tmp_path: Path, content, message: str) -> None:
    whole = pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]})
    (tmp_path / "data_batch_1").write_bytes(content(whole))
    with pytest.raises(ValueError) as e:
        load(str(tmp_path), conditional=True)
    assert str(e.value) == f"{tmp_path / 'data_batch_1'}{message}"
    (tmp_path / "data_batch_1").write_bytes(whole)
    assert load(str(tmp_path), conditional=True, test_fraction=0.25, val_fraction=0.0).train.shape == (3, 3, 32, 32)
