"""The ``invertible`` command: ``train``, ``sample``, ``eval``, ``models``, ``datasets``, ...

Each subcommand lives in its own module of :mod:`invertible.commands` and
exposes ``register(subparsers)``; this module finds them with ``pkgutil``, so a
new command is a new module. Bad input (unknown names, bad settings, unreadable
files) ends with one line ``error: ...`` on stderr and exit status 2; a warning is
one line ``warning: ...`` (``--traceback`` keeps Python's form of both).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import warnings
from typing import NoReturn, Sequence

from . import __version__, commands
from .commands._common import Terminated
from .train import TrainingError, TrainingInterrupted

__all__ = ["main", "build_parser"]

#: Errors that mean bad input or a failed run, reported as one line rather than a traceback
#: (``OSError``: a path that cannot be read or written — missing, not a directory, no permission, disk full).
USER_ERRORS = (ValueError, TypeError, OSError, TrainingError)


def _line(text: str, stream=None) -> None:
    """``text`` and its newline in one write (``print`` makes two: the processes of a distributed run, sharing
    standard error, interleaved their lines between them)."""
    stream = sys.stderr if stream is None else stream
    stream.write(text + "\n")
    stream.flush()


def _message(error: Exception) -> str:
    """The one-line text of a user error; a directory that cannot be made because a file holds its name says so."""
    if isinstance(error, FileExistsError) and error.filename:
        return f"cannot make the directory {error.filename}: a file of that name exists"
    return str(error)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file=None, line=None) -> None:
    """A warning as one line ``warning: MESSAGE`` on stderr: the source line that issued it, inside this package
    or torch, means nothing to the user of a command."""
    _line(f"warning: {message}", sys.stderr if file is None else file)


class _Parser(argparse.ArgumentParser):
    """Reports a usage error as one line ``error: ...`` (exit status 2) instead of the usage text."""

    def error(self, message: str) -> NoReturn:
        _line(f"error: {message} (see `{self.prog} --help`)")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="invertible", description="Normalizing flows: train, sample, evaluate; list models and datasets."
    )
    parser.add_argument("--version", action="version", version=f"invertible {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of an error")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{commands.__name__}.{info.name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input or failed run, 130 interrupted,
    141 when the reader of standard output went away, as ``head`` does: the status of a process ended by SIGPIPE;
    ``train`` stopped by SIGTERM or SIGINT after checkpointing its step: 143 or 130, as a process ended by it;
    ``fit-density`` and ``vae`` stopped by SIGTERM, after removing what they wrote: 143)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command"):
        parser.print_help(sys.stderr)
        return 2
    with warnings.catch_warnings():
        if not args.traceback:
            warnings.showwarning = _show_warning
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """The command of ``args``, its errors as exit statuses (see :func:`main`)."""
    try:
        return int(args.command(args) or 0)
    except BrokenPipeError:
        # nothing more can reach the reader; stdout goes to /dev/null so the flush at exit does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except USER_ERRORS as e:
        if args.traceback:
            raise
        _line(f"error: {_message(e)}")
        return 2
    except (TrainingInterrupted, Terminated) as e:  # `train`'s checkpointed stop, or SIGTERM in fit-density or vae
        _line(str(e))
        return e.exit_status
    except KeyboardInterrupt as e:
        # a command that checkpoints (train) says whether there is a checkpoint to resume from
        hint = str(e) or ("continue the run with --resume" if hasattr(args, "resume") else "")
        _line(f"interrupted; {hint}" if hint else "interrupted")
        return 130
