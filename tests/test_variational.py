"""Reverse-KL fitting, targets, VAE pieces and the variational commands."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

import invertible
from invertible.cli import main as cli
from invertible.models import Planar, Radial, Sylvester
from invertible.transforms import Planar as PlanarLayer
from invertible.transforms import Radial as RadialLayer
from invertible.transforms import Sylvester as SylvesterLayer
from invertible.transforms.roots import bracketed_newton
from invertible.transforms.stable import log_sech2
from invertible.variational import FAMILIES, TARGETS, Target, approximation, evaluate, fit, get_target
from invertible.variational.likelihoods import log_likelihood
from invertible.variational.vae import VAE, evaluate_vae, train_vae


def _gaussian_target() -> Target:
    def log_p(z):
        return -0.5 * (((z[..., 0] - 1.0) / 0.5) ** 2 + ((z[..., 1] + 1.0) / 1.5) ** 2)

    return Target("gauss", log_p, ((-4, 6), (-10, 8)), (300, 300), closed_log_z=math.log(2 * math.pi * 0.75))


@pytest.mark.parametrize("name", ["banana", "mog", "funnel"])
def test_quadrature_matches_closed_form(name: str) -> None:
    t = get_target(name)
    assert t.log_z() == pytest.approx(t.closed_log_z, abs=1e-10)  # docs/variational.md: converged to ~1e-10


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_targets_shapes(name: str) -> None:
    out = get_target(name)(torch.randn(4, 3, 2))
    assert out.shape == (4, 3) and torch.isfinite(out).all()


def test_unknown_target() -> None:
    with pytest.raises(ValueError, match="unknown target"):
        get_target("u9")


@pytest.mark.parametrize("estimator", ["reparam", "reinforce"])
def test_fit_reduces_kl_to_a_gaussian(estimator: str) -> None:
    torch.manual_seed(0)
    target = _gaussian_target()
    q = Planar(2, layers=2, base="diagonal_normal")
    before = target.log_z() - evaluate(q, target, 4000)["elbo"]
    r = fit(q, target, steps=300, batch_size=64, lr=2e-2, estimator=estimator, eval_samples=20_000, log_every=100)
    assert r.kl == pytest.approx(r.log_z_true - r.elbo)
    assert r.log_z_true == pytest.approx(target.closed_log_z, abs=1e-6)
    assert r.kl < min(0.1, before / 5)
    assert r.log_z_is == pytest.approx(r.log_z_true, abs=0.05)
    assert 0.5 < r.ess <= 1.0
    assert [h["step"] for h in r.history] == [100, 200, 300]


def test_evaluate_matches_the_closed_form_elbo_log_z_and_ess() -> None:
    """q = N(0, I) (an untrained planar flow is the identity), p~(z) = exp(-|z|^2 / (2 s^2)) in 2-D: the ELBO is
    1 + log 2 pi - 1 / s^2, log Z = log(2 pi s^2), and the ESS fraction 1 / E_q[w^2] = (s sqrt(2 - s^2))^2."""
    torch.manual_seed(0)
    s2 = 1.44
    stats = evaluate(Planar(2, layers=1), lambda z: -0.5 * (z**2).sum(-1) / s2, samples=200_000, chunk=50_000)
    assert stats["elbo"] == pytest.approx(1 + math.log(2 * math.pi) - 1 / s2, abs=0.01)
    assert stats["log_z_is"] == pytest.approx(math.log(2 * math.pi * s2), abs=0.01)
    assert stats["ess"] == pytest.approx(s2 * (2 - s2), abs=0.01)


def test_fit_with_annealing_reports_beta() -> None:
    torch.manual_seed(0)
    r = fit(Radial(2, layers=2), _gaussian_target(), steps=20, batch_size=16, anneal_steps=40, eval_samples=500, log_every=10)
    assert r.history[0]["beta"] == pytest.approx(0.26) and r.history[1]["beta"] == pytest.approx(0.51)


def test_fit_bad_input() -> None:
    q = Planar(2, layers=1)
    with pytest.raises(ValueError, match="estimator"):
        fit(q, _gaussian_target(), steps=1, estimator="score")
    with pytest.raises(ValueError, match="steps"):
        fit(q, _gaussian_target(), steps=0)
    with pytest.raises(ValueError, match="returned shape"):
        fit(q, lambda z: z, steps=1)
    for option in ("eval_samples", "log_every"):
        with pytest.raises(ValueError, match=f"{option} must be a positive integer, got 0"):
            fit(q, _gaussian_target(), steps=1, **{option: 0})
    for option in ("samples", "chunk"):
        with pytest.raises(ValueError, match=f"{option} must be a positive integer, got 0"):
            evaluate(q, _gaussian_target(), **{option: 0})


def test_reinforce_divergence_is_reported_as_a_non_finite_elbo() -> None:
    torch.manual_seed(0)
    q = approximation("planar", 2)
    with pytest.raises(FloatingPointError, match="ELBO became non-finite at step 2"):
        fit(q, get_target("u1"), steps=30, lr=1e2, estimator="reinforce", eval_samples=100)


def test_evaluate_refuses_non_finite_log_weights() -> None:
    q = Planar(2, layers=1)
    with pytest.raises(FloatingPointError, match="not finite for 100 of 100 samples"):
        evaluate(q, lambda z: torch.full(z.shape[:1], -math.inf), samples=100)


def test_fit_density_command_stops_when_the_last_step_diverges(tmp_path, capsys) -> None:
    argv = ["fit-density", "--target", "u1", "--model", "iaf", "--steps", "1", "--lr", "1e6", "--eval-samples", "100"]
    assert cli([*argv, "--out", str(tmp_path)]) == 2
    assert "not finite" in capsys.readouterr().err
    assert not (tmp_path / "summary.json").exists()


def test_planar_flow_density_integrates_to_one() -> None:
    torch.manual_seed(1)
    flow = Planar(2, layers=3).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
        xs = torch.linspace(-8, 8, 241, dtype=torch.float64)
        grid = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), -1).reshape(-1, 2)
        mass = flow.log_prob(grid).exp().sum() * (xs[1] - xs[0]) ** 2
    assert float(mass) == pytest.approx(1.0, abs=2e-3)


def test_sylvester_density_matches_its_samples() -> None:
    torch.manual_seed(2)
    flow = Sylvester(3, layers=2, variant="orthogonal", bottleneck=2).double()
    x, log_q = flow.sample_and_log_prob(50)
    torch.testing.assert_close(flow.log_prob(x), log_q, atol=1e-9, rtol=0)



@pytest.mark.parametrize("layer", [
    lambda c: PlanarLayer(3, context_features=c),
    lambda c: RadialLayer(3, context_features=c),
    lambda c: SylvesterLayer(3, context_features=c),
    lambda c: SylvesterLayer(3, context_features=c, variant="householder", reflections=2),
], ids=["planar", "radial", "sylvester", "householder"])
@pytest.mark.parametrize("context_features", [None, 2], ids=["free", "amortised"])
def test_layers_broadcast_over_leading_sample_dimensions(layer, context_features) -> None:
    """Both directions take ``(k, batch, D)`` with a context of ``(batch, C)``, as the flat ``(k batch, D)`` does."""
    torch.manual_seed(0)
    t = layer(context_features).double()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z = torch.randn(4, 5, 3, dtype=torch.float64)
    c = None if context_features is None else torch.randn(5, context_features, dtype=torch.float64)
    flat_c = None if c is None else c.repeat(4, 1)
    for direction in (t.inverse, t.forward):
        y, ladj = direction(z, c)
        y_flat, ladj_flat = direction(z.reshape(20, 3), flat_c)
        assert y.shape == z.shape and ladj.shape == (4, 5)
        torch.testing.assert_close(y.reshape(20, 3), y_flat)
        torch.testing.assert_close(ladj.reshape(20), ladj_flat)

def test_planar_layer_starts_as_the_identity() -> None:
    torch.manual_seed(3)
    layer = PlanarLayer(5).double()
    z = 3 * torch.randn(32, 5, dtype=torch.float64)
    y, ladj = layer.inverse(z)  # parameters initialised in float32: identity up to its rounding
    torch.testing.assert_close(y, z, atol=1e-6, rtol=0)
    torch.testing.assert_close(ladj, torch.zeros(32, dtype=torch.float64), atol=1e-6, rtol=0)
    u_hat, w = (t.detach() for t in layer._coefficients(None)[:2])
    assert float(u_hat.abs().max()) < 1e-6 and float(w.abs().min()) > 1e-4  # identity through u_hat, not a zero w


def test_planar_inverse_near_the_invertibility_limit() -> None:
    layer = PlanarLayer(3).double()
    with torch.no_grad():
        w = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
        layer.params.theta.copy_(torch.cat([-30 * w, w, torch.tensor([0.3], dtype=torch.float64)]))  # w^T u_hat -> -1
        z = 20 * torch.randn(64, 3, dtype=torch.float64)
        y, ladj = layer.inverse(z)
        z_back, ladj_back = layer(y)
    torch.testing.assert_close(z_back, z, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(ladj_back, -ladj, atol=1e-8, rtol=1e-8)


def test_planar_inverse_where_plain_newton_cycles() -> None:
    layer = PlanarLayer(1).double()
    with torch.no_grad():
        layer.params.theta.copy_(torch.tensor([15.0, 1.0, 0.0], dtype=torch.float64))  # w^T u_hat = 14
    z = torch.linspace(-3, 3, 601, dtype=torch.float64).unsqueeze(-1)
    y, ladj = layer.inverse(z)
    z_back, ladj_back = layer(y)
    torch.testing.assert_close(z_back, z, atol=1e-10, rtol=0)
    torch.testing.assert_close(ladj_back, -ladj, atol=1e-10, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bracketed_newton_solves_every_planar_equation(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    c = torch.cat([torch.rand(5000, generator=g) * 1.998 - 0.999, torch.exp(9 * torch.rand(5000, generator=g))]).to(dtype)
    t = 2 * c.abs().clamp_min(1) * torch.randn(10_000, generator=g).to(dtype)

    def equation(a):
        return a + c * torch.tanh(a) - t, 1.0 + c * log_sech2(a).exp()

    a = bracketed_newton(equation, t - c.abs(), t + c.abs())
    residual = equation(a)[0].abs() / (1 + t.abs() + c.abs())
    assert float(residual.max()) < 10 * torch.finfo(dtype).eps


def test_planar_log_det_when_w_u_is_very_negative() -> None:
    # w^T u = -60: w^T u_hat = softplus(-60) - 1 rounds to -1 (or below), so 1 + w^T u_hat sech^2(a) cancels
    layer = PlanarLayer(3).double()
    w = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    u = -60.0 * w / (w @ w)
    with torch.no_grad():
        layer.params.theta.copy_(torch.cat([u, w, torch.zeros(1, dtype=torch.float64)]))
    z = torch.tensor([[1.0, 2.0, 0.0], [0.3, 0.1, -0.2]], dtype=torch.float64)  # a = w^T z = 0 and 0.3
    _, ladj = layer.inverse(z)
    jac = torch.func.vmap(torch.func.jacrev(lambda v: layer.inverse(v.unsqueeze(0))[0].squeeze(0)))(z)
    torch.testing.assert_close(ladj[0], torch.tensor(-60.0, dtype=torch.float64))
    torch.testing.assert_close(ladj[1], torch.linalg.slogdet(jac)[1][1])


def test_radial_at_its_centre_is_finite() -> None:
    layer = RadialLayer(2).double()
    z0 = layer.params()["z0"]
    y, ladj = layer(z0.detach().clone())
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all()


def test_radial_far_from_its_centre_has_finite_gradients() -> None:
    # |y - z0| = 1e8 in float32: p^2 + 4 alpha |y - z0| rounds to p^2, so p + sqrt(...) is 0 for p < 0
    torch.manual_seed(0)
    layer = RadialLayer(3)
    y = (1e8 * torch.randn(4, 3)).requires_grad_(True)
    z, ladj = layer(y)
    log_p = -0.5 * z.pow(2).sum(1) + ladj
    assert torch.isfinite(log_p).all()
    log_p.mean().backward()
    assert torch.isfinite(y.grad).all() and all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_discretized_logistic_is_a_distribution() -> None:
    levels = 5
    out = torch.tensor([[0.3, -1.2]])  # location 0.3, log-scale -1.2
    xs = torch.arange(levels, dtype=torch.float32) / (levels - 1)
    total = sum(log_likelihood("logistic", out, x.view(1, 1), levels).exp() for x in xs)
    assert float(total) == pytest.approx(1.0, abs=1e-6)
    assert float(log_likelihood("bernoulli", torch.zeros(1, 3), torch.ones(1, 3))) == pytest.approx(3 * math.log(0.5))


@pytest.mark.parametrize("posterior,layers", [("diagonal", 0), ("planar", 2), ("radial", 2), ("sylvester", 1), ("iaf", 2)])
def test_vae_bounds(posterior: str, layers: int) -> None:
    torch.manual_seed(0)
    x = (torch.rand(12, 1, 4, 4) < 0.5).float()
    model = VAE((1, 4, 4), latent=3, hidden=16, context=5, posterior=posterior, layers=layers)
    train_vae(model, x, steps=3, batch_size=4)
    with torch.no_grad():
        for p in model.flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
        torch.manual_seed(1)
        z1, l1 = model.posterior(x, 4)
        model._broadcast = False  # the flat path (every sample carries its own copy of the context)
        torch.manual_seed(1)
        z2, l2 = model.posterior(x, 4)
    torch.testing.assert_close(z1, z2)
    torch.testing.assert_close(l1, l2)
    stats = evaluate_vae(model, x, k=64)
    assert stats["iw_log_px"] >= stats["elbo"]
    assert stats["iw_log_px"] <= 0.0  # a probability mass of binary data


@pytest.mark.parametrize("posterior,layers", [("diagonal", 0), ("planar", 2), ("iaf", 1)])
def test_vae_log_q_and_importance_weighted_log_px_match_the_change_of_variables_and_quadrature(posterior, layers) -> None:
    """With one latent: ``log q(z | x)`` of the posterior samples is ``log N(z0; loc, scale) + log|dz0/dz|`` (the
    flow's forward pass), and the importance-weighted ``log p(x)`` converges to ``log int p(x | z) p(z) dz`` by
    quadrature, with the ELBO below it."""
    torch.manual_seed(0)
    x = (torch.rand(3, 1, 2, 2) < 0.5).double()
    model = VAE((1, 2, 2), latent=1, hidden=8, context=3, posterior=posterior, layers=layers).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
        z, log_q = model.posterior(x, 5)
        h = model.act(model.encoder(x.reshape(3, -1)))
        context = None if model.context is None else model.context(h).repeat(5, 1)  # a diagonal posterior has none
        z0, ladj = model.flow(z.reshape(-1, 1), context)
        base = torch.distributions.Normal(model.loc(h), model.log_scale(h).exp())
        torch.testing.assert_close(log_q, base.log_prob(z0.reshape(5, 3, 1)).sum(-1) + ladj.reshape(5, 3))

        grid = torch.linspace(-10, 10, 4001, dtype=torch.float64).unsqueeze(1)
        log_joint = log_likelihood("bernoulli", model.decoder(grid).unsqueeze(1).expand(-1, 3, -1), x.reshape(1, 3, -1)) + (
            -0.5 * (grid**2 + math.log(2 * math.pi))
        )
        exact = float((torch.logsumexp(log_joint, 0) + math.log(20 / 4000)).mean())
        torch.manual_seed(1)
        stats = evaluate_vae(model, x, k=20_000)
    assert stats["iw_log_px"] == pytest.approx(exact, abs=0.06)  # 3 standard errors at an ESS of 5 %; a log k off is 10
    assert stats["elbo"] < exact


def test_train_vae_bad_input(tmp_path, capsys) -> None:
    model = VAE((1, 4, 4), latent=3, hidden=16, context=5)
    x = (torch.rand(12, 1, 4, 4) < 0.5).float()
    with pytest.raises(ValueError, match="log_every >= 1"):
        train_vae(model, x, steps=2, batch_size=4, log_every=0)
    with pytest.raises(ValueError, match="the batch size 13 exceeds the 12 training images"):
        train_vae(model, x, steps=2, batch_size=13)
    argv = ["vae", "--data", "digits", "--latent", "3", "--hidden", "16", "--steps", "1", "--batch-size", "5000"]
    assert cli([*argv, "--out", str(tmp_path / "bad")]) == 2
    assert capsys.readouterr().err.strip() == "error: --batch-size 5000 exceeds the 1438 training images of digits"
    assert not (tmp_path / "bad").exists()


def test_vae_weights_interrupted_while_written_leave_no_file(tmp_path, monkeypatch, capsys) -> None:
    """The weights go to a temporary file renamed into place: a write interrupted half way leaves no
    ``vae.safetensors`` that looks like a result."""
    import safetensors.torch

    def half_written(tensors, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x00" * 16)
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", half_written)
    argv = ["vae", "--data", "digits", "--latent", "3", "--hidden", "16", "--steps", "1", "--test-size", "10",
            "--iw-samples", "2", "--out", str(tmp_path / "run")]
    assert cli(argv) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted"  # vae keeps no checkpoint to resume
    assert not (tmp_path / "run").exists()  # no temporary file left either: the directory it made is removed


def test_train_vae_records_the_elbo_during_warmup() -> None:
    x = (torch.rand(12, 1, 4, 4) < 0.5).float()
    model = VAE((1, 4, 4), latent=3, hidden=16, context=5, posterior="planar", layers=1)
    elbos = []
    for warmup in (0, 1000):
        torch.manual_seed(0)
        elbos.append(train_vae(copy.deepcopy(model), x, steps=1, batch_size=12, warmup=warmup)[0]["train_elbo"])
    assert elbos[1] == pytest.approx(elbos[0], abs=1e-5)


def test_vae_in_float64() -> None:
    torch.manual_seed(0)
    model = VAE((1, 4, 4), latent=3, hidden=16, context=5, posterior="sylvester", layers=1).double()
    x = (torch.rand(6, 1, 4, 4) < 0.5).double()
    assert model.reconstruct(x).dtype == torch.float64
    assert model.sample(3).shape == (3, 1, 4, 4) and model.sample(3).dtype == torch.float64


def test_fit_density_command(tmp_path, capsys) -> None:
    code = cli(["fit-density", "--target", "u1", "--layers", "2", "--steps", "20", "--eval-samples", "500", "--out", str(tmp_path)])
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["kl"] == pytest.approx(summary["log_z_true"] - summary["elbo"])
    assert {k: summary[k] for k in ("seed", "estimator", "anneal", "lr", "batch_size", "eval_samples")} == {
        "seed": 0, "estimator": "reparam", "anneal": 0, "lr": 1e-3, "batch_size": 256, "eval_samples": 500}
    assert (tmp_path / "density.png").stat().st_size > 0
    samples = tmp_path / "s.npy"
    assert cli(["sample", str(tmp_path), "-n", "4", "--out", str(samples)]) == 2
    assert f"holds its model in {tmp_path / 'model'}" in capsys.readouterr().err
    assert cli(["sample", str(tmp_path / "model"), "-n", "4", "--out", str(samples)]) == 0
    with pytest.raises(SystemExit) as e:
        cli(["fit-density", "--target", "nope", "--out", str(tmp_path)])
    assert e.value.code == 2
    for flag in ("--layers", "--steps"):
        assert cli(["fit-density", "--target", "u2", flag, "0", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("model", ["iaf", "nsf"])
def test_fit_density_with_autoregressive_flows(tmp_path, model) -> None:
    argv = ["fit-density", "--target", "u1", "--model", model, "--steps", "30", "--eval-samples", "500", "--out", str(tmp_path)]
    assert cli(argv) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["model"] == model and summary["layers"] == FAMILIES[model]
    assert summary["kl"] == pytest.approx(summary["log_z_true"] - summary["elbo"]) and summary["kl"] > 0
    flow = invertible.load(tmp_path / "model")
    assert len(flow.transform) == FAMILIES[model]
    with pytest.raises(ValueError, match="unknown flow family 'maf'"):
        approximation("maf")


def test_vae_command(tmp_path) -> None:
    argv = ["vae", "--data", "digits", "--posterior", "planar", "--layers", "2", "--latent", "4", "--hidden", "16",
            "--steps", "5", "--iw-samples", "8", "--test-size", "10", "--out", str(tmp_path)]
    assert cli(argv) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["test_images"] == 10 and summary["test_iw_log_px"] >= summary["test_elbo"]
    for name in ("reconstructions.png", "samples.png", "vae.safetensors", "config.json"):
        assert (tmp_path / name).stat().st_size > 0
    assert cli(argv[:-2] + ["--iw-samples", "0", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("command", [["fit-density", "--target", "u1", "--steps", "1"], ["vae", "--data", "digits", "--steps", "1"]])
def test_out_that_is_a_file_is_a_one_line_error(tmp_path, capsys, command) -> None:
    path = tmp_path / "taken"
    path.write_text("")
    assert cli([*command, "--out", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {path} is a file, not a directory"


def test_vae_command_stops_when_the_last_step_diverges(tmp_path, capsys) -> None:
    argv = ["vae", "--data", "digits", "--latent", "3", "--hidden", "16", "--steps", "1", "--lr", "1e6",
            "--iw-samples", "2", "--test-size", "20", "--out", str(tmp_path)]
    assert cli(argv) == 2
    assert "the model diverged" in capsys.readouterr().err
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.parametrize("command, results", [
    (["fit-density", "--target", "u1", "--layers", "2", "--steps", "5", "--eval-samples", "100"], "model, summary.json, metrics.jsonl, density.png"),
    (["vae", "--data", "digits", "--latent", "3", "--hidden", "16", "--steps", "2", "--iw-samples", "2", "--test-size", "10"],
     "summary.json, metrics.jsonl, vae.safetensors, config.json, reconstructions.png, samples.png"),
])
def test_an_out_holding_results_is_refused_and_kept(tmp_path, capsys, command, results) -> None:
    """A second run into the same --out stops before writing anything; an empty existing directory is used."""
    out = tmp_path / "run"
    out.mkdir()
    assert cli([*command, "--out", str(out)]) == 0
    capsys.readouterr()
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert cli([*command, "--seed", "1", "--out", str(out)]) == 2
    message = f"error: --out {out} already holds results ({results}); choose another --out or remove it"
    assert capsys.readouterr().err.strip() == message
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    (tmp_path / "attempt").mkdir()
    (tmp_path / "attempt" / "metrics.jsonl").write_text('{"step": 1}\n')  # a log is a result too: never truncated
    assert cli([*command, "--out", str(tmp_path / "attempt")]) == 2
    assert "already holds results (metrics.jsonl)" in capsys.readouterr().err
    assert (tmp_path / "attempt" / "metrics.jsonl").read_text() == '{"step": 1}\n'
