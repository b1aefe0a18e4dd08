"""The name registry of model presets: ``available()``, ``build(name, **options)``.

A preset is a :class:`~invertible.Flow` subclass registered under a name. The
decorator records the options each instance was built with in ``flow.config``,
so ``flow.save`` and :func:`invertible.load` can rebuild it exactly.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, TypeVar

from ..core import Flow

__all__ = ["register", "available", "build", "get", "preset_options", "PRESETS"]

PRESETS: dict[str, type[Flow]] = {}
F = TypeVar("F", bound=type[Flow])


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"preset option of type {type(value).__name__} cannot be saved; use plain numbers, strings and lists")


def register(name: str) -> Callable[[F], F]:
    """Class decorator: register a preset under ``name`` and record its options in ``config``."""

    def decorate(cls: F) -> F:
        if name in PRESETS:
            raise ValueError(f"a preset named {name!r} is already registered")
        init = cls.__init__
        signature = inspect.signature(init)

        @functools.wraps(init)
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            options = {k: v for k, v in bound.arguments.items() if k != "self"}
            extra = options.pop("kwargs", None) or {}
            options.update(extra)
            self.config = {"model": name, "options": _jsonable(options)}

        cls.__init__ = __init__  # type: ignore[method-assign]
        cls.preset_name = name  # type: ignore[attr-defined]
        PRESETS[name] = cls
        return cls

    return decorate


def available() -> list[str]:
    """Names of the registered presets, sorted."""
    return sorted(PRESETS)


def get(name: str) -> type[Flow]:
    """The preset class registered under ``name`` (case-insensitive)."""
    key = name.lower()
    if key not in PRESETS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available())}")
    return PRESETS[key]


def preset_options(name: str) -> dict[str, Any]:
    """The options of preset ``name`` and their defaults (``inspect.Parameter.empty`` where required)."""
    return {k: p.default for k, p in inspect.signature(get(name)).parameters.items()}


def build(name: str, **options: Any) -> Flow:
    """Build a preset by name, e.g. ``build("realnvp", features=2, layers=8)``."""
    cls = get(name)
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as e:
        raise ValueError(f"bad options for model {name!r}: {e}; its options: {', '.join(preset_options(name))}") from None
    return cls(**options)
