"""Real tabular data with no download: scikit-learn's bundled wine, breast cancer and digits sets.

Each is split once into train/validation/test (70/15/15) by a fixed
permutation — the same split for every ``seed`` and every run, so numbers are
comparable — and standardised with the training mean and standard deviation
(:class:`~invertible.data.tabular.Standardize`), fitted and applied in float64
as for tables read from files (:func:`~invertible.data.tabular.table_bundle`):
the statistics are rounded to the float32 the bundle's ``preprocess`` holds, and
the splits are cast to float32 after the map.
The standardisation is the bundle's ``preprocess`` bijection, whose log-det
``-sum_i log std_i`` turns a model's log-likelihood back into the raw units.

Digits are 8x8 images with integer intensities 0..16, used as 64-D vectors:
``dequantize=True`` (the default unless ``binarize``) keeps the integer pixels in the splits (``raw``)
with :func:`~invertible.data.tabular.dequantized_standardization` as the preprocessing, applied to every
batch as an image's is: fresh uniform noise ``y = (x + u) / 17``, then a standardisation by the exact
moments of ``y``. A continuous density on them is then a lower bound of the discrete likelihood
(``levels=17``), a file of integer pixel rows is scored by the same bound, and samples mapped back are
integer pixels. ``binarize=True`` gives 0/1 vectors (pixel > 8) for the Bernoulli MADE, unstandardised.
Without either, standardising fails: some pixels are constant in the training split.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .fingerprint import split_digests
from .registry import DataBundle, check_flag, register_dataset
from .tabular import dequantized_standardization, fit_float32, standardized

__all__ = ["wine", "breast_cancer", "digits", "fixed_split"]

SPLIT_SEED = 20150707  # fixed: the split never changes
#: The images that the digits' 64-D vectors are.
_DIGIT_SHAPE = (1, 8, 8)


def fixed_split(n: int, fractions: tuple[float, float] = (0.7, 0.15)) -> tuple[Tensor, Tensor, Tensor]:
    """Indices of a fixed train/validation/test split of ``n`` rows."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_train, n_val = int(fractions[0] * n), int(fractions[1] * n)
    return perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]


def _bundle(name: str, x: np.ndarray, labels: np.ndarray, class_names: list[str], standardize: bool = True,
            levels: int | None = None, dequantize: bool = False,
            picture_shape: tuple[int, int, int] | None = None) -> DataBundle:
    """The fixed split of rows ``x`` with one-hot ``labels``: standardised by the training split's statistics, or
    (``dequantize``: integers of ``levels`` levels) kept raw behind :func:`dequantized_standardization`."""
    data = torch.as_tensor(x, dtype=torch.float64)
    i_train, i_val, i_test = fixed_split(len(data))
    train, val, test = data[i_train], data[i_val], data[i_test]
    preprocess, digests = None, None
    one_hot = torch.nn.functional.one_hot(torch.as_tensor(labels, dtype=torch.long), len(class_names)).float()
    contexts = one_hot[i_train], one_hot[i_val], one_hot[i_test]
    if dequantize:
        preprocess = dequantized_standardization(levels, train)
    elif standardize:
        digests = split_digests((train, val, test), contexts)
        preprocess = fit_float32(train)
        train, val, test = (standardized(preprocess, part) for part in (train, val, test))
    train, val, test = (part.float() for part in (train, val, test))
    return DataBundle(
        name=name, train=train, val=val, test=test,
        train_context=contexts[0], val_context=contexts[1], test_context=contexts[2],
        levels=levels, preprocess=preprocess, class_names=class_names, split_digests=digests, raw=dequantize,
        picture_shape=picture_shape,
    )


@register_dataset("wine")
def wine(seed: int = 0) -> DataBundle:
    """UCI wine (bundled with scikit-learn): 178 x 13 chemical measurements, 3 cultivars as context."""
    from sklearn.datasets import load_wine

    d = load_wine()
    return _bundle("wine", d.data, d.target, list(d.target_names))


@register_dataset("breast_cancer")
def breast_cancer(seed: int = 0) -> DataBundle:
    """Wisconsin diagnostic breast cancer (bundled with scikit-learn): 569 x 30, malignant/benign as context."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return _bundle("breast_cancer", d.data, d.target, list(d.target_names))


@register_dataset("digits_vectors")
def digits(seed: int = 0, dequantize: bool | None = None, binarize: bool = False) -> DataBundle:
    """8x8 digits (bundled with scikit-learn) as 1,797 vectors of 64 pixels; the digit class as context.

    ``dequantize`` (the default unless ``binarize``): the integer pixels 0..16, dequantized afresh in every
    batch and standardised, for continuous flows; ``binarize=True``: 0/1 pixels (above 8) for the Bernoulli
    MADE. The split is fixed; ``seed`` changes nothing here.
    """
    from sklearn.datasets import load_digits

    binarize = check_flag("binarize", binarize)
    dequantize = None if dequantize is None else check_flag("dequantize", dequantize)
    if dequantize and binarize:
        raise ValueError("digits: choose at most one of dequantize and binarize")
    dequantize = not binarize if dequantize is None else dequantize
    d = load_digits()
    names = [str(c) for c in d.target_names]
    if binarize:
        return _bundle("digits_vectors", (d.data > 8).astype(np.float32), d.target, names, standardize=False, levels=2,
                       picture_shape=_DIGIT_SHAPE)
    x = d.data.astype(np.float64)
    if dequantize:
        return _bundle("digits_vectors", x, d.target, names, levels=17, dequantize=True, picture_shape=_DIGIT_SHAPE)
    try:
        return _bundle("digits_vectors", x, d.target, names)
    except ValueError as e:  # the integer pixels keep the border pixels that are 0 in every image
        raise ValueError(f"digits_vectors with dequantize=false: {e}; keep dequantize=true (the default) for a "
                         "continuous flow, or use binarize=true for a Bernoulli MADE") from None
