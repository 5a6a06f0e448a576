"""A test-only Python plugin whose key selects a behaviour, like `testkit` for
Rust: what host/tests/python.rs checks a Python plugin can and cannot do."""

import datetime

from optech_sdk import InvalidInput, StoreError, config, handler, http, log, store

import marks

# Module state: with requests_per_instance > 1 it carries over, else it starts over.
calls = 0


@handler
def handle(req):
    global calls
    calls += 1
    key = req.key
    if key == "echo":
        return dict(req.inputs)
    if key == "kv":
        return kv(req.inputs.require("bucket"))
    if key == "typed":
        return {"flag": True, "count": 12, "ratio": 1.5, "list": [1, "a"], "text": "as is"}
    if key == "require":
        return {"name": req.inputs.require("name")}
    if key == "invalid":
        raise InvalidInput("that will not do")
    if key == "fail":
        raise RuntimeError("boom")
    if key == "bug":
        return {"x": {}["missing"]}
    if key == "config":
        greeting = config("greeting")
        log.info(f"pykit log line for {req.inputs.get('name')}")
        log.warn("pykit warn line")
        print("pykit printed line")
        return {"greeting": greeting or "", "absent": str(config("absent"))}
    if key == "fetch":
        resp = http.get(
            f"{config('base_url')}{req.inputs.get('path', '/')}",
            headers={"authorization": f"Bearer {config('token') or ''}"},
        )
        return {"status": resp.status, "body": resp.text(), "type": resp.headers.get("content-type", "")}
    if key == "post":
        resp = http.post(f"{config('base_url')}/items", json={"name": req.inputs.get("name")})
        return {"status": resp.status, "body": resp.text()}
    if key == "classify":
        # Which http.Error the host's answer became.
        try:
            http.get(req.inputs.require("url"), timeout=float(req.inputs.get("timeout", "30")))
        except http.Denied as error:
            return {"error": "Denied", "message": str(error), "host": error.host}
        except http.Timeout as error:
            return {"error": "Timeout", "message": str(error)}
        except http.TooLarge as error:
            return {"error": "TooLarge", "message": str(error)}
        except http.ConnectError as error:
            return {"error": "ConnectError", "message": str(error)}
        except http.Error as error:
            return {"error": "Error", "message": str(error)}
        return {"error": "none"}
    if key == "spin":
        while True:
            pass
    if key == "alloc":
        hoard = bytearray(1 << 30)  # 1 GiB, past any `memory` limit the tests set
        return {"size": len(hoard)}
    if key == "imported":
        return {"year": datetime.date(2026, 11, 28).year}
    if key == "lazy":
        import decimal  # not imported when the component was built: not there

        return {"sum": str(decimal.Decimal("0.1") + decimal.Decimal("0.2"))}
    if key == "calls":
        return {"calls": calls}
    if key == "marks":
        return marks.marks(req.inputs)
    if key == "version":
        import sys

        return {"python": sys.version.split()[0], "platform": sys.platform}
    raise InvalidInput(f"pykit has no behaviour for key {key!r}")


def kv(name):
    """Every store call once, on bucket `name`, through the host's wasi:keyvalue."""
    b = store.open(name)
    try:
        b.set("token", "abc", ttl=60)
        out = {"token": b.get("token"), "missing": str(b.get("missing"))}
        out["count"] = b.increment("count", 2)
        out["swapped"] = b.compare_and_swap("leader", None, "me")
        out["lost"] = b.compare_and_swap("leader", None, "you")
        b.set_bytes("raw", bytes([0, 255]))
        out["raw"] = ",".join(str(x) for x in b.get_bytes("raw") or b"")
        b.delete("raw")
        out["gone"] = not b.exists("raw")
        out["keys"] = ",".join(b.keys())
        return out
    except StoreError as error:
        return {"error": str(error)}
