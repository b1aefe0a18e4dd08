"""Bad preset options fail when the preset is built, with a message naming the option, not at the first forward pass."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

import invertible
from invertible.cli import main
from invertible.models import available, build, get


def _size(name: str) -> dict:
    return {"event_shape": [4, 8, 8]} if name == "glow" else {"features": 4}


@pytest.mark.parametrize("context_features", [0, -1])
@pytest.mark.parametrize("name", available())
def test_a_context_of_no_features_is_refused_by_every_preset(name: str, context_features: int) -> None:
    """``context_features=0`` built a conditional flow that no context could feed (an error only at log_prob);
    ``-1`` failed inside torch ("Trying to create tensor with negative dimension")."""
    for make in (lambda: build(name, **_size(name), context_features=context_features),
                 lambda: get(name)(**_size(name), context_features=context_features)):
        with pytest.raises(ValueError, match=rf"context_features must be None \(unconditional\) or an integer >= 1, got {context_features}"):
            make()


@pytest.mark.parametrize("kind", ["autoregressive", "coupling"])
def test_nsf_refuses_an_infinite_bound(kind: str) -> None:
    """``-m bound=.inf`` built a spline whose knots are all infinite: NaN loss at step 1, reported as divergence."""
    with pytest.raises(ValueError, match="finite bound > 0, got bins=8, bound=inf"):
        build("nsf", features=4, kind=kind, bound=math.inf)


#: (preset, options, the option refused, why): an option set away from its default where the others make it do nothing.
INERT = [
    ("maf", {"features": 2, "components": 5}, "components=5", "it sizes the mixture of base='mog', and base is 'normal'"),
    ("iaf", {"features": 2, "components": 5}, "components=5", "it sizes the mixture of base='mog', and base is 'normal'"),
    ("maf", {"features": 2, "seed": 3}, "seed=3", "permutation is 'reverse' with random_degrees false"),
    # one feature has one order; the hidden units of two (without a context) one degree: both built the same model
    ("maf", {"features": 1, "permutation": "random"}, "permutation='random'", "a single feature has one order"),
    ("nsf", {"features": 1, "permutation": "random"}, "permutation='random'", "a single feature has one order"),
    ("nsf", {"features": 1, "seed": 2}, "seed=2", "permutation is 'reverse' over 1 feature(s)"),
    ("maf", {"features": 1, "seed": 2}, "seed=2", "permutation is 'reverse' with random_degrees false over 1 feature(s)"),
    ("iaf", {"features": 2, "random_degrees": True, "seed": 3}, "random_degrees=True",
     "the hidden units of 2 feature(s) can only have degree 1"),
    ("nsf", {"features": 2, "kind": "coupling", "base": "logistic", "components": 3}, "components=3", "base is 'logistic'"),
    ("nsf", {"features": 2, "kind": "coupling", "seed": 1}, "seed=1", "the orders or masks of permutation='random', "
                                                                       "and permutation is 'reverse'"),
    ("realnvp", {"features": 2, "levels": 3}, "levels=3", "images (event_shape [C, H, W]), and the data are vectors"),
    ("realnvp", {"features": 2, "blocks": 1}, "blocks=1", "and the data are vectors"),
    ("realnvp", {"event_shape": [1, 4, 4], "hidden": [8]}, "hidden=[8]", "event_shape is the image [1, 4, 4]"),
    ("realnvp", {"event_shape": [1, 4, 4], "activation": "tanh"}, "activation='tanh'", "event_shape is the image"),
    ("glow", {"event_shape": [1, 4, 4], "coupling": "additive", "scale": "exp"}, "scale='exp'",
     "log-scale function of affine couplings, and coupling is 'additive'"),
    ("sylvester", {"features": 3, "variant": "householder", "bottleneck": 2}, "bottleneck=2", "variant is 'householder'"),
    ("sylvester", {"features": 3, "reflections": 2}, "reflections=2", "variant is 'orthogonal'"),
]


@pytest.mark.parametrize("name, options, option, why", INERT)
def test_an_option_the_other_settings_make_inert_is_refused(name: str, options: dict, option: str, why: str) -> None:
    """``-m components=5`` without ``base=mog`` (and the like) built the same model as without it, silently."""
    with pytest.raises(ValueError, match=rf"^model option {re.escape(option)} has no effect: .*{re.escape(why)}"):
        build(name, **options)


@pytest.mark.parametrize("name, options", [
    ("maf", {"features": 2, "base": "mog", "components": 5}),
    ("maf", {"features": 2, "seed": 3, "permutation": "random"}),
    ("iaf", {"features": 3, "seed": 3, "random_degrees": True}),
    ("maf", {"features": 2, "context_features": 1, "seed": 3, "random_degrees": True}),  # degrees 0 and 1
    ("nsf", {"features": 2, "kind": "coupling", "permutation": "random", "seed": 1}),
    ("realnvp", {"event_shape": [1, 4, 4], "levels": 1, "blocks": 1, "hidden_channels": 8}),
    ("realnvp", {"features": 2, "layers": 2, "hidden": [8], "activation": "tanh", "levels": 2}),  # levels at its default
    ("realnvp", {"event_shape": [1, 4, 4], "levels": 1, "hidden": [64, 64]}),  # hidden at its default
    ("glow", {"event_shape": [1, 4, 4], "levels": 1, "steps": 1, "coupling": "affine", "scale": "exp"}),
    ("sylvester", {"features": 3, "variant": "householder", "reflections": 2}),
    ("sylvester", {"features": 3, "bottleneck": 2}),
])
def test_an_option_that_acts_or_keeps_its_default_is_accepted(name: str, options: dict) -> None:
    build(name, **options)


def test_the_cli_refuses_an_inert_model_option_in_one_line(tmp_path, capsys) -> None:
    code = main(["train", "--model", "maf", "--data", "checkerboard", "-m", "components=5", "--steps", "1",
                 "--no-progress", "--no-plots", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code != 0 and err.strip() == ("error: model option components=5 has no effect: it sizes the mixture of "
                                         "base='mog', and base is 'normal'")
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_a_saved_model_holding_an_inert_option_still_loads(tmp_path) -> None:
    """A model saved before such options were refused comes back as it was built."""
    flow = build("maf", features=2, layers=1, hidden=[4])
    flow.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "model.json").read_text())
    config["options"]["components"] = 5
    (tmp_path / "m" / "model.json").write_text(json.dumps(config))
    loaded = invertible.load(tmp_path / "m")
    assert loaded.config["options"]["components"] == 5
    x = torch.randn(3, 2)
    torch.testing.assert_close(loaded.log_prob(x), flow.log_prob(x))
