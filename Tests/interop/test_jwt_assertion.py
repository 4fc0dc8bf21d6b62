"""OAuth2 `private_key_jwt` checked by code nobody here wrote: the real `relay` binary fetches tokens from a Python
token endpoint, authenticating with RS256, PS256 and ES256 client assertions signed by keys that PyPI's
`cryptography` generated; PyJWT verifies each assertion (signature, iss, sub, aud, exp, iat, jti) the way an
authorization server would, and the destination sees the issued token as `Authorization: Bearer`.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conftest import free_port, shop_relay_config, start_relay, stop_relay, wait_for_health

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# destination name -> (alg, key kind, PEM format of the private key file)
CASES = {
    "rs": ("RS256", "rsa", serialization.PrivateFormat.PKCS8),
    "ps": ("PS256", "rsa", serialization.PrivateFormat.TraditionalOpenSSL),
    "es": ("ES256", "ec", serialization.PrivateFormat.TraditionalOpenSSL),  # SEC1: BEGIN EC PRIVATE KEY
    "es8": ("ES256", "ec", serialization.PrivateFormat.PKCS8),
}


class Provider(BaseHTTPRequestHandler):
    """POST /token/<name>: a token endpoint that checks the assertion with PyJWT; PUT /orders/<name>: the API."""

    public_keys: dict = {}
    port = 0
    assertions: dict = {}
    errors: list = []
    issued: dict = {}
    calls: list = []

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_POST(self) -> None:
        name = self.path.rsplit("/", 1)[-1]
        form = dict(urllib.parse.parse_qsl(self._body().decode(), strict_parsing=True))
        alg = CASES[name][0]
        client_id = f"relay-{name}"
        try:
            assert self.headers.get("Content-Type") == "application/x-www-form-urlencoded", self.headers
            assert form["grant_type"] == "client_credentials", form
            assert form["client_assertion_type"] == ASSERTION_TYPE, form
            assert form.get("client_id") == client_id, form
            assert "client_secret" not in form and "Authorization" not in self.headers
            assertion = form["client_assertion"]
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, Provider.public_keys[name], algorithms=[alg],
                                audience=f"http://127.0.0.1:{Provider.port}/token/{name}", issuer=client_id,
                                options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]})
            Provider.assertions[name] = (header, claims)
        except Exception as e:  # recorded, and refused as an authorization server would
            Provider.errors.append(f"{name}: {e!r}")
            self._reply(401, {"error": "invalid_client", "error_description": str(e)})
            return
        token = f"tok-{name}-" + secrets.token_hex(8)
        Provider.issued[name] = token
        self._reply(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    def do_PUT(self) -> None:
        self._body()
        name = self.path.rsplit("/", 1)[-1]
        Provider.calls.append((name, self.headers.get("Authorization")))
        self._reply(200, {"ok": True})

    def log_message(self, *args) -> None:  # quiet
        pass


def make_key(kind: str):
    return rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa" \
        else ec.generate_private_key(ec.SECP256R1())


def test_private_key_jwt_assertions_verify_with_pyjwt():
    provider_port = free_port()
    Provider.port = provider_port
    Provider.public_keys, Provider.assertions, Provider.errors, Provider.issued, Provider.calls = {}, {}, [], {}, []
    server = ThreadingHTTPServer(("127.0.0.1", provider_port), Provider)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        destinations = []
        for name, (alg, kind, fmt) in CASES.items():
            key = make_key(kind)
            key_file = Path(tmp) / f"{name}.pem"
            key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))
            Provider.public_keys[name] = key.public_key()
            destinations.append(
                f'"{name}": {{ adapter: "generic", method: "PUT", url: "http://127.0.0.1:{provider_port}/orders/{name}", '
                f'auth: {{ oauth2: {{ tokenURL: "http://127.0.0.1:{provider_port}/token/{name}", clientId: "relay-{name}", '
                f'assertion: {{ keyFile: "{key_file}", alg: "{alg}", kid: "kid-{name}" }} }} }} }},')
        config = Path(tmp) / "relay.json5"
        config.write_text(shop_relay_config(port, Path(tmp) / 'relay.db', "\n".join(destinations), list(CASES)))
        proc = start_relay(config)
        try:
            wait_for_health(proc, port)
            before = int(time.time())
            r = requests.post(f"http://127.0.0.1:{port}/v1/hooks/shop", json={"id": "ORD-1", "state": "shipped"})
            assert r.status_code == 202, r.text
            deadline = time.time() + 10
            while len(Provider.calls) < len(CASES) and not Provider.errors:
                assert time.time() < deadline, f"only {Provider.calls} arrived"
                time.sleep(0.05)
        finally:
            stop_relay(proc)
            server.shutdown()

    assert Provider.errors == []
    assert sorted(Provider.assertions) == sorted(CASES)
    for name, (alg, _, _) in CASES.items():
        header, claims = Provider.assertions[name]
        assert header == {"alg": alg, "typ": "JWT", "kid": f"kid-{name}"}
        assert claims["sub"] == claims["iss"] == f"relay-{name}"
        assert claims["exp"] - claims["iat"] == 60
        assert before - 1 <= claims["iat"] <= before + 10
        assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    assert len({claims["jti"] for _, claims in Provider.assertions.values()}) == len(CASES)
    assert sorted(Provider.calls) == sorted((name, f"Bearer {Provider.issued[name]}") for name in CASES)
