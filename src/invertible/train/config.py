"""The training configuration: one dataclass, read from YAML or TOML, overridden by flags, validated.

Every field has a default except the dataset; :meth:`TrainConfig.validate`
checks each value and raises ``ValueError`` naming the field and what it must be.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .distributed import check_device

__all__ = ["TrainConfig", "RESUMED", "read_config_file", "merge_settings", "parse_option", "parse_options", "parse_error"]

_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_FLOATS = {"lr", "min_lr_ratio", "grad_clip", "weight_decay", "ema", "min_delta"}


#: Settings that ``None`` switches off; a file may also say so with the string ``"none"`` (TOML has no null).
_NULLABLE = {"grad_clip", "ema", "patience", "threads"}


def _number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string; read such strings as floats."""
    if isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
        return float(value)
    return value


def _option_number(value: Any) -> Any:
    """An option's value from a file: a float where YAML 1.1 left one a string, a number with an exponent but no
    dot or no sign (``1e-2``, ``5e0``, ``1.0e5``), as the ``-m``/``-d`` flags read it. Other strings stay (``"3"``,
    quoted in a file, is meant as text: a column's name, say)."""
    return _number(value) if isinstance(value, str) and "e" in value.lower() else value


#: The key of ``config.yaml`` that records, for each resume that changed settings, the step it resumed at and
#: the values those settings had before it: ``[{"step": 1000, "before": {"lr": 0.001, "steps": 1000}}, ...]``.
RESUMED = "resumed"


@dataclass
class TrainConfig:
    """Everything a training run needs; written to ``config.yaml`` in the run directory.

    Attributes:
        model, model_options: preset name and its options (``features``,
            ``event_shape`` and ``context_features`` come from the data).
        data, data_options: dataset name or file path, and its options.
        steps: optimisation steps.
        batch_size: examples per step, over all processes together.
        lr: peak learning rate of Adam.
        warmup: steps of linear warm-up from 0 to ``lr``.
        schedule: ``"cosine"`` (decay to ``lr * min_lr_ratio`` after warm-up) or ``"constant"``.
        min_lr_ratio: ``r``, the fraction of ``lr`` the cosine schedule decays toward: step ``s`` (0-based) takes
            ``lr (r + (1 - r) (1 + cos(pi t)) / 2)`` with ``t = (s - warmup) / (steps - warmup)``, so the last step
            is a little above ``lr r`` (:func:`~invertible.train.schedule.lr_factor`).
        grad_clip: maximum global gradient norm, or ``None`` for no clipping.
        weight_decay: L2 penalty of Adam.
        ema: decay of an exponential moving average of the weights, or ``None``;
            when set, validation, test and the saved model use the averaged weights
            (a learned dequantizer's weights are averaged and used with them).
        eval_every: steps between validation passes.
        eval_batch_size: batch size of validation and test passes.
        patience: stop after this many validation passes without improvement
            (``None``: never); the saved model is then the one of the last improvement
            (the best on validation up to ``min_delta``).
        min_delta: a validation NLL counts as an improvement when it beats the best by more than this.
        log_every: steps between lines of training metrics.
        checkpoint_every: steps between checkpoints (0: only at the end).
        seed: seed of the weights, the data order and every random draw.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        out: run directory.
        threads: intra-op CPU threads of torch for this process. ``None``: on the
            CPU, one thread for a model of fewer than a million parameters or when
            the load average is at least the number of cores (spinning threads
            slow down badly on a busy machine), torch's default otherwise.
        compile: run the training steps' log-density through ``torch.compile``
            (PyTorch 2's graph compiler: the first step of a process runs eagerly, so
            that data-dependent initialisation such as ActNorm's stays out of the graph;
            the second takes seconds to compile, the later ones skip most of eager
            PyTorch's per-operation overhead). Validation, testing and sampling stay eager.
        progress: show a progress bar.
        plots: draw pictures at the end.
    """

    data: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    model: str = "realnvp"
    model_options: dict[str, Any] = field(default_factory=dict)
    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    warmup: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 5.0
    weight_decay: float = 0.0
    ema: float | None = None
    eval_every: int = 100
    eval_batch_size: int = 1024
    patience: int | None = None
    min_delta: float = 0.0
    log_every: int = 10
    checkpoint_every: int = 0
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    threads: int | None = None
    compile: bool = False
    progress: bool = True
    plots: bool = True

    # -- construction -------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "config") -> "TrainConfig":
        """Build from a mapping (``-`` in keys read as ``_``); unknown keys are an error, except :data:`RESUMED`,
        the record of a resumed run's earlier settings that its ``config.yaml`` holds (not a setting: left out)."""
        if not isinstance(values, Mapping):
            raise ValueError(f"{source}: expected a mapping of settings, got {type(values).__name__}")
        names = cls.field_names()
        clean = {}
        for key, value in values.items():
            k = str(key).replace("-", "_")
            if k == RESUMED:
                continue
            if k not in names:
                raise ValueError(f"{source}: unknown setting {key!r}; known settings: {', '.join(names)}")
            if k in _NULLABLE and isinstance(value, str) and value.strip().lower() in ("none", "null"):
                value = None
            elif k in ("model_options", "data_options") and isinstance(value, Mapping):
                value = {name: _option_number(v) for name, v in value.items()}
            clean[k] = _number(value) if k in _FLOATS else value
        config = cls(**clean)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # -- validation -----------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` for the first setting that is out of range or of the wrong type."""
        _int("steps", self.steps, minimum=1)
        _int("batch_size", self.batch_size, minimum=1)
        _float("lr", self.lr, positive=True)
        _int("warmup", self.warmup, minimum=0)
        if self.warmup > self.steps:
            raise ValueError(f"warmup ({self.warmup}) must not exceed steps ({self.steps})")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        _float("min_lr_ratio", self.min_lr_ratio)
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip is not None:
            _float("grad_clip", self.grad_clip, positive=True)
        _float("weight_decay", self.weight_decay)
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.ema is not None:
            _float("ema", self.ema)
            if not 0 < self.ema < 1:
                raise ValueError(f"ema (the decay of the weight average) must lie in (0, 1), got {self.ema}")
        _int("eval_every", self.eval_every, minimum=1)
        _int("eval_batch_size", self.eval_batch_size, minimum=1)
        if self.patience is not None:
            _int("patience", self.patience, minimum=1)
        _float("min_delta", self.min_delta)
        if self.min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta}")
        _int("log_every", self.log_every, minimum=1)
        _int("checkpoint_every", self.checkpoint_every, minimum=0)
        _int("seed", self.seed, minimum=0)
        if self.seed >= 2**32:  # the global NumPy generator is seeded too, and takes no larger seed
            raise ValueError(f"seed must be < 2**32 (NumPy's global generator is seeded with it), got {self.seed}")
        check_device(self.device)
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a preset name, got {self.model!r}")
        if self.data is None:
            raise ValueError("no dataset given: set data (a built-in name or a file path)")
        if not isinstance(self.data, str) or not self.data:
            raise ValueError(f"data must be a dataset name or file path, got {self.data!r}")
        for name in ("model_options", "data_options"):
            value = getattr(self, name)
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise ValueError(f"{name} must be a mapping from option names to values, got {value!r}")
        if self.out is not None and (not isinstance(self.out, str) or not self.out):
            raise ValueError(f"out must be a directory path, got {self.out!r}")
        if self.threads is not None:
            _int("threads", self.threads, minimum=1)
        for name in ("compile", "progress", "plots"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")


def _int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _float(name: str, value: Any, positive: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def parse_error(error: Exception) -> str:
    """A parser's complaint on one line: YAML's spans several (the problem, then a picture of the spot)."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(error).split())


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read settings from a ``.yaml``/``.yml`` or ``.toml`` file (a ``[train]`` table is unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    suffix = path.suffix.lower()
    try:
        text = path.read_text()
        if suffix in (".yaml", ".yml"):
            values = yaml.safe_load(text) or {}
        elif suffix == ".toml":
            values = tomllib.loads(text)
        else:
            raise ValueError(f"config file {path} must end in .yaml, .yml or .toml")
    except (yaml.YAMLError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot parse config file {path}: {parse_error(e)}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of settings")
    if set(values) == {"train"} and isinstance(values["train"], dict):
        values = values["train"]
    return {str(k).replace("-", "_"): v for k, v in values.items()}


def merge_settings(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers override earlier ones; ``model_options`` and ``data_options`` merge key by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            key = str(key).replace("-", "_")
            if key in ("model_options", "data_options") and isinstance(out.get(key), dict) and isinstance(value, dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = value
    return out


def parse_option(text: str) -> tuple[str, Any]:
    """``"key=value"`` to ``(key, value)``, the value read as a YAML scalar or list (``hidden=[64,64]``)."""
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key.isidentifier():
        raise ValueError(f"option {text!r} must look like key=value")
    try:
        value = _number(yaml.safe_load(raw)) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ValueError(f"cannot read the value of option {text!r}: {parse_error(e)}") from None
    return key, value


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """Several ``key=value`` options into a dict (later ones win)."""
    return dict(parse_option(t) for t in items or [])
