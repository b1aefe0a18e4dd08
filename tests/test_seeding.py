"""Seeds of the random but fixed parts of a model: a seed torch's generator cannot take is refused by name."""

import pytest
import torch

from invertible.models import build
from invertible.seeding import part_seeds, seeded_generator
from invertible.transforms import BlockDiagonalLinear, LULinear, RandomPermutation


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


def test_part_seeds_are_the_first_draws_of_the_seeds_generator():
    assert part_seeds(3, 4) == torch.randint(2**62, (4,), generator=torch.Generator().manual_seed(3)).tolist()
    assert part_seeds(3, 2) == part_seeds(3, 4)[:2]  # a model of more layers keeps the first ones


@pytest.mark.parametrize("name, options", [("maf", {"permutation": "random"}), ("maf", {"random_degrees": True}),
                                           ("iaf", {"permutation": "random"}), ("nsf", {"permutation": "random"})])
def test_models_of_consecutive_seeds_share_no_layer(name, options):
    """Layer ``i`` was seeded with ``seed + i``, so seed 1's layer ``i`` was seed 0's layer ``i + 1`` (MAF, IAF and
    the autoregressive NSF with random orders or degrees shared all their layers but one)."""
    drawn = slice(0, 1) if "permutation" in options else slice(1, None)  # the input order, or the hidden degrees

    def layers(seed):
        flow = build(name, features=6, layers=4, hidden=[12], seed=seed, **options)
        return [[d.tolist() for d in t.net.layer_degrees()[drawn]] for t in flow.transform if hasattr(t, "net")]

    first, second = layers(0), layers(1)
    assert len(first) == 4 and not any(a == b for a in first for b in second)


def test_blocks_of_consecutive_seeds_differ():
    blocks = [BlockDiagonalLinear(6, 2, seed=s).blocks.detach() for s in (0, 1)]
    assert not any(torch.equal(a, b) for a in blocks[0] for b in blocks[1])
