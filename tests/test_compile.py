"""Flows run under ``torch.compile``: the compiled density and its gradients equal the eager ones."""

import json

import pytest
import torch

from invertible.models import build


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
