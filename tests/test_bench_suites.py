"""Every benchmark suite listed by ``python -m bench`` imports and answers ``--help``."""

import importlib

import pytest

from bench.__main__ import main, suites


@pytest.mark.parametrize("name", suites())
def test_suite_imports(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert callable(module.main)


def test_unknown_suite_is_an_error(capsys) -> None:
    assert main(["no-such-suite"]) == 2
    assert "unknown suite" in capsys.readouterr().err
