"""Checkpoints: every tensor in one safetensors file, everything else in a small JSON that points at it.

Layout of ``RUN/checkpoint/``::

    state-00000500.safetensors   model.*, ema.*, best.*, preprocess.*, ema_preprocess.*, best_preprocess.*,
                                 fitted_preprocess.*, optim.<param>.<key>, rng.torch, rng.cuda.<i>, rng.numpy
    checkpoint.json              step, tensor file name and its SHA-256, optimizer groups,
                                 scheduler position, RNG states (python, numpy), training state, config,
                                 the fingerprint of the data trained on

Both files are written to a temporary name, flushed to the disk and renamed into place, the tensors
first, never onto the committed checkpoint's tensor file (a checkpoint written again at its step goes to
``state-<step>.1.safetensors``). ``checkpoint.json`` is the commit record: until it is replaced it points
at the previous, complete tensor file, so an interruption at any moment leaves
either the old or the new checkpoint, never a mixture; a file whose hash does
not match is reported as corrupt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

from ..persistence import FORMAT_VERSION, atomic_write, check_format, file_sha256, read_json, read_tensors, write_json

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "checkpoint_record", "checkpoint_settings", "has_checkpoint", "CHECKPOINT_DIR", "CHECKPOINT_JSON"]

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_JSON = "checkpoint.json"


@dataclass
class Checkpoint:
    """The state of a run after ``step`` optimisation steps."""

    step: int
    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    ema: dict[str, Tensor] | None = None
    best: dict[str, Tensor] | None = None
    #: a trained data preprocessing (learned dequantization), when the run has one
    preprocess: dict[str, Tensor] | None = None
    #: the EMA of the trained preprocessing, when the run has one and averages its weights
    ema_preprocess: dict[str, Tensor] | None = None
    #: the trained preprocessing at the best validation step, kept with ``best``
    best_preprocess: dict[str, Tensor] | None = None
    #: the state of a preprocessing fitted to the data (a table's standardisation statistics), when the run has one
    fitted_preprocess: dict[str, Tensor] | None = None
    rng: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    #: the data's fingerprint (:func:`~invertible.data.fingerprint.data_fingerprint`), ``None`` in a checkpoint
    #: written before checkpoints held one
    data_fingerprint: dict[str, str] | None = None
    #: the absolute path of the dataset file (:func:`~invertible.train.build.data_path`; ``None`` for a built-in
    #: dataset), by which a resume reads a file given by a relative path from any working directory
    data_path: str | None = None


def rng_state() -> dict[str, Any]:
    """The states of torch's (CPU and CUDA), numpy's and Python's global generators."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
        "python": _listify(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # a CPU run leaves CUDA unstarted on every GPU
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    random.setstate(_tuplify(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        # as many as this machine has: a run saved on a node of 8 GPUs resumes on one (set_rng_state_all failed)
        for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)


def _listify(x: Any) -> Any:
    return [_listify(v) for v in x] if isinstance(x, (tuple, list)) else x


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


def _cpu(t: Tensor) -> Tensor:
    return t.detach().cpu().contiguous().clone()


def save_checkpoint(run_dir: str | Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` into ``run_dir/checkpoint/`` atomically; delete older tensor files and the temporary
    files that an interrupted write (``kill -9``) left behind."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, Tensor] = {}
    sections = (("model", ckpt.model), ("ema", ckpt.ema), ("best", ckpt.best), ("preprocess", ckpt.preprocess),
                ("ema_preprocess", ckpt.ema_preprocess), ("best_preprocess", ckpt.best_preprocess),
                ("fitted_preprocess", ckpt.fitted_preprocess))
    for prefix, sd in sections:
        for k, v in (sd or {}).items():
            tensors[f"{prefix}.{k}"] = _cpu(v)
    optim_state: dict[str, dict[str, Any]] = {}
    for index, entries in ckpt.optimizer["state"].items():
        for k, v in entries.items():
            if isinstance(v, Tensor):
                tensors[f"optim.{index}.{k}"] = _cpu(v)
            else:
                optim_state.setdefault(str(index), {})[k] = v
    rng = dict(ckpt.rng)
    tensors["rng.torch"] = _cpu(rng.pop("torch"))
    for i, s in enumerate(rng.pop("cuda", [])):
        tensors[f"rng.cuda.{i}"] = _cpu(s)
    numpy_state = dict(rng.pop("numpy"))
    tensors["rng.numpy"] = _cpu(numpy_state.pop("keys"))

    name = _tensor_file_name(directory, ckpt.step)
    atomic_write(directory / name, lambda tmp: save_file(tensors, tmp))
    record = {
        "format": FORMAT_VERSION,
        "step": ckpt.step,
        "tensors": name,
        "sha256": file_sha256(directory / name),
        "has_ema": ckpt.ema is not None,
        "has_best": ckpt.best is not None,
        "has_preprocess": ckpt.preprocess is not None,
        "has_ema_preprocess": ckpt.ema_preprocess is not None,
        "has_best_preprocess": ckpt.best_preprocess is not None,
        "has_fitted_preprocess": ckpt.fitted_preprocess is not None,
        "optimizer": {"param_groups": ckpt.optimizer["param_groups"], "state": optim_state},
        "rng": {"numpy": numpy_state, "python": rng.pop("python")},
        "scheduler": ckpt.scheduler,
        "state": ckpt.state,
        "config": ckpt.config,
    }
    if ckpt.data_fingerprint is not None:
        record["data_fingerprint"] = ckpt.data_fingerprint
    if ckpt.data_path is not None:
        record["data_path"] = ckpt.data_path
    write_json(directory / CHECKPOINT_JSON, record)
    leftovers = [*directory.glob("state-*.safetensors"), *directory.glob(".state-*.tmp"),
                 *directory.glob(f".{CHECKPOINT_JSON}.*.tmp")]
    for old in leftovers:
        if old.name != name:
            old.unlink()
    return directory


def _tensor_file_name(directory: Path, step: int) -> str:
    """``state-<step>.safetensors``, or ``state-<step>.1.safetensors`` when the committed checkpoint is the former.

    A checkpoint written again at the step of the committed one (a resume of a finished run, which may drop its
    best weights) must not replace the tensors the committed record points to: were the record not replaced in
    turn (a full disk, a kill), the record would no longer match its tensors and the run could not be resumed.
    """
    name = f"state-{step:08d}.safetensors"
    try:
        committed = read_json(directory / CHECKPOINT_JSON, "checkpoint record").get("tensors")
    except (OSError, ValueError):
        committed = None
    return f"state-{step:08d}.1.safetensors" if committed == name else name


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_JSON).is_file()


def checkpoint_record(run_dir: str | Path) -> dict[str, Any]:
    """The JSON record of the checkpoint of ``run_dir`` (``{}`` when it is not a mapping), tensors not read."""
    record = read_json(Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_JSON, "checkpoint record")
    return record if isinstance(record, dict) else {}


def checkpoint_settings(run_dir: str | Path) -> dict[str, Any]:
    """The training settings recorded in the checkpoint of ``run_dir`` (``{}`` when it records none)."""
    config = checkpoint_record(run_dir).get("config")
    return config if isinstance(config, dict) else {}


def load_checkpoint(run_dir: str | Path) -> Checkpoint:
    """Read the checkpoint of ``run_dir``; ``FileNotFoundError`` or ``ValueError`` (corrupt) otherwise."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    record = read_json(directory / CHECKPOINT_JSON, "checkpoint record")
    try:
        name, digest, step = record["tensors"], record["sha256"], int(record["step"])
        optimizer, rng = record["optimizer"], record["rng"]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"corrupt checkpoint record {directory / CHECKPOINT_JSON}: missing or bad field {e}") from None
    if not (isinstance(optimizer, dict) and isinstance(optimizer.get("param_groups"), list)
            and isinstance(optimizer.get("state", {}), dict)):
        raise ValueError(f"corrupt checkpoint record {directory / CHECKPOINT_JSON}: bad field 'optimizer'")
    if not (isinstance(rng, dict) and isinstance(rng.get("numpy"), dict)):
        raise ValueError(f"corrupt checkpoint record {directory / CHECKPOINT_JSON}: bad field 'rng'")
    config = record.get("config", {})
    fingerprint = record.get("data_fingerprint")
    if fingerprint is not None and not (isinstance(fingerprint, dict)
                                        and all(isinstance(v, str) for v in fingerprint.values())):
        raise ValueError(f"corrupt checkpoint record {directory / CHECKPOINT_JSON}: bad field 'data_fingerprint'")
    check_format(record.get("format", 1), config.get("model") if isinstance(config, dict) else None,
                 directory / CHECKPOINT_JSON)
    path = directory / str(name)
    if not path.is_file():
        raise ValueError(f"corrupt checkpoint in {directory}: tensor file {name} is missing")
    if file_sha256(path) != digest:
        raise ValueError(f"corrupt checkpoint in {directory}: {name} does not match its recorded SHA-256")
    tensors = read_tensors(path, "checkpoint tensors")

    def section(prefix: str) -> dict[str, Tensor]:
        p = prefix + "."
        return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}

    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, k = key.split(".", 2)
            state.setdefault(int(index), {})[k] = value
    for index, entries in optimizer.get("state", {}).items():
        state.setdefault(int(index), {}).update(entries)
    cuda = section("rng.cuda")
    if "rng.torch" not in tensors or "rng.numpy" not in tensors:
        raise ValueError(f"corrupt checkpoint in {directory}: random-generator states are missing")
    return Checkpoint(
        step=step,
        model=section("model"),
        optimizer={"state": state, "param_groups": optimizer["param_groups"]},
        ema=section("ema") if record.get("has_ema") else None,
        best=section("best") if record.get("has_best") else None,
        preprocess=section("preprocess") if record.get("has_preprocess") else None,
        ema_preprocess=section("ema_preprocess") if record.get("has_ema_preprocess") else None,
        best_preprocess=section("best_preprocess") if record.get("has_best_preprocess") else None,
        fitted_preprocess=section("fitted_preprocess") if record.get("has_fitted_preprocess") else None,
        rng={
            "torch": tensors["rng.torch"],
            "numpy": {**rng["numpy"], "keys": tensors["rng.numpy"]},
            "python": rng["python"],
            **({"cuda": [cuda[str(i)] for i in range(len(cuda))]} if cuda else {}),
        },
        scheduler=record.get("scheduler", {}),
        state=record.get("state", {}),
        config=record.get("config", {}),
        data_fingerprint=fingerprint,
        data_path=record.get("data_path") if isinstance(record.get("data_path"), str) else None,
    )

