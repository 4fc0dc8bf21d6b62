"""The admin API's /metrics read by the Prometheus project's own Python client parser (`prometheus_client`): the
text must parse, families must have the declared types, histograms their buckets, and the counts must match what
the test did.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, start_relay, stop_relay, wait_for_health

CONFIG = """{{
  server: {{ listen: "127.0.0.1:{port}", threads: 2, shutdownTimeout: "3s" }},
  admin: {{ listen: "127.0.0.1:{admin}", token: "${{env:ADMIN_TOKEN}}" }},
  store: {{ sqlite: "{db}" }},
  log: {{ level: "warn" }},
  sources: {{ "shop \\"one\\"": {{ adapter: "generic", verify: {{ none: true }} }} }},
  destinations: {{ "down": {{ adapter: "generic", url: "http://127.0.0.1:{closed}/x", retry: {{ schedule: ["1h"] }} }} }},
  routes: [ {{ from: "shop \\"one\\"", to: ["down"] }} ],
}}
"""


def test_metrics_parse_with_prometheus_client():
    port, admin, closed = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "relay.json5"
        config.write_text(CONFIG.format(port=port, admin=admin, closed=closed, db=Path(tmp) / "relay.db"))
        proc = start_relay(config, env={"ADMIN_TOKEN": "t0ken-metrics", "PATH": "/usr/bin:/bin"})
        try:
            wait_for_health(proc, port)
            source = requests.utils.quote('shop "one"', safe="")
            for i in range(3):
                r = requests.post(f"http://127.0.0.1:{port}/v1/hooks/{source}", json={"n": i})
                assert r.status_code == 202, r.text
            assert requests.post(f"http://127.0.0.1:{port}/v1/hooks/{source}", data=b"{bad",
                                 headers={"Content-Type": "application/json"}).status_code == 400
            assert requests.get(f"http://127.0.0.1:{admin}/metrics").status_code == 401
            text = requests.get(f"http://127.0.0.1:{admin}/metrics", headers={"Authorization": "Bearer t0ken-metrics"}).text
        finally:
            stop_relay(proc)

    families = {f.name: f for f in text_string_to_metric_families(text)}
    # prometheus_client strips `_total` from counter family names.
    assert families["relay_webhooks_received"].type == "counter"
    received = {s.labels["source"]: s.value for s in families["relay_webhooks_received"].samples if s.name.endswith("_total")}
    assert received == {'shop "one"': 4.0}
    committed = [s.value for s in families["relay_events_committed"].samples if s.name.endswith("_total")]
    assert committed == [3.0]
    rejected = {s.labels["reason"]: s.value for s in families["relay_webhooks_rejected"].samples if s.name.endswith("_total")}
    assert rejected == {"unparsable": 1.0}
    assert families["relay_attempt_duration_seconds"].type == "histogram"
    depth = {s.labels["destination"]: s.value for s in families["relay_queue_depth"].samples}
    assert depth["down"] == 3.0
