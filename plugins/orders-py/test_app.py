"""Unit tests of the handler in plain CPython: `pytest` in this folder."""

import pytest

from optech_sdk import InvalidInput, http, testing

from app import handle

CONFIG = {"base_url": "http://orders.test", "token": "t0k"}
ORDER = '{"id": "A-17", "status": "shipped"}'


def back_end(req: http.Request) -> http.Response:
    assert req.headers["authorization"] == "Bearer t0k"
    if req.url == "http://orders.test/orders/A-17":
        return http.Response(200, ORDER, {"content-type": "application/json"})
    return http.Response(404, "no such order")


def test_an_order_is_answered_with_its_body() -> None:
    data = testing.call(handle, {"order_id": "A-17"}, config=CONFIG, http=back_end)
    assert data == {"order": ORDER, "checked": "true"}


def test_an_unknown_order_is_the_callers_mistake() -> None:
    with pytest.raises(InvalidInput, match="no order Z-9"):
        testing.call(handle, {"order_id": "Z-9"}, config=CONFIG, http=back_end)


def test_an_id_that_could_leave_the_orders_path_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not an order id"):
        testing.call(handle, {"order_id": "../admin"}, config=CONFIG, http=back_end)


def test_a_failing_back_end_is_a_failure() -> None:
    with pytest.raises(RuntimeError, match="back end answered 503"):
        testing.call(handle, {"order_id": "A-17"}, config=CONFIG,
                     http=lambda req: http.Response(503))
