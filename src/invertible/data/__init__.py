"""Datasets: generated 2-D toys, tabular files, images; all loaded through :func:`load`."""

from .registry import DATASETS, DataBundle, available, load, register_dataset, register_reader

__all__ = ["DataBundle", "available", "load", "register_dataset", "register_reader", "DATASETS"]

from . import sklearn_tabular, uci  # noqa: E402,F401  (registers wine, breast_cancer, digits, power, gas, ...)
