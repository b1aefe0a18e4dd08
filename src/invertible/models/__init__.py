"""Model presets, by the names of their papers, and the registry that builds them by name."""

from .glow import Glow
from .made import MADE, BernoulliMADE
from .maf import IAF, MAF
from .nice import NICE
from .nsf import NSF
from .planar import Planar, Radial
from .realnvp import RealNVP
from .registry import available, build, get, preset_options, rebuild, register
from .sylvester import Sylvester

__all__ = [
    "BernoulliMADE", "Glow", "IAF", "MADE", "MAF", "NICE", "NSF", "Planar", "Radial", "RealNVP", "Sylvester",
    "available", "build", "get", "preset_options", "rebuild", "register",
]
