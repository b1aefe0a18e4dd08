"""The generic property suite: every registered transform and preset, in float64.

- ``inverse(forward(x)) == x`` and ``forward(inverse(z)) == z``;
- the inverse's log-det is minus the forward's;
- the log-det equals ``log|det J|`` of the autograd Jacobian (``torch.func.jacrev``);
- with a context, the output depends on it; built without one, a transform ignores a context it is given;
  batch size 1 and many; an empty batch stays empty;
- gradients: once the parameters are moved off their start, every parameter, the input and the context get a
  finite gradient that is not zero from ``log_prob(x).mean()``, from the output ``z`` alone, and from the
  reparameterised sampling path (``rsample_and_log_prob``); no parameter is exempt. A learned dequantizer gets
  them from the training loss through the dequantized values. Gradients match finite differences
  (``torch.autograd.gradcheck``) with respect to two parameter tensors of every case and preset.
Hypothesis draws the batch size, the input scale and the random seed.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import invertible
from invertible import Transform
from invertible.distributions import StandardNormal
from invertible.models import available, build, get

from .cases import Case, PresetCase, all_cases, all_preset_cases
from .perturb import perturb

CASES = all_cases()
PRESET_CASES = all_preset_cases()
CONTEXT = 3


def _prepare(case: Case, context_features: int | None, seed: int) -> Transform:
    torch.manual_seed(seed)
    t = case.build(context_features).double()
    g = torch.Generator().manual_seed(seed)
    warm = case.x((16, *case.event_shape), g)
    ctx = torch.randn(16, context_features, dtype=torch.float64) if context_features else None
    with torch.no_grad():
        t.train()
        t(warm, ctx)  # data-dependent initialisation, running statistics
        t.eval()
        for p in t.parameters():
            p.add_(case.perturb * torch.randn_like(p))
    return t


def _inputs(case: Case, batch: int, context_features: int | None, seed: int, scale: float):
    g = torch.Generator().manual_seed(seed + 1)
    x = case.x((batch, *case.event_shape), g)
    if case.x is case.__dataclass_fields__["x"].default:
        x = x * scale
    z = case.z((batch, *case.event_shape), g)
    ctx = torch.randn(batch, context_features, generator=g, dtype=torch.float64) if context_features else None
    return x, z, ctx


def _jacobian_logdet(fn, x: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor:
    out = []
    for i in range(x.shape[0]):
        c = None if ctx is None else ctx[i : i + 1]
        jac = torch.func.jacrev(lambda xi: fn(xi.unsqueeze(0), c)[0].squeeze(0))(x[i])
        d = x[i].numel()
        out.append(torch.linalg.slogdet(jac.reshape(d, d))[1])
    return torch.stack(out)


def _check(case: Case, t: Transform, x, z, ctx) -> None:
    tol = dict(atol=case.atol, rtol=1e-5)
    y, ladj = t(x, ctx)
    assert y.shape == x.shape and ladj.shape == (x.shape[0],)
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all()
    x_back, ladj_inv = t.inverse(y, ctx)
    torch.testing.assert_close(x_back, x, **tol)
    torch.testing.assert_close(ladj_inv, -ladj, **tol)

    if not case.bijective:
        return
    x_of_z, ladj_z = t.inverse(z, ctx)
    z_back, ladj_fwd = t(x_of_z, ctx)
    torch.testing.assert_close(z_back, z, **tol)
    torch.testing.assert_close(ladj_fwd, -ladj_z, **tol)

    if case.jacobian:
        exact = t.exact_logdet
        ltol = tol if exact else dict(atol=case.logdet_atol, rtol=0.0)
        n = min(3, x.shape[0])
        ctx_n = None if ctx is None else ctx[:n]
        torch.testing.assert_close(ladj[:n], _jacobian_logdet(t, x[:n], ctx_n), **ltol)
        torch.testing.assert_close(ladj_z[:n], _jacobian_logdet(t.inverse, z[:n], ctx_n), **ltol)


draws = dict(
    batch=st.sampled_from([1, 2, 7]),
    seed=st.integers(0, 2**16),
    scale=st.floats(0.1, 3.0),
)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@settings(max_examples=4, deadline=None)
@given(**draws)
def test_transform_properties(case: Case, batch: int, seed: int, scale: float) -> None:
    t = _prepare(case, None, seed)
    _check(case, t, *_inputs(case, batch, None, seed, scale))


@pytest.mark.parametrize("case", [c for c in CASES if c.conditional], ids=lambda c: c.name)
@settings(max_examples=3, deadline=None)
@given(**draws)
def test_conditional_transform_properties(case: Case, batch: int, seed: int, scale: float) -> None:
    t = _prepare(case, CONTEXT, seed)
    x, z, ctx = _inputs(case, batch, CONTEXT, seed, scale)
    _check(case, t, x, z, ctx)
    # context dependence on a batch of 64 unscaled draws, so some land where the transform is not the identity
    xs, _, cs = _inputs(case, 64, CONTEXT, seed + 7, 1.0)
    y1, _ = t(xs, cs)
    y2, _ = t(xs, cs + 1.0)
    assert not torch.allclose(y1, y2), "the output does not depend on the context"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_unconditional_transform_ignores_a_context(case: Case) -> None:
    """Built without a context, a transform takes one and ignores it, in both directions: the same output and
    log-det as without it. A conditional flow passes its context to every step of its ``Compose``, so this is what
    lets an unconditional layer sit beside conditional ones."""
    t = _prepare(case, None, 0)
    x, z, _ = _inputs(case, 3, None, 0, 1.0)
    ctx = torch.randn(3, CONTEXT, dtype=torch.float64)
    for direction, value in ((t, x), (t.inverse, z)):
        with torch.random.fork_rng():
            torch.manual_seed(1)
            plain = direction(value)
        with torch.random.fork_rng():
            torch.manual_seed(1)
            given = direction(value, ctx)
        torch.testing.assert_close(given, plain, atol=0.0, rtol=0.0)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_empty_batch(case: Case) -> None:
    """A batch of zero rows maps to zero rows both ways; in training mode it leaves every parameter and buffer
    finite (a data-dependent initialisation must not average over nothing)."""
    empty = torch.empty(0, *case.event_shape, dtype=torch.float64)
    torch.manual_seed(0)
    fresh = case.build(None).double().train()
    y, ladj = fresh(empty)
    assert y.shape == empty.shape and ladj.shape == (0,)
    state = [*fresh.parameters(), *fresh.buffers()]
    assert all(torch.isfinite(v).all() for v in state if v.is_floating_point()), "an empty batch left NaN or inf"
    t = _prepare(case, None, 0)
    for direction in (t, t.inverse):
        y, ladj = direction(empty)
        assert y.shape == empty.shape and ladj.shape == (0,)


def _preset(case: PresetCase, context_features: int | None, seed: int) -> invertible.Flow:
    torch.manual_seed(seed)
    options = dict(case.options)
    if context_features:
        options.update(case.conditional_options, context_features=context_features)
    return build(case.name, **options).double()


# presets that are not flows (discrete models such as the Bernoulli MADE) are tested in their own files
@pytest.mark.parametrize("case", [c for c in PRESET_CASES if issubclass(get(c.name), invertible.Flow)], ids=lambda c: c.name)
@pytest.mark.parametrize("context_features", [None, CONTEXT], ids=["plain", "context"])
@settings(max_examples=2, deadline=None)
@given(batch=st.sampled_from([1, 5]), seed=st.integers(0, 2**16))
def test_preset_properties(case: PresetCase, context_features: int | None, batch: int, seed: int) -> None:
    flow = _preset(case, context_features, seed)
    shape = tuple(flow.event_shape)
    # deep stacks amplify parameter noise multiplicatively: perturb gently so the test stays well conditioned
    as_case = Case(case.name, lambda c: flow.transform, shape, x=case.x, perturb=0.05, atol=1e-5)
    t = _prepare(as_case, context_features, seed)
    _check(as_case, t, *_inputs(as_case, batch, context_features, seed, 1.0))


def _public_transform_classes() -> set[type]:
    for info in pkgutil.walk_packages(invertible.__path__, prefix="invertible."):
        importlib.import_module(info.name)
    found, todo = set(), [Transform]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("invertible.") and not sub.__name__.startswith("_") and not inspect.isabstract(sub):
                found.add(sub)
    return found


def test_registry_is_complete() -> None:
    """Every public transform class and every registered preset has a case in ``tests/cases``."""
    covered: set[type] = set()
    for case in CASES:
        covered.update(type(m) for m in case.build(CONTEXT if case.conditional else None).modules())
    missing = sorted(c.__qualname__ for c in _public_transform_classes() - covered)
    assert not missing, f"transforms without a property-suite case: {missing}"
    presets = {c.name for c in PRESET_CASES}
    assert set(available()) <= presets, f"presets without a case: {sorted(set(available()) - presets)}"


@pytest.mark.parametrize("case", [c for c in PRESET_CASES if issubclass(get(c.name), invertible.Flow)], ids=lambda c: c.name)
@pytest.mark.parametrize("context_features", [None, CONTEXT], ids=["plain", "context"])
def test_preset_sampling(case: PresetCase, context_features: int | None) -> None:
    """``sample`` with sample shapes, a context and a temperature; ``sample_and_log_prob`` agrees with ``log_prob``
    (the gradients of the sampling path are :func:`test_preset_gradients`'s)."""
    flow = _preset(case, context_features, 0)
    shape = tuple(flow.event_shape)
    _prepare(Case(case.name, lambda c: flow.transform, shape, x=case.x, perturb=0.05), context_features, 0)
    flow.eval()
    ctx = torch.randn(4, context_features, dtype=torch.float64) if context_features else None
    with torch.random.fork_rng():
        torch.manual_seed(1)
        x = flow.sample(3, ctx)
        torch.manual_seed(1)
        cold = flow.sample(3, ctx, temperature=0.5)
    expected = (3, *shape) if ctx is None else (3, 4, *shape)
    assert x.shape == cold.shape == expected and torch.isfinite(x).all()
    flat_ctx = None if ctx is None else ctx.repeat(3, 1)
    with torch.no_grad():
        u, _ = flow.transform(x.reshape(-1, *shape), flat_ctx)
        u_cold, _ = flow.transform(cold.reshape(-1, *shape), flat_ctx)
    with torch.random.fork_rng():  # same noise, half the temperature: the base's own tempered draw
        torch.manual_seed(1)
        tempered = flow.base.rsample((len(u),), 0.5)
    torch.testing.assert_close(u_cold, tempered, atol=1e-6, rtol=1e-5)
    if isinstance(flow.base, StandardNormal):
        torch.testing.assert_close(u_cold, 0.5 * u, atol=1e-6, rtol=1e-5)
    assert flow.sample((2, 5), ctx).shape == ((2, 5, *shape) if ctx is None else (2, 5, 4, *shape))
    xs, log_p = flow.sample_and_log_prob(6, ctx)
    full_ctx = None if ctx is None else ctx.expand(6, *ctx.shape)
    torch.testing.assert_close(log_p, flow.log_prob(xs, full_ctx))
    assert flow.sample(0, ctx).shape == ((0, *shape) if ctx is None else (0, 4, *shape))  # an empty batch stays empty
    empty_ctx = None if ctx is None else ctx[:0]
    assert flow.log_prob(torch.empty(0, *shape, dtype=torch.float64), empty_ctx).shape == (0,)


# -- gradients ----------------------------------------------------------------------------------------------
#: Every case once without a context, and the conditional ones once more with one (their context layers).
GRADIENT_CASES = [(c, None) for c in CASES] + [(c, CONTEXT) for c in CASES if c.conditional]
_gradient_ids = [f"{c.name}-{'context' if f else 'plain'}" for c, f in GRADIENT_CASES]


def _check_grads(where: str, named: list[tuple[str, torch.Tensor]]) -> None:
    """Each tensor of ``named`` has a finite gradient that is not zero everywhere."""
    for name, p in named:
        assert p.grad is not None, f"{where}: {name} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{where}: the gradient of {name} is not finite"
        assert p.grad.abs().sum() > 0, f"{where}: the gradient of {name} is zero"


def _reverse_kl(x: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """``E[log q(x) - log p*(x)]`` over samples ``x ~ q``, for the target ``p* = N(1, I)`` (up to a constant)."""
    return (log_p + 0.5 * (x - 1).flatten(1).square().sum(1)).mean()


def _sampling_grads(flow: invertible.Flow, ctx: torch.Tensor | None) -> None:
    """The reparameterised sampling path: ``rsample_and_log_prob`` in a reverse-KL loss gives every parameter and
    the context a finite non-zero gradient (a map without either has nothing to check)."""
    flow.zero_grad()
    ctx = None if ctx is None else ctx.detach().requires_grad_()
    leaves = list(flow.named_parameters()) + ([] if ctx is None else [("context", ctx)])
    if not leaves:
        return
    with torch.random.fork_rng():
        torch.manual_seed(2)
        x, log_p = flow.rsample_and_log_prob(3, ctx)
    _reverse_kl(x.flatten(0, x.dim() - len(flow.event_shape) - 1), log_p.flatten()).backward()
    _check_grads("rsample_and_log_prob", leaves)


@pytest.mark.parametrize(("case", "context_features"), GRADIENT_CASES, ids=_gradient_ids)
def test_transform_gradients(case: Case, context_features: int | None) -> None:
    """Gradients reach every parameter and the input, finite and not zero: from ``log_prob(x).mean()``; from the
    output ``z`` alone (a random linear function of it), so no layer cuts the gradient of what it returns (a
    dequantizer's noise reaches the model through ``z`` only); for bijections, from the sampling path too."""
    t = _prepare(case, context_features, 0)
    flow = invertible.Flow(t, StandardNormal(case.event_shape), context_features).double()
    x, _, ctx = _inputs(case, 5, context_features, 0, 1.0)
    x.requires_grad_()
    leaves = [("x", x)] if ctx is None else [("x", x), ("context", ctx.requires_grad_())]
    params = list(t.named_parameters())
    with torch.random.fork_rng():
        torch.manual_seed(1)
        flow.log_prob(x, ctx).mean().backward()
    _check_grads("log_prob", params + leaves)

    flow.zero_grad()
    for leaf in (x, ctx):
        if leaf is not None:
            leaf.grad = None
    with torch.random.fork_rng():
        torch.manual_seed(1)
        z, _ = t(x, ctx)
    w = torch.randn(z.shape, generator=torch.Generator().manual_seed(3), dtype=z.dtype)
    (z * w).sum().backward()
    _check_grads("the output z", params + leaves)

    if case.bijective:
        _sampling_grads(flow, ctx)


def _preset_inputs(case: PresetCase, flow: torch.nn.Module, context_features: int | None):
    """A batch of 5 for preset ``case`` (binary vectors for a discrete model) and its context, requiring gradients."""
    g = torch.Generator().manual_seed(1)
    shape = (5, *flow.event_shape)
    x = case.x(shape, g) if isinstance(flow, invertible.Flow) else torch.randint(0, 2, shape, generator=g).double()
    ctx = torch.randn(5, context_features, generator=g, dtype=torch.float64) if context_features else None
    return x.requires_grad_(), None if ctx is None else ctx.requires_grad_()


@pytest.mark.parametrize("case", PRESET_CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("context_features", [None, CONTEXT], ids=["plain", "context"])
def test_preset_gradients(case: PresetCase, context_features: int | None) -> None:
    """Every parameter of a preset (base included), the input and the context get finite non-zero gradients
    from ``log_prob(x).mean()`` and, for flows, from the sampling path."""
    model = _preset(case, context_features, 0)
    x, ctx = _preset_inputs(case, model, context_features)
    if isinstance(model, invertible.Flow):
        with torch.no_grad():
            model.train()
            model.transform(x.detach(), None if ctx is None else ctx.detach())  # data-dependent initialisation
    perturb(model, 0.05)
    model.eval()
    leaves = [("x", x)] if ctx is None else [("x", x), ("context", ctx)]
    model.log_prob(x, ctx).mean().backward()
    _check_grads("log_prob", list(model.named_parameters()) + leaves)
    if isinstance(model, invertible.Flow):
        _sampling_grads(model, ctx)


def test_trainable_preprocessing_gradients() -> None:
    """The engine's loss ``-(log q(y) + ladj).mean()`` of a batch dequantized by Flow++'s variational dequantizer
    (``y, ladj = preprocess(x)``) gives every trainable preprocessing parameter a finite non-zero gradient, and
    so does the model's term ``log q(y)`` alone: the noise reaches the model through the dequantized values ``y``,
    not only through the bound's ``log r`` term in ``ladj``."""
    from invertible.data import load
    from invertible.train.build import build_flow, trainable_preprocess

    torch.manual_seed(0)
    bundle = load("engine-pixels", dequantization="variational")
    params = [(n, p) for n, p in bundle.preprocess.named_parameters() if p.requires_grad]
    assert [p for _, p in params] == trainable_preprocess(bundle) and params
    flow = build_flow("glow", {"levels": 1, "steps": 1, "hidden": 4}, bundle)
    x = bundle.train[:8]
    with torch.no_grad():
        flow(bundle.preprocess(x)[0])  # ActNorm's data-dependent initialisation
    perturb(flow, 0.05)
    perturb(bundle.preprocess, 0.05, seed=1)
    for term in ("model", "loss"):
        bundle.preprocess.zero_grad()
        with torch.random.fork_rng():
            torch.manual_seed(1)
            y, ladj = bundle.preprocess(x)
        log_q = flow(y)
        (-log_q.mean() if term == "model" else -(log_q + ladj).mean()).backward()
        _check_grads(f"the {term} term", params)


def _gradcheck(module: torch.nn.Module, x: torch.Tensor, ctx: torch.Tensor | None) -> None:
    """``torch.autograd.gradcheck`` (float64, fast mode) of ``module(x, ctx)`` with respect to its first and last
    parameter tensors, or to ``x`` for a module without parameters; the noise of a dequantizer is the same in
    every evaluation."""
    names = [n for n, _ in module.named_parameters()]
    chosen = list(dict.fromkeys(names[:1] + names[-1:]))
    params = dict(module.named_parameters())

    def f(*tensors: torch.Tensor):
        with torch.random.fork_rng():
            torch.manual_seed(1)
            if chosen:
                return torch.func.functional_call(module, dict(zip(chosen, tensors)), (x, ctx))
            return module(tensors[0], ctx)

    inputs = [params[n].detach().clone().requires_grad_() for n in chosen] or [x.clone().requires_grad_()]
    assert torch.autograd.gradcheck(f, tuple(inputs), fast_mode=True)


@pytest.mark.parametrize(("case", "context_features"), GRADIENT_CASES, ids=_gradient_ids)
def test_transform_gradients_match_finite_differences(case: Case, context_features: int | None) -> None:
    t = _prepare(case, context_features, 0)
    t.validate = False  # finite differences move pixels off the integers that a dequantizer checks
    x, _, ctx = _inputs(case, 2, context_features, 0, 1.0)
    _gradcheck(t, x, ctx)


@pytest.mark.parametrize("case", PRESET_CASES, ids=lambda c: c.name)
def test_preset_gradients_match_finite_differences(case: PresetCase) -> None:
    model = _preset(case, None, 0)
    x, _ = _preset_inputs(case, model, None)
    perturb(model, 0.05)
    model.eval()
    _gradcheck(model, x.detach(), None)
