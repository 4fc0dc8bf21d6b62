"""The HTTP surface around the hooks, and the process: health, routing, graceful stop, durability across a restart."""

from __future__ import annotations

import http.client
import json
import secrets
import sqlite3
import threading
import time
import uuid
from datetime import datetime, timezone

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from conftest import assert_accepted, assert_unauthorized
from test_hmac_presets import github_headers, push


KNOWN_STOP_ABORT = "MHD_stop_daemon() called while we have suspended connections"


def test_healthz(relay):
    r = requests.get(relay.base_url + "/healthz", timeout=5)
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_unknown_source_is_404(relay):
    r = relay.post("no-such-source", b"{}", {})
    assert r.status_code == 404, r.text
    assert r.json()["error"]


def test_unknown_path_is_404(relay):
    assert requests.get(relay.base_url + "/nope", timeout=5).status_code == 404


def test_probe_of_a_hook_url_is_200(relay):
    r = requests.get(relay.url("github"), timeout=5)
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "source": "github"}


def test_unsigned_post_is_401_with_json_reason(relay):
    reason = assert_unauthorized(relay.post("github", push(), {}))
    assert "X-Hub-Signature-256" in reason


def test_method_not_allowed(relay):
    r = requests.delete(relay.url("github"), timeout=5)
    assert r.status_code == 405
    assert "POST" in r.headers.get("Allow", "")


def test_request_id_is_echoed(relay):
    payload = push()
    headers = github_headers(relay.keys.github, payload)
    headers["X-Request-Id"] = "interop-" + uuid.uuid4().hex
    r = relay.post("github", payload, headers)
    assert_accepted(r)
    assert r.headers.get("X-Request-Id") == headers["X-Request-Id"]


def test_chunked_body_is_verified_whole(relay):
    """Transfer-Encoding: chunked (no Content-Length): the signature covers the whole body, not the first chunk."""
    payload = push()
    headers = github_headers(relay.keys.github, payload)
    chunks = (payload[i:i + 16] for i in range(0, len(payload), 16))
    r = relay.session.post(relay.url("github"), data=chunks, headers={"Content-Type": "application/json", **headers},
                           timeout=10)
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert_accepted(r)


def test_expect_100_continue(relay):
    """curl sends `Expect: 100-continue` for bodies over 1 KiB."""
    payload = json.dumps({"filler": "x" * 4000, "after": secrets.token_hex(8)}).encode()
    headers = github_headers(relay.keys.github, payload)
    conn = http.client.HTTPConnection("127.0.0.1", relay.port, timeout=10)
    try:
        conn.request("POST", "/v1/hooks/github", body=payload,
                     headers={"Content-Type": "application/json", "Expect": "100-continue", **headers})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 202, body
    assert json.loads(body)["eventId"]


def test_sigterm_under_load_loses_no_accepted_event(fresh_relay):
    """SIGTERM while requests are arriving: exit 0, and every request answered 202 is in the store."""
    r = fresh_relay
    r.start()
    payload = push()
    accepted: list[str] = []
    other: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        with requests.Session() as s:
            for i in range(200):
                if stop.is_set():
                    return
                try:
                    resp = s.post(r.url("github"), data=payload, timeout=10,
                                  headers={"Content-Type": "application/json",
                                           **github_headers(r.keys.github, payload, delivery=f"load-{n}-{i}")})
                except requests.RequestException as e:
                    with lock:
                        other.append(type(e).__name__)
                    return   # the relay has stopped listening
                with lock:
                    if resp.status_code == 202:
                        accepted.append(resp.json()["eventId"])
                    else:
                        other.append(str(resp.status_code))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(accepted) < 100 and time.monotonic() < deadline and any(t.is_alive() for t in threads):
        time.sleep(0.01)
    code = r.stop()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(accepted) >= 100
    unexpected = [o for o in other if o not in ("ConnectionError", "503")]
    assert not unexpected, unexpected
    with sqlite3.connect(r.db) as db:
        stored = {row[0] for row in db.execute("SELECT id FROM events")}
    missing = set(accepted) - stored
    assert not missing, f"{len(missing)} of {len(accepted)} accepted events are not in the store"
    # A request that arrives on a kept-alive connection once the stop has begun is answered 503 (never parked),
    # so the daemon never stops with a suspended connection (it used to abort with KNOWN_STOP_ABORT).
    assert KNOWN_STOP_ABORT not in r.log()
    assert code == 0, r.log()


def test_sigterm_exits_zero_and_events_survive_restart(fresh_relay):
    """Accepted means durable: after a graceful stop and a restart on the same store the event is there, and the
    same webhook-id is still answered as a duplicate of it."""
    r = fresh_relay
    r.start()
    payload = json.dumps({"order": {"id": "ord_" + secrets.token_hex(4), "state": "PLACED"}}).encode()
    msg_id = "msg_" + secrets.token_hex(8)
    at = datetime.now(tz=timezone.utc)
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())),
               "webhook-signature": Webhook(r.keys.standard_webhooks).sign(msg_id, at, payload.decode())}
    event_id = assert_accepted(r.post("acme", payload, headers))
    assert r.stop() == 0, r.log()

    with sqlite3.connect(r.db) as db:
        rows = db.execute("SELECT id, source, idempotency_key, body FROM events").fetchall()
    assert rows == [(event_id, "acme", msg_id, payload)]

    r.start()
    again = r.post("acme", payload, headers)
    assert again.status_code == 200, again.text
    assert again.json() == {"eventId": event_id, "duplicate": True}
    assert r.stop() == 0, r.log()


def test_bad_config_exits_2(fresh_relay, tmp_path):
    import subprocess
    bad = tmp_path / "bad.json5"
    bad.write_text('{ sources: { x: { adapter: "generic", verify: { preset: "nope" } } } }')
    p = subprocess.run([str(fresh_relay.binary), "check", "--config", str(bad)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 2
    assert "sources.x.verify.preset" in p.stderr
    ok = subprocess.run([str(fresh_relay.binary), "check", "--config", str(fresh_relay.config)], capture_output=True,
                        text=True, timeout=30, env=fresh_relay.env)
    assert ok.returncode == 0, ok.stderr
