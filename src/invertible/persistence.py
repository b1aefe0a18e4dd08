"""Saving and loading flows: a directory with ``model.json`` (preset and options) and ``model.safetensors``.

Both files are written to a temporary name, flushed to the disk and renamed into place, so an
interrupted save (a killed process, or a crash of the machine) never leaves a file that looks
valid but is not. ``model.json`` records the SHA-256 of the weights it goes with, so a save over an
older model interrupted between the two renames (new weights beside the old config) is refused on
loading instead of read as a model it is not.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .core import Flow

__all__ = ["save_flow", "load", "atomic_write", "naming_path", "check_format", "file_sha256", "MODEL_JSON", "MODEL_WEIGHTS"]

MODEL_JSON = "model.json"
MODEL_WEIGHTS = "model.safetensors"
#: 2: the MAF/IAF layer computes ``z = x exp(beta) + m`` (format 1: ``z = (x - mu) exp(-alpha)``).
FORMAT_VERSION = 2
#: Presets whose saved weights mean something else under format 1.
_CHANGED_IN_2 = ("maf", "iaf", "made")
_UMASK = os.umask(0)
os.umask(_UMASK)


def _fsync(path: str | os.PathLike) -> None:
    """Flush the file ``path`` from the OS cache to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str | os.PathLike) -> None:
    """Flush the entries of the directory ``path`` (a rename in it), where the platform and file system can."""
    try:
        _fsync(path)
    except OSError:  # Windows opens no directory; some network file systems refuse to flush one
        pass


def naming_path(error: OSError, path: str | os.PathLike) -> OSError:
    """``error`` of writing ``path`` as an ``OSError`` that names it (a full disk's ``[Errno 28]`` names no file)."""
    if error.errno is None:
        return OSError(f"cannot write {path}: {error}")
    return OSError(error.errno, f"cannot write {path}: {error.strerror}")


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it onto ``path``.

    The data reach the disk before the rename and the rename before returning (``fsync`` of the file, then of
    its directory): otherwise a crash of the machine may keep the rename but not the data, a file of the right
    name that is empty or truncated, in place of the previous complete one.
    """
    path = Path(path)
    if path.is_dir():  # else the rename fails naming the temporary file, after all the writing
        raise IsADirectoryError(f"cannot write {path}: it is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        try:
            write(tmp)
        except SafetensorError as e:  # safetensors reports a full disk as its own error, which is no OSError
            raise OSError(f"cannot write {path}: {e}") from None
        except OSError as e:
            raise e if e.filename is not None else naming_path(e, path) from None
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of the bytes of the file ``path``, in hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _finite_or_null(obj: Any) -> Any:
    """``obj`` with every non-finite float (in dicts, lists and tuples) replaced by ``None``."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v) for v in obj]
    return obj


def report_json(obj: Any, indent: int | None = None) -> str:
    """``obj`` as strict JSON for people and other programs (a printed result line, ``summary.json``): a non-finite
    figure, such as the infinite NLL of a row of zero density, is ``null``; Python's own ``Infinity`` and ``NaN``
    are not JSON, and ``jq`` or a browser refuse them."""
    return json.dumps(_finite_or_null(obj), allow_nan=False, indent=indent)


def write_json(path: str | os.PathLike, obj: Any, report: bool = False) -> None:
    """Atomically write ``obj`` as indented JSON; with ``report``, strict JSON (:func:`report_json`). Records
    only this library reads back (checkpoints) keep ``Infinity`` (a best validation NLL before any validation)."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(report_json(obj, indent=2) if report else json.dumps(obj, indent=2))
            f.write("\n")

    atomic_write(path, write)


def state_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A ``state_dict`` made safe for safetensors: contiguous CPU copies, shared storage split."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def save_flow(flow: Flow, path: str | os.PathLike) -> None:
    """Write ``flow`` (config and weights) into the directory ``path``."""
    if flow.config is None:
        raise ValueError(
            "this flow has no preset config, so it cannot be rebuilt from a file; build it with "
            "invertible.models.build(...) or a preset class, or save its state_dict yourself"
        )
    path = Path(path)
    if path.exists() and not path.is_dir():  # else mkdir's "File exists", which reads as a refusal to overwrite
        raise NotADirectoryError(
            f"cannot save a model to {path}: it is a file; a model is saved as a directory "
            f"({MODEL_JSON} and {MODEL_WEIGHTS}), so give a directory path"
        )
    path.mkdir(parents=True, exist_ok=True)
    tensors = state_tensors(flow)
    atomic_write(path / MODEL_WEIGHTS, lambda tmp: save_file(tensors, tmp))
    digest = file_sha256(path / MODEL_WEIGHTS)
    write_json(path / MODEL_JSON, {"format": FORMAT_VERSION, **flow.config, "weights_sha256": digest})


def read_json(path: Path, what: str) -> dict[str, Any]:
    """Read a JSON object, with a clear error for a missing or corrupt file."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"corrupt {what} {path}: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"corrupt {what} {path}: expected a JSON object")
    return obj


def read_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    """Read a safetensors file, with a clear error for a missing or corrupt file."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"corrupt {what} {path}: {e}") from None


def check_format(version: Any, model: Any, where: Path) -> None:
    """Refuse a file written in a newer format, or a format-1 MAF/IAF/MADE whose weights now mean another map."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:  # JSON true is not a format
        raise ValueError(f"corrupt {where}: bad format {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{where} was written in format {version}; this version of invertible reads up to {FORMAT_VERSION}")
    if version == 1 and model in _CHANGED_IN_2:
        raise ValueError(
            f"{where} holds a {model!r} model saved in format 1, when its affine layers computed "
            "z = (x - mu) exp(-alpha); they now compute z = x exp(beta) + m, so these weights would give "
            "another density: retrain the model"
        )


def _misfit(expected: dict[str, torch.Tensor], saved: dict[str, torch.Tensor], shown: int = 3) -> str:
    """How the ``saved`` tensors differ from the ``expected`` state of the model, in one line (the first ``shown``
    names of each kind: a model's weights file holds hundreds), or ``""`` when they have its names and shapes."""
    def names(keys: list[str]) -> str:
        more = f", ... ({len(keys) - shown} more)" if len(keys) > shown else ""
        return ", ".join(keys[:shown]) + more

    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    reshaped = [f"{k} (saved {tuple(saved[k].shape)}, model {tuple(v.shape)})" for k, v in expected.items()
                if k in saved and saved[k].shape != v.shape]
    parts = [f"{len(missing)} tensor(s) missing ({names(missing)})" if missing else "",
             f"{len(unexpected)} unexpected ({names(unexpected)})" if unexpected else "",
             f"{len(reshaped)} of another shape ({names(reshaped)})" if reshaped else ""]
    return "; ".join(p for p in parts if p)


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Flow:
    """Load a flow saved by :meth:`Flow.save` or written by ``invertible train`` (a run directory; the
    path of its ``model.json`` or ``model.safetensors`` names it too).

    The flow comes back in the floating dtype its weights were saved in (a
    ``flow.double()`` saved is a float64 flow loaded), and in evaluation mode: batch-norm layers use their
    running statistics and a MADE pool scores with its ensemble. Call ``flow.train()`` to go on training it.
    """
    from .models import rebuild

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no saved model or run directory at {path}")
    if path.is_file():
        if path.name not in (MODEL_JSON, MODEL_WEIGHTS):
            raise ValueError(
                f"{path} is a file; invertible.load reads the directory that flow.save or invertible train wrote "
                f"({MODEL_JSON} and {MODEL_WEIGHTS}); a state_dict saved with torch.save loads into the flow "
                "rebuilt as it was: flow.load_state_dict(torch.load(path))"
            )
        path = path.parent
    config = read_json(path / MODEL_JSON, "model config")
    if not isinstance(config.get("model"), str) or not isinstance(config.get("options"), dict):
        raise ValueError(f"corrupt model config {path / MODEL_JSON}: needs 'model' (a preset's name) and 'options'")
    check_format(config.get("format", 1), config["model"], path / MODEL_JSON)
    flow = rebuild(config["model"], **config["options"])
    tensors = read_tensors(path / MODEL_WEIGHTS, "model weights")
    dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        flow = flow.to(dtypes.pop())
    misfit = f"weights in {path / MODEL_WEIGHTS} do not fit model {config['model']!r}"
    reason = _misfit(flow.state_dict(), tensors)
    if reason:
        raise ValueError(f"{misfit}: {reason}")
    try:
        flow.load_state_dict(tensors, strict=True)
    except (RuntimeError, ValueError) as e:  # ValueError: a layer's own check of what it loaded
        raise ValueError(f"{misfit}: {' '.join(str(e).split())}") from None
    digest = config.get("weights_sha256")  # absent in files saved before it was recorded
    if digest is not None and file_sha256(path / MODEL_WEIGHTS) != digest:
        raise ValueError(
            f"{path / MODEL_WEIGHTS} is not the weights {path / MODEL_JSON} was saved with (a save over an "
            "older model was interrupted between its two files): save the model again"
        )
    return flow.to(map_location).eval()
