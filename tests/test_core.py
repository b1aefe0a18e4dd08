"""``Flow``'s checks at its public boundary: one clear error for inputs a layer deep inside would reject obscurely."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invertible import Compose
from invertible.models import build


@pytest.fixture
def flow():
    torch.manual_seed(0)
    return build("maf", features=3, layers=2, hidden=[8], context_features=2)


def test_wrong_shape_and_non_finite_values(flow) -> None:
    c = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"x has shape \(4, 2\); expected \(batch, 3\)"):
        flow.log_prob(torch.zeros(4, 2), c)
    with pytest.raises(ValueError, match="x contains 1 non-finite value"):
        flow.log_prob(torch.tensor([[0.0, float("nan"), 0.0]] + [[0.0] * 3] * 3), c)
    with pytest.raises(ValueError, match="context has shape"):
        flow.log_prob(torch.zeros(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"context has shape \(\); expected \(\.\.\., 2\)"):
        flow.sample(2, torch.tensor(1.0))


def test_integer_and_mismatched_precision_inputs(flow) -> None:
    c = torch.zeros(4, 2)
    with pytest.raises(TypeError, match=r"x has dtype torch.int64; a flow takes floating-point data"):
        flow.log_prob(torch.zeros(4, 3, dtype=torch.long), c)
    with pytest.raises(TypeError, match=r"x has dtype torch.float64 but the flow's parameters are torch.float32"):
        flow.log_prob(torch.zeros(4, 3, dtype=torch.float64), c)
    with pytest.raises(TypeError, match=r"context has dtype torch.float64"):
        flow.sample(2, torch.zeros(4, 2, dtype=torch.float64))
    flow.double()
    assert flow.log_prob(torch.zeros(4, 3, dtype=torch.float64), c.double()).dtype == torch.float64


def test_distribution_log_prob_broadcasts_over_the_batch_shape() -> None:
    """As in ``torch.distributions``: ``log_prob(sample())`` of an unconditional flow, a value broadcast against the
    context's batch shape, and ``MixtureSameFamily`` over the components a context of ``K`` rows makes."""
    torch.manual_seed(0)
    plain = build("realnvp", features=2, layers=2, hidden=[8]).double().as_distribution()
    assert plain.log_prob(plain.sample()).shape == ()
    flow = build("realnvp", features=2, layers=2, hidden=[8], context_features=3).double()
    ctx = torch.randn(5, 3, dtype=torch.float64)
    d = flow.as_distribution(ctx)
    x = torch.randn(4, 1, 2, dtype=torch.float64)
    expected = flow.log_prob(x.expand(4, 5, 2), ctx.expand(4, 5, 3))
    torch.testing.assert_close(d.log_prob(x), expected)
    torch.testing.assert_close(d.log_prob(x[0, 0]), expected[0])
    logits = torch.randn(5, dtype=torch.float64)
    mixture = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(logits=logits), d)
    torch.testing.assert_close(mixture.log_prob(x[:, 0]), torch.logsumexp(expected + logits.log_softmax(0), 1))
    with pytest.raises(ValueError, match=r"value has shape \(4, 3\); expected \(\.\.\., 2\)"):
        d.log_prob(torch.zeros(4, 3, dtype=torch.float64))


def test_distribution_expand() -> None:
    """``expand`` gives the batch shape asked for, for samples and densities, with and without a context."""
    torch.manual_seed(0)
    plain = build("realnvp", features=2, layers=2, hidden=[8]).double()
    d = plain.as_distribution().expand((3,))
    assert d.batch_shape == (3,) and d.sample((4,)).shape == (4, 3, 2)
    x = torch.randn(4, 3, 2, dtype=torch.float64)
    torch.testing.assert_close(d.log_prob(x), plain.log_prob(x))
    assert d.log_prob(x[0, 0]).shape == (3,)
    flow = build("realnvp", features=2, layers=2, hidden=[8], context_features=3).double()
    ctx = torch.randn(5, 3, dtype=torch.float64)
    e = flow.as_distribution(ctx).expand((2, 5))
    assert e.batch_shape == (2, 5) and e.sample((4,)).shape == (4, 2, 5, 2)
    torch.testing.assert_close(e.log_prob(x[:2, :1]), flow.log_prob(x[:2, :1].expand(2, 5, 2), ctx.expand(2, 5, 3)))


def test_compose_takes_any_iterable_of_transforms() -> None:
    """A list, a generator or an ``nn.ModuleList`` (another composition's ``transforms``) of transforms."""
    torch.manual_seed(0)
    flow = build("realnvp", features=3, layers=3, hidden=[8]).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    z, ladj = flow.transform(x)
    for parts in (list(flow.transform.transforms), flow.transform.transforms, (t for t in flow.transform.transforms)):
        z2, ladj2 = Compose(parts)(x)
        torch.testing.assert_close(z2, z)
        torch.testing.assert_close(ladj2, ladj)
    with pytest.raises(TypeError, match="Compose takes Transform instances, got Linear"):
        Compose(torch.nn.Linear(3, 3))


def test_sample_shape_from_any_integer() -> None:
    """``n`` may be a NumPy integer or a 0-d integer tensor; a float is refused with a clear error."""
    torch.manual_seed(0)
    flow = build("realnvp", features=2, layers=2, hidden=[8])
    assert flow.sample(np.int64(3)).shape == (3, 2)
    assert flow.sample(torch.tensor(3)).shape == (3, 2)
    assert flow.sample((np.int64(2), 3)).shape == (2, 3, 2)
    with pytest.raises(TypeError, match="sample shape must be an integer or a sequence of integers, got 2.0"):
        flow.sample(2.0)
