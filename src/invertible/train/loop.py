"""The training loop: Adam, warm-up + cosine schedule, clipping, EMA, validation, early stopping.

``train(config)`` maximises the exact log-likelihood of the training split,
``loss = -mean_i log q(x_i)`` (nats, in the model's space). For ``raw``
bundles (images) every batch is mapped by ``y, ladj = preprocess(x)`` with
fresh dequantization noise, and ``loss = -mean_i [log q(y_i) + ladj_i]`` is the
dequantized NLL of the raw pixels. The data are checked once when loaded (finite
values; the pixels of a raw bundle integers in the range of its dequantizer), so the
training steps run without the per-call checks of the flow (``Flow.validate``) and of
such a bundle's preprocessing (``Transform.validate``: the dequantizer's integers, the
logit's domain), each a device synchronisation on a GPU; a step whose loss is not
finite replays its preprocessing with the checks on, so a batch outside the logit's
domain stops the run with the logit's ``ValueError``. The loop writes the run directory::

    RUN/config.yaml          the resolved configuration; after a resume that changed settings, also ``resumed``:
                             each such resume's step and the values the run had used before it
    RUN/metrics.jsonl        training and validation metrics, one JSON object a line
    RUN/checkpoint/          safetensors of model, optimizer, EMA + checkpoint.json (resume state)
    RUN/model.json           the final model (``invertible.load(RUN)``)
    RUN/model.safetensors
    RUN/summary.json         test_nll, kl_gap, test_bpd, steps, wall_time_s, parameters, data_sha256, data_path
                             (the absolute path of a dataset file, by which eval, sample and interpolate reopen it), ...
    RUN/preprocess.json      what the data's preprocessing is ("none" when the model saw the data as they were)
    RUN/preprocess.safetensors  its state: a table's standardisation statistics, a learned (variational)
                             dequantizer (averaged with the model by ``ema``); checkpoints hold it too
    RUN/loss.png, RUN/density.png (unconditional 2-D data), RUN/samples.png (images)

Under ``torchrun`` the flow is wrapped in ``DistributedDataParallel`` and only
rank 0 writes. The batch of every step depends only on the seed and the step,
the dequantization noise only on the seed, the step and the rank,
and checkpoints hold every random-generator state, so ``resume=True``
continues a run exactly where its checkpoint left it. Checkpoints also hold
the data's fingerprint, and a resume on data that changed since is refused.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import math
import os
import random
import signal
import time
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..core import Flow
from ..data import SPLITS, DataBundle
from ..data.fingerprint import changed_splits, data_fingerprint
from ..persistence import MODEL_JSON, atomic_write, write_json
from ..transforms.normalization import synchronize_normalization
from .build import (adopt_fitted_state, build_flow, data_path, fitted_state, load_bundle, raw_dequantizer,
                    reopened_data, save_preprocess, trainable_preprocess)
from .batches import BatchPlan
from .checkpoint import (CHECKPOINT_DIR, Checkpoint, checkpoint_record, checkpoint_settings, has_checkpoint,
                         load_checkpoint, rng_state, save_checkpoint, set_rng_state)
from .config import RESUMED, TrainConfig
from .distributed import (Runtime, broadcast_flag, counts_over_ranks, gather_objects, mean_and_counts_over_ranks,
                          mean_over_ranks, parameter_digest, setup, teardown)
from .ema import EMA
from .evaluate import evaluate_split, preprocess_ladj, seeded_rng
from .interrupt import StopSignals, TrainingInterrupted, agreed_signal
from .metrics import MetricsLog
from .schedule import lr_factor

__all__ = ["train", "TrainingError", "TrainingInterrupted", "Callback"]

#: Called after every optimisation step with the number of steps done and that step's metrics.
Callback = Callable[[int, dict[str, float]], None]
#: Settings that must not change when a run is resumed (``ema``: a new decay, or adding or dropping the
#: average, would mix two averages or throw the kept one away). Early stopping (``patience``,
#: ``min_delta``) may change: :meth:`_Trainer._restore` applies the new values.
_FIXED_ON_RESUME = ("model", "model_options", "data", "data_options", "batch_size", "seed", "ema")


def _as_recorded(value: Any) -> Any:
    """``value`` as the checkpoint's JSON gives it back: tuples as lists, also inside lists and mappings."""
    if isinstance(value, (list, tuple)):
        return [_as_recorded(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_recorded(v) for k, v in value.items()}
    return value


def _setting(value: Any) -> str:
    """A setting as a flag or config file writes it: ``none`` for an unset one, else its repr."""
    return "none" if value is None else repr(value)


#: Below this many parameters a CPU run uses one intra-op thread unless ``threads`` says otherwise.
SMALL_MODEL = 1_000_000


def single_thread_pays(parameters: int) -> bool:
    """Whether a CPU run should use one intra-op thread: for small models, or on a busy machine.

    Measured on a 2-core machine shared with other jobs: RealNVP on 2-D data (35k
    parameters) took 12 ms a step with one thread and 270-530 ms with two; the
    multi-scale RealNVP on 8x8 digits (1.5M parameters), at a load average of 22,
    took 20 steps in 12 s with one thread and 347 s with two (threads that spin
    while waiting for a busy core). Small matrix products gain nothing from
    intra-op threads even on an idle machine.
    """
    if parameters < SMALL_MODEL:
        return True
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return load >= (os.cpu_count() or 1)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class TrainingError(RuntimeError):
    """Training cannot go on (the loss diverged, the run directory is taken, nothing to resume)."""


def _first_line(error: BaseException) -> str:
    """The first line of an error's message (torch's compiler errors run to pages)."""
    return (str(error).strip().splitlines() or [""])[0]


@contextmanager
def _compiler_errors() -> Iterator[None]:
    """A ``torch.compile`` failure (e.g. no C++ compiler) in the block, raised as a one-line :class:`TrainingError`.

    With ``compile`` the first forward compiles the density and the first backward its gradient.
    """
    try:
        yield
    except torch._dynamo.exc.TorchDynamoException as e:  # only torch.compile raises these
        raise TrainingError(f"torch.compile failed on this flow ({type(e).__name__}: {_first_line(e)}); "
                            "train without compile") from e


def _compiled(model: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile(model)``, or a one-line :class:`TrainingError` where this Python has no ``torch.compile``
    (called there, it raises a ``RuntimeError``: "torch.compile is not supported on Python 3.15+"), raised
    before the run writes anything.

    The error keeps no reference to ``model``: under ``torchrun`` that is the ``DistributedDataParallel`` wrapper,
    which must not outlive the process group (see :meth:`_Trainer.release_replica`), and the traceback of an
    error keeps the local variables of its frames.
    """
    try:
        return torch.compile(model)
    except RuntimeError as e:
        error = e
    del model
    traceback.clear_frames(error.__traceback__)  # torch.compile's frames, which hold the model
    raise TrainingError(f"torch.compile is not available here ({_first_line(error)}); train without compile") from error


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def run_directory(config: TrainConfig) -> Path:
    return Path(config.out) if config.out else Path("runs") / f"{config.model}-{Path(config.data).stem}"


def check_resumable(run_dir: str | Path) -> None:
    """``TrainingError`` unless ``run_dir`` holds a checkpoint to resume from."""
    if not has_checkpoint(run_dir):
        raise TrainingError(f"nothing to resume: no checkpoint in {run_dir}")


class _Trainer:
    """State of one run on one process; :func:`train` drives it."""

    def __init__(self, config: TrainConfig, runtime: Runtime, resume: bool):
        self.config, self.rt = config, runtime
        self.run_dir = run_directory(config)
        if resume:
            check_resumable(self.run_dir)
            # before the data and the model are built: another model's options would fail as bad options
            self._refuse_changed_settings(checkpoint_settings(self.run_dir))
        if not resume and (has_checkpoint(self.run_dir) or (self.run_dir / "summary.json").exists()):
            raise TrainingError(f"{self.run_dir} already holds a run; pass --resume to continue it or choose another --out")
        if not resume and (self.run_dir / MODEL_JSON).exists():  # a run writes its model after its checkpoint
            raise TrainingError(f"{self.run_dir} holds a saved model ({MODEL_JSON}) that the run would overwrite; "
                                "choose another --out")
        seed_everything(config.seed)
        #: the dataset as read: ``config.data``, or on resume the absolute path the checkpoint recorded for it
        self.data_source = self._data_source(resume)
        self.bundle: DataBundle = load_bundle(self.data_source, config.seed, config.data_options)
        self.data_fingerprint = data_fingerprint(self.bundle)
        if len(set(gather_objects(runtime, self.data_fingerprint["sha256"]))) > 1:  # a stale copy on another node
            raise TrainingError(f"the processes read different data as {self.data_source} (its digest differs "
                                "between ranks): every rank must read the same files")
        self.flow: Flow = build_flow(config.model, config.model_options, self.bundle, resume).to(runtime.device)
        self.flow.train()
        if config.threads is None and runtime.device.type == "cpu" and single_thread_pays(count_parameters(self.flow)):
            torch.set_num_threads(1)
        # a learned dequantizer (bundle preprocess with parameters) is optimised with the flow
        self.preprocess_params = trainable_preprocess(self.bundle)
        if self.preprocess_params and runtime.distributed:
            raise TrainingError("a trained preprocessing (variational dequantization) is not supported in distributed runs yet")
        self.parameters = [*self.flow.parameters(), *self.preprocess_params]
        # foreach: one C++ loop over all tensors instead of a Python loop (on the CPU torch defaults to the latter);
        # a Glow step's Adam update on digits takes 2.9 ms instead of 4.7 ms
        self.optimizer = torch.optim.Adam(self.parameters, lr=config.lr, weight_decay=config.weight_decay, foreach=True)
        self.ema = EMA(self.flow, config.ema) if config.ema is not None else None
        self.plan = BatchPlan(self.bundle.train.shape[0], config.batch_size, config.seed, runtime.rank, runtime.world_size,
                              runtime.device)
        self.train_x = self.bundle.train.to(runtime.device)
        if self.bundle.preprocess is not None:
            self.bundle.preprocess.to(runtime.device)
        # the dequantizer is part of the objective, so the average covers it too, step for step with the model's
        self.ema_preprocess = EMA(self.bundle.preprocess, config.ema) if self.ema is not None and self.preprocess_params else None
        self.train_c = None if self.bundle.train_context is None else self.bundle.train_context.to(runtime.device)
        self.metrics = MetricsLog(self.run_dir, enabled=runtime.main)
        self.step = 0
        #: under ``torchrun``: the stop signal some rank had received by the all-reduce of the last step's loss
        self.agreed_stop: int | None = None
        self.state: dict[str, Any] = {"best_val": None, "best_step": 0, "bad_evals": 0, "stopped": False,
                                      "wall_time_s": 0.0, "loss_sum": 0.0, "bpd_sum": 0.0, "loss_count": 0}
        self.best: dict[str, torch.Tensor] | None = None
        self.best_preprocess: dict[str, torch.Tensor] | None = None  # the trained preprocessing validated with `best`
        if resume:
            self._restore()
        else:
            # lines left by an earlier attempt that failed before its first checkpoint
            self._on_main(str(self.metrics.path), lambda: self.metrics.truncate(0))
        self.model = self.flow
        if runtime.distributed:
            synchronize_normalization(self.flow)  # ActNorm/BatchNorm statistics of the global batch
            ids = [runtime.device.index] if runtime.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.flow, device_ids=ids)
        # compiled lazily, and used from this process's second step on (see `_step`)
        self.compiled_model = None
        try:
            self.compiled_model = _compiled(self.model) if config.compile else None
        except TrainingError:
            self.release_replica()  # the traceback keeps this trainer: its wrapper must not outlive the group
            raise

    def release_replica(self) -> None:
        """Drop the ``DistributedDataParallel`` wrapper (and its compiled form) while the process group lives.

        The wrapper's reducer holds a C++ reference to the process group. Were that the last one, the gloo
        group's destructor would join its worker threads while holding the GIL, which a worker still releasing
        the tensors of the last collective needs: the process hung at exit in about one run in eight
        (pytorch/pytorch#56297). Dropped first, the last reference is the one
        ``torch.distributed.destroy_process_group`` removes, whose destructor releases the GIL.
        """
        self.model = self.compiled_model = None
        gc.collect()  # the wrapper's hooks make reference cycles

    # -- checkpoints ------------------------------------------------------------------
    def _data_source(self, resume: bool) -> str:
        """The dataset to load: ``config.data``; on resume of a run on the same ``data``, the absolute path its
        checkpoint recorded (:func:`~invertible.train.build.reopened_data`), so a file given by a relative path
        is found again from another working directory."""
        if not resume:
            return self.config.data
        record = checkpoint_record(self.run_dir)
        settings = record.get("config")
        if not isinstance(settings, dict) or settings.get("data") != self.config.data:
            return self.config.data  # refused by `_restore`, which names both
        return reopened_data(self.config.data, record.get("data_path"),
                             gone="put it back there: a resumed run reads the data it was trained on")

    def _refuse_changed_settings(self, saved_config: dict[str, Any]) -> None:
        """``TrainingError`` naming the first of :data:`_FIXED_ON_RESUME` whose value differs from the checkpoint's."""
        for key in _FIXED_ON_RESUME:
            saved, now = saved_config.get(key), getattr(self.config, key)
            if saved != _as_recorded(now):  # `hidden=(8, 8)` from Python is the `[8, 8]` the JSON holds
                raise TrainingError(f"cannot resume: {key} is {_setting(now)} but the checkpoint has {_setting(saved)}")

    def _restore(self) -> None:
        ckpt = load_checkpoint(self.run_dir)
        self._refuse_changed_settings(ckpt.config)
        if self.config.steps < ckpt.step:
            raise TrainingError(f"cannot resume: steps is {self.config.steps} but the run has done {ckpt.step}")
        if ckpt.fitted_preprocess is not None:  # a checkpoint written before checkpoints held it is not checked
            try:
                adopt_fitted_state(self.bundle, ckpt.fitted_preprocess, self.run_dir / CHECKPOINT_DIR)
            except ValueError as e:
                raise TrainingError(f"cannot resume: {e}") from None
            self.train_x = self.bundle.train.to(self.rt.device)
        self._check_fingerprint(ckpt)
        try:
            self.flow.load_state_dict(ckpt.model)
            if self.preprocess_params:
                if ckpt.preprocess is None:
                    raise ValueError("the checkpoint holds no weights of the trained preprocessing")
                self.bundle.preprocess.load_state_dict(ckpt.preprocess)
            self.optimizer.load_state_dict(ckpt.optimizer)
            for group in self.optimizer.param_groups:  # the checkpoint's groups carry the weight decay trained with
                group["weight_decay"] = self.config.weight_decay
            if self.ema is not None:
                if ckpt.ema is None:
                    raise ValueError("the checkpoint holds no EMA weights but ema is set")
                self.ema.model.load_state_dict(ckpt.ema)
            if self.ema_preprocess is not None:
                self.ema_preprocess.model.load_state_dict(self._averaged_preprocess(ckpt))
        except (RuntimeError, KeyError, ValueError) as e:
            raise ValueError(f"checkpoint in {self.run_dir} does not fit this run: {e}") from None
        self.flow.to(self.rt.device)
        self.step = ckpt.step
        self.state.update(ckpt.state)
        self._record_changed_settings(ckpt)
        if self.ema is not None:
            self.ema.updates = int(self.state.get("ema_updates", self.step))
        if self.ema_preprocess is not None:
            self.ema_preprocess.updates = self.ema.updates
        self._restore_early_stopping(ckpt)
        set_rng_state(ckpt.rng)
        self._on_main(str(self.metrics.path), lambda: self.metrics.truncate(self.step))

    def _record_changed_settings(self, ckpt: Checkpoint) -> None:
        """Add to the run's record of resumes (:data:`~invertible.train.config.RESUMED`, kept in the checkpoint's
        state and written into ``config.yaml``) the settings this resume changed, with the values the run used
        up to the checkpoint's step; a resume that changes nothing adds nothing. ``out`` names the directory
        and may be spelled another way."""
        before = {key: saved for key, saved in ckpt.config.items()
                  if key != "out" and hasattr(self.config, key) and saved != _as_recorded(getattr(self.config, key))}
        if before:
            self.state[RESUMED] = [*self.state.get(RESUMED, []), {"step": ckpt.step, "before": before}]

    def _check_fingerprint(self, ckpt: Checkpoint) -> None:
        """``TrainingError`` when the data loaded now are not those the checkpoint was trained on (a checkpoint
        written before checkpoints held a fingerprint is not checked)."""
        if ckpt.data_fingerprint is None:
            return
        changed = changed_splits(ckpt.data_fingerprint, self.data_fingerprint)
        if changed:
            names = changed[0] if len(changed) == 1 else f"{', '.join(changed[:-1])} and {changed[-1]}"
            splits = f"the {names} split{'s' if len(changed) > 1 else ''} of {self.config.data!r}"
            raise TrainingError(f"cannot resume: the data of {self.run_dir} changed since its checkpoint: {splits} "
                                f"differ{'' if len(changed) > 1 else 's'}; train a new run or restore the data")

    def _restore_early_stopping(self, ckpt: Checkpoint) -> None:
        """The best weights and the stop under this run's ``patience``, which may differ from the checkpoint's.

        With early stopping off the run ends on its last (or EMA) weights, not on a best kept before. A
        checkpoint without best weights (trained without patience) counts from the resume: its best
        validation has no weights to return to, so the first validation after it is the new best.
        """
        if self.config.patience is None:
            self.best, self.best_preprocess = None, None
        else:
            self.best, self.best_preprocess = ckpt.best, ckpt.best_preprocess
            if ckpt.best is None:
                self.state.update(best_val=None, best_step=0, bad_evals=0)
        self.state["stopped"] = self._patience_ran_out()  # a larger patience (or none) continues a stopped run

    def _averaged_preprocess(self, ckpt: Checkpoint) -> dict[str, torch.Tensor]:
        """The EMA of the trained preprocessing in ``ckpt``; a checkpoint written before the average covered it
        holds none, and the average restarts from the checkpoint's preprocessing weights."""
        if ckpt.ema_preprocess is not None:
            return ckpt.ema_preprocess
        warnings.warn(f"the checkpoint in {self.run_dir} holds no EMA of the trained preprocessing; its average "
                      f"starts from the preprocessing weights of step {ckpt.step}", stacklevel=2)
        return ckpt.preprocess

    def _on_main(self, what: str, write: Callable[[], None]) -> None:
        """``write()`` on rank 0, the only process that writes; the others learn whether it failed and stop with it.

        Rank 0 alone can fail there (``--out`` naming a file, a full disk); the other processes would otherwise
        go on to the next collective and die of the lost peer with a gloo traceback.
        """
        error: Exception | None = None
        if self.rt.main:
            try:
                write()
            except Exception as e:
                error = e
        if not broadcast_flag(self.rt, error is None):
            if error is not None:
                raise error
            raise TrainingError(f"rank 0 could not write {what} (its error says why)")

    def _checkpoint(self) -> None:
        self._on_main(f"the checkpoint of {self.run_dir}", self._write_checkpoint)

    def _write_checkpoint(self) -> None:
        state = dict(self.state)
        if self.ema is not None:
            state["ema_updates"] = self.ema.updates
        save_checkpoint(
            self.run_dir,
            Checkpoint(
                step=self.step,
                model=self.flow.state_dict(),
                optimizer=self.optimizer.state_dict(),
                ema=None if self.ema is None else self.ema.model.state_dict(),
                best=self.best,
                preprocess=self.bundle.preprocess.state_dict() if self.preprocess_params else None,
                ema_preprocess=None if self.ema_preprocess is None else self.ema_preprocess.model.state_dict(),
                best_preprocess=self.best_preprocess,
                fitted_preprocess=fitted_state(self.bundle),
                rng=rng_state(),
                scheduler={"schedule": self.config.schedule, "step": self.step,
                           "lr": self.optimizer.param_groups[0]["lr"]},
                state=state,
                config=self.config.to_dict(),
                data_fingerprint=self.data_fingerprint,
                data_path=data_path(self.data_source),
            ),
        )

    # -- one step -----------------------------------------------------------------------
    @property
    def eval_flow(self) -> Flow:
        """The weights that are validated, tested and saved: the EMA when enabled."""
        return self.flow if self.ema is None else self.ema.model

    @property
    def eval_bundle(self) -> DataBundle:
        """The data with the trained preprocessing that is validated, tested and saved: the EMA when enabled."""
        if self.ema_preprocess is None:
            return self.bundle
        return dataclasses.replace(self.bundle, preprocess=self.ema_preprocess.model)

    def _step(self, stop: StopSignals) -> dict[str, float]:
        """One optimisation step on the next batch; returns its metrics.

        Under ``torchrun`` the all-reduce of the loss also counts the ranks that have received a stop signal
        (``stop.flags()``), and :attr:`agreed_stop` is the signal every rank then stops on after this step.

        With ``compile`` the first step of the process (of the run, or after a resume) runs eagerly and the
        later ones compiled: a layer's data-dependent initialisation (ActNorm) then happens outside the
        compiler, which would otherwise break the graph at it and run every later step as many small graphs.
        """
        cfg = self.config
        lr = cfg.lr * lr_factor(self.step, cfg.steps, cfg.warmup, cfg.schedule, cfg.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        idx = self.plan.indices(self.step)
        x = self.train_x[idx]
        c = None if self.train_c is None else self.train_c[idx]
        if self.bundle.raw:
            with seeded_rng(self.plan.noise_seed(self.step), self.rt.device):
                y, ladj = self.bundle.preprocess(x)
            with _compiler_errors():
                loss = -(self.model(y, c) + ladj).mean()
        else:
            with _compiler_errors():
                loss = -self.model(x, c).mean()
        # the loss of the whole batch, the same on every rank, and the stop signals received by any rank
        global_loss, signalled = mean_and_counts_over_ranks(self.rt, loss, stop.flags())
        self.agreed_stop = agreed_signal(signalled)
        if not math.isfinite(global_loss):
            if self.bundle.raw:
                self._recheck_preprocess(x)
            raise TrainingError(
                f"training diverged at step {self.step + 1}: the loss is {global_loss}; lower lr, add warmup or set grad_clip"
            )
        self.optimizer.zero_grad(set_to_none=True)
        with _compiler_errors():  # with ``compile``, the first backward compiles the backward graph
            loss.backward()
        max_norm = cfg.grad_clip if cfg.grad_clip is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, max_norm).item()
        if not math.isfinite(grad_norm):  # Adam would write it into the weights, and a checkpoint keep them
            raise TrainingError(
                f"training diverged at step {self.step + 1}: the loss is {global_loss} but its gradient norm is "
                f"{grad_norm}; lower lr, add warmup or set grad_clip"
            )
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.flow)
        if self.ema_preprocess is not None:
            self.ema_preprocess.update(self.bundle.preprocess)
        self.step += 1
        if self.compiled_model is not None:
            self.model = self.compiled_model
        out = {"loss": global_loss, "lr": lr, "grad_norm": grad_norm}
        if self.bundle.levels is not None:
            ladj = 0.0 if self.bundle.raw else mean_over_ranks(self.rt, preprocess_ladj(self.bundle, x).mean()).item()
            raw = out["loss"] - ladj
            out["bpd"] = raw / (math.prod(self.bundle.event_shape) * math.log(2))
        return out

    def _batch_checks(self, on: bool) -> None:
        """Switch the per-call checks of the flow and of the batches' preprocessing on or off.

        The training steps run without them: the data were checked once when loaded
        (:func:`~invertible.train.build.check_bundle`: finite values, and the pixels of a raw
        bundle in the domain of its dequantizer), and each check reads the batch back, a device
        synchronisation on a GPU. A raw bundle's preprocessing keeps its checks unless it begins
        with a dequantizer, whose domain the load checked.
        """
        self.flow.validate = on
        if raw_dequantizer(self.bundle) is not None:
            self.bundle.preprocess.validate = on

    @torch.no_grad()
    def _recheck_preprocess(self, x: torch.Tensor) -> None:
        """Run this step's preprocessing of ``x`` again, with the same seeded noise and its checks on.

        A batch that a layer cannot map (``Logit(alpha=0)`` at a pixel 0 whose dequantization noise is exactly 0,
        which a custom dequantizer may draw; the built-in ones keep it in ``(0, 1)``) raises that layer's
        ``ValueError`` here, instead of the loss it made non-finite being reported as a divergence. The run stops
        after this either way.
        """
        self.bundle.preprocess.validate = True
        with seeded_rng(self.plan.noise_seed(self.step), self.rt.device):
            self.bundle.preprocess(x)

    def _validate(self) -> None:
        cfg = self.config
        result = evaluate_split(self.eval_flow, self.eval_bundle, "val", cfg.eval_batch_size, self.rt.device)
        self._on_main(str(self.metrics.path), lambda: self.metrics.write({"step": self.step, "split": "val", **result}))
        best, val = self.state["best_val"], result["val_nll"]
        # a NaN is never the best: every comparison with it is false, so no later validation would improve on it
        if not math.isnan(val) and (best is None or val < best - cfg.min_delta):
            self.state.update(best_val=val, best_step=self.step, bad_evals=0)
            if cfg.patience is not None:
                self.best = {k: v.detach().clone() for k, v in self.eval_flow.state_dict().items()}
                if self.preprocess_params:
                    averaged = self.eval_bundle.preprocess.state_dict()
                    self.best_preprocess = {k: v.detach().clone() for k, v in averaged.items()}
        else:
            self.state["bad_evals"] += 1
        self.state["stopped"] = broadcast_flag(self.rt, self._patience_ran_out())

    def _patience_ran_out(self) -> bool:
        """Whether early stopping ends the run before its last step (patience used up with steps still to do).

        Patience that runs out at the last step stops nothing: the run did all its steps.
        """
        patience = self.config.patience
        return patience is not None and self.state["bad_evals"] >= patience and self.step < self.config.steps

    def _log_train(self, out: dict[str, float]) -> None:
        """Write the training line of this step: ``out`` with the loss (and bits/dim) averaged over the steps
        since the previous line."""
        record = {"step": self.step, "split": "train", **out, "loss": self.state["loss_sum"] / self.state["loss_count"]}
        if "bpd" in out:
            record["bpd"] = self.state["bpd_sum"] / self.state["loss_count"]
        self._on_main(str(self.metrics.path), lambda: self.metrics.write(record))
        self.state.update(loss_sum=0.0, bpd_sum=0.0, loss_count=0)

    def fit(self, callbacks: Sequence[Callback]) -> None:
        cfg = self.config

        def write_config() -> None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            text = cfg.to_yaml()
            if self.state.get(RESUMED):
                text += yaml.safe_dump({RESUMED: self.state[RESUMED]}, sort_keys=False)
            atomic_write(self.run_dir / "config.yaml", lambda tmp: Path(tmp).write_text(text))

        self._on_main(f"the run directory {self.run_dir}", write_config)
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (cfg.progress and self.rt.main),
                   desc="train", dynamic_ncols=True, mininterval=0.5)
        started = time.perf_counter() - self.state["wall_time_s"]
        self._batch_checks(False)
        with StopSignals() as stop:
            try:
                self._loop(callbacks, bar, started, stop)
            finally:
                bar.close()
                self._batch_checks(True)
            stop.hold()  # a further signal must not cut the checkpoint of the step the run stops at
            self._checkpoint()
            # under torchrun every rank raises or none: one count more, for a signal after the last step's all-reduce
            agreed = agreed_signal(counts_over_ranks(self.rt, stop.flags()))
        signum = agreed if self.rt.distributed else stop.signum
        if signum is None and stop.signum is not None:  # reached this rank after the ranks' last count
            signal.raise_signal(stop.signum)  # as after the steps: to the handler now restored
        if signum is not None:
            raise TrainingInterrupted(signum, self.step, self.run_dir)

    def _stop_signal(self, stop: StopSignals) -> int | None:
        """The signal the run stops on after this step: this process's, or under ``torchrun`` the one the ranks
        agreed on in the step's all-reduce (every rank must stop after the same step, or the others would wait in
        the next collective for ever)."""
        return self.agreed_stop if self.rt.distributed else stop.signum

    def _loop(self, callbacks: Sequence[Callback], bar: tqdm, started: float, stop: StopSignals) -> None:
        """The optimisation steps, until the last one, early stopping, or a stop signal (after its step)."""
        cfg = self.config
        while self.step < cfg.steps and not self.state["stopped"] and self._stop_signal(stop) is None:
            out = self._step(stop)
            self.state["loss_sum"] += out["loss"]
            self.state["bpd_sum"] += out.get("bpd", 0.0)
            self.state["loss_count"] += 1
            bar.update(1)
            bar.set_postfix({k: f"{out[k]:.3f}" for k in ("loss", "bpd") if k in out}, refresh=False)
            last = self.step == cfg.steps
            if self.step % cfg.log_every == 0 or last:
                self._log_train(out)
            if self.step % cfg.eval_every == 0 or last:
                self._validate()
                if self.state["stopped"] and self.state["loss_count"]:
                    self._log_train(out)  # the steps since the last line, which no later line will cover
            for callback in callbacks:
                callback(self.step, out)
            self.state["wall_time_s"] = time.perf_counter() - started
            ends = last or self.state["stopped"] or self._stop_signal(stop) is not None  # `fit` checkpoints then
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and not ends:
                self._checkpoint()

    # -- the end ------------------------------------------------------------------------
    def final_flow(self) -> Flow:
        """The EMA or last weights, or the best ones on validation when early stopping is on, in evaluation mode:
        the pictures then show the density that is tested and saved (a BatchNorm's running averages, not the
        statistics of each batch of grid points, which under ``torchrun`` rank 0 would pool alone).

        A trained preprocessing (learned dequantizer) is set to its weights of that same step, and
        to their average with EMA, so the flow is tested and saved with the noise flow it was validated with.
        """
        if self.best_preprocess is not None:
            self.bundle.preprocess.load_state_dict(self.best_preprocess)
        elif self.ema_preprocess is not None:
            self.bundle.preprocess.load_state_dict(self.ema_preprocess.model.state_dict())
        if self.best is None:
            return self.eval_flow.eval()
        flow = copy.deepcopy(self.eval_flow)
        flow.load_state_dict(self.best)
        return flow.eval()

    def finish(self) -> dict[str, Any]:
        cfg = self.config
        flow = self.final_flow()
        digests = gather_objects(self.rt, parameter_digest(self.flow))
        summary: dict[str, Any] = {"model": cfg.model, "data": cfg.data, "data_path": data_path(self.data_source)}
        summary.update(evaluate_split(flow, self.bundle, "test", cfg.eval_batch_size, self.rt.device))
        summary.update(
            steps=self.step,
            stopped_early=bool(self.state["stopped"]),
            best_val_nll=self.state["best_val"],
            best_step=self.state["best_step"],
            wall_time_s=self.state["wall_time_s"],
            parameters=count_parameters(flow),
            preprocess_parameters=sum(p.numel() for p in self.preprocess_params),
            ema=cfg.ema is not None,
            one_hot_context=one_hot(self.bundle.train_context),
            class_names=self.bundle.class_names if self.bundle.train_context is not None else None,
            picture_shape=None if self.bundle.picture_shape is None else list(self.bundle.picture_shape),
            world_size=self.rt.world_size,
            device=str(self.rt.device),
            param_sha256_by_rank=digests,
            data_sha256=self.data_fingerprint["sha256"],
            **{f"data_sha256_{split}": self.data_fingerprint[split] for split in SPLITS},
        )
        if self.rt.main:
            flow.save(self.run_dir)
            save_preprocess(self.bundle, self.run_dir)
            if cfg.plots:
                from .pictures import draw_run

                draw_run(self.run_dir, flow, self.bundle, self.metrics.records(), cfg.seed)
            write_json(self.run_dir / "summary.json", summary, report=True)
        return summary


def one_hot(context: torch.Tensor | None) -> bool | None:
    """Whether every context row is a one-hot class label (``None`` without a context): what ``sample --label`` builds."""
    if context is None:
        return None
    return bool((((context == 0) | (context == 1)).all() & (context.sum(1) == 1).all()).item())


def train(config: TrainConfig, resume: bool = False, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train (or with ``resume`` continue) the run described by ``config``; returns the summary.

    ``callbacks`` are called after every step as ``callback(steps_done, metrics)``;
    an exception raised by one stops the run, leaving the last checkpoint as it was.
    SIGTERM or SIGINT during the steps (in the main thread) ends the run after its current step (under
    ``torchrun``, a signal to any rank ends every rank after the same step, at most one step later): the
    checkpoint of that step is written and :class:`TrainingInterrupted` raised
    (see :mod:`invertible.train.interrupt`); the signal handlers are restored when the steps end.
    The number of torch threads is set for the run (see ``TrainConfig.threads``)
    and restored afterwards.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"train needs a TrainConfig, got {type(config).__name__}; build one with "
                        "TrainConfig(...) or TrainConfig.from_dict(settings)")
    if callable(callbacks) or not all(callable(c) for c in callbacks):
        raise TypeError(f"callbacks must be a sequence of callables callback(steps_done, metrics), got {callbacks!r}")
    config.validate()
    runtime = setup(config.device)
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    trainer: _Trainer | None = None
    try:
        trainer = _Trainer(config, runtime, resume)
        trainer.fit(callbacks)
        return trainer.finish()
    finally:
        if trainer is not None and runtime.distributed:
            trainer.release_replica()
        teardown(runtime)
        torch.set_num_threads(threads)
