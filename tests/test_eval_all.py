"""``--split all`` and per-row log-densities: every row of the run's own dataset (its three splits), or of a file
read as it is, mapped by the preprocessing the run stores and scored row by row, nothing fitted to the file."""

from __future__ import annotations

import pytest
import torch

from invertible.data import load
from invertible.models import build
from invertible.train import evaluate_split
from invertible.train.evaluate import split_log_densities, split_tensors

CPU = torch.device("cpu")


@pytest.mark.parametrize("conditional", [False, True])
def test_split_all_is_the_three_splits_in_order(conditional) -> None:
    bundle = load("engine-gauss", seed=2, conditional=conditional)
    data, context = split_tensors(bundle, "all")
    assert torch.equal(data, torch.cat([bundle.train, bundle.val, bundle.test]))
    if conditional:
        assert torch.equal(context, torch.cat([bundle.train_context, bundle.val_context, bundle.test_context]))
    else:
        assert context is None
    torch.manual_seed(0)
    flow = build("realnvp", features=2, layers=2, hidden=[8], context_features=3 if conditional else None)
    whole = evaluate_split(flow, bundle, "all", 64, CPU)
    parts = {s: evaluate_split(flow, bundle, s, 64, CPU) for s in ("train", "val", "test")}
    sizes = {s: len(getattr(bundle, s)) for s in parts}
    weighted = sum(parts[s][f"{s}_nll"] * sizes[s] for s in parts) / sum(sizes.values())
    assert whole["all_nll"] == pytest.approx(weighted, rel=1e-12)
    if not conditional:  # the data density is known: the KL gap is averaged over the rows alike
        assert whole["kl_gap"] == pytest.approx(sum(parts[s]["kl_gap"] * sizes[s] for s in parts) / 600, rel=1e-9)
    log_p, _ = split_log_densities(flow, bundle, "all", 64, CPU)
    assert torch.equal(log_p, split_log_densities(flow, bundle, "all", 7, CPU)[0])  # whatever the batch size
    with pytest.raises(ValueError, match="split must be train, val, test or all"):
        split_tensors(bundle, "every")
