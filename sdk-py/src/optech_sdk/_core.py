"""What happens around a handler call, the same inside the host and in tests:
the request is built, the handler runs, its result becomes the answer's data,
and its exception becomes one of the two errors of the contract."""

from __future__ import annotations

import inspect
import json
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ._errors import InvalidInput
from ._request import Request

Data = Mapping[str, Any]
"""What a handler returns: the answer's `data`, names to values."""

Fields = list[tuple[str, str]]
"""The contract's flat list of (name, value) strings."""

H = TypeVar("H", bound=Callable[[Request], Data])

_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode

# The handler of this program; inside a component there is exactly one.
_handler: Callable[[Request], Data] | None = None


def handler(func: H) -> H:
    """Marks `func` as the plugin's handler and returns it unchanged.

    ``func`` takes a `Request` and returns a dict: the answer's `data`. A
    `str` value is sent as it is, any other value as its JSON text (``True``
    is ``"true"``, ``12`` is ``"12"``, a list or a dict its compact JSON).
    Raising `InvalidInput` answers 400 invalid_input; any other exception
    answers 500 plugin_error with its message.
    """
    global _handler
    if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
        raise TypeError(
            f"@handler takes a plain function; {func.__qualname__} is async "
            "(outbound http in this SDK blocks, so a handler needs no await)"
        )
    if not callable(func):
        raise TypeError(f"@handler takes a function, not {type(func).__name__}")
    if sys.platform == "wasi":
        if _handler is not None and _handler is not func:
            raise RuntimeError(
                f"a plugin has one @handler: {func.__qualname__} comes after "
                f"{_handler.__qualname__}"
            )
        from ._component import WitWorld

        # componentize-py instantiates `WitWorld` from the app module; the
        # handler's own module is that module when it is `app.py`.
        module = sys.modules.get(func.__module__)
        if module is not None:
            module.WitWorld = WitWorld  # type: ignore[attr-defined]
    _handler = func
    return func


def registered() -> Callable[[Request], Data]:
    """The handler `@handler` marked; an error naming the fix when none was."""
    if _handler is None:
        raise RuntimeError("no handler: decorate the plugin's function with @optech_sdk.handler")
    return _handler


def to_fields(data: object) -> Fields:
    """The handler's result as the contract's (name, value) strings."""
    if not isinstance(data, Mapping):
        raise TypeError(
            f"a handler returns a dict of the answer's data, not {type(data).__name__}"
        )
    fields: Fields = []
    for name, value in data.items():
        if not isinstance(name, str):
            raise TypeError(f"data names are strings, not {type(name).__name__} ({name!r})")
        if isinstance(value, str):
            fields.append((name, value))
            continue
        try:
            fields.append((name, _dumps(value)))
        except (TypeError, ValueError) as error:
            raise TypeError(f"data `{name}` cannot be written as JSON: {error}") from None
    return fields


def failure_message(error: BaseException, plain: tuple[type[BaseException], ...]) -> str:
    """The message of the 500 plugin_error answer to `error`.

    An exception of one of the `plain` types (raised on purpose to say the
    handler failed) is its message alone; any other kind (a KeyError, a
    TypeError: more likely a bug) is prefixed with its type, as Python
    prints it.
    """
    text = str(error)
    if type(error) in (Exception, RuntimeError) or isinstance(error, plain):
        return text or type(error).__name__
    name = type(error).__name__
    return f"{name}: {text}" if text else name


def format_traceback(error: BaseException) -> str:
    """The traceback Python would print for `error`, as one text."""
    return "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip()


__all__ = ["Data", "Fields", "InvalidInput", "handler", "registered", "to_fields"]
