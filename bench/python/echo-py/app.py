"""The benchmark's Python echo plugin (contenders h and h2): answers with its
inputs, like plugins/echo does in Rust."""

from optech_sdk import handler


@handler
def handle(req):
    return dict(req.inputs)
