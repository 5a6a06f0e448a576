"""Run a handler in plain CPython, as the host would, in a unit test: no
WebAssembly, no host.

.. code-block:: python

    from optech_sdk import InvalidInput, http, testing
    import pytest
    from app import handle

    def test_found():
        def backend(req: http.Request) -> http.Response:
            assert req.headers["authorization"] == "Bearer t0k"
            return http.Response(200, '{"status": "shipped"}')

        data = testing.call(handle, {"order_id": "A-17"},
                            config={"base_url": "https://api.example.com", "token": "t0k"},
                            http=backend)
        assert data["checked"] == "true"

    def test_missing_input():
        with pytest.raises(InvalidInput, match="order_id"):
            testing.call(handle, {})

`call` returns the answer's `data` exactly as the host would send it (every
value a string) and lets the handler's exceptions through, so
``pytest.raises`` sees them. `log` lines go to Python's `logging` (logger
``optech_sdk.plugin``), where pytest's ``caplog`` finds them.

The key-value store (`optech_sdk.store`) is in memory here, one for the
process, kept from one `call` to the next as the host's store outlives an
instance; `store` controls it:

.. code-block:: python

    from optech_sdk import store as kv, testing

    @pytest.fixture(autouse=True)
    def empty_store():
        testing.store.reset()

    def test_counts_visits():
        testing.store.grant("counters")          # as `stores = ["counters"]`
        testing.call(handle, {"user": "ada"})
        assert testing.call(handle, {"user": "ada"})["seen"] == "2"
        assert kv.open("counters").get("seen:ada") == "2"
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from contextvars import copy_context

from . import _memory
from . import http as _http
from ._backend import Backend, Level, Local, RawBucket, _override
from ._core import Data, to_fields
from ._request import Inputs, InputsLike, Request

__all__ = ["call", "Responder", "store"]

Responder = Callable[[_http.Request], _http.Response]
"""A test's stand-in for the back ends: answers each outbound request (or
raises an `http.Error`, e.g. `http.Denied`, to play the host refusing it)."""


class _Test(Backend):
    def __init__(self, config: Mapping[str, object], responder: Responder | None) -> None:
        self._config = {name: _config_text(value) for name, value in config.items()}
        self._responder = responder
        self._local = Local()

    def config(self, name: str) -> str | None:
        return self._config.get(name)

    def log(self, level: Level, message: str) -> None:
        self._local.log(level, message)

    def send(self, request: _http.Request) -> _http.Response:
        if self._responder is None:
            raise _http.Error(
                f"{request.method} {request.url}: this test gives no `http` function "
                "to optech_sdk.testing.call, so there is no back end to answer"
            )
        response = self._responder(request)
        if not isinstance(response, _http.Response):
            raise TypeError(
                f"the test's http function returns an http.Response, not {type(response).__name__}"
            )
        return response

    def open_bucket(self, name: str) -> RawBucket:
        return self._local.open_bucket(name)


class _Store:
    """The key-value store of unit tests: in memory, with the host's
    semantics (values are bytes, a `ttl` expires a key, `increment` stores
    decimal text, keys list in byte order, the host's default key and value
    size limits). Until `grant`, every bucket opens."""

    def grant(self, *buckets: str) -> None:
        """Only these buckets open from now on, as if ``stores`` in the
        plugin's ``[plugins.NAME]`` table named just them: a call on any
        other raises `StoreError` (``kind == "access-denied"``). Replaces an
        earlier grant."""
        _memory.grant(frozenset(buckets))

    def fail(self, message: str | None) -> None:
        """Every store call raises `StoreError` (``kind == "other"``) with
        this message, as when the host's store is down; ``None`` ends it."""
        _memory.fail(message)

    def advance(self, seconds: float) -> None:
        """Moves the store's clock `seconds` ahead, so that keys set with a
        `ttl` expire without waiting."""
        if not seconds >= 0:
            raise ValueError(f"advance takes a number of seconds, not {seconds!r}")
        _memory.advance(seconds)

    def reset(self) -> None:
        """Empties every bucket, lifts the grant (every bucket opens), ends
        `fail` and resets the clock."""
        _memory.reset()


store = _Store()
"""Controls the key-value store handlers see in unit tests."""


def _config_text(value: object) -> str:
    # As the host does with optech.toml: numbers and booleans become strings.
    return value if isinstance(value, str) else json.dumps(value)


def call(
    handler: Callable[[Request], Data],
    inputs: InputsLike | None = None,
    *,
    key: str = "test",
    config: Mapping[str, object] | None = None,
    http: Responder | None = None,
) -> dict[str, str]:
    """Calls `handler` with a request of `key` and `inputs`, as the host does.

    `config` is what `optech_sdk.config` returns during the call (a name not
    in it reads as ``None``). `http` answers the handler's outbound requests;
    without it they raise `http.Error`. Returns the answer's data as the host
    would send it: every value a string (``True`` as ``"true"``). Raises what
    the handler raises: `InvalidInput` for a 400, anything else for a 500.
    """
    backend = _Test(config or {}, http)
    request = Request(key, Inputs(inputs or ()))

    def run() -> dict[str, str]:
        _override.set(backend)
        return dict(to_fields(handler(request)))

    # A copied context: the test's values never leak into the next call.
    return copy_context().run(run)
