"""Helpers shared by the subcommands: run directories, ``key=value`` option flags, descriptions of presets and datasets."""

from __future__ import annotations

import argparse
import contextlib
import inspect
import re
import shutil
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Iterator, Sequence

import numpy as np
import yaml

from ..core import Flow
from ..data import DataBundle
from ..data.images import relabel_classes
from ..persistence import MODEL_JSON, atomic_write, read_json
from ..seeding import check_seed
from ..train.build import load_bundle, reopened_data, restore_preprocess
from ..train.config import TrainConfig, parse_error

__all__ = ["Terminated", "seed_argument", "existing_run", "output_dir", "results_kept_on_success", "run_config",
           "run_summary", "run_classes", "run_data", "run_bundle", "label_index", "named_classes", "add_option_flags",
           "check_array_path", "check_not_an_input", "save_array", "describe", "plain_text", "default_text"]


def seed_argument(text: str) -> int:
    """The value of a ``--seed`` flag: an integer in ``[0, 2**64 - 1]`` (:func:`~invertible.seeding.check_seed`), so
    that ``--seed -1``, which torch takes modulo ``2**64`` (seed ``2**64 - 1``'s numbers), is refused in every
    command as ``train`` refuses it."""
    try:
        return check_seed(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**64 - 1], got {text!r}") from None


def check_latent_space(model: Any, run: str | Path) -> None:
    """``ValueError`` unless ``model``, loaded from ``run``, is a flow: encode, decode and interpolate need its
    latent space, which a model of discrete data (a Bernoulli MADE) does not have."""
    if not isinstance(model, Flow):
        raise ValueError(f"{run} holds a {type(model).__name__}, a model of discrete data with no latent space")


def existing_run(path: str) -> Path:
    """``path`` as a run (or saved model) directory, or ``FileNotFoundError`` saying what is missing."""
    run = Path(path)
    if not run.exists():
        raise FileNotFoundError(f"run directory {run} does not exist")
    if not run.is_dir():
        raise NotADirectoryError(f"{run} is not a run directory")
    if not (run / MODEL_JSON).is_file():
        inner = run / "model"
        if (inner / MODEL_JSON).is_file():  # fit-density runs keep their flow in a subdirectory (model/)
            raise FileNotFoundError(f"{run} holds its model in {inner}: pass that directory")
        raise FileNotFoundError(f"{run} holds no trained model ({MODEL_JSON} missing): the run did not finish")
    return run


def output_dir(path: str, results: Sequence[str] = ()) -> Path:
    """``path`` as a new or existing output directory that holds none of ``results`` (:func:`results_kept_on_success`
    creates it).

    ``results`` names the files and directories the command writes there; an existing
    one means an earlier run's results, which are kept: ``FileExistsError`` names them.
    A file at ``path`` is a ``NotADirectoryError``.
    """
    if not str(path).strip():  # Path("") is the current directory
        raise ValueError(f"--out must be a directory path, got {path!r}")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a directory")
    taken = [name for name in results if (out / name).exists()]
    if taken:
        raise FileExistsError(
            f"--out {out} already holds results ({', '.join(taken)}); choose another --out or remove it"
        )
    return out


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived while a command wrote results that it removes on failure; the CLI exits 143 with its text."""

    exit_status = 128 + signal.SIGTERM


@contextlib.contextmanager
def _sigterm_raises(out: Path) -> Iterator[None]:
    """While the block runs in the main thread, SIGTERM raises :class:`Terminated` (once: a further SIGTERM is
    ignored until the block is left, so the clean-up after the first one completes). A handler that is not the
    default one (set by the program that calls the command) is left in place."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def terminated(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated(f"stopped by SIGTERM; what it had written to {out} was removed")

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def results_kept_on_success(out: Path, results: Sequence[str]) -> Iterator[None]:
    """Remove the ``results`` under ``out`` when the block fails (an error, a divergence, Ctrl-C, SIGTERM).

    For an ``out`` that :func:`output_dir` found holding none of them: whatever of them is there on failure
    (a partial ``metrics.jsonl``, the weights of a run whose evaluation failed) was written by this run,
    so the directory goes back to how it was and the same command, with a lower learning rate say,
    can be run into it again. SIGTERM (``kill``, a scheduler) raises :class:`Terminated` in the block
    (see :func:`_sigterm_raises`), so it is a failure like Ctrl-C rather than the end of the process.
    ``out`` is created with its parents here, and those it created are removed on failure when left empty.
    """
    created = [d for d in (out, *out.parents) if not d.exists()]  # deepest first
    out.mkdir(parents=True, exist_ok=True)
    try:
        with _sigterm_raises(out):
            yield
    except BaseException:
        for name in results:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists() or path.is_symlink():
                path.unlink(missing_ok=True)
        for d in created:
            try:
                d.rmdir()
            except OSError:  # not empty: something else was written there
                break
        raise


def run_config(run: Path) -> dict[str, Any]:
    """The resolved training settings of a run (``config.yaml``), or ``{}`` for a bare saved model;
    ``ValueError`` naming the file when it is no mapping of valid settings (a file cut off after a key reads
    as that key set to ``null``)."""
    path = run / "config.yaml"
    if not path.is_file():
        return {}
    try:
        values = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"corrupt run config {path}: {parse_error(e)}") from None
    if not isinstance(values, dict):
        raise ValueError(f"corrupt run config {path}: expected a mapping")
    corrupt = f"corrupt run config {path}"
    try:
        TrainConfig.from_dict(values, source=corrupt)  # an unknown key's message starts with ``corrupt``
    except ValueError as e:
        raise ValueError(str(e) if str(e).startswith(corrupt) else f"{corrupt}: {e}") from None
    return values


def run_summary(run: Path) -> dict[str, Any]:
    """The results of a run (``summary.json``), or ``{}`` for a bare saved model."""
    path = run / "summary.json"
    return read_json(path, "run summary") if path.is_file() else {}


def run_classes(run: Path) -> list[str] | None:
    """The class names, in label order, of a class-conditional run's one-hot contexts (its summary's
    ``class_names``), or ``None`` for a run that records none (unconditional, a bare saved model, or written
    before runs recorded them); ``ValueError`` for a corrupt record."""
    names = run_summary(run).get("class_names")
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise ValueError(f"corrupt run summary {run / 'summary.json'}: class_names must be a list of distinct names")
    return names


def run_data(run: Path, config: dict[str, Any], gone: str | None = None) -> str | None:
    """Where the dataset of ``run`` (its ``config``'s ``data``, ``None`` when it names none) is read again: the
    absolute path its summary records (``data_path``, beside the same ``data``) while that exists, so that a file
    the training was given by a relative path is found from any working directory; ``data`` as given otherwise
    (:func:`~invertible.train.build.reopened_data`): a run that records no path, a config edited to name another.
    With ``gone`` (the data are to be read), a file that is gone is a ``ValueError`` that says so, with it."""
    data = config.get("data")
    if data is None:
        return None
    summary = run_summary(run)
    return reopened_data(data, summary.get("data_path") if summary.get("data") == data else None, gone)


def run_bundle(run: Path, why: str) -> DataBundle:
    """The run's own dataset, loaded with its seed and data options, its class contexts indexed by the run's
    class names (:func:`run_classes`) and with the run's preprocessing
    (:func:`~invertible.train.build.restore_preprocess`); ``ValueError`` when no ``config.yaml`` names it,
    ``why`` saying what needs the data."""
    config = run_config(run)
    if "data" not in config:
        raise ValueError(f"{why}, but {run} has no config.yaml naming its dataset (a run of `invertible train`)")
    bundle = load_bundle(run_data(run, config, "put it back there"), config.get("seed", 0),
                         config.get("data_options") or {})
    return restore_preprocess(relabel_classes(bundle, run_classes(run)), run, as_trained=True)


def label_index(label: str, names: list[str] | None, classes: int) -> int:
    """The label index of ``--label``: the position of a class name among the run's ``names``, else an
    integer in ``0..classes - 1``; ``ValueError`` naming the classes otherwise."""
    if names is not None and label in names:
        return names.index(label)
    try:
        index = int(label)
    except ValueError:
        index = -1
    if not 0 <= index < classes:
        raise ValueError(f"--label {label} is not a class of this flow: its labels are 0..{classes - 1}{named_classes(names)}")
    return index


def named_classes(names: list[str] | None) -> str:
    """`` or the class names a, b, c`` for a run that records class names other than its label indices, else ``""``."""
    if names is None or names == [str(i) for i in range(len(names))]:
        return ""
    return f" or the class names {', '.join(names)}"


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """``--model-option key=value`` and ``--data-option key=value`` (repeatable; values read as YAML)."""
    parser.add_argument("-m", "--model-option", action="append", metavar="KEY=VALUE", dest="model_option",
                        help="model option, e.g. -m layers=8 -m hidden=[128,128] (repeatable)")
    parser.add_argument("-d", "--data-option", action="append", metavar="KEY=VALUE", dest="data_option",
                        help="dataset option, e.g. -d n_train=50000 (repeatable)")


def check_array_path(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a file :func:`save_array` writes (``.npy`` or ``.csv``), or ``ValueError`` naming ``flag``."""
    path = Path(path)
    if path.suffix.lower() not in (".npy", ".csv"):
        raise ValueError(f"{flag} must end in .npy or .csv, got {path.name!r}")
    return path


def check_not_an_input(out: str | Path, inputs: dict[str, str | None]) -> None:
    """``ValueError`` when ``out`` is the same file as one of ``inputs`` (what it is, as "the --latents file" ->
    its path, or ``None``): writing it would replace what the command read (the run's own data, say) with its output."""
    for what, path in inputs.items():
        if path is not None and Path(out).exists() and Path(path).exists() and Path(out).samefile(path):
            raise ValueError(f"--out {out} is {what}, which this command reads: writing there would overwrite it; "
                             "choose another --out")


def save_array(path: str | Path, array: np.ndarray, flag: str = "--out") -> None:
    """Write ``array`` atomically as ``.npy`` (binary) or ``.csv`` (text), by the suffix of ``path``
    (:func:`check_array_path`; ``flag`` names the option that gave it)."""
    path = check_array_path(path, flag)
    if path.suffix.lower() == ".npy":
        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.save(f, array)
    else:
        def write(tmp: str) -> None:
            np.savetxt(tmp, array.reshape(len(array), -1), delimiter=",")
    atomic_write(path, write)


def default_text(default: Any) -> str:
    """An option's default as shown by ``invertible models NAME`` / ``datasets NAME``: its repr, or ``required``."""
    return "required" if default is inspect.Parameter.empty else repr(default)


def plain_text(doc: str) -> str:
    """A docstring as terminal text: no ``quotes``, Sphinx roles such as :class:`~x.Y` as their names."""
    return re.sub(r":\w+:`~?([^`]+)`", r"\1", doc.replace("``", ""))


def describe(doc: str | None, name: str, flag: str, options: dict[str, str]) -> None:
    """Print a docstring as plain text (:func:`plain_text`), then the options."""
    print(plain_text(inspect.cleandoc(doc or name)))
    print(f"\noptions ({flag} key=value):")
    for key, shown in options.items():
        print(f"  {key:20s} {shown}")
