"""Where a handler's config reads, log lines and outbound requests go: to the
host inside a component, to a test's values under `optech_sdk.testing.call`,
and otherwise to Python's `logging` with no config and no network."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .http import Request, Response


class Level(IntEnum):
    """A log line's level, in the order of the contract's `level` enum."""

    TRACE = 0
    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4


# Python's `logging` has no TRACE: one step below DEBUG.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")
_LOGGING_LEVELS = {
    Level.TRACE: TRACE,
    Level.DEBUG: logging.DEBUG,
    Level.INFO: logging.INFO,
    Level.WARN: logging.WARNING,
    Level.ERROR: logging.ERROR,
}

logger = logging.getLogger("optech_sdk.plugin")
"""Outside the host, a handler's `log` lines go here (pytest's caplog sees them)."""


class Backend(Protocol):
    def config(self, name: str) -> str | None: ...

    def log(self, level: Level, message: str) -> None: ...

    def send(self, request: Request) -> Response: ...


class Local:
    """Plain CPython: no config, `logging` for the log, no network."""

    def config(self, name: str) -> str | None:
        return None

    def log(self, level: Level, message: str) -> None:
        logger.log(_LOGGING_LEVELS[level], message)

    def send(self, request: Request) -> Response:
        from .http import Error

        raise Error(
            "outbound HTTP runs only inside the optech host; in a unit test, "
            "give optech_sdk.testing.call an `http` function that answers it"
        )


_default: Backend = Local()
_override: ContextVar[Backend | None] = ContextVar("optech_sdk_backend", default=None)


def current() -> Backend:
    override = _override.get()
    return _default if override is None else override


def install_host() -> None:
    """Inside a component (componentize-py's CPython reports `wasi`), talk to
    the host. Called once, when the package is imported, so the bindings are
    imported at build time and in the snapshot, not on a request."""
    global _default
    if sys.platform == "wasi":
        from ._component import Host

        _default = Host()
