"""Where a handler's config reads, log lines, outbound requests and store
calls go: to the host inside a component, to a test's values under
`optech_sdk.testing.call`, and otherwise to Python's `logging` with no config
and no network, and to a key-value store in memory."""

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


class RawBucket(Protocol):
    """An open bucket in the contract's terms (bytes, pages): the host's
    `wasi:keyvalue` imports inside a component, a dict in memory outside.
    Every method may raise `KvError`."""

    def get(self, key: str) -> bytes | None: ...

    def set(self, key: str, value: bytes, ttl: int | None) -> None:
        """`ttl`: seconds, at least 1 (`keyvalue-extras.set-with-ttl`)."""

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def increment(self, key: str, delta: int) -> int: ...

    def list_keys(self, prefix: str, cursor: str | None) -> tuple[list[str], str | None]:
        """One page of keys starting with `prefix`, in byte order, and the
        cursor of the next page (`None` on the last)."""

    def compare_and_swap(self, key: str, expected: bytes | None, value: bytes) -> bool:
        """Sets `value` if the key holds `expected` (`None`: absent), in one
        step; whether it did. The value set has no time to live."""


class Backend(Protocol):
    def config(self, name: str) -> str | None: ...

    def log(self, level: Level, message: str) -> None: ...

    def send(self, request: Request) -> Response: ...

    def open_bucket(self, name: str) -> RawBucket:
        """Opens a bucket of the key-value store; may raise `KvError`."""


class Local:
    """Plain CPython: no config, `logging` for the log, no network, the
    key-value store in memory."""

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

    def open_bucket(self, name: str) -> RawBucket:
        from ._memory import open_bucket

        return open_bucket(name)


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
