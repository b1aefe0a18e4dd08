"""Datasets: generated 2-D toys, tabular files, images; all loaded through :func:`load`."""

from . import images, readers, sklearn_tabular, tabular, toy, uci
from .registry import (DATASETS, SPLITS, DataBundle, available, check_splits, dataset_options, load, load_rows,
                       register_dataset, register_reader, register_rows_reader, rows_options)
from .tabular import Standardize

__all__ = [
    "DataBundle", "SPLITS", "available", "check_splits", "load", "load_rows", "rows_options", "dataset_options",
    "register_dataset",
    "register_reader", "register_rows_reader", "DATASETS", "Standardize",
    "toy", "tabular", "sklearn_tabular", "uci", "images", "readers",
]
