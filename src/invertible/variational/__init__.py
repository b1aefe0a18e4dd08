"""Variational inference with flows: reverse-KL fitting of unnormalized densities and VAEs with flow posteriors."""

from .approximations import FAMILIES, approximation
from .fit import ESTIMATORS, FitResult, evaluate, fit
from .targets import TARGETS, Target, get_target

__all__ = ["fit", "evaluate", "FitResult", "ESTIMATORS", "Target", "TARGETS", "get_target", "FAMILIES", "approximation"]
