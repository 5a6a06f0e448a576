"""Answers "order status" from a REST back end: ``GET {base_url}/orders/{id}``
with a bearer token. The Python twin of ``plugins/orders``, with the same
stand-in back end (README, "Writing a plugin in Python").

The host lets it reach only the hosts in its ``allowed_hosts``, and the
secrets come from the environment, not the config file. The token is either
fixed (``token``) or, with ``token_url``, an OAuth 2 access token from the
client-credentials grant, kept in the ``tokens`` bucket of the host's store
until shortly before it expires: one token request serves every request
until then, across instances and replicas, instead of one token request per
data request.

.. code-block:: toml

    [plugins.orders-py]
    allowed_hosts = ["https://api.example.com", "https://auth.example.com"]
    stores = ["tokens"]

    [plugins.orders-py.config]
    base_url = "https://api.example.com"
    token_url = "https://auth.example.com/oauth/token"
    client_id = "optech"
    client_secret = { env = "ORDERS_CLIENT_SECRET" }
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from urllib.parse import quote_plus

from optech_sdk import InvalidInput, config, handler, http, log, store

ORDER_ID = re.compile(r"[A-Za-z0-9_-]+")

# Where the access token is kept, and under which key.
TOKEN_BUCKET = "tokens"
TOKEN_KEY = "orders-api"


@handler
def handle(req):
    order_id = req.inputs.require("order_id")  # absent: InvalidInput, answered 400
    if not ORDER_ID.fullmatch(order_id):  # nothing that could leave /orders/
        raise InvalidInput(f"`order_id` {order_id!r} is not an order id")
    base = config("base_url")  # str | None
    if base is None:
        raise RuntimeError("base_url is not set")  # any other exception: 500 plugin_error
    url = f"{base.rstrip('/')}/orders/{order_id}"
    credentials = credentials_from_config()
    resp = get_order(url, credentials.token())
    if resp.status == 401 and credentials.renews:
        # Revoked or expired early: one new token, one more try.
        credentials.forget()
        resp = get_order(url, credentials.token())
    if resp.status == 404:
        raise InvalidInput(f"no order {order_id}")
    if resp.status != 200:
        raise RuntimeError(f"back end answered {resp.status}")
    log.info(f"order {order_id} found")
    return {"order": resp.text(), "checked": True}  # the answer's data


def get_order(url: str, token: str) -> http.Response:
    return http.get(url, headers={"authorization": f"Bearer {token}"})


@dataclass(frozen=True)
class FixedToken:
    """``token`` in the config, used as it is."""

    value: str
    renews = False

    def token(self) -> str:
        return self.value

    def forget(self) -> None:
        pass


@dataclass(frozen=True)
class ClientCredentials:
    """The client-credentials grant at ``token_url``; `cached` unless the
    config says ``token_cache = "off"`` (the benchmark's comparison)."""

    token_url: str
    client_id: str
    client_secret: str
    cached: bool = True
    renews = True

    def token(self) -> str:
        """The token to send: the cached one while it lasts, else a new one."""
        if self.cached:
            kept = store.open(TOKEN_BUCKET).get(TOKEN_KEY)
            if kept is not None:
                return kept
        token, lifetime = fetch_token(self.token_url, self.client_id, self.client_secret)
        ttl = keep_for(lifetime)
        if self.cached and ttl is not None:
            store.open(TOKEN_BUCKET).set(TOKEN_KEY, token, ttl=ttl)
        return token

    def forget(self) -> None:
        if self.cached:
            store.open(TOKEN_BUCKET).delete(TOKEN_KEY)


def credentials_from_config() -> FixedToken | ClientCredentials:
    token_url = config("token_url")
    if token_url is None:
        return FixedToken(config("token") or "")

    def need(name: str) -> str:
        value = config(name)
        if value is None:
            raise RuntimeError(f"token_url is set but {name} is not")
        return value

    return ClientCredentials(
        token_url,
        need("client_id"),
        need("client_secret"),
        cached=config("token_cache") != "off",
    )


def fetch_token(token_url: str, client_id: str, client_secret: str) -> tuple[str, int | None]:
    """``POST token_url`` with ``grant_type=client_credentials``, the client
    authenticated with HTTP Basic (RFC 6749, 2.3.1 and 4.4): the token and
    how long it lives, if the server says."""
    resp = http.post(
        token_url,
        headers={
            "authorization": basic_authorization(client_id, client_secret),
            "content-type": "application/x-www-form-urlencoded",
            "accept": "application/json",
        },
        body="grant_type=client_credentials",
    )
    if resp.status != 200:
        raise RuntimeError(f"the token endpoint answered {resp.status}")
    log.debug("fetched a new access token")
    return token_from(resp.text())


def token_from(body: str) -> tuple[str, int | None]:
    """The access token and its lifetime in seconds from a token response."""
    try:
        answer = json.loads(body)
    except ValueError as e:
        raise RuntimeError(f"the token endpoint's answer is not JSON: {e}") from None
    if not isinstance(answer, dict):
        answer = {}
    token = answer.get("access_token")
    if not isinstance(token, str) or not token:
        raise RuntimeError("the token endpoint's answer has no access_token")
    lifetime = answer.get("expires_in")
    if isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime < 0:
        lifetime = None
    return token, lifetime


def keep_for(lifetime: int | None) -> int | None:
    """How long to keep a token that lives `lifetime` seconds: a tenth less,
    so it is renewed before the back end refuses it; not at all if it lives
    under two seconds or does not say."""
    if lifetime is None or lifetime < 2:
        return None
    return lifetime - lifetime // 10


def basic_authorization(client_id: str, client_secret: str) -> str:
    """The ``authorization`` header of a client: ``Basic`` and base64 of id
    and secret, each ``application/x-www-form-urlencoded`` first (RFC 6749,
    2.3.1)."""
    credentials = f"{form_encode(client_id)}:{form_encode(client_secret)}"
    return f"Basic {base64.b64encode(credentials.encode()).decode()}"


def form_encode(text: str) -> str:
    """``application/x-www-form-urlencoded`` of UTF-8 text: letters, digits
    and ``*-._`` as they are, a space as ``+``, any other byte as ``%XX``."""
    # quote_plus keeps `~` too (RFC 3986 unreserved); the form encoding does not.
    return quote_plus(text, safe="*").replace("~", "%7E")
