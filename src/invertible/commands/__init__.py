"""Subcommands of the ``invertible`` command, one module each with ``register(subparsers)``."""
