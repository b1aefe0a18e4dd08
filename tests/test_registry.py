"""The preset registry: options are checked against each preset's annotations before the preset is built."""

from __future__ import annotations

import inspect
import typing

import numpy as np
import pytest

from invertible.distributions import StandardNormal
from invertible.models import available, build, get
from invertible.models.registry import _fits


@pytest.mark.parametrize("name", available())
def test_every_default_fits_its_annotation(name: str) -> None:
    init = inspect.unwrap(get(name).__init__)
    hints = typing.get_type_hints(init)
    for key, p in inspect.signature(init).parameters.items():
        if p.default is not inspect.Parameter.empty and key in hints:
            assert _fits(p.default, hints[key]), (name, key, p.default, hints[key])


@pytest.mark.parametrize("options, words", [
    (dict(hidden=64), "model option hidden must be a list of integers, e.g. [64, 64], got 64"),
    (dict(hidden=[64, "a"]), "model option hidden must be a list of integers"),
    (dict(batch_norm="yes"), "model option batch_norm must be true or false, got 'yes'"),
    (dict(layers=2.5), "model option layers must be an integer, got 2.5"),
    (dict(init=3), "model option init must be a string or none, got 3"),
])
def test_an_option_of_the_wrong_type_is_named(options: dict, words: str) -> None:
    with pytest.raises(ValueError) as error:
        build("maf", features=2, **options)
    assert words in str(error.value)


def test_tuples_pass_and_numpy_scalars_are_taken_as_pythons() -> None:
    """A numpy integer is an integer (``features=X.shape[1]`` of a sum, an option from a numpy grid): it was refused
    with "must be an integer, got np.int64(2)". The config keeps plain numbers, so the model saves as JSON."""
    assert build("maf", features=2, layers=2, hidden=(8, 8)).config["options"]["hidden"] == [8, 8]
    flow = build("nsf", features=np.int64(2), hidden=[np.int32(8)], bound=np.float32(2.5),
                 permutation="random", seed=np.uint64(3))
    options = flow.config["options"]
    assert [type(options[k]) for k in ("features", "seed", "bound")] == [int, int, float]
    assert type(options["hidden"][0]) is int and options["bound"] == 2.5
    with pytest.raises(ValueError, match="model option layers must be an integer, got 2.0"):
        build("maf", features=2, layers=np.float64(2.0))
    assert StandardNormal(np.int64(3)).event_shape == (3,)  # was "'numpy.int64' object is not iterable"
