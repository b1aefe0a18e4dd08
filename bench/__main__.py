"""``python -m bench SUITE [options]``: run the benchmark module ``bench/SUITE.py`` (its ``main(argv)``).

``python -m bench`` alone lists the suites.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

HERE = Path(__file__).parent


def suites() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if not m.name.startswith("_") and m.name != "common")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print("usage: python -m bench SUITE [options]\nsuites: " + ", ".join(suites()))
        return 0 if argv else 2
    name = argv[0].replace("-", "_")
    if name not in suites():
        print(f"unknown suite {argv[0]!r}; suites: {', '.join(suites())}", file=sys.stderr)
        return 2
    return importlib.import_module(f"bench.{name}").main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
