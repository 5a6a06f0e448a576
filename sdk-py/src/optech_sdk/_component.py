"""The SDK inside a component: the bindings componentize-py generates for the
`optech:plugin/python` world, behind the small API the rest of the SDK uses.
Imported only when running as WebAssembly (`sys.platform == "wasi"`), once,
at build time, so its imports are part of the snapshot and cost a request
nothing."""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

from componentize_py_types import Err
from wit_world.imports import atomics, keyvalue_extras, outgoing_handler
from wit_world.imports import host as wit_host
from wit_world.imports import store as wit_store
from wit_world.imports import wasi_http_types as wasi
from wit_world.imports.optech_plugin_types import Error_Failed, Error_InvalidInput
from wit_world.imports.streams import StreamError_Closed, StreamError_LastOperationFailed

from . import http
from ._backend import Level
from ._core import Fields, failure_message, format_traceback, registered, to_fields
from ._errors import InvalidInput, KvError, StoreError
from ._request import Inputs, Request

_LEVELS = {
    Level.TRACE: wit_host.Level.TRACE,
    Level.DEBUG: wit_host.Level.DEBUG,
    Level.INFO: wit_host.Level.INFO,
    Level.WARN: wit_host.Level.WARN,
    Level.ERROR: wit_host.Level.ERROR,
}

_METHODS: dict[str, wasi.Method] = {
    "GET": wasi.Method_Get(),
    "HEAD": wasi.Method_Head(),
    "POST": wasi.Method_Post(),
    "PUT": wasi.Method_Put(),
    "DELETE": wasi.Method_Delete(),
    "CONNECT": wasi.Method_Connect(),
    "OPTIONS": wasi.Method_Options(),
    "TRACE": wasi.Method_Trace(),
    "PATCH": wasi.Method_Patch(),
}

# A component has no files at run time: what was not imported when it was
# built cannot be imported on a request.
_IMPORT_HINT = (
    "a plugin's modules are imported when it is built, not on a request: "
    "import it at the top of app.py"
)

# Bytes per write: a blocking write may take at most 4096 (wasi:io).
_WRITE_CHUNK = 4096
_READ_CHUNK = 64 * 1024


class WitWorld:
    """The export componentize-py calls: the contract's `handle`, around the
    function marked with `@handler`."""

    def handle(self, key: str, inputs: Fields) -> Fields:
        func = registered()
        try:
            return to_fields(func(Request(key, Inputs(inputs))))
        except InvalidInput as error:
            raise Err(Error_InvalidInput(str(error))) from None
        except (Exception, SystemExit) as error:
            message = failure_message(error, (http.Error, StoreError))
            if isinstance(error, ImportError):
                message += f" ({_IMPORT_HINT})"
            try:
                _log(Level.DEBUG, format_traceback(error))
            except Exception:  # the answer matters more than its traceback
                pass
            raise Err(Error_Failed(message)) from None


def _log(level: Level, message: str) -> None:
    wit_host.log(_LEVELS[level], message)


class Host:
    """The backend inside a component: the host's imports."""

    def config(self, name: str) -> str | None:
        value: str | None = wit_host.config(name)
        return value

    def log(self, level: Level, message: str) -> None:
        _log(level, message)

    def send(self, request: http.Request) -> http.Response:
        return _send(request)

    def open_bucket(self, name: str) -> HostBucket:
        try:
            return HostBucket(wit_store.open(name))
        except Err as error:
            raise _kv_error(error.value) from None


class HostBucket:
    """A bucket of the host's store: `wasi:keyvalue` and the host's
    `keyvalue-extras`, their errors raised as `KvError`."""

    def __init__(self, bucket: wit_store.Bucket) -> None:
        self._bucket = bucket

    def get(self, key: str) -> bytes | None:
        try:
            value: bytes | None = self._bucket.get(key)
            return value
        except Err as error:
            raise _kv_error(error.value) from None

    def set(self, key: str, value: bytes, ttl: int | None) -> None:
        try:
            if ttl is None:
                self._bucket.set(key, value)
            else:
                keyvalue_extras.set_with_ttl(self._bucket, key, value, ttl)
        except Err as error:
            raise _kv_error(error.value) from None

    def delete(self, key: str) -> None:
        try:
            self._bucket.delete(key)
        except Err as error:
            raise _kv_error(error.value) from None

    def exists(self, key: str) -> bool:
        try:
            found: bool = self._bucket.exists(key)
            return found
        except Err as error:
            raise _kv_error(error.value) from None

    def increment(self, key: str, delta: int) -> int:
        try:
            total: int = atomics.increment(self._bucket, key, delta)
            return total
        except Err as error:
            raise _kv_error(error.value) from None

    def list_keys(self, prefix: str, cursor: str | None) -> tuple[list[str], str | None]:
        try:
            page = keyvalue_extras.list_keys_with_prefix(self._bucket, prefix, cursor)
        except Err as error:
            raise _kv_error(error.value) from None
        return list(page.keys), page.cursor

    def compare_and_swap(self, key: str, expected: bytes | None, value: bytes) -> bool:
        try:
            cas = atomics.Cas.new(self._bucket, key)
        except Err as error:
            raise _kv_error(error.value) from None
        try:
            current = cas.current()
        except Err as error:
            cas.__exit__(None, None, None)
            raise _kv_error(error.value) from None
        if current != expected:
            cas.__exit__(None, None, None)
            return False
        try:
            # `swap` takes the handle: it is the host's from here on.
            atomics.swap(cas, value)
        except Err as error:
            failure = error.value
            if isinstance(failure, atomics.CasError_CasFailed):
                # Changed since `Cas.new` read it; what it holds now is no use here.
                failure.value.__exit__(None, None, None)
                return False
            assert isinstance(failure, atomics.CasError_StoreError)
            raise _kv_error(failure.value) from None
        return True


def _kv_error(error: object) -> KvError:
    """`KvError` for `wasi:keyvalue/store`'s `error`."""
    if isinstance(error, wit_store.Error_AccessDenied):
        return KvError("access-denied")
    if isinstance(error, wit_store.Error_NoSuchStore):
        return KvError("no-such-store")
    if isinstance(error, wit_store.Error_Other):
        return KvError("other", error.value)
    return KvError("other", f"the store failed: {error!r}")


def _send(request: http.Request) -> http.Response:
    url = urlsplit(request.url)
    scheme = url.scheme.lower()
    if scheme not in ("http", "https"):
        raise http.Error(f"not an absolute http(s) URL: {_origin(request.url)}")
    if not url.hostname or "@" in url.netloc:
        raise http.Error(f"a URL with a host and no user info is needed: {_origin(request.url)}")
    host = url.netloc
    path = url.path or "/"
    if url.query:
        path = f"{path}?{url.query}"

    try:
        fields = wasi.Fields.from_list(
            [(name, value.encode()) for name, value in request.headers.fields()]
        )
    except Err as error:
        raise http.Error(f"a header the host does not allow: {type(error.value).__name__}") from None
    outgoing = wasi.OutgoingRequest(fields)
    try:
        outgoing.set_method(_METHODS.get(request.method) or wasi.Method_Other(request.method))
        outgoing.set_scheme(wasi.Scheme_Https() if scheme == "https" else wasi.Scheme_Http())
        outgoing.set_authority(host)
        outgoing.set_path_with_query(path)
    except Err:
        raise http.Error(f"a request the host cannot send: {request.method} {_origin(request.url)}") from None

    options = None
    if request.timeout is not None:
        options = wasi.RequestOptions()
        options.set_first_byte_timeout(int(request.timeout * 1e9))

    # Without a body (a GET, say) the request opens none: the host sends it
    # at once, with no stream to wait on.
    body = outgoing.body() if request.body is not None else None
    try:
        future = outgoing_handler.handle(outgoing, options)
    except Err as error:
        raise _error(error.value, host) from None
    if body is not None and request.body is not None:
        # Send first: the host starts reading the body once the request is
        # under way. A closed stream means the host already refused; the
        # reason comes with the response.
        with body.write() as stream:
            data = request.body
            for start in range(0, len(data), _WRITE_CHUNK):
                try:
                    stream.blocking_write_and_flush(data[start : start + _WRITE_CHUNK])
                except Err:
                    break
        try:
            wasi.OutgoingBody.finish(body, None)
        except Err:
            pass

    with future:
        while True:
            ready = future.get()
            if ready is not None:
                break
            with future.subscribe() as pollable:
                pollable.block()
    # `get` is a result in a result: the outer one fails only if the
    # response was taken before; the inner one is the response or its error.
    if isinstance(ready, Err):
        raise http.Error(f"the response from {host} was taken twice")
    outcome = ready.value
    if isinstance(outcome, Err):
        raise _error(outcome.value, host)
    response = outcome.value
    with response:
        status = response.status()
        with response.headers() as header_fields:
            headers = [(n, v.decode("utf-8", "replace")) for n, v in header_fields.entries()]
        content = _read(response.consume(), host)
    return http.Response(status, content, headers)


def _read(incoming: wasi.IncomingBody, host: str) -> bytes:
    chunks = []
    with incoming:
        with incoming.stream() as stream:
            while True:
                try:
                    chunks.append(stream.blocking_read(_READ_CHUNK))
                except Err as error:
                    failure = error.value
                    if isinstance(failure, StreamError_Closed):
                        break
                    assert isinstance(failure, StreamError_LastOperationFailed)
                    with failure.value as io_error:
                        code = wasi.http_error_code(io_error)
                        if code is not None:
                            raise _error(code, host) from None
                        raise _stream_error(io_error.to_debug_string(), host) from None
    return b"".join(chunks)


def _error(code: object, host: str) -> http.Error:
    """The SDK's error for a `wasi:http` error code, as the host's outbound
    side returns them (host/src/outbound)."""
    if isinstance(code, wasi.ErrorCode_HttpRequestDenied):
        return http.Denied(host)
    if isinstance(code, wasi.ErrorCode_DestinationIpProhibited):
        return http.Denied(host, "an internal address that allowed_hosts does not name")
    if isinstance(
        code,
        (
            wasi.ErrorCode_ConnectionTimeout,
            wasi.ErrorCode_ConnectionReadTimeout,
            wasi.ErrorCode_ConnectionWriteTimeout,
            wasi.ErrorCode_HttpResponseTimeout,
            wasi.ErrorCode_DnsTimeout,
            # The host answers this when no outbound slot came free in time.
            wasi.ErrorCode_ConnectionLimitReached,
        ),
    ):
        return http.Timeout(f"request to {host} timed out")
    if isinstance(code, wasi.ErrorCode_HttpResponseBodySize):
        return http.TooLarge(f"the response from {host} is larger than max_http_response")
    if isinstance(code, wasi.ErrorCode_ConnectionRefused):
        return http.ConnectError(f"cannot connect to {host}: connection refused")
    if isinstance(code, (wasi.ErrorCode_DestinationNotFound, wasi.ErrorCode_DnsError)):
        return http.ConnectError(f"cannot connect to {host}: not found")
    if isinstance(
        code,
        (
            wasi.ErrorCode_DestinationUnavailable,
            wasi.ErrorCode_DestinationIpUnroutable,
            wasi.ErrorCode_ConnectionTerminated,
            wasi.ErrorCode_TlsProtocolError,
            wasi.ErrorCode_TlsCertificateError,
            wasi.ErrorCode_TlsAlertReceived,
        ),
    ):
        return http.ConnectError(f"cannot connect to {host}: {_name(code)}")
    if isinstance(code, wasi.ErrorCode_HttpRequestBodySize):
        return http.Error(f"the request body to {host} is larger than the host sends")
    return http.Error(f"request to {host} failed: {_name(code)}")


def _stream_error(text: str, host: str) -> http.Error:
    # The host's cap and deadline on a body can arrive as plain text.
    lower = text.lower()
    if "body size" in lower:
        return http.TooLarge(f"the response from {host} is larger than max_http_response")
    if "timeout" in lower or "timed out" in lower:
        return http.Timeout(f"reading the response from {host} timed out")
    return http.Error(f"reading the response from {host} failed: {text}")


def _name(code: object) -> str:
    """`ErrorCode_TlsCertificateError` -> `TLS certificate error`."""
    name = type(code).__name__.removeprefix("ErrorCode_")
    words = "".join(f" {c.lower()}" if c.isupper() else c for c in name).strip()
    return words.replace("tls ", "TLS ").replace("dns ", "DNS ").replace("http ", "HTTP ")


def _origin(url: str) -> str:
    """A URL without its path and query, which may hold secrets."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts.netloc else "(no host)"


assert sys.platform == "wasi", "optech_sdk._component runs only inside a component"
