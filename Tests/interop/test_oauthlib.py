"""OAuth2 client credentials checked by code nobody here wrote: the real `relay` binary gets its tokens from a token
endpoint built on PyPI's `oauthlib` (`BackendApplicationServer`, RFC 6749 §4.4, with a `RequestValidator` that
authenticates the client), with `clientAuth: "basic"` (client_secret_basic) and `"body"` (client_secret_post); the
protected API on the same Python server checks the bearer token with oauthlib's resource endpoint, and must see
exactly the token oauthlib issued.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from oauthlib.oauth2 import BackendApplicationServer, RequestValidator

from conftest import free_port, shop_relay_config, start_relay, stop_relay, wait_for_health

SCOPES = ["orders:write", "orders:read"]
# destination name -> (clientAuth, client id, client secret)
CLIENTS = {
    "basic": ("basic", "relay-basic", "s3cr3t:with/odd+chars " + secrets.token_hex(8)),
    "body": ("body", "relay-body", "body-" + secrets.token_urlsafe(16)),
}
# a destination whose secret the authorization server does not know: oauthlib answers 401 invalid_client
WRONG = ("basic", "relay-basic", "not-the-secret")


class Validator(RequestValidator):
    """What an authorization server knows: the clients, their secrets, the tokens it issued."""

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()
        self.auth_methods: list[tuple[str, str]] = []   # (client id, "basic" | "body")
        self.issued: dict[str, dict] = {}               # access token -> oauthlib's token dict + client id
        self.failures: list[str] = []
        self.refused: list[tuple[str, str]] = []

    # -- the token endpoint --------------------------------------------------------------------------------------
    def client_authentication_required(self, request, *args, **kwargs):
        return True

    def authenticate_client(self, request, *args, **kwargs):
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            method = "basic"
            client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
            client_id, client_secret = urllib.parse.unquote_plus(client_id), urllib.parse.unquote_plus(client_secret)
            if request.client_secret:   # both at once is not allowed (RFC 6749 §2.3.1)
                self.failures.append(f"{client_id}: Basic and client_secret in the body")
                return False
        else:
            method = "body"
            client_id, client_secret = request.client_id, request.client_secret
        known = {cid: secret for _, cid, secret in CLIENTS.values()}
        if client_secret == WRONG[2]:
            self.refused.append((client_id, method))
            return False
        if client_id not in known or not secrets.compare_digest(known[client_id], client_secret or ""):
            self.failures.append(f"{client_id!r}: bad client credentials ({method})")
            return False
        with self.lock:
            self.auth_methods.append((client_id, method))
        request.client = type("Client", (), {"client_id": client_id})()
        request.client_id = client_id
        return True

    def validate_grant_type(self, client_id, grant_type, client, request, *args, **kwargs):
        return grant_type == "client_credentials"

    def validate_scopes(self, client_id, scopes, client, request, *args, **kwargs):
        ok = sorted(scopes) == sorted(SCOPES)
        if not ok:
            self.failures.append(f"{client_id}: scopes {scopes}")
        return ok

    def get_default_scopes(self, client_id, request, *args, **kwargs):
        return []

    def save_bearer_token(self, token, request, *args, **kwargs):
        with self.lock:
            self.issued[token["access_token"]] = {**token, "client_id": request.client_id,
                                                  "scopes": list(request.scopes)}

    # -- the resource endpoint -----------------------------------------------------------------------------------
    def validate_bearer_token(self, token, scopes, request):
        known = self.issued.get(token or "")
        if known is None or not set(scopes) <= set(known["scopes"]):
            return False
        request.client_id = known["client_id"]
        request.access_token = token
        return True


class Provider(BaseHTTPRequestHandler):
    """POST /oauth/token: oauthlib's token endpoint; POST /api/orders/<name>: the API, checked by oauthlib."""

    validator: Validator
    server_: BackendApplicationServer
    calls: list = []
    token_requests: list = []
    token_answers: list = []

    def _reply(self, status: int, headers: dict, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if "Content-Type" not in headers:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        uri = f"http://127.0.0.1:{self.server.server_port}{self.path}"
        headers = dict(self.headers.items())
        if self.path == "/oauth/token":
            Provider.token_requests.append((headers, body))
            h, b, status = Provider.server_.create_token_response(uri, "POST", body, headers)
            Provider.token_answers.append((status, b))
            self._reply(status, h, b)
            return
        valid, request = Provider.server_.verify_request(uri, "POST", body, headers, scopes=["orders:write"])
        Provider.calls.append({"name": self.path.rsplit("/", 1)[-1], "authorization": self.headers.get("Authorization"),
                               "valid": valid, "client_id": getattr(request, "client_id", None), "body": body})
        if not valid:
            self._reply(401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}, '{"error":"invalid_token"}')
            return
        self._reply(200, {}, '{"ok":true}')

    def log_message(self, *args) -> None:  # quiet
        pass


def test_client_credentials_with_oauthlib_basic_and_body(tmp_path: Path):
    validator = Validator()
    Provider.validator, Provider.server_ = validator, BackendApplicationServer(validator)
    Provider.calls, Provider.token_requests, Provider.token_answers = [], [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    provider_port = server.server_port
    threading.Thread(target=server.serve_forever, daemon=True).start()

    port = free_port()
    env = dict(os.environ)
    env.pop("RELAY_LOG_LEVEL", None)
    destinations = []
    for name, (client_auth, client_id, secret) in {**CLIENTS, "wrong": WRONG}.items():
        env[f"RELAY_TEST_OAUTH_SECRET_{name.upper()}"] = secret
        destinations.append(
            f'"{name}": {{ adapter: "generic", url: "http://127.0.0.1:{provider_port}/api/orders/{name}", '
            f'retry: {{ schedule: ["1s"] }}, '
            f'auth: {{ oauth2: {{ tokenURL: "http://127.0.0.1:{provider_port}/oauth/token", clientId: "{client_id}", '
            f'clientSecret: "${{env:RELAY_TEST_OAUTH_SECRET_{name.upper()}}}", clientAuth: "{client_auth}", '
            f'scope: {json.dumps(SCOPES)} }} }} }},')
    config = tmp_path / "relay.json5"
    config.write_text(shop_relay_config(port, tmp_path / 'relay.db', "\n".join(destinations), list(CLIENTS) + ["wrong"]))
    proc = start_relay(config, env=env)
    try:
        wait_for_health(proc, port)
        for i in range(2):   # the second event reuses the cached tokens
            r = requests.post(f"http://127.0.0.1:{port}/v1/hooks/shop", json={"id": f"ORD-{i}", "state": "shipped"},
                              timeout=10)
            assert r.status_code == 202, r.text
        deadline = time.time() + 15
        while sum(1 for c in Provider.calls if c["valid"]) < 2 * len(CLIENTS) or not validator.refused:
            assert time.time() < deadline, f"arrived: {Provider.calls}; failures: {validator.failures}"
            time.sleep(0.05)
    finally:
        err = stop_relay(proc)
        server.shutdown()
        server.server_close()

    assert validator.failures == []
    # The wrong secret was refused by oauthlib (401 invalid_client) and never reached the API.
    assert validator.refused and set(validator.refused) == {("relay-basic", "basic")}
    assert any(status == 401 and json.loads(b).get("error") == "invalid_client" for status, b in Provider.token_answers)
    assert not any(c["name"] == "wrong" for c in Provider.calls)
    assert all(c["valid"] for c in Provider.calls), Provider.calls
    # One token per destination, each authenticated the configured way.
    assert sorted(validator.auth_methods) == [("relay-basic", "basic"), ("relay-body", "body")]
    issued_by_client = {t["client_id"]: token for token, t in validator.issued.items()}
    assert len(validator.issued) == 2 and sorted(issued_by_client) == ["relay-basic", "relay-body"]
    for t in validator.issued.values():
        assert t["token_type"] == "Bearer" and t["scopes"] == SCOPES
    for headers, body in Provider.token_requests:
        form = dict(urllib.parse.parse_qsl(body, strict_parsing=True))
        assert form["grant_type"] == "client_credentials" and form["scope"] == " ".join(SCOPES), form
        assert headers.get("Content-Type") == "application/x-www-form-urlencoded", headers
        if "Authorization" in headers:
            assert "client_secret" not in form and form.get("client_id") in (None, "relay-basic"), form
        else:
            assert form["client_id"] == "relay-body" and form["client_secret"] == CLIENTS["body"][2]
    # The API saw exactly the token oauthlib issued to each destination's client.
    for c in Provider.calls:
        client_id = CLIENTS[c["name"]][1]
        assert c["authorization"] == f"Bearer {issued_by_client[client_id]}", c
        assert c["client_id"] == client_id
    # No secret in what the relay logged.
    for _, _, secret in (*CLIENTS.values(), WRONG):
        assert secret not in err
