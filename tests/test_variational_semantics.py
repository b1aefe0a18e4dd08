"""The variational family against first principles: each layer against the paper's formula written out
densely, the targets against the energies of Rezende & Mohamed's Table 1 and their normalizers, the ELBO and
REINFORCE gradients of :func:`fit` against their closed forms, the diagnostics and the VAE's training step and
bounds against an independent computation on the same draws, and the commands' options reaching the library."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from invertible.cli import main as cli
from invertible.distributions import DiagonalNormal
from invertible.models import Planar, Radial, Sylvester
from invertible.transforms import InverseAutoregressiveAffine
from invertible.transforms import Planar as PlanarLayer
from invertible.transforms import Radial as RadialLayer
from invertible.transforms import Sylvester as SylvesterLayer
from invertible.variational import evaluate, fit, get_target
from invertible.variational.data import load_images
from invertible.variational.likelihoods import log_likelihood, mean
from invertible.variational.vae import VAE, evaluate_vae, posterior_layers, train_vae

from .perturb import perturb

D64 = torch.float64


def _set_theta(layer: nn.Module, *parts) -> None:
    with torch.no_grad():
        layer.params.theta.copy_(torch.cat([torch.as_tensor(p, dtype=D64).reshape(-1) for p in parts]))


# ---------------------------------------------------------------- layers against the paper's formulas


def test_planar_layer_is_the_papers_map_with_its_reparameterised_u() -> None:
    """Rezende & Mohamed (2015), App. A.1: ``u_hat = u + (m(w^T u) - w^T u) w / |w|^2``, ``m(x) = -1 + log(1 + e^x)``;
    ``g(z) = z + u_hat tanh(w^T z + b)``, ``log|det| = log|1 + u_hat^T psi(z)|``, ``psi = (1 - tanh^2(w^T z + b)) w``.
    ``w^T u = -3`` is outside the invertible range, so only the reparameterised ``u_hat`` gives this map."""
    u, w, b = torch.tensor([1.5, -2.0, 0.7], dtype=D64), torch.tensor([0.8, 1.1, -0.4], dtype=D64), 0.3
    u = u + (-3.0 - w @ u) * w / (w @ w)  # w^T u = -3
    layer = PlanarLayer(3).double()
    _set_theta(layer, u, w, b)
    u_hat = u + (-1.0 + math.log1p(math.exp(float(w @ u))) - w @ u) * w / (w @ w)
    z = 2 * torch.randn(40, 3, generator=torch.Generator().manual_seed(0), dtype=D64)
    a = z @ w + b
    psi = (1 - torch.tanh(a) ** 2).unsqueeze(-1) * w
    y, ladj = layer.inverse(z)
    torch.testing.assert_close(y, z + u_hat * torch.tanh(a).unsqueeze(-1))
    torch.testing.assert_close(ladj, torch.log((1 + psi @ u_hat).abs()))
    z_back, ladj_back = layer(y)
    torch.testing.assert_close(z_back, z)
    torch.testing.assert_close(ladj_back, -ladj)


def test_planar_layer_with_w_zero_is_a_translation() -> None:
    """``w = 0``: ``g(z) = z + u tanh(b)`` (``u_hat = u``, the correction ``w / |w|^2`` vanishes), a translation
    with log-det 0, inverted exactly; ``w^T u_hat = 0``, not ``m(0) = log 2 - 1``."""
    u, b = torch.tensor([0.5, -1.0], dtype=D64), 0.8
    layer = PlanarLayer(2).double()
    _set_theta(layer, u, torch.zeros(2), b)
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=D64)
    y, ladj = layer.inverse(z)
    torch.testing.assert_close(y, z + u * math.tanh(b))
    torch.testing.assert_close(ladj, torch.zeros(5, dtype=D64))
    z_back, ladj_back = layer(y)
    torch.testing.assert_close(z_back, z)
    torch.testing.assert_close(ladj_back, torch.zeros(5, dtype=D64))


def test_planar_initial_w_is_uniform_on_plus_minus_sqrt_2_over_d() -> None:
    torch.manual_seed(0)
    d = 200
    w = PlanarLayer(d).params()["w"].detach()
    bound = math.sqrt(2.0 / d)
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.95 * bound
    assert float(w.abs().mean()) == pytest.approx(bound / 2, rel=0.15)  # E|U(-c, c)| = c / 2


def test_radial_layer_is_the_papers_map_with_beta_above_minus_alpha() -> None:
    """Rezende & Mohamed (2015), App. A.2: ``g(z) = z + beta h(alpha, r) (z - z0)``, ``h = 1 / (alpha + r)``,
    ``log|det| = (d - 1) log(1 + beta h) + log(1 + beta h + beta h'(r) r)``, with ``alpha = softplus(a) > 0`` and
    ``beta = -alpha + softplus(b) >= -alpha``. Raw ``a = -1``, ``b = -4`` give a contraction close to the limit."""
    z0, a, b = torch.tensor([0.5, -0.3, 1.0], dtype=D64), -1.0, -4.0
    layer = RadialLayer(3).double()
    _set_theta(layer, z0, a, b)
    alpha = math.log1p(math.exp(a))
    beta = -alpha + math.log1p(math.exp(b))
    z = z0 + torch.randn(40, 3, generator=torch.Generator().manual_seed(2), dtype=D64) * torch.logspace(-2, 0.5, 40, dtype=D64).unsqueeze(-1)
    r = (z - z0).norm(dim=-1)
    h, dh = 1 / (alpha + r), -1 / (alpha + r) ** 2
    y, ladj = layer.inverse(z)
    torch.testing.assert_close(y, z + (beta * h).unsqueeze(-1) * (z - z0))
    torch.testing.assert_close(ladj, 2 * torch.log1p(beta * h) + torch.log(1 + beta * h + beta * dh * r))
    z_back, ladj_back = layer(y)
    torch.testing.assert_close(z_back, z)
    torch.testing.assert_close(ladj_back, -ladj)


def _householder(vectors: torch.Tensor) -> torch.Tensor:
    """``H_1 H_2 ... H_K`` with ``H_i = I - 2 v_i v_i^T / |v_i|^2``, as a dense matrix."""
    q = torch.eye(vectors.shape[-1], dtype=D64)
    for v in vectors:
        q = q @ (torch.eye(len(v), dtype=D64) - 2 * torch.outer(v, v) / (v @ v))
    return q


@pytest.mark.parametrize("variant", ["orthogonal", "bottleneck", "householder"])
def test_sylvester_layer_is_the_dense_map_of_the_paper(variant: str) -> None:
    """van den Berg et al. (2018): ``g(z) = z + Q R tanh(R~ Q^T z + b)``, ``R, R~`` upper triangular with
    ``tanh`` diagonals (``R_ii R~_ii > -1``), log-det from the dense Jacobian ``I + Q R diag(sech^2 a) R~ Q^T``.
    ``Q``: orthonormal columns spanning the free matrix (orthogonal) or ``H_1 ... H_K`` (Householder)."""
    torch.manual_seed(3)
    d = 4
    options = {"orthogonal": {}, "bottleneck": {"bottleneck": 2}, "householder": {"variant": "householder", "reflections": 3}}[variant]
    layer = SylvesterLayer(d, **options).double()
    m = layer.m
    g = torch.Generator().manual_seed(4)
    p = {"r1": torch.randn(m, m, generator=g, dtype=D64), "r2": torch.randn(m, m, generator=g, dtype=D64),
         "d1": torch.full((m,), 3.0, dtype=D64), "d2": torch.full((m,), -3.0, dtype=D64),  # R_ii R~_ii = -0.99
         "b": 0.5 * torch.randn(m, generator=g, dtype=D64)}
    p["q"] = torch.randn(3, d, generator=g, dtype=D64) if variant == "householder" else torch.randn(d, m, generator=g, dtype=D64)
    _set_theta(layer, *(p[n] for n in layer.params.names))
    r1 = p["r1"].triu(1) + torch.diag(torch.tanh(p["d1"]))
    r2 = p["r2"].triu(1) + torch.diag(torch.tanh(p["d2"]))
    if variant == "householder":
        q = _householder(p["q"])
    else:
        q = layer._coefficients(None)[0][0].detach()
        torch.testing.assert_close(q.T @ q, torch.eye(m, dtype=D64))  # orthonormal columns ...
        torch.testing.assert_close(q @ q.T @ p["q"], p["q"])  # ... spanning the free matrix
    z = 1.5 * torch.randn(30, d, generator=g, dtype=D64)
    a = z @ q @ r2.T + p["b"]
    y, ladj = layer.inverse(z)
    torch.testing.assert_close(y, z + torch.tanh(a) @ r1.T @ q.T)
    jac = torch.eye(d, dtype=D64) + q @ r1 @ torch.diag_embed(1 - torch.tanh(a) ** 2) @ r2 @ q.T
    torch.testing.assert_close(ladj, torch.linalg.slogdet(jac)[1])
    z_back, ladj_back = layer(y)
    torch.testing.assert_close(z_back, z)
    torch.testing.assert_close(ladj_back, -ladj)


@pytest.mark.parametrize("make", [
    lambda: PlanarLayer(3),
    lambda: RadialLayer(3),
    lambda: SylvesterLayer(3),
    lambda: SylvesterLayer(3, variant="householder", reflections=2),
], ids=["planar", "radial", "sylvester", "householder"])
def test_solved_direction_has_the_inverse_jacobian_and_implicit_parameter_gradients(make) -> None:
    """``forward = g^{-1}``: its Jacobian is the inverse matrix of ``g``'s (a log-det check cannot see an error that
    keeps the triangular structure), and its derivatives in the parameters match finite differences."""
    torch.manual_seed(6)
    layer = make().double()
    perturb(layer, 0.5, seed=6)
    z = torch.randn(3, 3, dtype=D64)
    y = layer.inverse(z)[0].detach()
    for zi, yi in zip(z, y):
        j_g = torch.func.jacrev(lambda v: layer.inverse(v.unsqueeze(0))[0].squeeze(0))(zi)
        j_solved = torch.func.jacrev(lambda v: layer(v.unsqueeze(0))[0].squeeze(0))(yi)
        torch.testing.assert_close(j_solved @ j_g, torch.eye(3, dtype=D64))
    theta = layer.params.theta.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda th: torch.func.functional_call(layer, {"params.theta": th}, (y[:2],)), (theta,), fast_mode=True)


def test_sylvester_options() -> None:
    """``reflections`` sets the number of Householder vectors; the Householder ``Q`` is square whatever the
    ``bottleneck``; bad sizes are refused."""
    assert SylvesterLayer(5, variant="householder", reflections=2).params()["q"].shape == (1, 2, 5)
    assert SylvesterLayer(5, variant="householder", bottleneck=2).m == 5
    assert SylvesterLayer(5, bottleneck=2).m == 2
    with pytest.raises(ValueError, match=r"bottleneck must be in \[1, 3\], got 4"):
        SylvesterLayer(3, bottleneck=4)
    with pytest.raises(ValueError, match="reflections must be positive, got 0"):
        SylvesterLayer(3, variant="householder", reflections=0)
    for layer in (PlanarLayer, RadialLayer, SylvesterLayer):
        with pytest.raises(ValueError, match="features must be positive, got 0"):
            layer(0)


@pytest.mark.parametrize("layer", [PlanarLayer, RadialLayer, SylvesterLayer], ids=["planar", "radial", "sylvester"])
def test_amortised_layer_starts_as_its_free_counterpart(layer) -> None:
    """The context head ``W`` starts at zero (weights and bias): ``theta(c) = theta_0`` for every context."""
    torch.manual_seed(5)
    free = layer(3).double()
    torch.manual_seed(5)
    amortised = layer(3, context_features=2).double()
    with torch.no_grad():
        free.params.theta.add_(0.5 * torch.randn_like(free.params.theta))
        amortised.params.theta.copy_(free.params.theta)
    z = torch.randn(6, 3, dtype=D64)
    c = 3 * torch.randn(6, 2, dtype=D64)
    for got, want in zip(amortised.inverse(z, c), free.inverse(z)):
        torch.testing.assert_close(got, want)
    for got, want in zip(free.inverse(z, c), free.inverse(z)):  # a free layer ignores a context
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match=r"this layer is amortised: pass a context of shape \(batch, 2\)"):
        amortised.inverse(z)


def test_presets_build_what_they_are_asked() -> None:
    planar = Planar(2, layers=3, base="diagonal_normal")
    assert len(planar.transform) == 3 and all(type(t) is PlanarLayer for t in planar.transform)
    assert isinstance(planar.base, DiagonalNormal)
    radial = Radial(2, layers=2)
    assert len(radial.transform) == 2 and all(type(t) is RadialLayer for t in radial.transform)
    householder = Sylvester(4, layers=2, variant="householder", reflections=3)
    assert all(t.variant == "householder" and t.params()["q"].shape == (1, 3, 4) for t in householder.transform)
    assert all(t.m == 2 for t in Sylvester(4, layers=2, bottleneck=2).transform)
    for preset in (Planar, Radial, Sylvester):
        with pytest.raises(ValueError, match="layers must be positive, got 0"):
            preset(2, layers=0)


# ---------------------------------------------------------------- targets


def _table1(name: str, z1: float, z2: float) -> float:
    """``-U(z)`` of Table 1 of Rezende & Mohamed (2015), in plain floats."""
    w1 = math.sin(2 * math.pi * z1 / 4)
    w2 = 3 * math.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    w3 = 3 / (1 + math.exp(-(z1 - 1) / 0.3))
    if name == "u1":
        r = math.hypot(z1, z2)
        return -0.5 * ((r - 2) / 0.4) ** 2 + math.log(math.exp(-0.5 * ((z1 - 2) / 0.6) ** 2) + math.exp(-0.5 * ((z1 + 2) / 0.6) ** 2))
    if name == "u2":
        return -0.5 * ((z2 - w1) / 0.4) ** 2
    if name == "u3":
        return math.log(math.exp(-0.5 * ((z2 - w1) / 0.35) ** 2) + math.exp(-0.5 * ((z2 - w1 + w2) / 0.35) ** 2))
    return math.log(math.exp(-0.5 * ((z2 - w1) / 0.4) ** 2) + math.exp(-0.5 * ((z2 - w1 + w3) / 0.35) ** 2))


POINTS = [(0.3, -1.2), (-2.0, 0.5), (1.7, 2.1), (-3.5, -3.9), (1.0, -2.0), (2.5, 0.0), (-0.8, 3.0)]


@pytest.mark.parametrize("name", ["u1", "u2", "u3", "u4"])
def test_energies_are_table_1_on_the_papers_window(name: str) -> None:
    z = torch.tensor(POINTS, dtype=D64)
    torch.testing.assert_close(get_target(name)(z), torch.tensor([_table1(name, *p) for p in POINTS], dtype=D64))


@pytest.mark.parametrize("name", ["u2", "u3", "u4"])
def test_wall_outside_the_window(name: str) -> None:
    """``+ 1/2 ((|z1| - 4)_+ / 0.5)^2`` beyond ``|z1| = 4``."""
    z = torch.tensor([[4.6, 0.2], [-5.0, -1.0]], dtype=D64)
    walls = torch.tensor([0.5 * (0.6 / 0.5) ** 2, 0.5 * (1.0 / 0.5) ** 2], dtype=D64)
    torch.testing.assert_close(get_target(name)(z), torch.tensor([_table1(name, *p) for p in z.tolist()], dtype=D64) - walls)


def test_extra_targets_are_their_normalized_densities_times_z() -> None:
    """``log p~ - log Z`` is the stated density: banana ``N(z1; 0, 1.2^2) N(z2; z1^2/2 - 1.5, 0.35^2)``, mog
    ``sum_k w_k/10 N(z; m_k, 0.4^2 I)`` with ``m_k`` at ``(+-2.5, +-2.5)`` and weights 1:2:3:4, funnel
    ``N(z1; 0, 1) N(z2; 0, e^z1)``."""
    n = torch.distributions.Normal
    z = torch.tensor(POINTS + [(2.4, 2.6), (-2.5, -2.4), (2.5, -2.5)], dtype=D64)
    z1, z2 = z[:, 0], z[:, 1]
    banana = n(0.0, 1.2).log_prob(z1) + n(0.5 * z1**2 - 1.5, 0.35).log_prob(z2)
    means = torch.tensor([(2.5, 2.5), (-2.5, 2.5), (-2.5, -2.5), (2.5, -2.5)], dtype=D64)
    comps = n(means, 0.4).log_prob(z.unsqueeze(1)).sum(-1) + torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=D64))
    funnel = n(0.0, 1.0).log_prob(z1) + n(0.0, torch.exp(0.5 * z1)).log_prob(z2)
    for name, want in (("banana", banana), ("mog", torch.logsumexp(comps, -1)), ("funnel", funnel)):
        t = get_target(name)
        torch.testing.assert_close(t(z) - t.closed_log_z, want)


def test_u2_u3_u4_normalizers_in_closed_form() -> None:
    """Along ``z2`` each Gaussian term integrates to ``sigma sqrt(2 pi)`` whatever ``z1``; along ``z1`` the wall
    gives ``8 + 2 int_0^inf exp(-t^2 / (2 0.5^2)) dt = 8 + 0.5 sqrt(2 pi)``."""
    s = math.sqrt(2 * math.pi)
    for name, sigmas in (("u2", 0.4), ("u3", 0.35 + 0.35), ("u4", 0.4 + 0.35)):
        t = get_target(name)
        assert t.closed_log_z == pytest.approx(math.log(sigmas * s * (8 + 0.5 * s)), abs=1e-14)
        assert t.log_z() == pytest.approx(t.closed_log_z, abs=1e-10)


def test_u1_normalizer_matches_polar_quadrature() -> None:
    """An independent quadrature of U1 in polar coordinates (midpoints in ``r``, periodic rule in ``theta``)."""
    nr, nt = 600, 256
    r = (torch.arange(nr, dtype=D64) + 0.5) * (6.0 / nr)
    rr, th = torch.meshgrid(r, torch.arange(nt, dtype=D64) * (2 * math.pi / nt), indexing="ij")
    x = rr * torch.cos(th)
    log_f = -0.5 * ((rr - 2) / 0.4) ** 2 + torch.logaddexp(-0.5 * ((x - 2) / 0.6) ** 2, -0.5 * ((x + 2) / 0.6) ** 2)
    log_z = float(torch.logsumexp((log_f + torch.log(rr)).reshape(-1), 0)) + math.log(6.0 / nr * 2 * math.pi / nt)
    assert get_target("u1").log_z() == pytest.approx(log_z, abs=1e-10)


def test_target_names_are_case_insensitive() -> None:
    assert get_target("U1") is get_target("u1")


# ---------------------------------------------------------------- fit and evaluate


class _Gaussian(nn.Module):
    """``q = N(mu, diag(s^2))`` in 2-D that records its draws ``(z, eps, log q)`` and the gradients it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.tensor([0.3, -0.2], dtype=D64))
        self.log_s = nn.Parameter(torch.tensor([0.1, -0.4], dtype=D64))
        self.draws: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.grads: dict[str, list[torch.Tensor]] = {"mu": [], "log_s": []}
        self.mu.register_hook(lambda g: self.grads["mu"].append(g.clone()))
        self.log_s.register_hook(lambda g: self.grads["log_s"].append(g.clone()))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Normal(self.mu, self.log_s.exp()).log_prob(z).sum(-1)

    def rsample_and_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        eps = torch.randn(n, 2, dtype=D64)
        z = self.mu + self.log_s.exp() * eps
        log_q = self.log_prob(z)
        self.draws.append((z.detach(), eps, log_q.detach()))
        return z, log_q

    def sample(self, n: int) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample_and_log_prob(n)[0]


M0, S0 = torch.tensor([1.0, -1.0], dtype=D64), torch.tensor([0.5, 1.5], dtype=D64)


def _log_p(z: torch.Tensor) -> torch.Tensor:
    """``log p~(z) = -1/2 |(z - m) / sigma|^2``."""
    return -0.5 * (((z - M0) / S0) ** 2).sum(-1)


def test_reparameterised_gradient_is_the_annealed_elbo_gradient() -> None:
    """``z = mu + s eps``: ``d/dmu E[log q - beta log p~] = -beta E[grad log p~(z)]`` and
    ``d/dlog s = -1 - beta E[grad log p~(z) s eps]`` (the entropy of ``q`` gives the ``-1``), ``beta = 0.01 + 1/4``."""
    torch.manual_seed(0)
    q = _Gaussian()
    mu, s = q.mu.detach().clone(), q.log_s.detach().exp()
    fit(q, _log_p, steps=1, batch_size=64, anneal_steps=4, eval_samples=10)
    z, eps, _ = q.draws[0]
    score = -(z - M0) / S0**2  # grad_z log p~
    beta = 0.26
    torch.testing.assert_close(z, mu + s * eps)
    torch.testing.assert_close(q.grads["mu"][0], -beta * score.mean(0))
    torch.testing.assert_close(q.grads["log_s"][0], -1 - beta * (score * s * eps).mean(0))


def test_reinforce_gradient_is_the_score_function_with_a_leave_one_out_baseline() -> None:
    """``grad = -1/n sum_i (f_i - b_i) grad log q(z_i)``, ``f = beta log p~ - log q``, ``b_i`` the mean of the
    other ``n - 1`` values of ``f``; ``grad_mu log q = (z - mu) / s^2``, ``grad_log s log q = (z - mu)^2 / s^2 - 1``."""
    torch.manual_seed(1)
    q = _Gaussian()
    mu, s = q.mu.detach().clone(), q.log_s.detach().exp()
    n = 16
    fit(q, _log_p, steps=1, batch_size=n, estimator="reinforce", anneal_steps=4, eval_samples=10)
    z = q.draws[0][0]
    log_q = torch.distributions.Normal(mu, s).log_prob(z).sum(-1)
    f = 0.26 * _log_p(z) - log_q
    baseline = torch.stack([torch.cat([f[:i], f[i + 1 :]]).mean() for i in range(n)])
    weight = (f - baseline).unsqueeze(-1)
    torch.testing.assert_close(q.grads["mu"][0], -(weight * (z - mu) / s**2).mean(0))
    torch.testing.assert_close(q.grads["log_s"][0], -(weight * ((z - mu) ** 2 / s**2 - 1)).mean(0))


@pytest.mark.parametrize("estimator", ["reparam", "reinforce"])
def test_history_is_the_unannealed_elbo_averaged_over_each_block(estimator: str) -> None:
    """Records at steps 2, 4 and the last, 5: the mean over the steps since the previous record of
    ``mean(log p~ - log q)`` (not the annealed ``beta log p~``), with ``beta_t = min(1, 0.01 + t / 4)``; the final
    diagnostics use ``eval_samples`` draws."""
    torch.manual_seed(2)
    q = _Gaussian()
    r = fit(q, _log_p, steps=5, batch_size=8, estimator=estimator, anneal_steps=4, eval_samples=1500, log_every=2)
    per_step = [float((_log_p(z) - lq).mean()) for z, _, lq in q.draws[:-1]]  # the last draw is the evaluation
    assert [len(z) for z, _, _ in q.draws] == [8] * 5 + [1500]
    assert [h["step"] for h in r.history] == [2, 4, 5]
    assert [h["beta"] for h in r.history] == pytest.approx([0.51, 1.0, 1.0])
    want = [sum(per_step[0:2]) / 2, sum(per_step[2:4]) / 2, per_step[4]]
    assert [h["elbo"] for h in r.history] == pytest.approx(want, rel=1e-12)


def test_fit_clips_the_gradient_norm() -> None:
    torch.manual_seed(3)
    q = _Gaussian()
    fit(q, _log_p, steps=1, batch_size=8, eval_samples=10, clip_grad=1e-3)
    raw = torch.cat([q.grads["mu"][0], q.grads["log_s"][0]])
    assert float(raw.norm()) > 1e-2
    torch.testing.assert_close(torch.cat([q.mu.grad, q.log_s.grad]), raw * 1e-3 / raw.norm(), rtol=1e-5, atol=0)


def test_fit_bad_options() -> None:
    q = _Gaussian()
    with pytest.raises(ValueError, match="REINFORCE baseline needs batch_size >= 2"):
        fit(q, _log_p, steps=1, batch_size=1, estimator="reinforce")
    with pytest.raises(ValueError, match="anneal_steps must be >= 0, got -1"):
        fit(q, _log_p, steps=1, anneal_steps=-1)
    with pytest.raises(ValueError, match="anneal_steps must be >= 0, got nan"):
        fit(q, _log_p, steps=1, anneal_steps=float("nan"))
    with pytest.raises(ValueError, match="lr must be positive, got 0"):
        fit(q, _log_p, steps=1, lr=0.0)
    assert not q.draws  # refused before any step


class _Table(nn.Module):
    """A "q" that hands out the rows of a fixed table of draws and log-densities, in order."""

    def __init__(self, z: torch.Tensor, log_q: torch.Tensor) -> None:
        super().__init__()
        self.z, self.log_q, self.pos, self.calls = z, log_q, 0, []

    def rsample_and_log_prob(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append(n)
        rows = slice(self.pos, self.pos + n)
        self.pos += n
        return self.z[rows], self.log_q[rows]


def test_evaluate_is_the_elbo_the_importance_estimate_and_the_ess_of_its_draws() -> None:
    """On 5 draws in chunks of 2: ELBO ``mean(l)``, ``log Z = log(1/n sum e^l)``, ESS ``(sum w)^2 / (n sum w^2)``,
    with ``l = log p~ - log q`` around 800 (``e^l`` overflows float64: the estimates must stay in log space)."""
    z = torch.linspace(-1, 1, 10, dtype=D64).reshape(5, 2)
    log_q = torch.tensor([-1.0, 0.5, -2.0, 0.0, 1.5], dtype=D64)
    table = _Table(z, log_q)
    stats = evaluate(table, lambda x: 800.0 - x.sum(-1), samples=5, chunk=2)
    assert table.calls == [2, 2, 1]
    lw = (800.0 - z.sum(-1) - log_q).tolist()
    w = [math.exp(v - 800.0) for v in lw]
    assert stats["elbo"] == pytest.approx(sum(lw) / 5, rel=1e-14)
    assert stats["log_z_is"] == pytest.approx(800.0 + math.log(sum(w) / 5), rel=1e-14)
    assert stats["ess"] == pytest.approx(sum(w) ** 2 / sum(v * v for v in w) / 5, rel=1e-12)


# ---------------------------------------------------------------- likelihoods and data


def test_gaussian_likelihood_is_a_normal_with_its_scale_floored_at_one_level() -> None:
    """``N(x; sigmoid(m), s^2)`` summed over pixels, ``log s`` clamped to ``[-log levels, 2]``."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 4, generator=g, dtype=D64)
    loc, log_scale = torch.randn(3, 4, generator=g, dtype=D64), torch.tensor([-9.0, -1.0, 0.5, 4.0], dtype=D64).expand(3, 4)
    scale = torch.tensor([1 / 17, math.exp(-1.0), math.exp(0.5), math.exp(2.0)], dtype=D64)
    want = torch.distributions.Normal(torch.sigmoid(loc), scale).log_prob(x).sum(-1)
    torch.testing.assert_close(log_likelihood("gaussian", torch.cat([loc, log_scale], -1), x, levels=17), want)


def _log_bin_mass(plus: torch.Tensor, minus: torch.Tensor) -> torch.Tensor:
    """``log(sigmoid(p) - sigmoid(q))`` for ``p > q`` without cancellation:
    ``sigmoid(p) - sigmoid(q) = e^p (1 - e^(q - p)) / ((1 + e^p)(1 + e^q))``."""
    return plus + torch.log1p(-torch.exp(minus - plus)) - F.softplus(plus) - F.softplus(minus)


def _logistic(x: torch.Tensor, loc: float, s: float, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel log-masses of the library and the exact ones, for interior grey levels ``x`` (one pixel a row)."""
    x = x.reshape(-1, 1)
    out = torch.cat([torch.full_like(x, loc), torch.full_like(x, math.log(s))], -1)
    half = 0.5 / (levels - 1)
    return log_likelihood("logistic", out, x, levels), _log_bin_mass((x - loc + half) / s, (x - loc - half) / s).squeeze(-1)


def test_discretized_logistic_is_the_mass_of_its_bin() -> None:
    """Interior bins of width ``1 / (levels - 1)`` a few scales from the location (masses ``1e-4`` to ``1e-2``,
    not the ends): exactly ``log(sigmoid(x+) - sigmoid(x-))``, ``x+- = (x - m +- 1 / (2 (levels - 1))) / s``."""
    got, exact = _logistic(torch.tensor([0.25, 0.5, 0.75], dtype=D64), -0.25, 0.1, levels=5)
    assert float(exact.exp().min()) > 1e-5 and float(exact.exp().max()) < 0.1
    torch.testing.assert_close(got, exact, atol=1e-12, rtol=0)


def test_discretized_logistic_in_its_far_tails() -> None:
    """Masses below ``1e-5``: within ``1.2e-3`` of the exact log-mass (the midpoint rule's error ``(width / s)^2 / 24
    = 1.0e-3``, the bound kept from when the library used the density at the bin centre times the bin width)."""
    got, exact = _logistic(torch.tensor([40.0, 60.0, 200.0, 215.0], dtype=D64) / 255, 0.5, 0.025, levels=256)
    assert float(exact.exp().max()) < 1e-5
    torch.testing.assert_close(got, exact, atol=1.2e-3, rtol=0)


def test_discretized_logistic_far_from_its_location_at_the_scale_floor() -> None:
    """Digits' 17 levels at the floor scale ``s = e^-7``: a bin is 68.5 scales wide, and its log-mass many levels
    from the location (down to -843 nats) is exact, not the density at the bin centre times the width (30 nats
    below it)."""
    x = torch.arange(2, 15, dtype=D64) / 16
    for loc in (-0.3, 0.05, 0.5, 1.2):
        got, exact = _logistic(x[(x - loc).abs() > 0.1], loc, math.exp(-7.0), levels=17)
        assert float(exact.min()) < -100
        torch.testing.assert_close(got, exact, atol=1e-9, rtol=1e-12)


def test_discretized_logistic_in_float32_where_both_sigmoids_are_near_one() -> None:
    """Interior bins a few scales above the location (``sigmoid(x+)`` and ``sigmoid(x-)`` both near 1, masses
    ``2e-5`` to ``2e-3``) in float32: within ``2e-6`` nats per pixel of the exact log-mass of the same float32
    inputs (their difference of sigmoids lost up to ``2e-3``)."""
    levels, half = 17, 0.5 / 16
    x = torch.arange(1, 16, dtype=D64) / 16
    for offset, log_s in ((0.1, -5.0), (0.1, -4.5), (0.15, -4.5), (0.15, -4.0), (0.2, -4.0)):
        out = torch.stack([x - offset, torch.full_like(x, log_s)], -1).float()
        got = log_likelihood("logistic", out, x.float().view(-1, 1), levels)
        x32, loc32, s32 = x.float().double(), out[:, 0].double(), out[:, 1].double().exp()
        exact = _log_bin_mass((x32 - loc32 + half) / s32, (x32 - loc32 - half) / s32)
        assert 1e-5 < float(exact.exp().min()) and float(exact.exp().max()) < 0.05
        assert float((got.double() - exact).abs().max()) < 2e-6


def test_decoder_means() -> None:
    out = torch.tensor([[-2.0, 0.4, 1.3, 0.1, -0.5, 0.2]])
    torch.testing.assert_close(mean("bernoulli", out), torch.sigmoid(out))
    torch.testing.assert_close(mean("gaussian", out), torch.sigmoid(out[:, :3]))
    torch.testing.assert_close(mean("logistic", out), torch.tensor([[0.0, 0.4, 1.0]]))


def test_digits_are_binarized_by_their_grey_levels_and_split_disjointly() -> None:
    grey = load_images("digits", binarize=False)
    binary = load_images("digits", binarize=True)
    assert grey.levels == 17 and binary.levels == 2
    pixels = torch.cat([grey.train, grey.test])
    assert float(pixels.max()) == 1.0 and torch.equal(pixels * 16, (pixels * 16).round())
    assert set(binary.train.unique().tolist()) == {0.0, 1.0}
    assert float(binary.train.mean()) == pytest.approx(float(grey.train.mean()), abs=0.01)  # E[Bernoulli(g)] = g
    assert len(grey.train) + len(grey.test) == 1797 and len(grey.test) == round(0.2 * 1797)
    rows = {tuple(r.tolist()) for r in grey.train.reshape(len(grey.train), -1)}
    assert sum(tuple(r.tolist()) in rows for r in grey.test.reshape(len(grey.test), -1)) < 0.05 * len(grey.test)  # a few repeated images


# ---------------------------------------------------------------- VAE


def _vae(posterior: str = "planar", layers: int = 2) -> VAE:
    torch.manual_seed(0)
    model = VAE((1, 3, 3), latent=2, hidden=8, context=3, posterior=posterior, layers=layers).double()
    with torch.no_grad():
        for p in model.flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


X = (torch.rand(6, 1, 3, 3, generator=torch.Generator().manual_seed(7)) < 0.5).double()


def test_vae_elbo_weights_the_kl_term() -> None:
    model = _vae()
    torch.manual_seed(1)
    log_px, log_pz, log_q = model.log_weights(X)
    torch.manual_seed(1)
    torch.testing.assert_close(model.elbo(X, kl_weight=0.3), (log_px + 0.3 * (log_pz - log_q))[0])


@pytest.mark.parametrize("posterior", ["diagonal", "planar", "radial", "sylvester", "iaf"])
def test_every_vae_parameter_takes_part_in_the_elbo(posterior: str) -> None:
    """Each parameter gets a gradient from the ELBO: a diagonal posterior holds no context map it would not use."""
    model = _vae(posterior, 0 if posterior == "diagonal" else 2)
    model.elbo(X).sum().backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []
    assert (model.context is None) == (posterior == "diagonal")


def test_train_vae_step_is_adam_on_the_warmed_up_negative_elbo() -> None:
    """One step with ``warmup = 4``: the KL weight is ``1/4``, the parameters move as one Adam step on
    ``-(log p(x|z) + w (log p(z) - log q))`` of the same draws, and the record is the ELBO (``w = 1``)."""
    model = _vae()
    manual = copy.deepcopy(model)
    torch.manual_seed(2)
    history = train_vae(model, X, steps=1, batch_size=len(X), warmup=4, log_every=50)
    torch.manual_seed(2)
    x = X[torch.randperm(len(X))]
    log_px, log_pz, log_q = manual.log_weights(x)
    opt = torch.optim.Adam(manual.parameters(), lr=1e-3)
    (-(log_px + 0.25 * (log_pz - log_q)).mean()).backward()
    opt.step()
    assert history == [{"step": 1, "train_elbo": pytest.approx(float((log_px + log_pz - log_q).detach().mean())), "kl_weight": 0.25,
                        "wall_time_s": history[0]["wall_time_s"]}]
    for p, p_manual in zip(model.parameters(), manual.parameters()):
        torch.testing.assert_close(p, p_manual)


def test_train_vae_visits_every_image_once_an_epoch() -> None:
    model = _vae("diagonal", 0)
    seen = []
    original = model.log_weights
    model.log_weights = lambda x, k=1: (seen.append(x), original(x, k))[1]
    train_vae(model, X, steps=6, batch_size=2)
    for epoch in (seen[:3], seen[3:]):
        images = torch.cat(epoch).reshape(len(X), -1)
        assert sorted(map(tuple, images.tolist())) == sorted(map(tuple, X.reshape(len(X), -1).tolist()))


def test_evaluate_vae_is_the_mean_elbo_and_importance_weighted_bound_of_its_draws() -> None:
    """Chunks of 4 images, ``k = 5``: ``mean_i l_i`` and ``log 1/k sum_i e^(l_i)`` per image, averaged over images."""
    model = _vae()
    torch.manual_seed(3)
    stats = evaluate_vae(model, X, k=5, chunk=4)
    torch.manual_seed(3)
    lw = []
    with torch.no_grad():
        for xb in X.split(4):
            log_px, log_pz, log_q = model.log_weights(xb, 5)
            lw.append(log_px + log_pz - log_q)
    lw = torch.cat(lw, 1)  # (k, images)
    assert stats["elbo"] == pytest.approx(float(lw.mean()), rel=1e-12)
    assert stats["iw_log_px"] == pytest.approx(float((torch.logsumexp(lw, 0) - math.log(5)).mean()), rel=1e-12)


def test_posterior_layers() -> None:
    """Radial layers for ``radial``, 4 Householder reflections for ``sylvester``, alternating orders for ``iaf``."""
    assert all(type(t) is RadialLayer for t in posterior_layers("radial", 3, 2, 2))
    context = torch.zeros(1, 2)
    assert [t.params(context)["q"].shape for t in posterior_layers("sylvester", 6, 2, 2)] == [(1, 4, 6)] * 2
    iaf = posterior_layers("iaf", 3, 2, 3)
    assert all(type(t) is InverseAutoregressiveAffine for t in iaf)
    assert [t.net.degrees.tolist() for t in iaf] == [[1, 2, 3], [3, 2, 1], [1, 2, 3]]
    with pytest.raises(ValueError, match="the planar posterior needs layers >= 1, got 0"):
        posterior_layers("planar", 3, 2, 0)


# ---------------------------------------------------------------- commands


def test_fit_density_passes_its_options_to_fit(tmp_path, monkeypatch) -> None:
    import invertible.variational as variational

    seen = {}
    real = variational.fit

    def spy(q, target, **options):
        seen.update(options, seed=torch.initial_seed(), target=target.name, layers=[type(t) for t in q.transform])
        return real(q, target, **options)

    monkeypatch.setattr(variational, "fit", spy)
    torch.manual_seed(123)
    argv = ["fit-density", "--target", "u2", "--model", "radial", "--layers", "2", "--steps", "3", "--batch-size", "8",
            "--lr", "0.01", "--estimator", "reinforce", "--anneal", "7", "--eval-samples", "50", "--seed", "5"]
    assert cli([*argv, "--out", str(tmp_path)]) == 0
    seen.pop("callback")
    assert seen == {"steps": 3, "batch_size": 8, "lr": 0.01, "estimator": "reinforce", "anneal_steps": 7, "eval_samples": 50,
                    "log_every": 1, "seed": 5, "target": "u2", "layers": [RadialLayer, RadialLayer]}
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["beta"] for r in records] == pytest.approx([0.01 + t / 7 for t in (1, 2, 3)])


def test_vae_command_passes_its_options_on(tmp_path, monkeypatch) -> None:
    import invertible.variational.data as data
    import invertible.variational.vae as vae

    seen = {}

    def spy(module, name, key):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            seen[key] = (args, kwargs) if key != "VAE" else (args, kwargs, torch.initial_seed())
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    spy(data, "load_images", "load")
    spy(vae, "VAE", "VAE")
    spy(vae, "train_vae", "train")
    spy(vae, "evaluate_vae", "evaluate")
    torch.manual_seed(123)
    argv = ["vae", "--data", "digits", "--posterior", "diagonal", "--layers", "3", "--likelihood", "gaussian", "--latent", "2",
            "--hidden", "8", "--steps", "2", "--batch-size", "10", "--lr", "0.002", "--warmup", "5", "--iw-samples", "3",
            "--test-size", "4", "--seed", "2", "--out", str(tmp_path)]
    assert cli(argv) == 0
    assert seen["load"] == (("digits",), {"binarize": False, "seed": 2})
    assert seen["VAE"][1:] == ({"latent": 2, "hidden": 8, "posterior": "diagonal", "layers": 0, "likelihood": "gaussian", "levels": 17}, 2)
    assert seen["train"][0][2:] == (2, 10, 0.002, 5)
    assert len(seen["evaluate"][0][1]) == 4 and seen["evaluate"][1] == {"k": 3}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["layers"] == 0 and config["levels"] == 17
    summary = json.loads((tmp_path / "summary.json").read_text())  # what reruns the run: the seed draws the split
    assert {k: summary[k] for k in ("seed", "batch_size", "lr", "warmup", "steps")} == {
        "seed": 2, "batch_size": 10, "lr": 0.002, "warmup": 5, "steps": 2}
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["kl_weight"] for r in records] == [0.2, 0.4]


FIT_DENSITY_ARGV, VAE_ARGV = ["fit-density", "--target", "u1"], ["vae", "--data", "digits"]


@pytest.mark.parametrize("command,flag,value", [
    *((FIT_DENSITY_ARGV, flag, value) for flag, value in [("--layers", "0"), ("--steps", "0"), ("--batch-size", "0"),
                                                      ("--eval-samples", "0"), ("--lr", "0"), ("--anneal", "-1")]),
    *((VAE_ARGV, flag, value) for flag, value in [("--batch-size", "0"), ("--latent", "0"), ("--hidden", "0"),
                                              ("--test-size", "-1"), ("--warmup", "-1"), ("--lr", "0"),
                                              ("--test-size", "360")]),  # digits has 359 test images: was taken as 359
])
def test_commands_refuse_bad_options_before_creating_out(tmp_path, capsys, command, flag, value) -> None:
    assert cli([*command, flag, value, "--out", str(tmp_path / "bad")]) == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("command", [FIT_DENSITY_ARGV, VAE_ARGV])
def test_commands_refuse_an_empty_out(tmp_path, capsys, monkeypatch, command) -> None:
    """``Path("")`` is the current directory: ``--out ''`` wrote the results there."""
    monkeypatch.chdir(tmp_path)
    assert cli([*command, "--steps", "1", "--out", ""]) == 2
    assert "error: --out must be a directory path, got ''" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool, torch.float64])
def test_vae_refuses_images_of_another_dtype_than_its_own(dtype) -> None:
    """Binary images as uint8, bool or float64 passed the value checks and then failed inside the encoder with
    "mat1 and mat2 must have the same dtype", naming no argument."""
    from invertible.variational.vae import VAE, evaluate_vae, train_vae

    model = VAE((1, 4, 4), latent=2, hidden=8)
    x = torch.rand(10, 1, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.5
    with pytest.raises(ValueError, match=rf"x has dtype {dtype} and the model torch.float32: convert the images"):
        evaluate_vae(model, x.to(dtype), k=2)
    with pytest.raises(ValueError, match=rf"train has dtype {dtype}"):
        train_vae(model, x.to(dtype), steps=1, batch_size=5)
    assert math.isfinite(evaluate_vae(model, x.float(), k=2)["elbo"])
    assert math.isfinite(evaluate_vae(model.double(), x.double(), k=2)["elbo"])
