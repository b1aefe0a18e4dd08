"""Bad input to the variational API and commands: clear errors at the public boundary, never a silent number."""

from __future__ import annotations

import pytest
import torch

from invertible.variational.vae import VAE, evaluate_vae, train_vae

BINARY = (torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.5).float()


@pytest.mark.parametrize("options, message", [
    ({"latent": 0}, "latent must be a positive integer, got 0"),
    ({"latent": -1}, "latent must be a positive integer, got -1"),
    ({"context": 0, "posterior": "planar", "layers": 1}, "context must be a positive integer, got 0"),
    ({"likelihood": "logistic", "levels": 1}, "the logistic likelihood needs levels >= 2 grey levels, got 1"),
])
def test_vae_refuses_bad_sizes(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        VAE((1, 4, 4), hidden=8, **options)


@pytest.mark.parametrize("x, message", [
    (torch.rand(12, 1, 4, 4), r"x has \d+ value\(s\) other than 0 and 1: the bernoulli decoder needs binary images"),
    (2 * BINARY, r"x has \d+ value\(s\) other than 0 and 1"),
    (torch.full((3, 1, 4, 4), float("nan")), r"x contains 48 non-finite value\(s\)"),
    (BINARY.reshape(12, 16), r"x has shape \(12, 16\); expected \(n, 1, 4, 4\)"),
    (BINARY[:0], "x holds no images"),
])
def test_evaluate_vae_refuses_images_its_decoder_cannot_score(x, message) -> None:
    """Grey levels under a Bernoulli decoder used to give a finite "log-likelihood" of no distribution, and NaN
    pixels a report that the model had diverged."""
    model = VAE((1, 4, 4), latent=2, hidden=8)
    with pytest.raises(ValueError, match=message):
        evaluate_vae(model, x, k=2)


def test_train_vae_refuses_grey_levels_for_a_bernoulli_decoder() -> None:
    model = VAE((1, 4, 4), latent=2, hidden=8)
    with pytest.raises(ValueError, match=r"train has \d+ value\(s\) other than 0 and 1"):
        train_vae(model, torch.rand(12, 1, 4, 4), steps=1, batch_size=4)


@pytest.mark.parametrize("likelihood", ["gaussian", "logistic"])
def test_grey_level_likelihoods_take_values_in_the_unit_interval(likelihood) -> None:
    model = VAE((1, 4, 4), latent=2, hidden=8, likelihood=likelihood, levels=17)
    grey = torch.randint(0, 17, (12, 1, 4, 4)) / 16.0
    assert evaluate_vae(model, grey, k=2)["iw_samples"] == 2  # grey levels are fine here
    with pytest.raises(ValueError, match=rf"values outside \[0, 1\] .*the {likelihood} likelihood"):
        evaluate_vae(model, 255 * grey, k=2)


@pytest.mark.parametrize("option, value", [("k", 1.5), ("chunk", 0)])
def test_evaluate_vae_refuses_bad_counts(option, value) -> None:
    model = VAE((1, 4, 4), latent=2, hidden=8)
    with pytest.raises(ValueError, match=f"{option} must be a positive integer, got {value}"):
        evaluate_vae(model, BINARY, **{"k": 2, option: value})
