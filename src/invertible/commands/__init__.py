"""Subcommands of the ``invertible`` command, one module each.

A module ``commands/<name>.py`` exposes ``register(subparsers)``, which adds its
parser and sets ``command``: ``parser.set_defaults(command=fn)`` with
``fn(args) -> int`` (the exit status). :mod:`invertible.cli` imports every
module here whose name does not start with ``_``. Raise ``ValueError`` (or
``TypeError``, ``OSError`` such as ``FileNotFoundError``, or
:class:`~invertible.train.TrainingError`) for bad input or a failed run: the
command line prints it as one line ``error: ...`` and exits with status 2.
"""
