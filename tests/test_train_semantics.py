"""The training loop pinned to its definitions: early stopping on a scripted validation curve, the learning rate of
every step, gradient clipping over every trained parameter, weight decay, the last validation, evaluation's mode,
and per-process dequantization noise."""

from __future__ import annotations

import json
import math

import pytest
import torch

import invertible
from invertible.train import TrainConfig, evaluate_split, load_bundle, loop, train
from invertible.train.batches import BatchPlan
from invertible.train.schedule import lr_factor

TINY = {"layers": 2, "hidden": [8]}
CPU = torch.device("cpu")


def config(tmp_path, **kw) -> TrainConfig:
    values = dict(data="engine-gauss", model_options=TINY, steps=20, batch_size=32, lr=3e-3, eval_every=1,
                  out=str(tmp_path / "run"), progress=False, plots=False)
    values.update(kw)
    return TrainConfig(**values)


def script_validation(monkeypatch, curve: list[float]) -> None:
    """Validation passes report the NLLs of ``curve`` in turn; the test split is evaluated as usual."""
    real, values = loop.evaluate_split, iter(curve)

    def scripted(flow, bundle, split, batch_size, device, draws=1):
        return {"val_nll": next(values)} if split == "val" else real(flow, bundle, split, batch_size, device, draws)

    monkeypatch.setattr(loop, "evaluate_split", scripted)


# ---------------------------------------------------------------- early stopping


def test_patience_counts_validations_without_improvement_since_the_last_one(monkeypatch, tmp_path) -> None:
    """Patience 2 on 5, 6, 4, 6, 3, 6, 6: each improvement starts the count again, so the stop comes after the
    two misses at steps 6 and 7, not at the second miss overall (step 4); the best is step 5's."""
    script_validation(monkeypatch, [5.0, 6.0, 4.0, 6.0, 3.0, 6.0, 6.0, 6.0])
    summary = train(config(tmp_path, patience=2))
    assert summary["stopped_early"] and summary["steps"] == 7
    assert summary["best_step"] == 5 and summary["best_val_nll"] == 3.0


def test_an_equal_validation_nll_is_no_improvement(monkeypatch, tmp_path) -> None:
    """An improvement must beat the best by more than ``min_delta`` (0 here): a flat curve stops after patience."""
    script_validation(monkeypatch, [5.0] * 20)
    summary = train(config(tmp_path, patience=2))
    assert summary["stopped_early"] and summary["steps"] == 3 and summary["best_step"] == 1


def test_the_last_step_is_validated_when_it_is_no_multiple_of_eval_every(tmp_path) -> None:
    train(config(tmp_path, steps=7, eval_every=5))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "val"] == [5, 7]


# ---------------------------------------------------------------- the optimiser


def test_every_step_uses_the_warm_up_and_cosine_learning_rate_of_its_index(tmp_path) -> None:
    """Step ``k`` (0-based) runs at ``lr (k + 1) / w`` during the ``w`` warm-up steps, then at
    ``lr (r + (1 - r) (1 + cos(pi (k - w) / (n - w))) / 2)``."""
    lr, steps, warmup, r = 0.01, 8, 3, 0.1
    seen: list[float] = []
    train(config(tmp_path, steps=steps, warmup=warmup, lr=lr, min_lr_ratio=r, eval_every=100),
          callbacks=[lambda step, out: seen.append(out["lr"])])
    expected = [lr * (k + 1) / warmup if k < warmup
                else lr * (r + (1 - r) * 0.5 * (1 + math.cos(math.pi * (k - warmup) / (steps - warmup))))
                for k in range(steps)]
    assert seen == pytest.approx(expected, rel=1e-12)


def test_a_schedule_that_is_all_warm_up_stays_at_the_peak_after_it() -> None:
    assert lr_factor(10, 10, 10, "cosine") == 1.0 and lr_factor(12, 10, 10, "cosine", 0.5) == 1.0


def test_gradients_are_clipped_over_the_model_and_the_learned_dequantizer_together(monkeypatch, tmp_path) -> None:
    """The norm of every gradient Adam applies, the noise flow's included, is at most ``grad_clip``."""
    applied: list[float] = []
    step = torch.optim.Adam.step

    def recording(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        applied.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording)
    reported: list[float] = []
    clip = 1e-3
    train(config(tmp_path, data="engine-pixels", data_options={"dequantization": "variational"}, model="glow",
                 model_options={"levels": 1, "steps": 1, "hidden": 4}, steps=2, batch_size=24, eval_every=100,
                 grad_clip=clip), callbacks=[lambda step, out: reported.append(out["grad_norm"])])
    assert len(applied) == 2 and max(applied) <= clip * (1 + 1e-5)
    assert min(reported) > 10 * clip  # the norm before clipping: the clip did cut


def test_weight_decay_pulls_the_weights_towards_zero(tmp_path) -> None:
    """Adam's L2 penalty ``wd |theta|^2 / 2``: with ``wd`` large its gradient ``wd theta`` rules the steps, and
    every weight moves ``lr`` a step towards zero, so the weights end with a smaller L1 norm than without it."""
    lr, steps = 1e-2, 4
    norms = {}
    for wd in (0.0, 100.0):
        train(config(tmp_path / str(wd), steps=steps, lr=lr, weight_decay=wd, eval_every=100, grad_clip=None))
        flow = invertible.load(tmp_path / str(wd) / "run")
        norms[wd] = sum(float(p.detach().abs().sum()) for p in flow.parameters())
    count = sum(p.numel() for p in flow.parameters())
    assert norms[100.0] < norms[0.0] - 0.5 * count * lr  # at least half a step's shrinkage on average


# ---------------------------------------------------------------- evaluation and noise


@pytest.mark.parametrize("training", [True, False])
def test_evaluation_leaves_the_flow_in_the_mode_it_found(training: bool) -> None:
    """Validation runs in eval mode in the middle of training: the flow must go back to training afterwards."""
    flow = invertible.models.build("realnvp", features=2, **TINY).train(training)
    evaluate_split(flow, load_bundle("engine-gauss"), "val", 64, CPU)
    assert flow.training is training


def test_each_process_draws_its_own_dequantization_noise() -> None:
    """The noise seed depends on the process: two ranks never dequantize their shards with the same draws."""
    plans = [BatchPlan(100, 16, seed=3, rank=r, world_size=2) for r in range(2)]
    for step in range(5):
        assert plans[0].noise_seed(step) != plans[1].noise_seed(step)
        assert plans[0].noise_seed(step) == BatchPlan(100, 16, seed=3, rank=0, world_size=2).noise_seed(step)
