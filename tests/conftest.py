"""Test-session settings shared by every test module."""

import torch

from . import engine_data  # noqa: F401  (registers the small datasets of the engine tests)

# pytest-xdist runs one process per core: one intra-op thread each avoids oversubscription,
# which makes the small models of the tests many times slower.
torch.set_num_threads(1)
