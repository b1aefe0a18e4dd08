"""The flow families fitted to unnormalized densities by ``invertible fit-density`` and the variational benchmark.

- ``planar``, ``radial``, ``sylvester`` (Rezende & Mohamed 2015; van den Berg et al. 2018): K layers on a
  learnable diagonal Gaussian.
- ``iaf`` (Kingma et al. 2016): MADE layers of 2 x 64 units on a standard normal; sampling and the
  log-density of the samples, all reverse-KL fitting needs, take one MADE pass a layer.
- ``nsf`` (Durkan et al. 2019, autoregressive): rational-quadratic splines on ``[-5, 5]`` from MADEs of
  2 x 64 units on a standard normal; sampling takes ``D`` sequential steps a layer.
"""

from __future__ import annotations

from ..core import Flow
from ..models import build

__all__ = ["FAMILIES", "approximation"]

#: The families and their default number of layers.
FAMILIES: dict[str, int] = {"planar": 32, "radial": 32, "sylvester": 32, "iaf": 5, "nsf": 3}


def approximation(family: str, layers: int | None = None, features: int = 2) -> Flow:
    """A flow of ``family`` with ``layers`` layers (default :data:`FAMILIES`) on ``features`` dimensions."""
    if family not in FAMILIES:
        raise ValueError(f"unknown flow family {family!r}; choose from {list(FAMILIES)}")
    layers = FAMILIES[family] if layers is None else layers
    if family == "iaf":
        return build("iaf", features=features, layers=layers, hidden=[64, 64])
    if family == "nsf":
        return build("nsf", features=features, layers=layers, hidden=[64, 64], bound=5.0)
    return build(family, features=features, layers=layers, base="diagonal_normal")
