"""Datasets: generated 2-D toys, tabular files, images; all loaded through :func:`load`."""

from .registry import DATASETS, DataBundle, available, load, register_dataset, register_reader

__all__ = ["DataBundle", "available", "load", "register_dataset", "register_reader", "DATASETS"]
from . import images  # noqa: E402,F401  (registers the built-in image datasets)
from . import readers  # noqa: E402,F401  (registers the image file readers)
