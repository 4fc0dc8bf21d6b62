"""Tracing checked by code nobody here wrote: the real `relay` binary exports its spans over OTLP/HTTP to a local
receiver that decodes them with PyPI's `opentelemetry-proto` (the OpenTelemetry project's generated protobuf
classes), and a stand-in destination records the `traceparent` and `User-Agent` every delivery attempt carries.

Webhooks are signed with PyPI's `standardwebhooks`. What is checked: the trace id the sender gave reaches the
destination, whose parent span id is the exported attempt span's id; the ingest span's parent is the sender's
parent id and the attempt span's parent is the ingest span; names, kinds, attributes, status; service.name; a retry
(503 then 200) gives two attempt spans in the same trace; a webhook without `traceparent` starts a new trace; an
unsampled one (flags 00) is propagated but nothing of it is exported; spans still queued at SIGTERM are sent.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import tempfile
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from standardwebhooks.webhooks import Webhook

from conftest import free_port, start_relay, stop_relay, wait_for_health

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
VERSION = re.compile(r"^relay/\d+\.\d+\.\d+")


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP traces endpoint: every export decoded with opentelemetry-proto."""
    lock = threading.Lock()
    exports: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = ExportTraceServiceRequest.FromString(body)   # raises on anything that is not the message
        with Collector.lock:
            Collector.exports.append({"path": self.path, "headers": dict(self.headers), "request": request})
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass

    @classmethod
    def spans(cls) -> list[tuple[dict, Span]]:
        """Every exported span with its resource's attributes."""
        out = []
        with cls.lock:
            for e in cls.exports:
                for rs in e["request"].resource_spans:
                    resource = attributes(rs.resource.attributes)
                    for ss in rs.scope_spans:
                        for span in ss.spans:
                            out.append(({**resource, "scope": ss.scope.name}, span))
        return out

    @classmethod
    def trace(cls, trace_id: str) -> list[Span]:
        return [s for _, s in cls.spans() if s.trace_id.hex() == trace_id]


class Destination(BaseHTTPRequestHandler):
    """Records every request; `/flaky` answers its first request 503, the rest 200."""
    lock = threading.Lock()
    received: list[dict] = []
    flaky_seen = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status = 200
        with Destination.lock:
            Destination.received.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()},
                                         "body": body})
            if self.path == "/flaky":
                Destination.flaky_seen += 1
                status = 503 if Destination.flaky_seen == 1 else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass

    @classmethod
    def with_trace(cls, trace_id: str) -> list[dict]:
        with cls.lock:
            return [r for r in cls.received if r["headers"].get("traceparent", "").startswith(f"00-{trace_id}-")]


def attributes(kvs) -> dict:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in kvs}


def wait_for(what: str, condition, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


CONFIG = """{{
  server: {{ listen: "127.0.0.1:{port}", threads: 2, shutdownTimeout: "5s" }},
  admin: {{ listen: "127.0.0.1:0" }},
  store: {{ sqlite: "{db}" }},
  log: {{ level: "info" }},
  tracing: {{
    otlp: {{ endpoint: "http://127.0.0.1:{collector}/v1/traces", serviceName: "relay-interop",
             headers: {{ "X-Collector-Key": "${{env:RELAY_TEST_OTLP_KEY}}" }} }},
    sampleRatio: 1.0,
  }},
  sources: {{
    hooks: {{ adapter: "generic", verify: {{ preset: "standard-webhooks", secrets: ["${{env:RELAY_TEST_WHSEC}}"] }} }},
    retrying: {{ adapter: "generic", verify: {{ preset: "standard-webhooks", secrets: ["${{env:RELAY_TEST_WHSEC}}"] }} }},
  }},
  destinations: {{
    ok: {{ adapter: "generic", url: "http://user:pw@127.0.0.1:{dest}/ok?key=s3cret" }},
    flaky: {{ adapter: "generic", url: "http://127.0.0.1:{dest}/flaky", retry: {{ schedule: ["200ms"], jitter: "none" }} }},
  }},
  routes: [ {{ from: "hooks", to: ["ok"] }}, {{ from: "retrying", to: ["flaky"] }} ],
}}
"""


class TracedRelay:
    def __init__(self, tmp: Path):
        self.secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        self.port = free_port()
        self.collector = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
        self.destination = ThreadingHTTPServer(("127.0.0.1", 0), Destination)
        for server in (self.collector, self.destination):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        self.config = tmp / "relay.json5"
        self.config.write_text(CONFIG.format(port=self.port, db=tmp / "relay.db", collector=self.collector.server_port,
                                             dest=self.destination.server_port))
        env = dict(os.environ, RELAY_TEST_WHSEC=self.secret, RELAY_TEST_OTLP_KEY="collector-key-1")
        env.pop("RELAY_LOG_LEVEL", None)
        self.proc = start_relay(self.config, env=env)
        wait_for_health(self.proc, self.port)

    def post(self, source: str, headers: dict[str, str] | None = None, sign: bool = True) -> requests.Response:
        payload = json.dumps({"order": {"id": "ord_" + secrets.token_hex(4)}}).encode()
        msg_id = "msg_" + secrets.token_hex(12)
        now = datetime.now(tz=timezone.utc)
        signature = Webhook(self.secret).sign(msg_id, now, payload.decode()) if sign else "v1,AAAA"
        h = {"Content-Type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
             "webhook-signature": signature, **(headers or {})}
        return requests.post(f"http://127.0.0.1:{self.port}/v1/hooks/{source}", data=payload, headers=h, timeout=10)

    def stop(self) -> str:
        try:
            return stop_relay(self.proc)
        finally:
            self.collector.shutdown()
            self.destination.shutdown()


@pytest.fixture(scope="module")
def traced():
    Collector.exports, Destination.received, Destination.flaky_seen = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        r = TracedRelay(Path(tmp))
        try:
            yield r
        finally:
            if r.proc.poll() is None:
                r.stop()


def ingest_and_attempts(spans: list[Span]) -> tuple[Span, list[Span]]:
    servers = [s for s in spans if s.kind == Span.SPAN_KIND_SERVER]
    clients = [s for s in spans if s.kind == Span.SPAN_KIND_CLIENT]
    assert len(servers) == 1, spans
    return servers[0], clients


def test_traceparent_reaches_the_destination_and_spans_are_exported(traced):
    r = traced.post("hooks", {"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "tracestate": "rojo=00f067aa0ba902b7"})
    assert r.status_code == 202, r.text
    event_id = r.json()["eventId"]
    got = wait_for("the delivery", lambda: Destination.with_trace(TRACE_ID))
    assert len(got) == 1
    headers = got[0]["headers"]
    m = TRACEPARENT.match(headers["traceparent"])
    assert m and m.group(1) == TRACE_ID and m.group(3) == "01", headers
    assert m.group(2) != PARENT_ID
    assert headers.get("tracestate") == "rojo=00f067aa0ba902b7"
    assert VERSION.match(headers["user-agent"]), headers
    assert b"trace" not in got[0]["body"], "the canonical body carries no trace context"

    spans = wait_for("both spans", lambda: (lambda s: s if len(s) >= 2 else None)(Collector.trace(TRACE_ID)))
    ingest, attempts = ingest_and_attempts(spans)
    assert len(attempts) == 1
    attempt = attempts[0]
    # The ingest span: a SERVER child of the sender's span, ended with the 202 answer.
    assert ingest.parent_span_id.hex() == PARENT_ID
    assert ingest.name == "POST /v1/hooks/{source}"
    assert ingest.trace_state == "rojo=00f067aa0ba902b7"
    a = attributes(ingest.attributes)
    assert a["relay.source"] == "hooks" and a["relay.event_id"] == event_id
    assert a["http.request.method"] == "POST" and a["url.path"] == "/v1/hooks/hooks"
    assert a["http.response.status_code"] == 202
    assert ingest.status.code == Status.STATUS_CODE_UNSET
    assert 0 < ingest.start_time_unix_nano <= ingest.end_time_unix_nano
    assert abs(ingest.start_time_unix_nano / 1e9 - time.time()) < 120
    assert ingest.flags & 0x300 == 0x300, "the parent is marked remote"
    # The attempt span: a CLIENT child of the ingest span, the very span the destination was told of.
    assert attempt.parent_span_id == ingest.span_id
    assert attempt.span_id.hex() == m.group(2)
    assert attempt.name == "deliver ok"
    a = attributes(attempt.attributes)
    assert a["relay.destination"] == "ok" and a["relay.delivery_id"].startswith("dlv_") and a["relay.attempt"] == 1
    assert a["http.request.method"] == "POST" and a["server.address"] == "127.0.0.1"
    assert a["server.port"] == traced.destination.server_port
    assert a["http.response.status_code"] == 200
    assert attempt.status.code == Status.STATUS_CODE_UNSET
    assert ingest.end_time_unix_nano <= attempt.start_time_unix_nano <= attempt.end_time_unix_nano
    # Never the URL's userinfo or query.
    text = str(attempt) + str(ingest)
    assert "s3cret" not in text and "pw" not in a["server.address"]

    resources = [res for res, s in Collector.spans() if s.trace_id.hex() == TRACE_ID]
    assert all(res["service.name"] == "relay-interop" and VERSION.match("relay/" + res["service.version"])
               and res["scope"] == "relay" for res in resources), resources
    with Collector.lock:
        export = Collector.exports[-1]
    assert export["path"] == "/v1/traces"
    assert export["headers"]["Content-Type"] == "application/x-protobuf"
    assert export["headers"]["X-Collector-Key"] == "collector-key-1"


def test_a_retry_gives_two_attempt_spans_in_one_trace(traced):
    trace_id = secrets.token_hex(16)
    r = traced.post("retrying", {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
    assert r.status_code == 202, r.text
    got = wait_for("two attempts", lambda: (lambda g: g if len(g) == 2 else None)(Destination.with_trace(trace_id)))
    sent = [TRACEPARENT.match(g["headers"]["traceparent"]).group(2) for g in got]
    assert len(set(sent)) == 2, "each attempt is a span of its own"
    spans = wait_for("three spans", lambda: (lambda s: s if len(s) >= 3 else None)(Collector.trace(trace_id)))
    ingest, attempts = ingest_and_attempts(spans)
    attempts.sort(key=lambda s: attributes(s.attributes)["relay.attempt"])
    assert [attributes(s.attributes)["relay.attempt"] for s in attempts] == [1, 2]
    assert [s.span_id.hex() for s in attempts] == sent
    assert all(s.parent_span_id == ingest.span_id and s.name == "deliver flaky" for s in attempts)
    first, second = attempts
    assert attributes(first.attributes)["http.response.status_code"] == 503
    assert first.status.code == Status.STATUS_CODE_ERROR and "503" in first.status.message
    assert attributes(second.attributes)["http.response.status_code"] == 200
    assert second.status.code == Status.STATUS_CODE_UNSET
    assert attributes(first.attributes)["relay.delivery_id"] == attributes(second.attributes)["relay.delivery_id"]


def test_a_webhook_without_traceparent_starts_a_trace(traced):
    r = traced.post("hooks", {"traceparent": "00-not-a-valid-header-01"})
    assert r.status_code == 202, r.text
    event_id = r.json()["eventId"]

    def mine():
        for _, s in Collector.spans():
            if s.kind == Span.SPAN_KIND_SERVER and attributes(s.attributes).get("relay.event_id") == event_id:
                return s
        return None
    ingest = wait_for("the new trace's ingest span", mine)
    trace_id = ingest.trace_id.hex()
    assert len(trace_id) == 32 and trace_id != "0" * 32 and trace_id != TRACE_ID
    assert ingest.parent_span_id == b"", "a root span"
    got = wait_for("the delivery", lambda: Destination.with_trace(trace_id))
    m = TRACEPARENT.match(got[0]["headers"]["traceparent"])
    assert m.group(3) == "01", "sampled: sampleRatio 1.0"
    attempt = wait_for("the attempt span", lambda: [s for s in Collector.trace(trace_id) if s.kind == Span.SPAN_KIND_CLIENT])
    assert attempt[0].parent_span_id == ingest.span_id and attempt[0].span_id.hex() == m.group(2)


def test_an_unsampled_trace_is_propagated_but_not_exported(traced):
    unsampled = secrets.token_hex(16)
    r = traced.post("hooks", {"traceparent": f"00-{unsampled}-{secrets.token_hex(8)}-00"})
    assert r.status_code == 202, r.text
    got = wait_for("the delivery", lambda: Destination.with_trace(unsampled))
    assert got[0]["headers"]["traceparent"].endswith("-00")
    # A sampled webhook after it: once its spans are exported, any of the unsampled one would have been too (the
    # exporter sends in order).
    after = secrets.token_hex(16)
    assert traced.post("hooks", {"traceparent": f"00-{after}-{secrets.token_hex(8)}-01"}).status_code == 202
    wait_for("the later trace's spans", lambda: len(Collector.trace(after)) >= 2)
    assert Collector.trace(unsampled) == []


def test_a_refused_webhook_is_an_error_span(traced):
    trace_id = secrets.token_hex(16)
    r = traced.post("hooks", {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}, sign=False)
    assert r.status_code == 401, r.text
    spans = wait_for("the ingest span", lambda: Collector.trace(trace_id))
    assert len(spans) == 1 and spans[0].kind == Span.SPAN_KIND_SERVER
    assert attributes(spans[0].attributes)["http.response.status_code"] == 401
    assert spans[0].status.code == Status.STATUS_CODE_ERROR and spans[0].status.message.startswith("unauthorized")


def test_spans_queued_at_sigterm_are_sent(traced):
    trace_id = secrets.token_hex(16)
    assert traced.post("hooks", {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}).status_code == 202
    wait_for("the delivery", lambda: Destination.with_trace(trace_id), timeout=10)
    log = traced.stop()     # exits 0
    spans = Collector.trace(trace_id)
    assert {s.kind for s in spans} == {Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT}, log
    assert "collector-key-1" not in log
