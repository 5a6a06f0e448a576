"""The SDK in plain CPython: the handler's contract (inputs in, data out, the
two kinds of error), config, log and http through `optech_sdk.testing`."""

from __future__ import annotations

import logging

import pytest

from optech_sdk import Inputs, InvalidInput, Request, config, handler, http, log, testing
from optech_sdk._core import failure_message, to_fields


@handler
def orders(req: Request) -> dict[str, object]:
    order_id = req.inputs.require("order_id")
    base = config("base_url")
    if base is None:
        raise RuntimeError("base_url is not set")
    resp = http.get(
        f"{base}/orders/{order_id}",
        headers={"authorization": f"Bearer {config('token') or ''}"},
    )
    if resp.status == 404:
        raise InvalidInput(f"no order {order_id}")
    if resp.status != 200:
        raise RuntimeError(f"back end answered {resp.status}")
    log.info(f"order {order_id} found")
    return {"order": resp.text(), "checked": True}


def backend(req: http.Request) -> http.Response:
    if req.url.endswith("/orders/A-17"):
        return http.Response(200, f"shipped for {req.headers.get('authorization')}")
    return http.Response(404, "not found")


CONFIG = {"base_url": "https://api.example.com", "token": "t0k"}


def test_inputs_become_data_with_json_text_for_non_strings() -> None:
    data = testing.call(orders, {"order_id": "A-17"}, config=CONFIG, http=backend)
    assert data == {"order": "shipped for Bearer t0k", "checked": "true"}


def test_missing_input_is_invalid_input_naming_it() -> None:
    with pytest.raises(InvalidInput, match="missing input `order_id`"):
        testing.call(orders, {}, config=CONFIG, http=backend)


def test_back_end_404_is_invalid_input_and_missing_config_a_failure() -> None:
    with pytest.raises(InvalidInput, match="no order Z-9"):
        testing.call(orders, {"order_id": "Z-9"}, config=CONFIG, http=backend)
    with pytest.raises(RuntimeError, match="base_url is not set"):
        testing.call(orders, {"order_id": "A-17"})


def test_config_is_scoped_to_the_call() -> None:
    seen: list[str | None] = []

    def read(req: Request) -> dict[str, object]:
        seen.append(config("region"))
        return {}

    testing.call(read, config={"region": "eu", "retries": 3})
    testing.call(read)
    assert seen == ["eu", None]
    assert config("region") is None
    assert testing.call(lambda req: {"n": config("retries")}, config={"retries": 3}) == {"n": "3"}


def test_log_lines_reach_logging(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(1, logger="optech_sdk.plugin")
    testing.call(orders, {"order_id": "A-17"}, config=CONFIG, http=backend)
    log.trace("t")
    log.warn("w")
    log.error("e")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "order A-17 found"),
        ("TRACE", "t"),
        ("WARNING", "w"),
        ("ERROR", "e"),
    ]


def test_inputs_keep_request_order_and_the_last_of_a_repeated_name() -> None:
    inputs = Inputs([("b", "1"), ("a", "2"), ("b", "3")])
    assert list(inputs) == ["b", "a"]
    assert inputs["b"] == "3" and inputs.get("a") == "2"
    assert inputs.get("zz") is None and inputs.get("zz", "d") == "d"
    assert "a" in inputs and "zz" not in inputs and len(inputs) == 2
    assert dict(inputs) == {"b": "3", "a": "2"}
    assert testing.call(lambda req: dict(req.inputs), [("x", "1"), ("y", "2")]) == {
        "x": "1",
        "y": "2",
    }
    assert testing.call(lambda req: {"key": req.key}, key="order status") == {
        "key": "order status"
    }


def test_data_values_as_the_host_sends_them() -> None:
    assert to_fields(
        {"s": "as is", "t": True, "f": False, "n": 12, "x": 1.5, "none": None,
         "list": [1, "é"], "obj": {"a": {"b": 1}}}
    ) == [
        ("s", "as is"), ("t", "true"), ("f", "false"), ("n", "12"), ("x", "1.5"),
        ("none", "null"), ("list", '[1,"é"]'), ("obj", '{"a":{"b":1}}'),
    ]
    with pytest.raises(TypeError, match="not list"):
        to_fields([("a", "b")])
    with pytest.raises(TypeError, match="`when` cannot be written as JSON"):
        to_fields({"when": object()})
    with pytest.raises(TypeError, match="`nan` cannot be written as JSON"):
        to_fields({"nan": float("nan")})
    with pytest.raises(TypeError, match="data names are strings"):
        to_fields({1: "x"})


def test_failure_messages() -> None:
    plain = (http.Error,)
    assert failure_message(RuntimeError("base_url is not set"), plain) == "base_url is not set"
    assert failure_message(Exception("boom"), plain) == "boom"
    assert failure_message(http.Denied("h:1"), plain) == "request to h:1 denied: not in allowed_hosts"
    assert failure_message(KeyError("x"), plain) == "KeyError: 'x'"
    assert failure_message(ZeroDivisionError("division by zero"), plain) == (
        "ZeroDivisionError: division by zero"
    )
    assert failure_message(RuntimeError(), plain) == "RuntimeError"


def test_http_request_as_the_back_end_sees_it() -> None:
    seen: list[http.Request] = []

    def record(req: http.Request) -> http.Response:
        seen.append(req)
        return http.Response(201, '{"id": 7}', [("Content-Type", "application/json"), ("set-cookie", "a"), ("Set-Cookie", "b")])

    def send(req: Request) -> dict[str, object]:
        resp = http.post("https://api.example.com/items", json={"name": "é"}, timeout=1.5)
        assert resp.headers["content-type"] == "application/json"
        assert resp.headers.get_all("set-cookie") == ["a", "b"]
        assert list(resp.headers) == ["content-type", "set-cookie"]
        return {"status": resp.status, "id": resp.json()["id"], "raw": resp.bytes().decode()}

    assert testing.call(send, http=record) == {"status": "201", "id": "7", "raw": '{"id": 7}'}
    (req,) = seen
    assert (req.method, req.url, req.timeout) == ("POST", "https://api.example.com/items", 1.5)
    assert req.headers["Content-Type"] == "application/json"
    assert req.body == '{"name":"é"}'.encode()


def test_http_errors_are_one_family() -> None:
    for error in (http.Denied("h"), http.Timeout(), http.TooLarge(), http.ConnectError()):
        assert isinstance(error, http.Error)
    assert http.Denied("api.example.com:443").host == "api.example.com:443"

    def deny(req: http.Request) -> http.Response:
        raise http.Denied("other.example:443")

    with pytest.raises(http.Denied, match="denied"):
        testing.call(lambda req: {"r": http.get("https://other.example/").status}, http=deny)
    with pytest.raises(http.Error, match="no `http` function"):
        testing.call(lambda req: {"r": http.get("https://api.example.com/").status})
    with pytest.raises(TypeError, match="`body` or `json`"):
        http.request("PUT", "https://h/", body="a", json={})
    with pytest.raises(ValueError, match="timeout"):
        http.get("https://h/", timeout=0)


def test_outside_a_test_call_there_is_no_network() -> None:
    with pytest.raises(http.Error, match="only inside the optech host"):
        http.get("https://api.example.com/")


def test_text_uses_the_charset_of_the_content_type() -> None:
    body = "café".encode("latin-1")
    assert http.Response(200, body, {"content-type": "text/plain; charset=ISO-8859-1"}).text() == "café"
    with pytest.raises(UnicodeDecodeError):
        http.Response(200, body).text()


def test_async_handlers_are_refused_with_a_reason() -> None:
    async def handle(req: Request) -> dict[str, object]:
        return {}

    with pytest.raises(TypeError, match="plain function"):
        handler(handle)  # type: ignore[type-var]

def test_the_handler_is_returned_unchanged() -> None:
    def handle(req: Request) -> dict[str, object]:
        return {"key": req.key}

    assert handler(handle) is handle
