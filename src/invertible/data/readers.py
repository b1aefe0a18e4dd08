"""Readers for local image files: MNIST/Fashion-MNIST IDX, CIFAR-10 python batches, folders of PNGs.

``invertible.data.load(path)`` picks the reader by suffix: a directory (or an
IDX file without suffix) goes to :func:`read_image_path`, which recognises

- IDX files (``*-images-idx3-ubyte[.gz]`` with their ``*-labels-idx1-ubyte[.gz]``
  beside them; in a directory, ``train-*`` is the training set and ``t10k-*``
  the test set, and a directory of one set alone is read as that file), as
  published for MNIST and Fashion-MNIST;
- CIFAR-10's ``cifar-10-batches-py`` directory (``data_batch_*``, ``test_batch``;
  the class names are the ``label_names`` of its ``batches.meta`` where it has a
  readable one, else the label numbers ``"0"``, ``"1"``, ...);
- a folder of 8-bit PNG images (a palette PNG read as the colours it names), with
  one sub-folder per class for labels (the class names, sorted, in label order).

All give 8-bit images (256 levels) as :func:`~invertible.data.images.image_bundle` bundles.
"""

from __future__ import annotations

import dataclasses
import gzip
import pickle
import warnings
import zlib
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import Tensor

from .images import class_indices, image_bundle, number_names, numbers_to_names, one_hot
from .registry import DataBundle, check_flag, register_reader, register_rows_reader

if TYPE_CHECKING:  # Pillow is imported where a PNG folder is read
    from PIL import Image

__all__ = ["read_idx", "read_image_path", "read_image_rows"]

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as an array: magic ``00 00 type ndim``, big-endian sizes, data."""
    path = Path(path)
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise ValueError(f"{path} is not a readable gzip file: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    start = 4 + 4 * ndim
    if len(raw) < start:
        raise ValueError(f"{path}: IDX header of {ndim} sizes is cut short ({len(raw)} bytes)")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = int(np.prod(dims))
    if len(raw) - start != count * dtype.itemsize:
        raise ValueError(f"{path}: IDX header promises {dims} values, the file holds {(len(raw) - start) // dtype.itemsize}")
    return np.frombuffer(raw, dtype, count, start).reshape(dims)


def _idx_pair(images_path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    images = read_idx(images_path)
    if images.ndim != 3:
        raise ValueError(f"{images_path}: expected an IDX array of images (n, H, W), got shape {images.shape}")
    labels_path = images_path.with_name(images_path.name.replace("images-idx3", "labels-idx1").replace("images.idx3", "labels.idx1"))
    labels = read_idx(labels_path) if labels_path != images_path and labels_path.exists() else None
    if labels is not None and (labels.ndim != 1 or labels.dtype.kind not in "iu"):
        raise ValueError(f"{labels_path}: expected an IDX vector of integer labels (n,), got {labels.dtype} "
                         f"values of shape {labels.shape}")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{labels_path} has {len(labels)} labels for {len(images)} images")
    if labels is not None and labels.size and labels.min() < 0:
        raise ValueError(f"{labels_path}: labels must be >= 0, got {labels.min()}")
    return images[:, None].astype(np.float32), None if labels is None else labels.astype(np.int64)


def _find(directory: Path, pattern: str) -> Path | None:
    found = sorted(directory.glob(pattern))
    return found[0] if found else None


def _pngs(directory: Path) -> list[Path]:
    """The PNG files under ``directory``, sorted: every ``.png`` suffix, in any case (cameras and Windows write ``.PNG``)."""
    return sorted(p for p in directory.rglob("*") if p.suffix.lower() == ".png" and p.is_file())


def _cifar(directory: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    def batch(p: Path) -> tuple[np.ndarray, np.ndarray]:
        with open(p, "rb") as f:
            try:
                d = pickle.load(f, encoding="bytes")
            except Exception as e:  # an unpickler fails in many ways (EOFError, UnpicklingError, ValueError, ...)
                raise ValueError(f"{p} is not a readable CIFAR-10 python batch ({type(e).__name__}: {e})") from None
        if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
            raise ValueError(f"{p} is not a CIFAR-10 python batch (no data/labels)")
        data, labels = np.asarray(d[b"data"]), np.asarray(d[b"labels"])
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
            raise ValueError(f"{p}: a CIFAR-10 batch holds data of shape (n, 3072) and n labels, got data of shape "
                             f"{data.shape} and labels of shape {labels.shape}")
        return data.astype(np.uint8).reshape(-1, 3, 32, 32), labels.astype(np.int64)

    parts = [batch(p) for p in sorted(directory.glob("data_batch_*"))]
    train = (np.concatenate([p[0] for p in parts]).astype(np.float32), np.concatenate([p[1] for p in parts]))
    test_path = directory / "test_batch"
    test = batch(test_path) if test_path.exists() else None
    return train, None if test is None else (test[0].astype(np.float32), test[1])


def _cifar_label_names(directory: Path, classes: int) -> list[str] | None:
    """The class names of label ``0, 1, ...`` in ``directory/batches.meta``: its ``label_names`` (a pickled
    dict; keys and names ``str`` or, as CIFAR-10's own file has them, ``bytes``). ``None`` (the labels are
    named by their numbers) when there is no such file, or, with a warning, when it is unreadable or its
    names are not ``classes`` or more distinct non-empty strings (one per label at least)."""
    path = directory / "batches.meta"
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as f:
            meta = pickle.load(f, encoding="bytes")
    except Exception as e:  # an unpickler fails in many ways (EOFError, UnpicklingError, ValueError, ...)
        return _ignored(path, f"not a readable pickle ({type(e).__name__}: {e})")
    if not isinstance(meta, dict):
        return _ignored(path, f"not a dict but a {type(meta).__name__}")
    names = meta.get("label_names", meta.get(b"label_names"))
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, bytes)) for n in names):
        return _ignored(path, "no label_names list of strings")
    try:
        names = [n.decode() if isinstance(n, bytes) else n for n in names]
    except UnicodeDecodeError:
        return _ignored(path, "label_names that are not UTF-8 text")
    if len(names) < classes or "" in names or len(set(names)) != len(names):
        return _ignored(path, f"label_names {names} are not {classes} or more distinct non-empty names")
    return names


def _ignored(path: Path, why: str) -> None:
    warnings.warn(f"{path} is ignored, the classes are named by their label numbers: {why}", stacklevel=3)
    return None


def _palette_colours(im: "Image.Image") -> "Image.Image":
    """A palette PNG (mode ``P`` or ``PA``) as the colours its indices name: ``L`` when every colour it uses is a
    grey and nothing is transparent, else ``RGB`` (``RGBA`` with transparency); other images as they are. The
    pixels of a palette image are indices into its palette, not intensities."""
    if im.mode not in ("P", "PA"):
        return im
    if im.mode == "PA" or "transparency" in im.info:
        return im.convert("RGBA")
    rgb = im.convert("RGB")
    r, g, b = (np.asarray(channel) for channel in rgb.split())
    return rgb.convert("L") if np.array_equal(r, g) and np.array_equal(g, b) else rgb


def _png_folder(directory: Path, files: list[Path]) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """The PNGs ``files`` of ``directory`` (:func:`_pngs`), their labels and class names: the class sub-folders,
    sorted (``None`` and ``None`` without sub-folders)."""
    from PIL import Image

    classes = sorted({f.parent.relative_to(directory).as_posix() for f in files} - {"."})
    images = []
    for f in files:
        try:
            with Image.open(f) as im:
                a = np.asarray(_palette_colours(im))
        except OSError as e:  # PIL's "image file is truncated" names no file; a folder may hold thousands
            raise ValueError(f"{f}: cannot read it as a PNG image: {e}") from None
        if a.dtype != np.uint8:
            raise ValueError(f"{f}: only 8-bit PNGs are supported, got {a.dtype}")
        images.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    counts = Counter(image.shape for image in images)
    if len(counts) != 1:
        first: dict[tuple[int, ...], str] = {}
        for f, image in zip(files, images):
            first.setdefault(image.shape, f.relative_to(directory).as_posix())
        each = "; ".join(f"{shape}: {counts[shape]} file(s), e.g. {first[shape]}" for shape in sorted(counts))
        raise ValueError(f"PNG images in {directory} differ in shape (channels, height, width): {each}")
    labels = None
    if classes:
        index = {c: i for i, c in enumerate(classes)}
        if any(f.parent == directory for f in files):
            raise ValueError(f"{directory}: put every PNG in a class sub-folder, or none")
        labels = np.array([index[f.parent.relative_to(directory).as_posix()] for f in files])
    return np.stack(images).astype(np.float32), labels, classes or None


def _image_sets(path: Path) -> tuple[np.ndarray, np.ndarray | None, tuple[np.ndarray, np.ndarray | None] | None,
                                     list[str] | None, bool]:
    """The images and labels of an image file or directory, its separate test set (or ``None``), its class
    names where the files say (PNG class folders, CIFAR-10's ``batches.meta``; ``None`` for bare numeric
    labels) and whether those names name numeric labels (CIFAR-10's), not folders."""
    if path.is_file():
        return (*_idx_pair(path), None, None, False)
    if (idx := _find(path, "*train*images*idx3*") or _find(path, "*images*idx3*")) is not None:
        t10k = _find(path, "*t10k*images*idx3*")
        return (*_idx_pair(idx), _idx_pair(t10k) if t10k is not None and t10k != idx else None, None, False)
    if _find(path, "data_batch_*") is not None:
        (images, labels), test = _cifar(path)
        names = _cifar_label_names(path, _label_count(labels, test))
        return images, labels, test, names, names is not None
    if files := _pngs(path):
        images, labels, classes = _png_folder(path, files)
        return images, labels, None, classes, False
    raise ValueError(f"{path}: found no IDX files, CIFAR-10 batches or PNG images")


def _label_count(labels: np.ndarray, test: tuple[np.ndarray, np.ndarray | None] | None) -> int:
    """The number of classes numeric ``labels`` (and the test set's) imply: the largest label + 1."""
    return int(max(labels.max(), -1 if test is None or test[1] is None else test[1].max())) + 1


@register_reader("", ".gz", ".idx3-ubyte", ".idx3-ubyte.gz")
def read_image_path(
    path: str | Path,
    seed: int = 0,
    conditional: bool = False,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    limit: int | None = None,
    alpha: float = 0.05,
    raw: bool = True,
    dequantization: str = "uniform",
) -> DataBundle:
    """Images from an IDX file, an MNIST/Fashion-MNIST or CIFAR-10 directory, or a folder of PNGs.

    Where the files carry no test set, ``test_fraction`` of the images is held
    out by ``seed``. ``limit`` keeps the first ``limit`` training images;
    ``raw=False`` dequantizes once instead of per batch; ``dequantization`` is
    ``"uniform"`` or ``"variational"`` (see :mod:`invertible.data.images`).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    conditional, raw = check_flag("conditional", conditional), check_flag("raw", raw)
    path = Path(path)
    images, labels, test, names, numbered = _image_sets(path)
    if limit is not None:
        images = images[:limit]
        labels = None if labels is None else labels[:limit]
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must lie in [0, 1), got {test_fraction}")
    split = test if test is not None else int(round(test_fraction * len(images)))
    classes: int | list[str] | None = names
    if labels is not None and names is None:
        classes = _label_count(labels, test)
    bundle = image_bundle(path.name, images, labels, 256, seed, split, val_fraction, conditional, alpha, classes, raw,
                          dequantization)
    return dataclasses.replace(bundle, numbered_classes=True) if numbered else bundle


@register_rows_reader("", ".gz", ".idx3-ubyte", ".idx3-ubyte.gz")
def read_image_rows(path: str | Path, conditional: bool = False,
                    classes: int | Sequence[str] | None = None) -> tuple[Tensor, Tensor | None]:
    """Every image of an image file or directory (:func:`read_image_path`'s), the training set then a separate
    test set, as float32 pixels ``(n, C, H, W)``; with ``conditional`` their labels as one-hot contexts.

    ``classes`` gives the number of classes (labels are the files' own: positions among the class folders,
    or the numeric labels), or the class names in label order: each image then takes the index of its
    class's name (a class folder, or ``"0"``, ``"1"``, ... for numeric labels), and a class not among them
    is a ``ValueError``. By default the files' own labels, as many classes as they hold.
    """
    conditional = check_flag("conditional", conditional)
    path = Path(path)
    images, labels, test, names, numbered = _image_sets(path)
    if test is not None:
        images = np.concatenate([images, test[0]])
        labels = None if labels is None or test[1] is None else np.concatenate([labels, test[1]])
    context = None
    if conditional:
        if labels is None:
            raise ValueError(f"{path} has no labels for every image, so it cannot be read with conditional=true")
        if classes is None or isinstance(classes, int):
            context = one_hot(labels, classes or len(names or []) or int(labels.max()) + 1)
        else:
            own = names or number_names(int(labels.max()) + 1)
            lookup = numbers_to_names(classes, own) if numbered else list(classes)
            context = one_hot(class_indices([own[i] for i in labels], lookup, str(path)), len(classes))
    return torch.as_tensor(images, dtype=torch.float32), context
