"""Flows run under ``torch.compile``: the compiled density and its gradients equal the eager ones."""

import copy
import json

import pytest
import torch

from invertible.models import build

from .perturb import perturb


@pytest.mark.slow
def test_compiled_maf_log_prob_and_gradients_match_eager():
    torch.manual_seed(0)
    flow = build("maf", features=4, layers=2, hidden=[16, 16])
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(64, 4)
    weight = flow.transform[0].net.layers[0].weight
    eager = flow.log_prob(x)
    (g_eager,) = torch.autograd.grad(eager.mean(), [weight])

    flow.validate = False  # the input checks branch on the data, so they break the graph
    compiled = torch.compile(flow.log_prob, fullgraph=True)  # the density path itself has no graph break
    out = compiled(x)
    (g_compiled,) = torch.autograd.grad(out.mean(), [weight])
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_compiled, g_eager, rtol=1e-5, atol=1e-6)

    flow.validate = True  # with the checks on, a compiled flow still refuses bad input
    checked = torch.compile(flow.log_prob)
    torch.testing.assert_close(checked(x), eager, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="non-finite"):
        checked(torch.full((8, 4), float("nan")))


@pytest.mark.slow
def test_train_compile_follows_the_eager_run(tmp_path):
    from invertible.cli import main

    train = ["train", "--data", "engine-gauss", "--model", "maf", "-m", "layers=2", "-m", "hidden=[16]", "--steps", "8",
             "--batch-size", "32", "--eval-every", "4", "--log-every", "1", "--no-progress", "--no-plots"]
    assert main([*train, "--out", str(tmp_path / "eager")]) == 0
    assert main([*train, "--compile", "--out", str(tmp_path / "compiled")]) == 0

    def losses(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [r["loss"] for r in map(json.loads, lines) if r["split"] == "train"]

    eager, compiled = losses("eager"), losses("compiled")
    assert len(eager) == len(compiled) == 8
    assert compiled == pytest.approx(eager, rel=1e-4)
    summary = json.loads((tmp_path / "compiled" / "summary.json").read_text())
    assert summary["test_nll"] == pytest.approx(json.loads((tmp_path / "eager" / "summary.json").read_text())["test_nll"], rel=1e-4)
    assert "compile: true" in (tmp_path / "compiled" / "config.yaml").read_text()


class _FailingBackward(torch.autograd.Function):
    """The identity whose backward fails as a compiler's lazy backward compilation does."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        def inductor():
            pass

        raise torch._dynamo.exc.BackendCompilerFailed(inductor, RuntimeError("C++ compile error"), None)


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_train_compile_failure_is_a_one_line_error(tmp_path, monkeypatch, capsys, where):
    from invertible.cli import main

    def broken(model, **kwargs):
        def call(*args, **kw):
            if where == "forward":
                raise torch._dynamo.exc.TorchDynamoException("no C++ compiler found")
            return _FailingBackward.apply(model(*args, **kw))
        return call

    monkeypatch.setattr(torch, "compile", broken)
    code = main(["train", "--data", "engine-gauss", "--model", "maf", "-m", "layers=1", "-m", "hidden=[8]", "--steps", "2",
                 "--batch-size", "16", "--compile", "--no-progress", "--no-plots", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    cause = "TorchDynamoException: no C++ compiler found" if where == "forward" else "BackendCompilerFailed: backend='inductor' raised:"
    assert err[-1] == f"error: torch.compile failed on this flow ({cause}); train without compile"


def test_train_compile_where_torch_has_no_compiler_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    """``torch.compile`` itself refuses some Pythons (a ``RuntimeError`` when called, before any tracing)."""
    from invertible.cli import main

    def unsupported(model, **kwargs):
        raise RuntimeError("torch.compile is not supported on Python 3.15+")

    monkeypatch.setattr(torch, "compile", unsupported)
    code = main(["train", "--data", "engine-gauss", "--model", "maf", "-m", "layers=1", "-m", "hidden=[8]", "--steps", "2",
                 "--batch-size", "16", "--compile", "--no-progress", "--no-plots", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["error: torch.compile is not available here (torch.compile is not supported on Python 3.15+); "
                   "train without compile"]
    assert not (tmp_path / "run").exists()  # stopped before the run wrote anything


class _CountingBackend:
    """A ``torch.compile`` backend that runs the traced graphs as they are and counts compilations and graph runs."""

    def __init__(self):
        self.frames, self.runs = 0, 0

    def __call__(self, graph: torch.fx.GraphModule, example_inputs):
        self.frames += 1

        def run(*args):
            self.runs += 1
            return graph.forward(*args)

        return run


@pytest.fixture
def counted(monkeypatch):
    """``torch.compile`` with a fresh :class:`_CountingBackend` (fast: nothing is compiled to code)."""
    torch._dynamo.reset()
    backend = _CountingBackend()
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: compile_(model, backend=backend))
    yield backend
    torch._dynamo.reset()


def _train_losses(tmp_path, name: str, callbacks=(), resume: bool = False, **options) -> list[float]:
    from invertible.train import TrainConfig, train

    config = TrainConfig(out=str(tmp_path / name), progress=False, plots=False, log_every=1, **options)
    train(config, resume=resume, callbacks=callbacks)
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["split"] == "train"]


GLOW = {"levels": 2, "steps": 1, "hidden": 4}


@pytest.mark.slow
@pytest.mark.parametrize("data, model, options", [
    ("engine-pixels", "glow", GLOW),  # ActNorm initialises at the first step
    ("engine-gauss", "made", {"hidden": [8], "masks": 3}),  # a new mask set every step
])
def test_compiled_training_runs_one_graph_a_step_after_an_eager_first(tmp_path, counted, data, model, options):
    runs = []
    run = dict(data=data, model=model, model_options=options, steps=7, batch_size=16, eval_every=7)
    compiled = _train_losses(tmp_path, "compiled", [lambda step, out: runs.append(counted.runs)], compile=True, **run)
    assert counted.frames == 1  # compiled once: no recompilation per step or per mask set
    assert runs == [0, 1, 2, 3, 4, 5, 6]  # the first step eager, then one graph a step
    assert compiled == pytest.approx(_train_losses(tmp_path, "eager", **run), rel=1e-6)


@pytest.mark.slow
def test_a_resumed_compiled_run_starts_eagerly_too(tmp_path, counted):
    """A reloaded ActNorm reads its saved flag once, at the resumed process's (eager) first step."""
    run = dict(data="engine-pixels", model="glow", model_options=GLOW, batch_size=16, eval_every=3, compile=True)
    _train_losses(tmp_path, "run", steps=3, **run)
    torch._dynamo.reset()
    counted.frames, counted.runs = 0, 0
    runs = []
    _train_losses(tmp_path, "run", [lambda step, out: runs.append(counted.runs)], resume=True, steps=6, **run)
    assert (counted.frames, runs) == (1, [0, 1, 2])


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("name", ["made", "bernoulli_made"])
def test_compiled_mask_pool_compiles_once_for_all_its_mask_sets(fresh_dynamo, name):
    """A pool larger than dynamo's recompile limit, trained through two cycles, against an eager twin."""
    from torch._dynamo.testing import CompileCounter

    torch.manual_seed(0)
    masks = torch._dynamo.config.recompile_limit + 2
    model = build(name, features=4, hidden=[8], masks=masks).train()
    perturb(model, 0.5)
    twin = copy.deepcopy(model)
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter)
    frames = []
    for step in range(2 * masks):
        x = torch.randn(6, 4) if name == "made" else torch.randint(0, 2, (6, 4)).float()
        out, expected = compiled(x), twin(x)
        torch.testing.assert_close(out, expected)
        grads = torch.autograd.grad(out.sum(), list(model.parameters()))
        for g, e in zip(grads, torch.autograd.grad(expected.sum(), list(twin.parameters()))):
            torch.testing.assert_close(g, e)
        assert int(model.mask_index) == int(twin.mask_index) == (step + 1) % masks
        frames.append(counter.frame_count)
    assert frames == [frames[0]] * len(frames)  # nothing compiled after the first step


@pytest.mark.slow
def test_the_cached_linear_layers_compile_to_one_graph_at_inference_and_follow_their_weights():
    """In evaluation mode under ``torch.no_grad`` the inference cache steps aside while the compiler traces, so the
    inverse and log-det are part of the graph and a later weight change is seen."""
    from invertible.transforms.conv import Conv1x1, LUConv1x1, PeriodicConv

    x = torch.randn(2, 3, 4, 4)
    for layer in (Conv1x1(3), LUConv1x1(3), PeriodicConv(3)):
        layer.eval()
        compiled = torch.compile(layer.inverse, fullgraph=True)
        with torch.no_grad():
            for _ in range(2):
                out, ladj = compiled(x)
                ref, ref_ladj = copy.deepcopy(layer).train().inverse(x)
                torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
                torch.testing.assert_close(ladj, ref_ladj, rtol=1e-5, atol=1e-5)
                for p in layer.parameters():
                    p.add_(0.1)
