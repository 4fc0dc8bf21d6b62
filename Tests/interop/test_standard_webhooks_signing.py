"""Outbound Standard Webhooks signing checked by code nobody here wrote: the real `relay` binary delivers to a
generic destination with `auth: { standardWebhooks: { secrets: [new, old] } }`, and PyPI's `standardwebhooks`
(`Webhook(secret).verify(body, headers)`) accepts what arrives with EACH configured secret, refuses it after a
one-byte change of the body or of the timestamp, and sees the same `webhook-id` with a fresh `webhook-timestamp` on
a retried delivery (the destination answers 503 first, then 200).
"""

from __future__ import annotations

import base64
import os
import secrets
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from conftest import free_port, shop_relay_config, start_relay, stop_relay, wait_for_health


class FlakyDestination(BaseHTTPRequestHandler):
    """Records every request; answers 503 to the first, 200 to the rest."""

    received: list = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with FlakyDestination.lock:
            FlakyDestination.received.append({"at": time.time(), "headers": dict(self.headers.items()), "body": body})
            first = len(FlakyDestination.received) == 1
        status, payload = (503, b'{"error":"try later"}') if first else (200, b'{"ok":true}')
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:  # quiet
        pass


DESTINATION = """
    "signed": {{ adapter: "generic", url: "http://127.0.0.1:{sink}/hooks",
                retry: {{ schedule: ["1s"], jitter: "none" }},
                auth: {{ standardWebhooks: {{ secrets: ["${{env:WHSEC_NEW}}", "${{env:WHSEC_OLD}}"] }} }} }},
"""


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def one_byte_changed(data: str, index: int) -> str:
    c = data[index]
    replacement = ("1" if c == "0" else "0") if c.isdigit() else ("a" if c != "a" else "b")
    return data[:index] + replacement + data[index + 1:]


@pytest.fixture(scope="module")
def delivered():
    """Runs the relay, posts one webhook, returns (secrets, the requests the destination received)."""
    FlakyDestination.received = []
    keys = {"WHSEC_NEW": new_secret(), "WHSEC_OLD": new_secret()}
    sink_port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", sink_port), FlakyDestination)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "relay.json5"
        config.write_text(shop_relay_config(port, Path(tmp) / "relay.db", DESTINATION.format(sink=sink_port), ["signed"]))
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        env.update(keys)
        proc = start_relay(config, env=env)
        try:
            wait_for_health(proc, port)
            r = requests.post(f"http://127.0.0.1:{port}/v1/hooks/shop",
                              json={"id": "ORD-42", "state": "shipped", "note": "caf\u00e9 \u2713"})
            assert r.status_code == 202, r.text
            deadline = time.time() + 10
            while len(FlakyDestination.received) < 2:
                assert time.time() < deadline, f"only {len(FlakyDestination.received)} requests arrived"
                time.sleep(0.05)
        finally:
            stderr = stop_relay(proc)
            server.shutdown()
    for value in keys.values():
        assert value not in stderr and value[len("whsec_"):] not in stderr
    return keys, list(FlakyDestination.received)


def test_each_secret_verifies_and_tampering_is_refused(delivered):
    keys, received = delivered
    assert len(received) == 2
    for request in received:
        headers, body = request["headers"], request["body"]
        assert len(headers["webhook-signature"].split(" ")) == 2
        for secret in keys.values():
            payload = Webhook(secret).verify(body, headers)
            assert payload["subject"] == {"orderId": "ORD-42"} and payload["status"] == "shipped"
            # One byte of the body changed: refused.
            for i in (0, len(body) // 2, len(body) - 1):
                changed = bytearray(body)
                changed[i] = ord("x") if changed[i] != ord("x") else ord("y")
                with pytest.raises(WebhookVerificationError):
                    Webhook(secret).verify(bytes(changed), headers)
            # One byte of the timestamp changed (its last digit, so it stays within the 5-minute tolerance): refused.
            ts = headers["webhook-timestamp"]
            with pytest.raises(WebhookVerificationError):
                Webhook(secret).verify(body, {**headers, "webhook-timestamp": one_byte_changed(ts, len(ts) - 1)})
            # The id is signed too.
            with pytest.raises(WebhookVerificationError):
                Webhook(secret).verify(body, {**headers, "webhook-id": headers["webhook-id"] + "x"})
        # A secret that is not configured: refused.
        with pytest.raises(WebhookVerificationError):
            Webhook(new_secret()).verify(body, headers)


def test_retry_keeps_the_id_and_refreshes_the_timestamp(delivered):
    _, received = delivered
    first, second = received
    assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
    assert first["headers"]["webhook-id"] == "msg_" + first["headers"]["Idempotency-Key"]
    assert first["body"] == second["body"]
    t1, t2 = int(first["headers"]["webhook-timestamp"]), int(second["headers"]["webhook-timestamp"])
    assert t2 > t1, (t1, t2)
    for request, ts in ((first, t1), (second, t2)):
        assert abs(request["at"] - ts) < 2, (request["at"], ts)
    assert first["headers"]["webhook-signature"] != second["headers"]["webhook-signature"]
