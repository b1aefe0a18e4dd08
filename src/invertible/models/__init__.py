"""Model presets, by the names of their papers, and the registry that builds them by name."""

from .made import MADE, BernoulliMADE
from .maf import IAF, MAF
from .nice import NICE
from .nsf import NSF
from .realnvp import RealNVP
from .registry import available, build, get, register

__all__ = ["MADE", "BernoulliMADE", "MAF", "IAF", "NICE", "NSF", "RealNVP", "available", "build", "get", "register"]
