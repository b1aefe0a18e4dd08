"""``python -m invertible`` (and ``torchrun -m invertible``): the command line."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
