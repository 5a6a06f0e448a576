"""The host's key-value store: state that outlives the instance (which the
host may make fresh for every request), shared by every instance of the
plugin.

.. code-block:: python

    from optech_sdk import handler, store

    counters = store.open("counters")

    @handler
    def handle(req):
        seen = counters.increment(f"seen:{req.inputs.require('user')}")
        return {"seen": seen}

A plugin opens only the buckets that `stores` names in its
``[plugins.NAME]`` table of optech.toml; a call on any other raises
`StoreError` (``kind == "access-denied"``). Outside the host (unit tests)
the store is in memory, one for the process, and every bucket opens;
`optech_sdk.testing.store` controls it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ._backend import RawBucket, current
from ._errors import KvError, StoreError

__all__ = ["Bucket", "StoreError", "open"]

T = TypeVar("T")

_U64_MAX = 2**64 - 1
_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1


class Bucket:
    """A bucket of the key-value store: keys (non-empty strings) to values
    (bytes, or text as UTF-8). Get one with `open`. Every call blocks until
    the host answers and may raise `StoreError`."""

    __slots__ = ("name", "_raw")

    def __init__(self, name: str) -> None:
        self.name = name
        """The bucket's name, as ``stores`` in optech.toml names it."""
        self._raw: RawBucket | None = None

    def get(self, key: str) -> str | None:
        """The key's value as text (UTF-8), or ``None`` if it is absent or
        expired."""
        value = self.get_bytes(key)
        if value is None:
            return None
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise ValueError(
                f"the value of key `{key}` in bucket `{self.name}` is not UTF-8 text: "
                "read it with get_bytes"
            ) from None

    def get_bytes(self, key: str) -> bytes | None:
        """The key's value, or ``None`` if it is absent or expired."""
        return self._call(lambda raw: raw.get(key))

    def set(self, key: str, value: str, ttl: int | None = None) -> None:
        """Sets the key to `value` (stored as UTF-8), replacing any value.

        `ttl` (whole seconds, at least 1) makes the key expire: after that it
        reads as absent, as if deleted. Without it the key stays until
        deleted.
        """
        if not isinstance(value, str):
            raise TypeError(f"set takes a str value (set_bytes takes bytes), not {type(value).__name__}")
        self.set_bytes(key, value.encode(), ttl)

    def set_bytes(self, key: str, value: bytes, ttl: int | None = None) -> None:
        """Sets the key to `value`, replacing any value; `ttl` as for `set`."""
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"set_bytes takes bytes, not {type(value).__name__}")
        seconds = _ttl(ttl)
        data = bytes(value)
        self._call(lambda raw: raw.set(key, data, seconds))

    def delete(self, key: str) -> None:
        """Deletes the key; nothing happens if it is absent."""
        self._call(lambda raw: raw.delete(key))

    def exists(self, key: str) -> bool:
        """Whether the key holds a value (one not expired)."""
        return self._call(lambda raw: raw.exists(key))

    def increment(self, key: str, by: int = 1) -> int:
        """Adds `by` (may be negative) to the integer the key holds, in one
        step, and returns the sum. An absent key counts as 0.

        The sum is stored as decimal text, so `get` of a counter returns
        ``"5"``; a key that holds anything else raises `StoreError`, and so
        does a sum past a 64-bit integer. The key keeps its time to live, if
        it has one.
        """
        if not isinstance(by, int) or isinstance(by, bool):
            raise TypeError(f"increment takes an int, not {type(by).__name__}")
        if not _I64_MIN <= by <= _I64_MAX:
            raise ValueError(f"increment takes a 64-bit integer, not {by}")
        return self._call(lambda raw: raw.increment(key, by))

    def keys(self, prefix: str = "") -> list[str]:
        """Every key (not expired) that starts with `prefix`, in byte order."""

        def every_page(raw: RawBucket) -> list[str]:
            keys: list[str] = []
            cursor: str | None = None
            while True:
                page, cursor = raw.list_keys(prefix, cursor)
                keys.extend(page)
                if cursor is None:
                    return keys

        return self._call(every_page)

    def compare_and_swap(self, key: str, expected: str | None, value: str) -> bool:
        """Sets the key to `value` only if it holds `expected` now (``None``:
        only if it is absent), in one step; whether it did.

        ``False`` means another request changed the key first: read it
        again, compute again, retry. The value it sets has no time to live
        (the host's compare-and-swap, ``wasi:keyvalue/atomics``, takes none).
        """
        return self.compare_and_swap_bytes(
            key, None if expected is None else expected.encode(), value.encode()
        )

    def compare_and_swap_bytes(
        self, key: str, expected: bytes | None, value: bytes
    ) -> bool:
        """`compare_and_swap` with bytes."""
        old = None if expected is None else bytes(expected)
        new = bytes(value)
        return self._call(lambda raw: raw.compare_and_swap(key, old, new))

    def _call(self, fn: Callable[[RawBucket], T]) -> T:
        # The bucket opens on its first call, not in `open`: a module's
        # top level runs when the plugin is built, with no host to ask.
        try:
            if self._raw is None:
                self._raw = current().open_bucket(self.name)
            return fn(self._raw)
        except KvError as error:
            raise _store_error(self.name, error) from None

    def __repr__(self) -> str:
        return f"<Bucket {self.name!r}>"


def open(name: str) -> Bucket:  # noqa: A001 (the module's verb, as in `store.open`)
    """The bucket called `name`.

    Nothing is checked yet: the first call on it opens it, so ``open`` may
    run at the top of a module (which runs when the plugin is built); a
    bucket not granted to the plugin raises `StoreError` on that call.
    """
    if not isinstance(name, str) or not name:
        raise TypeError("store.open takes a bucket's name")
    return Bucket(name)


def _ttl(ttl: int | None) -> int | None:
    if ttl is None:
        return None
    if not isinstance(ttl, int) or isinstance(ttl, bool):
        raise TypeError(f"ttl is a whole number of seconds, not {type(ttl).__name__}")
    if not 1 <= ttl <= _U64_MAX:
        raise ValueError(f"ttl is a whole number of seconds, at least 1, not {ttl}")
    return ttl


def _store_error(bucket: str, error: KvError) -> StoreError:
    if error.kind == "access-denied":
        message = (
            f"bucket `{bucket}` is not granted to this plugin: add it to `stores` "
            "in its [plugins.NAME] table of optech.toml"
        )
    elif error.kind == "no-such-store":
        message = f"there is no bucket `{bucket}` in the host's store"
    else:
        message = error.text
    return StoreError(message, kind=error.kind, bucket=bucket)
