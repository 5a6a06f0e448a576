"""Contender (i) of optech-bench: the FastAPI app a Python team would write
instead of an optech plugin. It does the host's work for an echo: checks the
request's HMAC signature over the raw body, answers the inputs as data, and
signs the answer. Run by the bench with one uvicorn worker:

    uvicorn fastapi_echo:app --host 127.0.0.1 --port PORT --workers 1
"""

import hashlib
import hmac
import json
import os

from fastapi import FastAPI, Request, Response

SECRET = os.environ["OPTECH_CLIENT_SECRET"].encode()

app = FastAPI()


def signed(status: int, answer: dict) -> Response:
    body = json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()
    signature = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    return Response(
        body,
        status_code=status,
        media_type="application/json",
        headers={"x-optech-signature": signature},
    )


def error(status: int, code: str, message: str) -> Response:
    return signed(status, {"error": {"code": code, "message": message}})


@app.post("/")
async def data_request(request: Request) -> Response:
    body = await request.body()
    expected = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("x-optech-signature", "")):
        return error(401, "invalid_signature", "the signature does not match the body")
    try:
        envelope = json.loads(body)
        key, inputs = envelope["key"], envelope.get("inputs", {})
    except (ValueError, KeyError, TypeError):
        return error(400, "invalid_request", "not a data request")
    if key != "echo" or not isinstance(inputs, dict):
        return error(404, "unknown_key", "no such key")
    data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in inputs.items()}
    return signed(200, {"data": data})
