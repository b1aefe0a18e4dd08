"""invertible: flow-based generative models and invertible neural networks on PyTorch.

``Transform`` is the one bijection contract (``forward``: data -> latent with
``log|det dz/dx|``; ``inverse``: latent -> data), ``Flow`` turns a transform and a
base distribution into a density model, and :mod:`invertible.models` builds the
classic flows by their papers' names.
"""

from . import distributions, models, transforms, vml
from .core import Compose, Flow, FlowDistribution, Inverse, LayerError, Transform
from .persistence import load

__version__ = "0.1.0"

vml.warm_up()  # before any parallel call of a VML function can race for its kernel (see invertible.vml)

__all__ = ["Transform", "Compose", "Inverse", "Flow", "FlowDistribution", "LayerError", "load", "models", "transforms", "distributions"]
