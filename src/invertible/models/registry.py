"""The name registry of model presets: ``available()``, ``build(name, **options)``.

A preset is a :class:`~invertible.Flow` subclass registered under a name. The
decorator records the options each instance was built with in ``flow.config``,
so ``flow.save`` and :func:`invertible.load` can rebuild it exactly.

Some options act only under other settings (``components`` sizes the mixture of
``base="mog"``; RealNVP's ``levels`` are scales of images). A preset names them in
its ``inert_options(options)``, and :func:`build` refuses such an option set away
from its default where it would do nothing; :func:`rebuild` (a saved model) lets it be. Settings that build
layers which cannot learn (RealNVP's checkerboard couplings of a one-pixel scale) are named by
``unlearnable_options(options)`` and refused by :func:`build` alike, whatever their value.
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import numbers
import types
import typing
from typing import Any, Callable, TypeVar

from ..core import Flow, _check_context_features

__all__ = ["register", "available", "build", "rebuild", "get", "preset_options", "PRESETS"]

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
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            # before the networks are sized by it: context_features=-1 would fail inside torch
            _check_context_features(bound.arguments.get("context_features"))
            init(self, *args, **kwargs)
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


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` has the annotated type: plain types, ``X | None``, ``Literal`` and sequences of them."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):  # plain Python numbers: they are what a saved config holds
        return isinstance(value, int if hint is int else (int, float)) and not isinstance(value, bool)
    if origin in (collections.abc.Sequence, list, tuple):
        item = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(_fits(v, item) for v in value)
    return not isinstance(hint, type) or isinstance(value, hint)


def _plain(value: Any) -> Any:
    """numpy's integers and floats as Python's (a saved config is JSON), in lists and tuples too; the rest as given."""
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):  # bool is Integral too
        return float(value)
    return value


def _describe(hint: Any) -> str:
    """``hint`` in words, for an error message."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (collections.abc.Sequence, list, tuple):
        plural = {int: "integers", float: "numbers", str: "strings"}
        return f"a list of {plural.get(args[0], 'values') if args else 'values'}, e.g. [64, 64]"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "none"}
    return words.get(hint, getattr(hint, "__name__", str(hint)))


def build(name: str, **options: Any) -> Flow:
    """Build a preset by name, e.g. ``build("realnvp", features=2, layers=8)``.

    Each option is checked against the preset's type annotation first, so ``hidden=64``
    or ``batch_norm="yes"`` is a ``ValueError`` that names the option, not a failure deep inside.
    An option given a value other than its default where the other settings make it do nothing
    (``components=5`` with ``base="normal"``) is a ``ValueError`` that says why. numpy's numbers are taken as
    Python's, so the model's config (saved as JSON) holds plain values.
    """
    options = {key: _plain(value) for key, value in options.items()}
    flow = rebuild(name, **options)
    _refuse_inert(name, options)
    return flow


def _refuse_inert(name: str, options: dict[str, Any]) -> None:
    """``ValueError`` for an option of ``options`` away from its default that preset ``name``'s
    ``inert_options`` says has no effect under the settings (given or default) of the others, and for a setting,
    given or default, that its ``unlearnable_options`` says builds layers that cannot learn."""
    defaults = preset_options(name)
    settings = {**defaults, **options}
    unlearnable = getattr(get(name), "unlearnable_options", None)
    for key, why in (unlearnable(settings) if unlearnable else {}).items():
        raise ValueError(f"model option {key}={settings[key]!r} builds layers that cannot learn: {why}")
    inert = getattr(get(name), "inert_options", None)
    if inert is None:
        return
    for key, why in inert(settings).items():
        if key in options and _jsonable(options[key]) != _jsonable(defaults[key]):
            raise ValueError(f"model option {key}={options[key]!r} has no effect: {why}")


def rebuild(name: str, **options: Any) -> Flow:
    """:func:`build` for the options of a saved model (:func:`invertible.load`): the same checks, except that
    options without effect under the others are let be (a model saved before :func:`build` refused them)."""
    cls = get(name)
    try:
        inspect.signature(cls).bind(**options)
    except TypeError as e:
        raise ValueError(f"bad options for model {name!r}: {e}; its options: {', '.join(preset_options(name))}") from None
    hints = typing.get_type_hints(inspect.unwrap(cls.__init__))
    for key, value in options.items():
        if key in hints and not _fits(value, hints[key]):
            raise ValueError(f"model option {key} must be {_describe(hints[key])}, got {value!r}")
    return cls(**options)
