"""``Flow``'s checks at its public boundary: one clear error for inputs a layer deep inside would reject obscurely."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from invertible import Compose, Flow, Transform
from invertible.distributions import StandardNormal
from invertible.models import build
from invertible.transforms import ElementwiseAffine, Logit, Sigmoid, UniformDequantization


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


def test_distribution_log_prob_of_a_batch_that_does_not_broadcast_is_a_value_error() -> None:
    flow = build("realnvp", features=2, layers=2, hidden=[8], context_features=3).double()
    d = flow.as_distribution(torch.randn(4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"batch shape \(5,\), which does not broadcast against .* \(4,\)"):
        d.log_prob(torch.zeros(5, 2, dtype=torch.float64))


def test_distribution_samples_take_an_integer_sample_shape() -> None:
    """``sample(n)`` is ``sample((n,))``, as for :meth:`Flow.sample`, with and without a context."""
    plain = build("realnvp", features=2, layers=2, hidden=[8]).double().as_distribution()
    assert plain.sample(3).shape == (3, 2) and plain.rsample(3).shape == (3, 2)
    flow = build("realnvp", features=2, layers=2, hidden=[8], context_features=3).double()
    d = flow.as_distribution(torch.randn(4, 3, dtype=torch.float64))
    assert d.sample(3).shape == (3, 4, 2) and d.rsample(3).shape == (3, 4, 2)


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


# ---------------------------------------------------------------- under torch.func transforms


def _logit_flow() -> Flow:
    """Logit preprocessing then a learned affine map: a flow on ``(0, 1)^2`` whose first layer checks its domain."""
    torch.manual_seed(0)
    affine = ElementwiseAffine(2)
    with torch.no_grad():
        affine.log_scale.copy_(torch.tensor([0.3, -0.2]))
        affine.shift.copy_(torch.tensor([0.1, 0.4]))
    return Flow(Compose(Logit(0.05), affine), StandardNormal(2)).double()


def test_vmap_over_log_prob_with_the_checks_on() -> None:
    """``torch.func.vmap`` of a per-example density equals the batched one with ``validate=True``: the checks that
    branch on values skip themselves on vmapped tensors (Flow's and Logit's alike), also under ``vmap(grad(f))``."""
    torch.manual_seed(0)
    flow = build("realnvp", features=2, layers=2, hidden=[8]).double()
    logit = _logit_flow()
    x = torch.rand(5, 2, dtype=torch.float64)
    for f in (flow, logit):
        assert f.validate
        one = lambda v, f=f: f.log_prob(v.unsqueeze(0)).squeeze(0)  # noqa: E731
        torch.testing.assert_close(torch.func.vmap(one)(x), f.log_prob(x))
        xg = x.clone().requires_grad_()
        (expected,) = torch.autograd.grad(f.log_prob(xg).sum(), [xg])
        torch.testing.assert_close(torch.func.vmap(torch.func.grad(one))(x), expected)


def test_vmap_checks_shapes_and_skips_only_the_value_checks() -> None:
    """Under vmap a wrong event shape is still refused; a value outside Logit's domain cannot be branched on there,
    so it comes back as the NaN it gives, as with ``validate=False``."""
    flow = _logit_flow()
    one = lambda v: flow.log_prob(v.unsqueeze(0)).squeeze(0)  # noqa: E731
    with pytest.raises(ValueError, match=r"x has shape \(1, 3\); expected \(batch, 2\)"):
        torch.func.vmap(one)(torch.rand(4, 3, dtype=torch.float64))
    x = torch.tensor([[0.5, 0.5], [0.5, -2.0]], dtype=torch.float64)
    out = torch.func.vmap(one)(x)
    assert torch.isfinite(out[0]) and torch.isnan(out[1])
    inverse = lambda v: Sigmoid().inverse(v.unsqueeze(0))[1].squeeze(0)  # noqa: E731  (Sigmoid's check, the same way)
    out = torch.func.vmap(inverse)(torch.tensor([[0.5, 0.5], [0.5, 1.5]], dtype=torch.float64))
    assert torch.isfinite(out[0]) and torch.isnan(out[1])


def test_vmap_over_contexts_of_a_conditional_flow() -> None:
    """Contexts batched by vmap (one per example): the density and the samples of each, checks on."""
    torch.manual_seed(0)
    flow = build("maf", features=3, layers=2, hidden=[8], context_features=2).double()
    x, c = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    one = lambda v, ctx: flow.log_prob(v.unsqueeze(0), ctx.unsqueeze(0)).squeeze(0)  # noqa: E731
    torch.testing.assert_close(torch.func.vmap(one)(x, c), flow.log_prob(x, c))
    samples = torch.func.vmap(lambda ctx: flow.sample(3, ctx.unsqueeze(0)), randomness="different")(c)
    assert samples.shape == (4, 3, 1, 3) and torch.isfinite(samples).all()


def test_jacrev_and_jacfwd_keep_the_checks() -> None:
    """``jacrev`` and ``jacfwd`` do not batch the inputs of the function they differentiate, so every check runs
    there: the Jacobian of the density equals autograd's, and a NaN input is still the ValueError."""
    flow = _logit_flow()
    x = torch.tensor([[0.2, 0.7], [0.9, 0.4]], dtype=torch.float64)
    expected = torch.autograd.functional.jacobian(flow.log_prob, x)
    for jac in (torch.func.jacrev, torch.func.jacfwd):
        torch.testing.assert_close(jac(flow.log_prob)(x), expected)
        with pytest.raises(ValueError, match="x contains 1 non-finite value"):
            jac(flow.log_prob)(torch.tensor([[0.2, float("nan")]], dtype=torch.float64))
        with pytest.raises(ValueError, match=r"Logit\(alpha=0.05\) needs values in \[0, 1\]"):
            jac(flow.log_prob)(torch.tensor([[0.2, 3.0]], dtype=torch.float64))


def test_vmapped_dequantization_checks_are_skipped() -> None:
    """A dequantizer under vmap (fresh noise per example) gives the batched values; its integer check skips itself."""
    x = torch.randint(0, 4, (6, 3)).double()
    one = lambda v: UniformDequantization(4)(v.unsqueeze(0))[0].squeeze(0)  # noqa: E731
    y = torch.func.vmap(one, randomness="different")(x)
    torch.testing.assert_close(torch.floor(4 * y), x)


# ---------------------------------------------------------------- the layers' per-call checks


def test_validate_switches_the_checks_of_every_layer() -> None:
    """``Transform.validate`` reaches every transform inside (a Compose's steps, an Inverse's transform);
    ``Flow.validate`` sets it on the flow's transform. Off, out-of-domain values give their NaN, as documented."""
    logit, dequantize, sigmoid = Logit(0.05), UniformDequantization(4), Sigmoid()
    pipeline = Compose(dequantize, Compose(Logit(0.1)).inv(), logit, sigmoid)
    assert pipeline.validate and logit.validate
    pipeline.validate = False
    assert [t.validate for t in pipeline.modules() if isinstance(t, Transform)] == [False] * 7
    z, ladj = logit(torch.tensor([[0.5, -2.0]]))
    assert torch.isnan(z[0, 1]) and torch.isnan(ladj[0])
    x, ladj = sigmoid.inverse(torch.tensor([[0.5, 1.5]]))  # outside (0, 1): unchecked
    assert torch.isnan(x[0, 1]) and torch.isnan(ladj[0])
    assert dequantize(torch.tensor([[7.5, 1.0]]))[0].shape == (1, 2)  # not an integer in [0, 3]: unchecked
    logit.validate = True  # one layer alone
    assert logit.validate and not dequantize.validate
    with pytest.raises(ValueError, match=r"Logit\(alpha=0.05\) needs values in \[0, 1\]"):
        logit(torch.tensor([[0.5, -2.0]]))

    flow = _logit_flow()
    flow.validate = False
    assert not flow.transform[0].validate
    assert torch.isnan(flow.log_prob(torch.tensor([[0.5, -2.0]], dtype=torch.float64))).all()
    flow.validate = True
    with pytest.raises(ValueError, match=r"Logit\(alpha=0.05\) needs values in \[0, 1\]"):
        flow.log_prob(torch.tensor([[0.5, -2.0]], dtype=torch.float64))
    assert not Flow(Compose(Logit()), StandardNormal(1), validate=False).transform[0].validate


def test_dequantization_refuses_values_that_are_not_its_levels() -> None:
    layer = UniformDequantization(4)
    for bad in (4.0, -1.0, 1.5):
        with pytest.raises(ValueError, match=r"dequantization expects integer values in \[0, 3\]"):
            layer(torch.tensor([[0.0, bad]]))
