"""Outbound HTTP from a handler: blocking and small, so a handler stays a
plain function.

>>> from optech_sdk import http
>>> resp = http.get("https://api.example.com/orders/A-17",
...                 headers={"authorization": "Bearer ..."})      # doctest: +SKIP
>>> resp.status, resp.json()                                     # doctest: +SKIP

The host decides what goes out, through ``wasi:http``: only to the hosts the
plugin's `allowed_hosts` names and never to an internal address it does not
name (else `Denied`), within its `http_timeout` and the call's own deadline
(`Timeout`), with at most `max_http_response` bytes of response body
(`TooLarge`). Redirects are not followed: a ``3xx`` is a response like any
other. An exception a handler does not catch answers 500 plugin_error with
its message.
"""

from __future__ import annotations

import builtins
import json as _json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Union

from ._backend import current

__all__ = [
    "ConnectError",
    "Denied",
    "Error",
    "Headers",
    "Request",
    "Response",
    "TooLarge",
    "Timeout",
    "get",
    "post",
    "request",
]

HeadersLike = Union[Mapping[str, str], Iterable[tuple[str, str]]]
"""Headers as a mapping, or as (name, value) pairs when a name repeats."""


class Error(Exception):
    """An outbound request got no response: the base of every error here.

    Raised as it is for what fits no subclass (a malformed URL, a header the
    host does not allow, a broken response); the host's log has details.
    """


class Denied(Error):
    """The host refused the destination: it is not in the plugin's
    `allowed_hosts`, or it is an internal address that list does not name.
    Nothing was sent."""

    def __init__(self, host: str, reason: str = "not in allowed_hosts") -> None:
        super().__init__(f"request to {host} denied: {reason}")
        self.host = host
        """The destination refused, ``host[:port]`` as the URL gave it."""


class Timeout(Error):
    """No response, or no complete body, within the plugin's `http_timeout`,
    the `timeout` asked for, or the call's own deadline."""


class TooLarge(Error):
    """The response body is larger than the plugin's `max_http_response`."""


class ConnectError(Error):
    """The back end could not be reached: refused, not found, TLS failed."""


class Headers(Mapping[str, str]):
    """HTTP header fields: a read-only mapping with case-insensitive names.

    ``headers[name]`` and ``headers.get(name)`` give the first value of a
    name; `get_all` gives every value. Iteration yields each name once, in
    lower case.
    """

    __slots__ = ("_fields",)

    def __init__(self, fields: HeadersLike | None = None) -> None:
        pairs = fields.items() if isinstance(fields, Mapping) else (fields or ())
        self._fields: list[tuple[str, str]] = [(str(n).lower(), str(v)) for n, v in pairs]

    def __getitem__(self, name: str) -> str:
        wanted = name.lower()
        for field, value in self._fields:
            if field == wanted:
                return value
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self._fields))

    def __len__(self) -> int:
        return len({name for name, _ in self._fields})

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n == name.lower() for n, _ in self._fields)

    def get_all(self, name: str) -> list[str]:
        """Every value of `name`, in the order they came."""
        wanted = name.lower()
        return [value for field, value in self._fields if field == wanted]

    def fields(self) -> list[tuple[str, str]]:
        """Every (name, value) pair, repeats included, in the order they came."""
        return list(self._fields)

    def __repr__(self) -> str:
        return f"Headers({self._fields!r})"


@dataclass(frozen=True)
class Request:
    """An outbound request, as a unit test's `http` function receives it."""

    method: str
    url: str
    headers: Headers
    body: bytes | None = None
    timeout: float | None = None
    """Seconds to the response's first byte the handler asked for, if any."""


class Response:
    """A response, read whole.

    Unit tests build them for their fake back ends:
    ``http.Response(200, '{"status": "shipped"}', {"content-type": "application/json"})``.
    """

    __slots__ = ("status", "headers", "_body")

    def __init__(
        self,
        status: int,
        body: builtins.bytes | str = b"",
        headers: HeadersLike | None = None,
    ) -> None:
        self.status: int = status
        """The status code: 200, 404..."""
        self.headers: Headers = headers if isinstance(headers, Headers) else Headers(headers)
        """The response's header fields."""
        self._body = body.encode() if isinstance(body, str) else builtins.bytes(body)

    def bytes(self) -> builtins.bytes:
        """The body's bytes."""
        return self._body

    def text(self) -> str:
        """The body as text, in the content type's charset (UTF-8 if it names
        none); a body that does not decode raises `UnicodeDecodeError`."""
        return self._body.decode(_charset(self.headers.get("content-type")))

    def json(self) -> Any:
        """The body parsed as JSON (`json.JSONDecodeError` if it is not)."""
        return _json.loads(self._body)

    def __repr__(self) -> str:
        return f"<Response [{self.status}], {len(self._body)} bytes>"


def _charset(content_type: str | None) -> str:
    for part in (content_type or "").split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return "utf-8"


def request(
    method: str,
    url: str,
    *,
    headers: HeadersLike | None = None,
    body: builtins.bytes | str | None = None,
    json: Any = None,
    timeout: float | None = None,
) -> Response:
    """Sends a request and reads the whole response; blocks until then.

    `method` is any method (``"PUT"``, ``"DELETE"``...); `url` an absolute
    ``http``/``https`` URL. `body` is sent as it is (a `str` as UTF-8: set a
    ``content-type``); `json` is sent as JSON with ``content-type:
    application/json``. `timeout` (seconds) may shorten the wait for the
    response, never lengthen it past the host's `http_timeout`.
    Raises `Denied`, `Timeout`, `TooLarge`, `ConnectError` or `Error`.
    """
    fields = Headers(headers)
    if json is not None:
        if body is not None:
            raise TypeError("give a request `body` or `json`, not both")
        body = _json.dumps(json, ensure_ascii=False, separators=(",", ":"))
        if "content-type" not in fields:
            fields = Headers([*fields.fields(), ("content-type", "application/json")])
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    data = body.encode() if isinstance(body, str) else body
    return current().send(Request(method.upper(), url, fields, data, timeout))


def get(url: str, *, headers: HeadersLike | None = None, timeout: float | None = None) -> Response:
    """A ``GET`` request to `url`; see `request`."""
    return request("GET", url, headers=headers, timeout=timeout)


def post(
    url: str,
    *,
    headers: HeadersLike | None = None,
    body: builtins.bytes | str | None = None,
    json: Any = None,
    timeout: float | None = None,
) -> Response:
    """A ``POST`` request to `url`; see `request`."""
    return request("POST", url, headers=headers, body=body, json=json, timeout=timeout)
