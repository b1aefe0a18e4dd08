"""Extreme but finite inputs and parameters: no silent NaN or inf where the exact value is a float.

Each test puts a transform (or the flow boundary) where a plain formula under- or overflows,
in float32 and float64, and checks the values and log-dets against closed forms; where a
value truly cannot be represented it checks the documented outcome (an error or -inf).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from invertible.transforms import Planar, Radial, Sylvester

DTYPES = [torch.float32, torch.float64]
# a parameter whose softplus underflows to exactly 0 in each precision (below -103.97 and -744.4)
UNDERFLOW = {torch.float32: -120.0, torch.float64: -800.0}


def _set(params, dtype: torch.dtype, **values: float) -> None:
    """Fill the named parts of a :class:`ContextParameters` with constants (a list fills element-wise)."""
    with torch.no_grad():
        parts = dict(zip(params.names, torch.split(params.theta, params.sizes)))
        for name, value in values.items():
            parts[name].copy_(torch.as_tensor(value, dtype=dtype).expand_as(parts[name]))


# ---------------------------------------------------------------- planar


@pytest.mark.parametrize("dtype", DTYPES)
def test_planar_log_det_where_softplus_underflows(dtype: torch.dtype) -> None:
    """``1 + w^T u_hat = softplus(w^T u)`` underflows to 0; at ``a = 0`` the log-det is
    ``log softplus(w^T u) = w^T u``."""
    wu = UNDERFLOW[dtype]
    layer = Planar(2).to(dtype)
    _set(layer.params, dtype, u=[wu, 0.0], w=[1.0, 0.0], b=0.0)
    z = torch.tensor([[0.0, 0.0], [0.0, 2.0], [0.5, -1.0]], dtype=dtype)
    y, ladj = layer.inverse(z)
    assert torch.isfinite(y).all()
    # at a = 0 the slope is softplus(wu) ~ e^wu; elsewhere tanh^2(a) dominates it
    expected = torch.tensor([wu, wu, math.log(math.tanh(0.5) ** 2)], dtype=dtype)
    torch.testing.assert_close(ladj, expected)
    (grad,) = torch.autograd.grad(ladj[0], layer.params.theta)
    assert torch.isfinite(grad).all() and grad[0] == pytest.approx(1.0)  # d log softplus(wu) / d wu = 1 here

    z_back, ladj_back = layer(y)  # the solved direction sits on the same flat point
    assert torch.isfinite(z_back).all()
    torch.testing.assert_close(z_back[:2], z[:2])
    torch.testing.assert_close(ladj_back[:2], -expected[:2])


@pytest.mark.parametrize("wu", [-1e4, -1e3])
def test_planar_u_hat_keeps_its_constraint_in_float32(wu: float) -> None:
    """``u_hat = u + (m - w^T u) w / |w|^2`` cancels for ``w^T u << 0``: in float32 ``w^T u_hat`` missed
    ``m = softplus(w^T u) - 1`` by ``eps |w^T u|`` (2.4e-4 at -1e4), the map ``inverse`` folded near its hyperplane
    and ``forward``, which solves with ``m``, did not undo it (errors ~5e-4 at ``|w^T z + b| > 1/2``). Compared with
    the same layer in float64, and with itself through a round trip."""
    w = torch.tensor([0.7, -0.4, 0.2])
    across = torch.tensor([0.3, 0.6, 0.15])
    across -= (across @ w) / (w @ w) * w
    layer = Planar(3)
    _set(layer.params, torch.float32, u=(across + wu * w / (w @ w)).tolist(), w=w.tolist(), b=0.1)
    reference = Planar(3).double()
    with torch.no_grad():
        reference.params.theta.copy_(layer.params.theta)
    torch.manual_seed(0)
    z = torch.randn(512, 3)
    z = z[(z @ w + 0.1).abs() > 0.5]  # away from the hyperplane, where the slope tanh^2(a) is below 1/4
    y, ladj = layer.inverse(z)
    y_ref, ladj_ref = reference.inverse(z.double())
    torch.testing.assert_close(y @ w, (y_ref @ w.double()).float())  # w^T y = a + (w^T u_hat) tanh(a)
    torch.testing.assert_close(ladj, ladj_ref.float())
    z_back, ladj_back = layer(y)
    torch.testing.assert_close(z_back, z)
    torch.testing.assert_close(ladj_back, -ladj)


# ---------------------------------------------------------------- Sylvester


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", ["orthogonal", "householder"])
def test_sylvester_log_det_with_saturated_diagonals(dtype: torch.dtype, variant: str) -> None:
    """``tanh(d1) tanh(d2)`` rounds to -1: ``log(1 + sech^2(0) R_ii R~_ii)`` is ``log(1 - tanh(d)^2)``,
    not ``log 0``."""
    d = 12.0 if dtype == torch.float32 else 20.0  # tanh(d) == 1 in floating point
    torch.manual_seed(0)
    layer = Sylvester(3, variant=variant).to(dtype)
    _set(layer.params, dtype, d1=d, d2=-d, b=0.0)
    z = torch.zeros(2, 3, dtype=dtype)  # a = R~ Q^T z + b = 0
    y, ladj = layer.inverse(z)
    log_sech2 = 2.0 * (math.log(2.0) - d - math.log1p(math.exp(-2.0 * d)))
    torch.testing.assert_close(ladj, torch.full((2,), 3 * log_sech2, dtype=dtype))
    z_back, ladj_back = layer(y)
    assert torch.isfinite(z_back).all()
    torch.testing.assert_close(z_back, z)
    torch.testing.assert_close(ladj_back, -ladj)
    (grad,) = torch.autograd.grad(ladj.sum(), layer.params.theta)
    assert torch.isfinite(grad).all()


def _householder(dtype: torch.dtype, q: list[float]) -> Sylvester:
    """A Householder Sylvester layer on 3-D vectors with the given reflection vectors and fixed other parameters."""
    torch.manual_seed(0)
    layer = Sylvester(3, variant="householder", reflections=len(q) // 3).to(dtype)
    _set(layer.params, dtype, q=q, d1=[0.5, -0.3, 0.8], d2=[0.2, 0.9, -0.4], b=[0.1, -0.2, 0.3])
    return layer


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [0.0, "tiny", "huge"])
def test_sylvester_householder_vectors_of_extreme_length(dtype: torch.dtype, scale) -> None:
    """``v / |v|`` was ``0 / 0 = NaN`` for ``v = 0`` and where ``|v|^2`` underflows, and ``v / inf = 0`` (the
    reflection silently dropped) where it overflows. A zero vector is now the identity (the layer equals one
    without that reflection); any other length gives the reflection of ``v``'s direction."""
    v1, v2 = [1.0, -2.0, 0.5], [0.3, 0.4, -1.2]
    z = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.3, -0.7]], dtype=dtype)
    if scale == 0.0:
        layer, reference = _householder(dtype, [0.0, 0.0, 0.0] + v2), _householder(dtype, v2)
    else:
        exponent = {torch.float32: 30, torch.float64: 200}[dtype] * (1 if scale == "huge" else -1)  # |v|^2 out of range
        layer, reference = _householder(dtype, [c * 10.0**exponent for c in v1] + v2), _householder(dtype, v1 + v2)
    y, ladj = layer.inverse(z)
    y_ref, ladj_ref = reference.inverse(z)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(ladj, ladj_ref)
    z_back, ladj_back = layer(y)
    torch.testing.assert_close(z_back, z)
    torch.testing.assert_close(ladj_back, -ladj)
    (grad,) = torch.autograd.grad(y.sum() + ladj.sum() + z_back.sum(), layer.params.theta)
    assert torch.isfinite(grad).all()


# ---------------------------------------------------------------- radial


@pytest.mark.parametrize("dtype", DTYPES)
def test_radial_at_its_centre_when_alpha_underflows(dtype: torch.dtype) -> None:
    """``alpha = softplus(a)`` underflows: ``g(z0) = z0`` (not ``0 / 0``) and the log-det is
    ``D log((alpha + beta) / alpha) = D (log softplus(b) - a)``."""
    a = UNDERFLOW[dtype]
    layer = Radial(3).to(dtype)
    _set(layer.params, dtype, z0=[0.5, -1.0, 2.0], alpha=a, beta=0.0)
    z0 = torch.tensor([[0.5, -1.0, 2.0]], dtype=dtype)
    y, ladj = layer.inverse(z0)
    torch.testing.assert_close(y, z0)
    torch.testing.assert_close(ladj, torch.tensor([3 * (math.log(math.log(2.0)) - a)], dtype=dtype))
    z_back, ladj_back = layer(y)
    torch.testing.assert_close(z_back, z0)
    torch.testing.assert_close(ladj_back, -ladj)


@pytest.mark.parametrize("dtype", DTYPES)
def test_radial_near_the_invertibility_edge(dtype: torch.dtype) -> None:
    """``beta -> -alpha``: ``1 + beta h`` cancels to 0 at ``z0``; the log-det there is
    ``D log(softplus(b) / alpha)``."""
    b = UNDERFLOW[dtype]
    layer = Radial(2).to(dtype)
    _set(layer.params, dtype, z0=0.0, alpha=5.0, beta=b)
    alpha = math.log1p(math.exp(5.0))
    z = torch.zeros(1, 2, dtype=dtype)
    y, ladj = layer.inverse(z)
    torch.testing.assert_close(ladj, torch.tensor([2 * (b - math.log(alpha))], dtype=dtype))
    z_back, ladj_back = layer(y)
    torch.testing.assert_close(z_back, z)
    torch.testing.assert_close(ladj_back, -ladj)


@pytest.mark.parametrize("dtype", DTYPES)
def test_radial_solved_direction_gradients_at_the_centre_and_where_alpha_underflows(dtype: torch.dtype) -> None:
    """``forward`` solves for the radius with ``sqrt(alpha)`` and ``sqrt(|y - z0|)``, whose slopes are infinite at
    0: its gradients were NaN at ``y = z0`` for any ``alpha``, and everywhere once ``alpha = softplus(a)``
    underflows. Where it does, the root ``r ~ alpha`` underflows too inside the ball ``|y - z0| < softplus(b)``,
    and the log-det there (which depends on ``r / alpha``) was that of the centre. Reference: float64 with
    ``a = -120``, where ``alpha = 8e-53`` is a normal float (and negligible next to everything else)."""

    def outputs(layer: Radial, y: torch.Tensor) -> list[torch.Tensor]:
        y = y.clone().requires_grad_()
        z, ladj = layer(y)
        return [z, ladj, *torch.autograd.grad(z.square().sum() + ladj.sum(), [layer.params.theta, y])]

    # z0; a point outside the ball (|y - z0| = 2.3 > softplus(1.5) = 1.7); one inside, near z0
    y = torch.tensor([[0.5, -1.0, 2.0], [1.5, 1.0, 1.5], [0.501, -1.002, 2.0]], dtype=torch.float64)
    for a in (0.5, UNDERFLOW[dtype]):
        a_ref = max(a, -120.0)
        layer, reference = Radial(3).to(dtype), Radial(3).double()
        _set(layer.params, dtype, z0=[0.5, -1.0, 2.0], alpha=a, beta=1.5)
        _set(reference.params, torch.float64, z0=[0.5, -1.0, 2.0], alpha=a_ref, beta=1.5)
        z, ladj, *grads = outputs(layer, y.to(dtype))
        z_ref, ladj_ref, *grads_ref = outputs(reference, y)
        torch.testing.assert_close(z, z_ref.to(dtype))
        # inside the ball the log-det is D log alpha plus terms free of alpha; outside it does not depend on alpha
        torch.testing.assert_close(ladj, (ladj_ref + torch.tensor([3.0, 0.0, 3.0]) * (a - a_ref)).to(dtype))
        for grad, expected in zip(grads, grads_ref):
            torch.testing.assert_close(grad, expected.to(dtype))


def test_radial_far_from_its_centre_in_float32() -> None:
    """``|z - z0| ~ 1e20`` overflows ``sum d_i^2`` in float32; the layer agrees with its float64 self."""
    layer = Radial(3)
    _set(layer.params, torch.float32, z0=[0.5, -1.0, 2.0], alpha=0.3, beta=1.5)
    z = torch.tensor([[1e20, -2e20, 5e19], [3e19, 1.0, -1.0]])
    y, ladj = layer.inverse(z)
    z_back, ladj_back = layer(y)
    y64, ladj64 = layer.double().inverse(z.double())
    torch.testing.assert_close(y, y64.float())
    torch.testing.assert_close(ladj, ladj64.float(), rtol=1e-4, atol=0)
    torch.testing.assert_close(z_back, z)
    torch.testing.assert_close(ladj_back, -ladj, rtol=1e-4, atol=0)


# ---------------------------------------------------------------- affine scales (couplings, MAF/IAF)


class _Constant(torch.nn.Module):
    """A conditioner whose raw log-scale and shift are constants, whatever its input."""

    def __init__(self, raw: float, shift: float, features: int):
        super().__init__()
        self.raw, self.shift, self.features = raw, shift, features

    def forward(self, x_a: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        n = x_a.shape[0]
        return torch.cat([x_a.new_full((n, self.features), self.raw), x_a.new_full((n, self.features), self.shift)], 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale, raw", [("exp", 1e4), ("exp", -1e4), ("sigmoid", -1e4)])
def test_affine_scale_beyond_the_float_range_gives_no_nan(dtype: torch.dtype, scale: str, raw: float) -> None:
    """``exp(raw) = inf`` made ``0 * inf = NaN`` where the scaled value is 0: at ``x_b = 0`` going forward
    and at ``z_b = t`` going back. The log-scale is clamped to ``+-L`` (:data:`SCALE_FUNCTIONS`)."""
    from invertible.transforms import AffineCoupling, alternating_mask
    from invertible.transforms.stable import exp_bound

    layer = AffineCoupling(alternating_mask(4), conditioner=_Constant(raw, 0.5, 2), scale=scale).to(dtype)
    bound = exp_bound(dtype)
    x = torch.tensor([[1.0, 0.0, -2.0, 0.0]], dtype=dtype)  # the transformed half (odd positions) is 0
    y, ladj = layer(x)
    x_back, ladj_back = layer.inverse(y)
    torch.testing.assert_close(y, torch.tensor([[1.0, 0.5, -2.0, 0.5]], dtype=dtype))
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(ladj, torch.tensor([2 * math.copysign(bound, raw)], dtype=dtype))
    torch.testing.assert_close(ladj_back, -ladj)
    # a value whose image leaves the float range overflows to inf, not NaN
    big = torch.tensor([[0.0, 1e4, 0.0, -1e4]], dtype=dtype)
    out, _ = layer(big) if raw > 0 else layer.inverse(big)
    assert not torch.isnan(out).any() and torch.isinf(out[:, 1::2]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_maf_exp_scale_with_a_huge_network_output(dtype: torch.dtype) -> None:
    """The MAF density pass and its sequential inverse with ``beta = 1e4``: no NaN at ``x = 0``."""
    from invertible.transforms import MaskedAffineAutoregressive
    from invertible.transforms.stable import exp_bound

    layer = MaskedAffineAutoregressive(3, hidden=(8,), scale="exp").to(dtype)
    with torch.no_grad():
        layer.net.output.bias[:3] = 1e4  # beta outputs; the weights start at zero
        layer.net.output.bias[3:] = 0.5  # m outputs
    x = torch.zeros(2, 3, dtype=dtype)
    z, ladj = layer(x)
    torch.testing.assert_close(z, torch.full_like(x, 0.5))
    torch.testing.assert_close(ladj, torch.full((2,), 3 * exp_bound(dtype), dtype=dtype))
    x_back, _ = layer.inverse(z)
    torch.testing.assert_close(x_back, x)


# ---------------------------------------------------------------- ActNorm


@pytest.mark.parametrize("dtype", DTYPES)
def test_actnorm_initialises_on_values_near_the_float_range(dtype: torch.dtype) -> None:
    """``x^2`` overflows from ``|x| ~ sqrt(max)`` and ``sum x`` near ``max``; the statistics are still the batch's
    mean and standard deviation (the old init gave ``log_scale = inf``, every output 0 and a log-det of -inf)."""
    from invertible.transforms import ActNorm

    big = math.sqrt(torch.finfo(dtype).max) * 100.0  # 1.8e21 in float32, 1.3e156 in float64
    top = torch.finfo(dtype).max * 0.9
    x = torch.tensor([[big, top, 5.0], [-big, top, 5.0], [big, top * (2 / 3), 5.0]], dtype=dtype)
    layer = ActNorm(3).to(dtype)
    z, ladj = layer(x)
    r = 2**-0.5
    expected = torch.tensor([[r, r, 0.0], [-2 * r, r, 0.0], [r, -2 * r, 0.0]], dtype=dtype)
    torch.testing.assert_close(z, expected)
    std = [big * math.sqrt(8 / 9), top * (math.sqrt(2) / 9)]  # the third channel is constant: log_scale 0
    torch.testing.assert_close(layer.log_scale.detach(), torch.tensor([math.log(s) for s in std] + [0.0], dtype=dtype))
    torch.testing.assert_close(ladj, -layer.log_scale.detach().sum().expand(3))


# ---------------------------------------------------------------- logit preprocessing


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha, value", [(0.0, 0.0), (0.0, 1.0), (0.05, 1.2), (0.05, -0.5)])
def test_logit_refuses_values_outside_its_domain(dtype: torch.dtype, alpha: float, value: float) -> None:
    """At 0 or 1 with ``alpha = 0`` the latent is infinite and the log-det ``+inf`` (their sum with a base
    log-density is NaN); further out the logarithms are NaN. Both are a ValueError naming the value."""
    from invertible.transforms import Logit

    layer = Logit(alpha)
    x = torch.tensor([[0.5, value, 0.25]], dtype=dtype)
    with pytest.raises(ValueError, match=rf"Logit\(alpha={alpha}\) needs values in .*1 outside, e\.g\. {value:g}"):
        layer(x)
    z, ladj = layer(torch.tensor([[0.5, 1e-30, 1.0 - 1e-7]], dtype=torch.float64))  # inside, however near the edge
    assert torch.isfinite(z).all() and torch.isfinite(ladj).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", [0.0, 1e-6, 0.05, 0.45])
def test_logit_inverse_of_far_latents_maps_forward_again(dtype: torch.dtype, alpha: float) -> None:
    """``sigmoid(z)`` rounds to 0 or 1 far out (to 1 from ``z ~ 17`` in float32), and the affine map of ``alpha``
    rounds near both ends: the preimage ``inverse`` returns still lies in the domain, so forward gives a finite
    latent and log-det, of the same sign, instead of refusing what the flow itself sampled."""
    from invertible.transforms import Logit

    layer = Logit(alpha)
    z = torch.cat([torch.linspace(-800, 800, 4001, dtype=dtype), torch.tensor([-1e30, 1e30], dtype=dtype)])[None]
    x, ladj = layer.inverse(z)
    assert torch.isfinite(ladj).all()
    z_back, ladj_back = layer(x)
    assert torch.isfinite(z_back).all() and torch.isfinite(ladj_back).all()
    assert (torch.sign(z_back) == torch.sign(z)).all()
    near = z.abs() < 10
    torch.testing.assert_close(z_back[near], z[near], rtol=0, atol=5e-3 if dtype == torch.float32 else 1e-10)


# ---------------------------------------------------------------- the flow boundary


class _Zero(torch.nn.Module):
    """A conditioner ``0 * x_a``: finite inputs give zeros, an overflowed ``inf`` gives NaN."""

    def forward(self, x_a: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return torch.cat([x_a * 0.0, x_a * 0.0], 1)


def _overflowing_flow(dtype: torch.dtype, raw: float):
    """Two couplings on 2-D vectors: the first scales ``x_1`` by ``exp(raw)`` (clamped to the float range),
    the second reads ``x_1`` through :class:`_Zero`."""
    from invertible import Compose, Flow
    from invertible.distributions import StandardNormal
    from invertible.transforms import AffineCoupling

    first = AffineCoupling(torch.tensor([True, False]), conditioner=_Constant(raw, 0.0, 1), scale="exp")
    second = AffineCoupling(torch.tensor([False, True]), conditioner=_Zero(), scale="exp")
    return Flow(Compose(first, second), StandardNormal(2)).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_prob_is_an_error_where_a_layer_overflowed(dtype: torch.dtype) -> None:
    """A latent that overflows to ``inf`` becomes NaN in the next network (``0 * inf``): log_prob raises a
    ValueError naming the inputs, not a NaN; a density that only underflows the float range is ``-inf``."""
    flow = _overflowing_flow(dtype, 1e4)
    x = torch.tensor([[0.5, 0.0], [0.5, 2.0], [0.5, -3.0]], dtype=dtype)
    message = rf"log_prob is NaN at 2 of 3 input\(s\), although the inputs are finite: .*{dtype}"
    with pytest.raises(ValueError, match=message):
        flow.log_prob(x)
    flow.validate = False  # unchecked, the raw NaN comes back
    assert torch.isnan(flow.log_prob(x)[1:]).all()
    flow.validate = True
    x = torch.tensor([[0.5, 0.0], [3 * math.sqrt(torch.finfo(dtype).max), 0.0]], dtype=dtype)
    log_p = flow.log_prob(x)  # the second latent's square overflows: a log-density below the float range
    assert torch.isfinite(log_p[0]) and log_p[1] == -math.inf


@pytest.mark.parametrize("dtype", DTYPES)
def test_sample_at_a_temperature_beyond_the_float_range(dtype: torch.dtype) -> None:
    """``T u`` overflows: a ValueError, where the samples used to be silently NaN."""
    from invertible.models import build

    torch.manual_seed(0)
    flow = build("realnvp", features=2, layers=2, hidden=[4]).to(dtype)
    with pytest.raises(ValueError, match=rf"temperature .* takes the base noise beyond the {dtype} range"):
        flow.sample(64, temperature=torch.finfo(dtype).max)
    assert torch.isfinite(flow.sample(64, temperature=1e-30)).all()  # tiny temperatures are fine


@pytest.mark.parametrize("dtype", DTYPES)
def test_samples_that_overflow_are_reported(dtype: torch.dtype) -> None:
    """The inverse scales by ``exp(L)``, the largest finite scale: samples with ``|u| > 1`` overflow to inf,
    and sample() says how many instead of handing them back silently."""
    torch.manual_seed(0)
    flow = _overflowing_flow(dtype, -1e4)
    with pytest.warns(RuntimeWarning, match=r"\d+ of 64 sample\(s\) are not finite: the inverse map overflowed"):
        x = flow.sample(64)
    overflowed = ~torch.isfinite(x).all(1)
    assert 0 < int(overflowed.sum()) < 64


@pytest.mark.parametrize("dtype", DTYPES)
def test_samples_with_their_density_that_overflow_are_reported(dtype: torch.dtype) -> None:
    """``rsample_and_log_prob`` and ``sample_and_log_prob``, the sampling path of variational inference, report
    overflowed samples as ``sample`` does (no temperature to lower there) and hand them back as they are."""
    torch.manual_seed(0)
    flow = _overflowing_flow(dtype, -1e4)
    for draw in (flow.rsample_and_log_prob, flow.sample_and_log_prob):
        with pytest.warns(RuntimeWarning, match=rf"\d+ of 64 sample\(s\) are not finite: the inverse map overflowed "
                                                rf"the {dtype} range; sample in float64$"):
            x, log_p = draw(64)
        overflowed = ~torch.isfinite(x).all(1)
        assert 0 < int(overflowed.sum()) < 64 and log_p.shape == (64,)


@pytest.mark.parametrize("dtype", DTYPES)
def test_finite_samples_whose_density_overflows_are_reported(dtype: torch.dtype) -> None:
    """Two log-scales of 0.9 times the float maximum: each sample is ``u exp(-s)``, which is 0, finite, but the
    log-det ``-2s`` of the inverse is ``-inf``, so the log-density of every sample is ``+inf``. A sample of the
    flow has a positive density, so ``rsample_and_log_prob`` warns (saying how many) and returns the values."""
    from invertible import Flow
    from invertible.distributions import StandardNormal
    from invertible.transforms import ElementwiseAffine

    layer = ElementwiseAffine(2, shift=False).to(dtype)
    with torch.no_grad():
        layer.log_scale.fill_(0.9 * torch.finfo(dtype).max)
    flow = Flow(layer, StandardNormal(2)).to(dtype)
    message = rf"8 of 8 finite sample\(s\) have a log-density that is not finite \(NaN or \+-inf\): a log-det overflowed the {dtype}"
    with pytest.warns(RuntimeWarning, match=message):
        x, log_p = flow.rsample_and_log_prob(8)
    assert torch.equal(x, torch.zeros_like(x)) and (log_p == math.inf).all()
    flow.validate = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (flow.rsample_and_log_prob(8)[1] == math.inf).all()
    flow.validate = True
    with torch.no_grad():
        layer.log_scale[0] = math.nan
    with pytest.warns(RuntimeWarning, match=r"8 of 8 sample\(s\) are not finite: the flow's parameters are not all finite"):
        flow.sample_and_log_prob(8)


_SAMPLERS = {
    "sample": lambda flow: flow.sample(64),
    "rsample": lambda flow: flow.rsample(64),
    "sample_and_log_prob": lambda flow: flow.sample_and_log_prob(64),
    "rsample_and_log_prob": lambda flow: flow.rsample_and_log_prob(64),
    "distribution_sample": lambda flow: flow.as_distribution().sample((64,)),
    "distribution_rsample": lambda flow: flow.as_distribution().rsample((64,)),
    "decorated_by_torch": lambda flow: torch.no_grad()(flow.rsample)(64),
}


@pytest.mark.parametrize("method", list(_SAMPLERS))
def test_sampling_warnings_point_at_the_callers_line(method: str) -> None:
    """The ``RuntimeWarning`` of overflowed samples names the line that called the library, whichever method of
    it runs the check (``sample`` through ``rsample``, a distribution through the flow)."""
    torch.manual_seed(0)
    flow = _overflowing_flow(torch.float32, -1e4)
    with pytest.warns(RuntimeWarning, match="not finite") as record:
        _SAMPLERS[method](flow)
    assert [w.filename for w in record] == [__file__] * len(record)


def test_density_warnings_of_finite_samples_point_at_the_callers_line() -> None:
    from invertible import Flow
    from invertible.distributions import StandardNormal
    from invertible.transforms import ElementwiseAffine

    layer = ElementwiseAffine(2, shift=False)
    with torch.no_grad():
        layer.log_scale.fill_(0.9 * torch.finfo(torch.float32).max)
    flow = Flow(layer, StandardNormal(2))
    for draw in (flow.sample_and_log_prob, flow.rsample_and_log_prob):
        with pytest.warns(RuntimeWarning, match="have a log-density that is not finite") as record:
            draw(8)
        assert [w.filename for w in record] == [__file__]


# ---------------------------------------------------------------- splines


def test_inverse_spline_gradients_at_the_bound_and_in_the_tails() -> None:
    """Steep bins (raw parameters of order 1e4, as networks give on inputs of order 1e4): at the clamped input
    of the bound or of a tail ``b^2 - 4ac`` rounds to 0 or below in float32, and ``sqrt``'s infinite slope there
    made the gradient NaN, even for tail inputs, whose value does not use the spline. (In float64 the floors on
    bin sizes and slopes keep ``b^2 - 4ac`` positive.)"""
    from invertible.transforms import rational_quadratic_spline

    torch.manual_seed(0)
    params = (torch.randn(256, 23) * 1e4).requires_grad_()
    x = torch.tensor([3.0, -3.0, 7.0, -1e4, 1e30]).repeat_interleave(52)[:256]
    y, ladj = rational_quadratic_spline(x, params, inverse=True)
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all()
    (grad,) = torch.autograd.grad(ladj.sum() + y.sum(), params)
    assert torch.isfinite(grad).all()
    tails = x.abs() > 3
    assert torch.equal(y[tails], x[tails]) and (ladj[tails] == 0).all()


# ---------------------------------------------------------------- multi-scale priors


def _prior_layer(kind: str, log_sigma: float, dtype: torch.dtype):
    """A factor-out split of ``(2, 2, 2)`` images, or a top prior, with ``mu = 0.5`` and the given ``log_sigma``
    on the factored-out channel: the conditional prior's zero convolution through its bias, the per-channel
    and top priors through their parameters (the top prior's from its context)."""
    from invertible.transforms import AffinePrior, ElementwiseAffine, FactorOut

    if kind == "top":
        layer = AffinePrior((2, 2, 2), context_features=1).to(dtype)
        with torch.no_grad():
            layer.loc.fill_(0.5)
            layer.from_context.bias[12:] = log_sigma  # log_sigma of the second channel, times a context of 1
        return layer
    layer = FactorOut(2, 1, ElementwiseAffine((1, 2, 2)), prior=kind).to(dtype)
    with torch.no_grad():
        if kind == "conditional":
            layer.prior.conv.bias.copy_(torch.tensor([0.5, log_sigma]))
        else:
            layer.prior.loc.fill_(0.5)
            layer.prior.log_scale.fill_(log_sigma)
    return layer


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("log_sigma", [1e4, -1e4])
@pytest.mark.parametrize("kind", ["conditional", "channel", "top"])
def test_prior_scale_beyond_the_float_range_gives_no_nan(dtype: torch.dtype, log_sigma: float, kind: str) -> None:
    """``exp(-+log_sigma) = inf`` made ``0 * inf = NaN``: at ``x2 = mu`` going forward (``log_sigma = -1e4``)
    and at ``e2 = 0`` going back (``1e4``). ``log_sigma`` is clamped to ``+-L``, as in affine couplings."""
    from invertible.transforms.stable import exp_bound

    layer = _prior_layer(kind, log_sigma, dtype)
    context = torch.ones(3, 1, dtype=dtype) if kind == "top" else None
    x = torch.zeros(3, 2, 2, 2, dtype=dtype)
    x[:, 1] = 0.5  # the factored-out half (the top prior: the second channel) at its mean
    z, ladj = layer(x, context)
    expected = torch.zeros_like(x)
    if kind == "top":
        expected[:, 0] = -0.5  # the first channel: mu = 0.5, log_sigma = 0
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(ladj, torch.full((3,), -4 * math.copysign(exp_bound(dtype), log_sigma), dtype=dtype))
    x_back, ladj_back = layer.inverse(z, context)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(ladj_back, -ladj)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, -0.25, math.nan])
def test_sigmoid_inverse_refuses_values_outside_its_range(dtype: torch.dtype, value: float) -> None:
    """At 0 or 1 ``logit`` is infinite and the log-det ``+inf``; further out both are NaN. As for Logit, a
    ValueError naming the value (also through ``Inverse(Sigmoid())``, the sigmoid used as a data-space logit)."""
    from invertible import Inverse
    from invertible.transforms import Sigmoid

    z = torch.tensor([[0.5, value, 0.25]], dtype=dtype)
    message = rf"Sigmoid\.inverse needs values in \(0, 1\); got 1 outside, e\.g\. {value:g}"
    with pytest.raises(ValueError, match=message):
        Sigmoid().inverse(z)
    with pytest.raises(ValueError, match=message):
        Inverse(Sigmoid())(z)
    x, ladj = Sigmoid().inverse(torch.tensor([[0.5, 1e-30, 1.0 - 1e-7]], dtype=torch.float64))  # inside, near the edge
    assert torch.isfinite(x).all() and torch.isfinite(ladj).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_forward_stays_inside_the_range_its_inverse_takes(dtype: torch.dtype) -> None:
    """Where ``sigmoid(x)`` rounds to 0 or 1 (``|x|`` beyond about 17 / 88 in float32, 37 / 745 in float64)
    ``forward`` returns the nearest float inside (0, 1), which ``inverse`` maps back to a finite ``x`` of the same
    sign (and which ``Inverse(Sigmoid())``, as a data-space logit, can score); the log-det stays the exact one."""
    from invertible import Inverse
    from invertible.transforms import Sigmoid

    x = torch.tensor([[40.0, -800.0, 1e30, -1e30, 0.5]], dtype=dtype)
    z, ladj = Sigmoid()(x)
    assert bool(((z > 0) & (z < 1)).all())
    torch.testing.assert_close(ladj, (-F.softplus(-x) - F.softplus(x)).sum(1))
    back, _ = Sigmoid().inverse(z)
    assert torch.isfinite(back).all() and torch.equal(back.sign(), x.sign())
    torch.testing.assert_close(back[:, 4], x[:, 4])
    _, ladj_back = Inverse(Sigmoid())(z)
    assert torch.isfinite(ladj_back).all()


# ---------------------------------------------------------------- batch normalisation


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_trains_on_values_near_the_float_range(dtype: torch.dtype) -> None:
    """Training-mode statistics where ``x^2`` (``|x| > 1.8e19`` in float32), ``sum (x - m)^2`` or ``sum x``
    overflow (the old layer gave a variance of inf, outputs 0 or NaN and a log-det of -inf). Scaling a channel
    by ``2^k`` leaves its output as it was and lowers the log-det by ``k log 2`` (``eps = 0`` makes the map
    exactly scale-free): the layer must agree with itself on the unscaled batch, also where the variance
    itself is beyond the float range (the third channel, whose running variance saturates)."""
    from invertible.transforms import BatchNorm

    emax = math.frexp(torch.finfo(dtype).max)[1]
    k = torch.tensor([0, emax // 2, emax - 3])  # ordinary; |x| ~ 1.5 sqrt(max); values near the largest float
    torch.manual_seed(0)
    small = torch.randn(6, 3, dtype=dtype) * 0.5 + torch.tensor([0.5, -1.5, 3.0], dtype=dtype)
    big = torch.ldexp(small, k).requires_grad_()  # exact
    small.requires_grad_()
    weights = torch.arange(1.0, 19.0, dtype=dtype).view(6, 3)
    outputs = []
    for x in (big, small):
        layer = BatchNorm(3, momentum=1.0, eps=0.0).to(dtype)  # momentum 1: the running statistics are the batch's
        with torch.no_grad():
            layer.log_gamma.copy_(torch.tensor([0.1, -0.2, 0.3]))
        z, ladj = layer(x)
        (grad,) = torch.autograd.grad((z * weights).sum() + ladj.sum(), x)
        outputs.append((z, ladj, grad, layer.running_mean, layer.running_var))
    (z, ladj, grad, mean, var), (z_ref, ladj_ref, grad_ref, mean_ref, var_ref) = outputs
    torch.testing.assert_close(z, z_ref)
    torch.testing.assert_close(ladj, ladj_ref - k.sum().item() * math.log(2.0))
    torch.testing.assert_close(grad, torch.ldexp(grad_ref, -k))  # d z / d x and d ladj / d x scale by 2^-k
    torch.testing.assert_close(mean, torch.ldexp(mean_ref, k))
    torch.testing.assert_close(var[:2], torch.ldexp(var_ref[:2], 2 * k[:2]))
    assert var[2] == torch.finfo(dtype).max


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_on_a_constant_channel_near_the_float_range(dtype: torch.dtype) -> None:
    """Equal values near the largest float: ``v = 0``, so ``z = 0`` and the log-det is ``-1/2 log eps``, as for equal
    values anywhere (``(v + eps) / s^2`` underflows to 0, and is taken in log space)."""
    from invertible.transforms import BatchNorm

    top = torch.finfo(dtype).max * 0.75
    x = torch.tensor([[top, 1.0], [top, 2.0], [top, 4.0]], dtype=dtype)
    layer = BatchNorm(2, momentum=1.0).to(dtype)
    z, ladj = layer(x)
    torch.testing.assert_close(z[:, 0], torch.zeros(3, dtype=dtype))
    v = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64).var(unbiased=False).item()
    torch.testing.assert_close(ladj, torch.full((3,), -0.5 * (math.log(1e-5) + math.log(v + 1e-5)), dtype=dtype))
    layer.eval()  # the running statistics are this batch's: the same map
    z_eval, ladj_eval = layer(x)
    torch.testing.assert_close(z_eval, z)
    torch.testing.assert_close(ladj_eval, ladj)
    x_back, _ = layer.inverse(z_eval)
    torch.testing.assert_close(x_back, x)
