"""Lines in the host's log, tagged with the plugin and the request.

Inside the host, each call is one line at its level (the host's own log
filter decides what is kept). Outside it, in a handler's unit tests, lines go
to Python's `logging` as the logger ``optech_sdk.plugin``, where pytest's
``caplog`` sees them. `print` works too: the host logs a plugin's stdout and
stderr line by line, at info.
"""

from __future__ import annotations

from ._backend import Level, current

__all__ = ["trace", "debug", "info", "warn", "error"]


def trace(message: str) -> None:
    """A line at trace level: the finest detail."""
    current().log(Level.TRACE, str(message))


def debug(message: str) -> None:
    """A line at debug level."""
    current().log(Level.DEBUG, str(message))


def info(message: str) -> None:
    """A line at info level."""
    current().log(Level.INFO, str(message))


def warn(message: str) -> None:
    """A line at warn level."""
    current().log(Level.WARN, str(message))


def error(message: str) -> None:
    """A line at error level."""
    current().log(Level.ERROR, str(message))
