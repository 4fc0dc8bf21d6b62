"""Destination templates checked by code nobody here wrote: the real `relay` binary translates a webhook whose
values are full of characters that need escaping, and Python's own `urllib.parse` and `json` read back exactly the
values that were sent: percent-encoding in the URL path, form encoding, JSON escaping in a text template.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from conftest import free_port, shop_relay_config, start_relay, stop_relay, wait_for_health


class Recorder(BaseHTTPRequestHandler):
    received: list = []

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        Recorder.received.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "11")
        self.end_headers()
        self.wfile.write(b'{"ok":true}')

    do_POST = do_PUT = _record

    def log_message(self, *args) -> None:  # quiet
        pass


DESTINATIONS = """
    "form": {{ adapter: "generic", method: "PUT", url: "http://127.0.0.1:{sink}/codes/${{subject.orderId}}",
              form: {{ note: "${{attributes.note}}", amount: "${{attributes.amount}}", status: "${{status}}" }} }},
    "text": {{ adapter: "generic", url: "http://127.0.0.1:{sink}/text?id=${{subject.orderId}}",
              body: "{{\\"note\\":\\"${{attributes.note}}\\",\\"id\\":\\"${{subject.orderId}}\\",\\"amount\\":${{attributes.amount}}}}" }},
"""


def test_escaping_read_back_by_python():
    Recorder.received = []
    sink_port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", sink_port), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "relay.json5"
        config.write_text(shop_relay_config(port, Path(tmp) / "relay.db", DESTINATIONS.format(sink=sink_port), ["form", "text"],
                                            shop_map='map: { subject: { orderId: "$.id" }, status: "$.state", '
                                                     'attributes: { note: "$.note", amount: "$.amount" } }'))
        proc = start_relay(config)
        try:
            wait_for_health(proc, port)
            order_id = "A/B ?&=#%ü ..x"
            note = 'He said "hi"\n\tand left & paid=1 + 2 ✓ \\ \u0001'
            r = requests.post(f"http://127.0.0.1:{port}/v1/hooks/shop",
                              json={"id": order_id, "state": "shipped", "note": note, "amount": 12.5})
            assert r.status_code == 202, r.text
            deadline = time.time() + 10
            while len(Recorder.received) < 2:
                assert time.time() < deadline, f"only {len(Recorder.received)} requests arrived"
                time.sleep(0.05)
        finally:
            stop_relay(proc)
            server.shutdown()

    by_path = {r["path"].split("?")[0].split("/")[1]: r for r in Recorder.received}
    form, text = by_path["codes"], by_path["text"]

    # The URL path segment: one segment (no raw '/', '?', '#'), decoding to the id.
    raw_segment = form["path"][len("/codes/"):]
    assert "/" not in raw_segment and "?" not in raw_segment and "#" not in raw_segment
    assert urllib.parse.unquote(raw_segment) == order_id
    # The form body, as Python's form parser reads it.
    assert form["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    fields = dict(urllib.parse.parse_qsl(form["body"].decode(), keep_blank_values=True, strict_parsing=True))
    assert fields == {"note": note, "amount": "12.5", "status": "shipped"}
    # The text template's JSON body, as Python's JSON parser reads it; the query value, as its query parser does.
    assert text["method"] == "POST"
    assert json.loads(text["body"]) == {"note": note, "id": order_id, "amount": 12.5}
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(text["path"]).query) == {"id": [order_id]}
