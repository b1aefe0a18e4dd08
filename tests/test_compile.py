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
    eager = flow.log_prob(x)
    (g_eager,) = torch.autograd.grad(eager.mean(), [flow.transform[0].net.layers[0].weight])
    compiled = torch.compile(flow.log_prob, fullgraph=True)  # no graph break in the density path
    out = compiled(x)
    (g_compiled,) = torch.autograd.grad(out.mean(), [flow.transform[0].net.layers[0].weight])
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g_compiled, g_eager, rtol=1e-5, atol=1e-6)
