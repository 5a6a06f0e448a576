"""Unit tests of the handler in plain CPython: `pytest` in this folder."""

from __future__ import annotations

import base64
import json

import pytest

from optech_sdk import InvalidInput, StoreError, http, testing
from optech_sdk import store as kv

from app import basic_authorization, form_encode, handle, keep_for, token_from

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


# The client-credentials grant: the token comes from `token_url` and is kept in
# the store's `tokens` bucket, which outlives each `call` as the host's does.

OAUTH = {
    "base_url": "http://orders.test",
    "token_url": "http://auth.test/oauth/token",
    "client_id": "optech",
    "client_secret": "s3cret",
}


@pytest.fixture(autouse=True)
def tokens_bucket() -> None:
    testing.store.reset()
    testing.store.grant("tokens")  # as `stores = ["tokens"]`


class OAuthBackEnd:
    """A token endpoint that issues ``tok-1``, ``tok-2``... living
    `expires_in` seconds (unsaid if None), and an orders API that takes the
    tokens in `live`. Notes the Basic headers of token requests and the
    bearer of order requests."""

    def __init__(self, expires_in: int | None) -> None:
        self.expires_in = expires_in
        self.issued: list[str] = []
        self.basics: list[str | None] = []
        self.bearers: list[str | None] = []
        self.live: set[str] = set()

    def __call__(self, req: http.Request) -> http.Response:
        if req.url == OAUTH["token_url"]:
            assert req.method == "POST"
            assert req.headers["content-type"] == "application/x-www-form-urlencoded"
            assert req.body == b"grant_type=client_credentials"
            self.basics.append(req.headers.get("authorization"))
            token = f"tok-{len(self.issued) + 1}"
            self.issued.append(token)
            self.live.add(token)
            answer: dict[str, object] = {"access_token": token, "token_type": "Bearer"}
            if self.expires_in is not None:
                answer["expires_in"] = self.expires_in
            return http.Response(200, json.dumps(answer), {"content-type": "application/json"})
        auth = req.headers.get("authorization")
        self.bearers.append(auth)
        if auth is None or auth.removeprefix("Bearer ") not in self.live:
            return http.Response(401, '{"error": "invalid_token"}')
        return http.Response(200, json.dumps({"status": "shipped", "auth": auth}))


def order_a17(config: dict[str, str], back_end: testing.Responder) -> dict[str, str]:
    return testing.call(handle, {"order_id": "A-17"}, config=config, http=back_end)


def bearer_of(data: dict[str, str]) -> str:
    return json.loads(data["order"])["auth"]


def test_one_token_serves_every_request_until_the_store_clock_passes_its_ttl() -> None:
    api = OAuthBackEnd(expires_in=60)  # kept 54 s, a tenth less
    for _ in range(5):
        assert bearer_of(order_a17(OAUTH, api)) == "Bearer tok-1"
    assert api.issued == ["tok-1"]
    assert kv.open("tokens").get("orders-api") == "tok-1"

    testing.store.advance(53)
    order_a17(OAUTH, api)
    assert api.issued == ["tok-1"]

    testing.store.advance(1)
    assert bearer_of(order_a17(OAUTH, api)) == "Bearer tok-2"
    assert api.issued == ["tok-1", "tok-2"]
    assert kv.open("tokens").get("orders-api") == "tok-2"


def test_token_cache_off_fetches_a_token_for_every_request_and_keeps_none() -> None:
    api = OAuthBackEnd(expires_in=60)
    for _ in range(3):
        order_a17({**OAUTH, "token_cache": "off"}, api)
    assert api.issued == ["tok-1", "tok-2", "tok-3"]
    assert kv.open("tokens").get("orders-api") is None


@pytest.mark.parametrize("expires_in", [None, 1])
def test_a_token_without_a_lifetime_or_under_2_seconds_is_not_kept(expires_in: int | None) -> None:
    api = OAuthBackEnd(expires_in)
    order_a17(OAUTH, api)
    order_a17(OAUTH, api)
    assert api.issued == ["tok-1", "tok-2"]
    assert kv.open("tokens").get("orders-api") is None


def test_a_401_drops_the_cached_token_fetches_a_new_one_and_tries_once_more() -> None:
    kv.open("tokens").set("orders-api", "revoked", ttl=600)
    api = OAuthBackEnd(expires_in=60)
    assert bearer_of(order_a17(OAUTH, api)) == "Bearer tok-1"
    assert api.bearers == ["Bearer revoked", "Bearer tok-1"]
    assert api.issued == ["tok-1"]
    assert kv.open("tokens").get("orders-api") == "tok-1"


def test_a_second_401_is_the_back_ends_answer_no_third_try() -> None:
    api = OAuthBackEnd(expires_in=60)

    def refusing(req: http.Request) -> http.Response:
        api.live.clear()  # every token is refused
        return api(req)

    with pytest.raises(RuntimeError, match="back end answered 401"):
        order_a17(OAUTH, refusing)
    assert api.issued == ["tok-1", "tok-2"]
    assert api.bearers == ["Bearer tok-1", "Bearer tok-2"]


def test_with_a_fixed_token_a_401_is_not_retried() -> None:
    seen: list[str] = []

    def refusing(req: http.Request) -> http.Response:
        seen.append(req.url)
        return http.Response(401)

    with pytest.raises(RuntimeError, match="back end answered 401"):
        order_a17(CONFIG, refusing)
    assert seen == ["http://orders.test/orders/A-17"]


def test_the_basic_header_form_encodes_id_and_secret_before_base64() -> None:
    assert basic_authorization("optech", "s3cret") == "Basic b3B0ZWNoOnMzY3JldA=="
    assert form_encode("a b:c/é") == "a+b%3Ac%2F%C3%A9"
    assert form_encode("A-z_0.9*~!'()%+") == "A-z_0.9*%7E%21%27%28%29%25%2B"

    api = OAuthBackEnd(expires_in=60)
    order_a17({**OAUTH, "client_id": "my client", "client_secret": "p@ss:wörd"}, api)
    expected = base64.b64encode(b"my+client:p%40ss%3Aw%C3%B6rd").decode()
    assert api.basics == [f"Basic {expected}"]


def test_a_token_endpoints_refusal_or_an_incomplete_config_fails() -> None:
    def refusing(req: http.Request) -> http.Response:
        return http.Response(401, '{"error": "invalid_client"}')

    with pytest.raises(RuntimeError, match="the token endpoint answered 401"):
        order_a17(OAUTH, refusing)
    no_secret = {name: value for name, value in OAUTH.items() if name != "client_secret"}
    with pytest.raises(RuntimeError, match="token_url is set but client_secret is not"):
        order_a17(no_secret, refusing)


def test_without_tokens_in_stores_the_plugin_fails_with_the_stores_message() -> None:
    testing.store.grant("other")
    with pytest.raises(StoreError, match="bucket `tokens` is not granted"):
        order_a17(OAUTH, OAuthBackEnd(expires_in=60))


def test_a_token_is_kept_a_tenth_less_than_it_lives() -> None:
    assert keep_for(3600) == 3240
    assert keep_for(2) == 2
    assert keep_for(1) is None
    assert keep_for(None) is None
    answer = '{"access_token": "abc", "token_type": "Bearer", "expires_in": 60}'
    assert token_from(answer) == ("abc", 60)
    assert token_from('{"access_token": "abc", "expires_in": "60"}') == ("abc", None)
    with pytest.raises(RuntimeError, match="no access_token"):
        token_from('{"error": "invalid_client"}')
    with pytest.raises(RuntimeError, match="no access_token"):
        token_from("null")
    with pytest.raises(RuntimeError, match="not JSON"):
        token_from("<html>")
