"""Flows run under ``torch.compile``: the compiled density and its gradients equal the eager ones."""

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
