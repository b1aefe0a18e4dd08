"""Base distributions: samplers that match their densities, to the float tails."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from invertible.distributions import BASES, StandardLogistic, build_base


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logistic_sampler_reaches_both_tails_alike(dtype: torch.dtype, monkeypatch) -> None:
    """The extreme uniforms ``torch.rand`` can return (0 and the last grid point below 1) map to ``-z`` and ``z``."""
    eps = torch.finfo(dtype).eps
    edges = torch.tensor([[0.0, eps / 2, 1 - eps / 2]], dtype=dtype)
    monkeypatch.setattr(torch, "rand", lambda *args, **kwargs: edges)
    z = StandardLogistic((3,)).to(dtype).rsample(1)[0]
    assert torch.isfinite(z).all()
    assert z[0] == z[1] == -z[2]


def test_logistic_samples_have_the_logistic_moments() -> None:
    torch.manual_seed(0)
    z = StandardLogistic((2,)).double().rsample(200_000)
    assert abs(float(z.mean())) < 0.02
    assert float(z.var()) == pytest.approx(math.pi**2 / 3, rel=0.02)


def _mixture(components: int = 3, seed: int = 0):
    """A 2-D mixture base whose two dimensions have different means, scales and weights."""
    from invertible.distributions import MixtureOfGaussians

    g = torch.Generator().manual_seed(seed)
    base = MixtureOfGaussians(2, components).double()
    with torch.no_grad():
        base.loc.copy_(3 * torch.randn(2, components, generator=g, dtype=torch.float64))
        base.log_scale.copy_(0.7 * torch.randn(2, components, generator=g, dtype=torch.float64))
        base.logits.copy_(torch.randn(2, components, generator=g, dtype=torch.float64))
    return base


def _reference(base) -> torch.distributions.Distribution:
    """The same per-dimension mixtures, independent across dimensions, from ``torch.distributions``."""
    D = torch.distributions
    mixture = D.MixtureSameFamily(D.Categorical(logits=base.logits.detach()), D.Normal(base.loc.detach(), base.log_scale.detach().exp()))
    return D.Independent(mixture, 1)


def test_mixture_log_prob_sums_independent_per_dimension_mixtures() -> None:
    base = _mixture()
    z = 3 * torch.randn(50, 2, dtype=torch.float64)
    torch.testing.assert_close(base.log_prob(z), _reference(base).log_prob(z))


def test_mixture_samples_follow_each_dimensions_distribution() -> None:
    """Kolmogorov-Smirnov distance between the samples of each dimension and that dimension's mixture CDF."""
    base = _mixture()
    torch.manual_seed(0)
    s = base.sample(40_000)
    assert s.shape == (40_000, 2)
    weights = torch.softmax(base.logits.detach(), -1)
    for d in range(2):
        x = s[:, d].sort().values
        components = torch.distributions.Normal(base.loc.detach()[d], base.log_scale.detach()[d].exp())
        cdf = (weights[d] * components.cdf(x[:, None])).sum(1)
        empirical = torch.arange(1, len(x) + 1, dtype=torch.float64) / len(x)
        assert float((empirical - cdf).abs().max()) < 0.012


def test_a_fresh_mixture_has_equal_weights_unit_scales_and_means_spread_over_minus_one_to_one() -> None:
    from invertible.distributions import MixtureOfGaussians

    base = MixtureOfGaussians(1, components=4).double()
    z = torch.linspace(-4, 4, 81, dtype=torch.float64)
    means = torch.linspace(-1, 1, 4, dtype=torch.float64)
    expected = torch.distributions.Normal(means, 1.0).log_prob(z[:, None]).exp().mean(1).log()
    torch.testing.assert_close(base.log_prob(z[:, None]), expected)


@pytest.mark.parametrize("name", sorted(BASES))
def test_bases_take_the_sample_shapes_a_flow_takes(name: str) -> None:
    """NumPy and 0-d tensor integers, as ``Flow.sample`` takes them; a float is refused by name."""
    base = build_base(name, 3)
    for shape, expected in ((np.int64(5), (5, 3)), ((np.int64(2), 4), (2, 4, 3)), (torch.tensor(4), (4, 3)), ((), (3,))):
        assert base.sample(shape).shape == expected
    with pytest.raises(TypeError, match="sample shape must be an integer or a sequence of integers, got 2.0"):
        base.sample(2.0)
