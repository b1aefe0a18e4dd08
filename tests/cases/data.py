"""Cases for the data preprocessing bijections."""

import torch

from invertible.data import Standardize

from . import Case

CASES = [
    Case("standardize", lambda c: Standardize(torch.tensor([0.5, -2.0, 3.0]), torch.tensor([0.1, 2.0, 7.5])), (3,)),
]
