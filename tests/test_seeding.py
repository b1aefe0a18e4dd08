"""Seeds of the random but fixed parts of a model: a seed torch's generator cannot take is refused by name."""

import pytest
import torch

from invertible.models import build
from invertible.seeding import seeded_generator
from invertible.transforms import LULinear, RandomPermutation


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1, 2.5, True])
def test_a_seed_outside_the_generators_range_is_a_value_error_naming_it(seed):
    with pytest.raises(ValueError, match=r"seed must be an integer in \[-2\*\*63, 2\*\*64 - 1\]"):
        seeded_generator(seed)


@pytest.mark.parametrize("build_it", [
    lambda: build("maf", features=3, layers=2, hidden=[8], seed=2**64),
    lambda: build("nsf", features=3, layers=2, hidden=[8], kind="coupling", permutation="random", seed=2**64),
    lambda: RandomPermutation(3, seed=2**64),
    lambda: LULinear(3, seed=2**64),
])
def test_layers_and_presets_refuse_such_a_seed_by_name(build_it):
    with pytest.raises(ValueError, match="seed must be an integer"):
        build_it()


def test_the_generator_draws_what_torchs_own_does_for_every_seed_it_takes():
    for seed in (0, 7, 2**64 - 1, -1):
        assert torch.equal(torch.randperm(9, generator=seeded_generator(seed)),
                           torch.randperm(9, generator=torch.Generator().manual_seed(seed)))
