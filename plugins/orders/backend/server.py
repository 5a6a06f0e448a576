#!/usr/bin/env python3
"""The `orders` examples' stand-in back end: an orders API behind OAuth 2.

    ORDERS_CLIENT_SECRET=demo-secret python3 plugins/orders/backend/server.py

- `POST /oauth/token` is the client-credentials grant (RFC 6749, 4.4): client
  `optech` with the secret in ORDERS_CLIENT_SECRET, sent as HTTP Basic; it
  answers a new bearer token that lives `--token-ttl` seconds (default 3600).
- `GET /orders/<id>` answers `orders/<id>` (JSON) of this folder to a request
  with a live token, 401 without one, 404 for an unknown order.
- `GET /stats` counts tokens issued and orders served, to see a cache work.

Standard library only. Prints `listening on http://127.0.0.1:<port>` once it
listens (`--port 0` picks a free port).
"""

import argparse
import base64
import json
import os
import re
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote_plus

ORDERS = Path(__file__).resolve().parent / "orders"
CLIENT_ID = "optech"


class State:
    def __init__(self, secret, ttl):
        self.secret = secret
        self.ttl = ttl
        self.tokens = {}  # token -> expiry (monotonic seconds)
        self.issued = 0
        self.served = 0
        self.lock = threading.Lock()

    def issue(self):
        token = secrets.token_hex(16)
        with self.lock:
            now = time.monotonic()
            self.tokens = {t: e for t, e in self.tokens.items() if e > now}
            self.tokens[token] = now + self.ttl
            self.issued += 1
        return token

    def live(self, token):
        with self.lock:
            expiry = self.tokens.get(token)
            return expiry is not None and expiry > time.monotonic()


def client_of(header):
    """The (id, secret) of a Basic authorization header, form-decoded."""
    if not header or not header.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:], validate=True).decode()
    except ValueError:
        return None
    client, sep, secret = decoded.partition(":")
    return (unquote_plus(client), unquote_plus(secret)) if sep else None


def handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, status, body, extra=()):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for name, value in extra:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            length = int(self.headers.get("content-length") or 0)
            form = self.rfile.read(length).decode(errors="replace")
            if self.path != "/oauth/token":
                return self.answer(404, {"error": "not_found"})
            if "grant_type=client_credentials" not in form.split("&"):
                return self.answer(400, {"error": "unsupported_grant_type"})
            if client_of(self.headers.get("authorization")) != (CLIENT_ID, state.secret):
                challenge = [("www-authenticate", 'Basic realm="orders"')]
                return self.answer(401, {"error": "invalid_client"}, challenge)
            token = state.issue()
            self.answer(
                200,
                {"access_token": token, "token_type": "Bearer", "expires_in": state.ttl},
                [("cache-control", "no-store")],
            )

        def do_GET(self):
            if self.path == "/stats":
                with state.lock:
                    return self.answer(200, {"tokens_issued": state.issued, "orders_served": state.served})
            match = re.fullmatch(r"/orders/([A-Za-z0-9_-]+)", self.path)
            if not match:
                return self.answer(404, {"error": "not_found"})
            auth = self.headers.get("authorization") or ""
            if not (auth.startswith("Bearer ") and state.live(auth[7:])):
                return self.answer(401, {"error": "invalid_token"}, [("www-authenticate", "Bearer")])
            order = ORDERS / match.group(1)
            if not order.is_file():
                return self.answer(404, {"error": "no such order"})
            with state.lock:
                state.served += 1
            self.answer(200, json.loads(order.read_text()))

        def log_message(self, *args):
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token-ttl", type=int, default=3600, help="seconds a token lives")
    args = parser.parse_args()
    secret = os.environ.get("ORDERS_CLIENT_SECRET")
    if not secret:
        sys.exit("set ORDERS_CLIENT_SECRET: the secret the plugin's client_secret must match")
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(State(secret, args.token_ttl)))
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
