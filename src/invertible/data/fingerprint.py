"""A fingerprint of a dataset's splits: SHA-256 digests that tell whether two loads gave the same data.

Each split is hashed with its context: shapes, then every value as little-endian
float32 in row-major order (so a row moved, edited or reordered changes it; a
change below float32 precision of a float64 source does not). The fingerprint
covers the data as the dataset delivers them *before* a preprocessing fitted to
them (a table's standardisation): such datasets hash their splits before the
fit (:attr:`DataBundle.split_digests`), because the standardised values depend
on the float32 rounding of the fitted statistics, which another summation order
may change. Splits without a fitted preprocessing are hashed as they are.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import Tensor

from .registry import SPLITS, DataBundle

__all__ = ["split_digest", "split_digests", "data_fingerprint", "changed_splits"]
#: Hashed first, so a digest of another layout can never equal one of this.
_TAG = b"invertible split, float32 little-endian, row-major\n"


def _update(h: hashlib._Hash, name: str, t: Tensor | None) -> None:
    """Feed ``t``'s name, shape and float32 bytes (or that it is absent) into ``h``."""
    if t is None:
        h.update(f"{name} none\n".encode())
        return
    h.update(f"{name} {list(t.shape)}\n".encode())
    h.update(np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy(), dtype="<f4"))


def split_digest(x: Tensor, context: Tensor | None) -> str:
    """SHA-256 (hex) of one split ``x`` and its ``context``."""
    h = hashlib.sha256(_TAG)
    _update(h, "data", x)
    _update(h, "context", context)
    return h.hexdigest()


def split_digests(splits: tuple[Tensor, Tensor, Tensor],
                  contexts: tuple[Tensor | None, Tensor | None, Tensor | None]) -> dict[str, str]:
    """The digest of each of the train, val and test ``splits`` with its context, by split name."""
    return {name: split_digest(x, c) for name, x, c in zip(SPLITS, splits, contexts)}


def data_fingerprint(bundle: DataBundle) -> dict[str, str]:
    """The fingerprint of ``bundle``: each split's digest (``train``, ``val``, ``test``; those the dataset took
    before a fitted preprocessing, see :attr:`DataBundle.split_digests`) and ``sha256``, one digest of all three."""
    digests = bundle.split_digests or split_digests(
        (bundle.train, bundle.val, bundle.test), (bundle.train_context, bundle.val_context, bundle.test_context))
    whole = hashlib.sha256("".join(f"{name}={digests[name]}\n" for name in SPLITS).encode()).hexdigest()
    return {"sha256": whole, **{name: digests[name] for name in SPLITS}}


def changed_splits(old: dict[str, str], new: dict[str, str]) -> list[str]:
    """The splits whose digests differ between fingerprints ``old`` and ``new``, in train, val, test order
    (a split ``old`` holds no digest of counts as changed)."""
    return [name for name in SPLITS if old.get(name) != new[name]]
