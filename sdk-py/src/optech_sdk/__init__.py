"""Write OpTech data-request handlers in Python.

OpTech POSTs a signed data request ``{link, key, inputs}`` to a host you run;
the ``optech`` host checks it and hands it to the plugin its `key` maps to. A
Python plugin is one module, ``app.py``, with one function marked
`@handler`:

.. code-block:: python

    from optech_sdk import handler, config, log, http, InvalidInput

    @handler
    def handle(req):
        order_id = req.inputs.require("order_id")     # absent: 400 invalid_input
        resp = http.get(f"{config('base_url')}/orders/{order_id}")
        if resp.status == 404:
            raise InvalidInput(f"no order {order_id}")
        log.info(f"order {order_id} found")
        return {"order": resp.text(), "checked": True} # the answer's data

``optech build`` turns it into a WebAssembly component (with componentize-py)
and ``optech new NAME --lang python`` writes one with its unit test. What a
handler has:

- `Request`: ``req.key`` and ``req.inputs`` (`Inputs`: strings, in request
  order; ``get``, ``require``, ``in``, iteration);
- the dict it returns: the answer's `data` (a `str` as it is, anything else
  as its JSON text);
- `InvalidInput`: the caller's mistake, answered 400; any other exception is
  the handler's failure, answered 500 with its message;
- `config`: values from the plugin's ``[plugins.<name>.config]``, secrets
  included;
- `log`: lines in the host's log, tagged with the plugin and the request
  (``print`` works too);
- `http`: requests to the plugin's own back ends, where its `allowed_hosts`
  lets it go;
- `store`: the host's key-value store, state that outlives a request
  (``store.open("counters").increment("hits")``), in the buckets its
  `stores` grants; its calls raise `StoreError`;
- `testing`: a handler's unit tests in plain CPython.

By default the host runs every request in a fresh instance, so module
globals start over each time; with ``requests_per_instance = N`` in the
host's config one instance serves up to N requests in turn, and globals
carry over. Write handlers that are correct either way.
"""

from __future__ import annotations

from . import _backend, http, log, store
from ._core import Data, handler
from ._errors import InvalidInput, StoreError
from ._request import Inputs, Request

__all__ = [
    "Data",
    "Inputs",
    "InvalidInput",
    "Request",
    "StoreError",
    "config",
    "handler",
    "http",
    "log",
    "store",
]

__version__ = "0.1.0"


def config(name: str) -> str | None:
    """A value from this plugin's ``[plugins.<name>.config]`` table in the
    host's ``optech.toml``, or ``None`` when it has none.

    A value written ``{ env = "NAME" }`` there arrives resolved: the secret
    itself. The host hands each call the config that was live when its
    request arrived. In unit tests, values come from
    ``optech_sdk.testing.call(..., config={...})``.
    """
    return _backend.current().config(name)


_backend.install_host()
