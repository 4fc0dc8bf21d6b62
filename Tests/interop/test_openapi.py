"""docs/openapi.yaml checked against the running relay by PyPI's `schemathesis`: every inbound and admin operation is
called with generated valid and invalid inputs, and no answer is a 5xx, none breaks the documented response schema,
status codes or content types.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import requests

from conftest import REPO_ROOT, free_port, start_relay, stop_relay, wait_for_health

CONFIG = """{{
  server: {{ listen: "127.0.0.1:{port}", threads: 2, shutdownTimeout: "3s" }},
  admin: {{ listen: "127.0.0.1:{admin}", token: "${{env:ADMIN_TOKEN}}" }},
  store: {{ sqlite: "{db}" }},
  log: {{ level: "warn" }},
  sources: {{ shop: {{ adapter: "generic", verify: {{ none: true }}, map: {{ subject: {{ orderId: "$.id" }} }} }} }},
  destinations: {{ "down": {{ adapter: "generic", url: "http://127.0.0.1:{closed}/x", retry: {{ schedule: ["1h"] }} }} }},
  routes: [ {{ from: "shop", to: ["down"] }} ],
}}
"""

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


def schemathesis(spec: Path, url: str, tag: str, *extra: str) -> subprocess.CompletedProcess:
    exe = Path(os.environ.get("VIRTUAL_ENV", REPO_ROOT / ".venv")) / "bin" / "schemathesis"
    return subprocess.run([str(exe), "run", str(spec), "--url", url, "--include-tag", tag, "-c", CHECKS,
                           "-n", "30", "--seed", "20261122", "--request-timeout", "10", *extra],
                          capture_output=True, text=True, timeout=600)


def test_openapi_conformance():
    port, admin, closed = free_port(), free_port(), free_port()
    spec = REPO_ROOT / "docs" / "openapi.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "relay.json5").write_text(CONFIG.format(port=port, admin=admin, closed=closed, db=d / "relay.db"))
        # The inbound run aims at the configured source (random names only meet 404s).
        (d / "openapi.yaml").write_text(spec.read_text().replace(
            "      name: source\n      in: path\n      required: true\n      schema: { type: string }",
            "      name: source\n      in: path\n      required: true\n      schema: { type: string, enum: [shop] }"))
        proc = start_relay(d / "relay.json5", env={"ADMIN_TOKEN": "openapi-token", "PATH": "/usr/bin:/bin"})
        try:
            wait_for_health(proc, port)
            for i in range(3):
                assert requests.post(f"http://127.0.0.1:{port}/v1/hooks/shop", json={"id": f"O-{i}"}).status_code == 202
            inbound = schemathesis(d / "openapi.yaml", f"http://127.0.0.1:{port}", "inbound")
            admin_run = schemathesis(spec, f"http://127.0.0.1:{admin}", "admin", "-H", "Authorization: Bearer openapi-token")
        finally:
            stop_relay(proc)
    for name, run in [("inbound", inbound), ("admin", admin_run)]:
        assert run.returncode == 0, f"{name}:\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
        assert " passed" in run.stdout and "failed" not in run.stdout.split("SUMMARY")[-1], f"{name}:\n{run.stdout[-3000:]}"
