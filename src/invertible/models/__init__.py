"""Model presets, by the names of their papers, and the registry that builds them by name."""

from .nice import NICE
from .planar import Planar, Radial
from .realnvp import RealNVP
from .registry import available, build, get, register
from .sylvester import Sylvester

__all__ = ["NICE", "RealNVP", "Planar", "Radial", "Sylvester", "available", "build", "get", "register"]
