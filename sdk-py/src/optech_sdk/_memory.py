"""The key-value store outside the host, for a handler's unit tests: buckets
in memory, one store for the process (as the host's outlives an instance),
with the host's semantics: values are bytes, a time to live makes a key read
as absent once it passes, `increment` keeps the sum as decimal text, keys
list in byte order a page at a time, and the host's default key and value
size limits hold. `optech_sdk.testing.store` controls it."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from ._errors import KvError

PAGE = 1000
"""Keys per page of `list-keys-with-prefix`, as the host pages them."""

# The host's default `[store]` limits (max_key_size, max_value_size).
_MAX_KEY_BYTES = 1024
_MAX_VALUE_BYTES = 1024 * 1024
_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
# What Rust's `i64::from_str` takes: the host parses a counter with it.
_INTEGER = re.compile(r"[+-]?[0-9]+")


@dataclass
class _Stored:
    value: bytes
    expires: float | None = None
    """When it expires, in the store's clock (seconds); never if None."""


class _State:
    def __init__(self) -> None:
        self.buckets: dict[str, dict[str, _Stored]] = {}
        self.granted: frozenset[str] | None = None
        """The buckets that open; every bucket when None."""
        self.failure: str | None = None
        """Every call fails with this message when set: a store that is down."""
        self.offset = 0.0
        """How far `advance` moved the clock ahead of `time.time()`."""

    def now(self) -> float:
        return time.time() + self.offset


_state = _State()


def grant(names: frozenset[str]) -> None:
    _state.granted = names


def fail(message: str | None) -> None:
    _state.failure = message


def advance(seconds: float) -> None:
    _state.offset += seconds


def reset() -> None:
    global _state
    _state = _State()


def open_bucket(name: str) -> MemoryBucket:
    return MemoryBucket(name)


class MemoryBucket:
    """One bucket of the store in memory."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _check(self, key: str | None = None) -> None:
        # Grants may change between tests: every call checks, as the host's
        # open does.
        if _state.failure is not None:
            raise KvError("other", _state.failure)
        if _state.granted is not None and self._name not in _state.granted:
            raise KvError("access-denied")
        if key is not None:
            size = len(key.encode())
            if size == 0:
                raise KvError("other", "a key must not be empty")
            if size > _MAX_KEY_BYTES:
                raise KvError(
                    "other",
                    f"a key of {size} bytes is over the limit of {_MAX_KEY_BYTES} (store.max_key_size)",
                )

    def _entries(self) -> dict[str, _Stored]:
        return _state.buckets.setdefault(self._name, {})

    def _live(self, key: str) -> _Stored | None:
        entries = _state.buckets.get(self._name, {})
        stored = entries.get(key)
        if stored is not None and stored.expires is not None and stored.expires <= _state.now():
            del entries[key]
            return None
        return stored

    def _put(self, key: str, value: bytes, expires: float | None) -> None:
        if len(value) > _MAX_VALUE_BYTES:
            raise KvError(
                "other",
                f"a value of {len(value)} bytes is over the limit of {_MAX_VALUE_BYTES} "
                "(store.max_value_size)",
            )
        self._entries()[key] = _Stored(bytes(value), expires)

    def get(self, key: str) -> bytes | None:
        self._check(key)
        stored = self._live(key)
        return None if stored is None else stored.value

    def set(self, key: str, value: bytes, ttl: int | None) -> None:
        self._check(key)
        if ttl is not None and ttl < 1:
            raise KvError("other", "a time to live must be at least 1 second")
        self._put(key, value, None if ttl is None else _state.now() + ttl)

    def delete(self, key: str) -> None:
        self._check(key)
        _state.buckets.get(self._name, {}).pop(key, None)

    def exists(self, key: str) -> bool:
        self._check(key)
        return self._live(key) is not None

    def increment(self, key: str, delta: int) -> int:
        self._check(key)
        live = self._live(key)
        current = 0
        if live is not None:
            text = live.value.decode("utf-8", "replace")
            if not _INTEGER.fullmatch(text) or not _I64_MIN <= int(text) <= _I64_MAX:
                raise KvError(
                    "other",
                    f"key `{key}` does not hold a decimal integer, so it cannot be incremented",
                )
            current = int(text)
        total = current + delta
        if not _I64_MIN <= total <= _I64_MAX:
            raise KvError("other", f"incrementing key `{key}` overflows a 64-bit integer")
        # Like the host: the sum keeps the key's time to live.
        self._put(key, str(total).encode(), None if live is None else live.expires)
        return total

    def list_keys(self, prefix: str, cursor: str | None) -> tuple[list[str], str | None]:
        self._check()
        # Python orders str by code point, which is UTF-8's byte order.
        keys = sorted(
            key
            for key in list(_state.buckets.get(self._name, {}))
            if key.startswith(prefix)
            and (cursor is None or key > cursor)
            and self._live(key) is not None
        )[:PAGE]
        return keys, (keys[-1] if len(keys) == PAGE else None)

    def compare_and_swap(self, key: str, expected: bytes | None, value: bytes) -> bool:
        self._check(key)
        live = self._live(key)
        if (None if live is None else live.value) != expected:
            return False
        self._put(key, value, None)
        return True
