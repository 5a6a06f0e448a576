"""Answers "order status" from a REST back end: ``GET {base_url}/orders/{id}``
with a bearer token. The Python twin of ``plugins/orders``, with the same
stand-in back end (README, "Writing a plugin in Python")."""

import re

from optech_sdk import InvalidInput, config, handler, http, log

ORDER_ID = re.compile(r"[A-Za-z0-9_-]+")


@handler
def handle(req):
    order_id = req.inputs.require("order_id")  # absent: InvalidInput, answered 400
    if not ORDER_ID.fullmatch(order_id):  # nothing that could leave /orders/
        raise InvalidInput(f"`order_id` {order_id!r} is not an order id")
    base = config("base_url")  # str | None
    if base is None:
        raise RuntimeError("base_url is not set")  # any other exception: 500 plugin_error
    resp = http.get(
        f"{base.rstrip('/')}/orders/{order_id}",
        headers={"authorization": f"Bearer {config('token') or ''}"},
    )
    if resp.status == 404:
        raise InvalidInput(f"no order {order_id}")
    if resp.status != 200:
        raise RuntimeError(f"back end answered {resp.status}")
    log.info(f"order {order_id} found")
    return {"order": resp.text(), "checked": True}  # the answer's data
