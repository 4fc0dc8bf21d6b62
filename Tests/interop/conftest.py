"""Interop tests: the real `relay` binary, fed requests signed by the providers' own libraries (PyPI's
`standardwebhooks` and `stripe`) or, for schemes without a Python library, by Python's `hmac`.

The `relay` fixture writes a JSON5 config into a temp dir (secrets as ${env:...} and ${file:...} references, store
in the temp dir, listening on a free loopback port), starts `relay serve`, waits for GET /healthz, and on teardown
stops it with SIGTERM and checks that it exits 0.

RELAY_BINARY overrides the binary (default: .build/debug/relay at the repo root).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 20.0


def relay_binary() -> Path:
    given = os.environ.get("RELAY_BINARY")
    path = Path(given) if given else REPO_ROOT / ".build" / "debug" / "relay"
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not os.access(path, os.X_OK):
        pytest.exit(f"relay binary not found or not executable: {path} (run `swift build`, or set RELAY_BINARY)",
                    returncode=3)
    return path


# One copy of the port helper for every script (Tests/support/harness.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support"))
from harness import free_port  # noqa: E402


@dataclass
class Secrets:
    standard_webhooks: str = field(default_factory=lambda: "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode())
    stripe: str = field(default_factory=lambda: "whsec_" + secrets.token_hex(16))
    github: str = field(default_factory=lambda: secrets.token_hex(20))
    shopify: str = field(default_factory=lambda: "shpss_" + secrets.token_hex(16))
    slack: str = field(default_factory=lambda: secrets.token_hex(16))


CONFIG_TEMPLATE = """// written by Tests/interop/conftest.py
{{
  server: {{ listen: "127.0.0.1:{port}", threads: 2, shutdownTimeout: "5s" }},
  admin: {{ listen: "127.0.0.1:0" }},
  store: {{ sqlite: "{db}" }},
  log: {{ level: "info" }},
  sources: {{
    acme: {{
      adapter: "generic",
      verify: {{ preset: "standard-webhooks", secrets: ["${{env:RELAY_TEST_ACME_WHSEC}}"] }},
    }},
    stripe: {{
      adapter: "generic",
      verify: {{ preset: "stripe", secrets: ["${{env:RELAY_TEST_STRIPE_SECRET}}"] }},
    }},
    github: {{
      adapter: "generic",
      verify: {{ preset: "github", secrets: ["${{file:{github_secret_file}}}"] }},
    }},
    shopify: {{
      adapter: "generic",
      verify: {{ preset: "shopify", secrets: ["${{env:RELAY_TEST_SHOPIFY_SECRET}}"] }},
    }},
    slack: {{
      adapter: "generic",
      verify: {{ preset: "slack", secrets: ["${{env:RELAY_TEST_SLACK_SECRET}}"] }},
    }},
  }},
}}
"""


class Relay:
    """One `relay serve` process over a config and store in `workdir`."""

    def __init__(self, workdir: Path, keys: Secrets):
        self.workdir = workdir
        self.keys = keys
        self.binary = relay_binary()
        self.db = workdir / "relay.db"
        self.config = workdir / "relay.json5"
        self.log_path = workdir / "relay.log"
        secret_file = workdir / "github.secret"
        secret_file.write_text(keys.github + "\n")
        self.port = free_port()
        self.config.write_text(CONFIG_TEMPLATE.format(port=self.port, db=self.db, github_secret_file=secret_file))
        self.env = dict(os.environ)
        self.env.pop("RELAY_LOG_LEVEL", None)
        self.env.update({
            "RELAY_TEST_ACME_WHSEC": keys.standard_webhooks,
            "RELAY_TEST_STRIPE_SECRET": keys.stripe,
            "RELAY_TEST_SHOPIFY_SECRET": keys.shopify,
            "RELAY_TEST_SLACK_SECRET": keys.slack,
        })
        self.proc: subprocess.Popen | None = None
        self.session = requests.Session()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, source: str) -> str:
        return f"{self.base_url}/v1/hooks/{source}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(self.binary), "serve", "--config", str(self.config)], cwd=self.workdir,
                                     env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"relay exited with {self.proc.returncode} during startup:\n{self.log()}")
            try:
                r = requests.get(self.base_url + "/healthz", timeout=1)
                if r.status_code == 200:
                    return
                last_error = AssertionError(f"/healthz answered {r.status_code}: {r.text}")
            except requests.RequestException as e:
                last_error = e
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"relay not healthy after {STARTUP_TIMEOUT}s ({last_error}):\n{self.log()}")

    def stop(self) -> int:
        """SIGTERM, then wait; returns the exit code (kills and fails if it does not stop in time)."""
        assert self.proc is not None
        self.session.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=SHUTDOWN_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"relay did not stop within {SHUTDOWN_TIMEOUT}s of SIGTERM:\n{self.log()}")
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def post(self, source: str, body: bytes, headers: dict[str, str]) -> requests.Response:
        h = {"Content-Type": "application/json", **headers}
        return self.session.post(self.url(source), data=body, headers=h, timeout=10)


@pytest.fixture(scope="session")
def relay(tmp_path_factory):
    """A relay shared by the tests of the session; on teardown it must stop on SIGTERM with exit code 0."""
    r = Relay(tmp_path_factory.mktemp("relay"), Secrets())
    r.start()
    try:
        yield r
    finally:
        if r.proc is not None:
            code = r.stop()
            assert code == 0, f"relay exited with {code} after SIGTERM:\n{r.log()}"


@pytest.fixture
def fresh_relay(tmp_path):
    """A relay of the test's own (for restarts and shutdown checks)."""
    r = Relay(tmp_path, Secrets())
    try:
        yield r
    finally:
        r.kill()


def assert_accepted(r: requests.Response) -> str:
    assert r.status_code == 202, f"expected 202, got {r.status_code}: {r.text}"
    body = r.json()
    event_id = body.get("eventId")
    assert isinstance(event_id, str) and event_id, f"no eventId in {body}"
    assert "duplicate" not in body
    return event_id


def assert_unauthorized(r: requests.Response) -> str:
    assert r.status_code == 401, f"expected 401, got {r.status_code}: {r.text}"
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    body = r.json()
    reason = body.get("reason")
    assert isinstance(reason, str) and reason, f"no reason in {body}"
    return reason


def tamper(body: bytes, index: int | None = None) -> bytes:
    """The same body with one byte changed (a letter or digit inside the JSON, so it stays valid JSON)."""
    data = bytearray(body)
    positions = [i for i, b in enumerate(data) if chr(b).isalnum()]
    i = positions[len(positions) // 2] if index is None else index
    c = chr(data[i])
    data[i] = ord("1" if c == "0" else "0") if c.isdigit() else ord("a" if c != "a" else "b")
    assert bytes(data) != body and len(data) == len(body)
    return bytes(data)


def start_relay(config: Path, env: dict | None = None, stderr=subprocess.PIPE) -> subprocess.Popen:
    """`relay serve --config config` (stdout discarded); pair with wait_for_health and stop_relay."""
    return subprocess.Popen([str(relay_binary()), "serve", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=stderr)


def wait_for_health(proc: subprocess.Popen, port: int, timeout: float = STARTUP_TIMEOUT) -> None:
    """Polls GET /healthz until the relay answers; fails with its stderr if it exits first."""
    deadline = time.time() + timeout
    while True:
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return
        except requests.ConnectionError:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"relay exited with {proc.returncode}: {err}")
            if time.time() > deadline:
                pytest.fail("relay did not start")
            time.sleep(0.05)


def stop_relay(proc: subprocess.Popen, log: Path | None = None) -> str:
    """SIGTERM, then the relay must exit 0 within SHUTDOWN_TIMEOUT. Returns what it wrote on stderr (when piped);
    `log`: the file its stderr went to instead, whose end is shown if it does not exit 0."""
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=SHUTDOWN_TIMEOUT)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if code != 0 and log is not None and log.exists():
        err += log.read_text(errors="replace")[-4000:]
    assert code == 0, err
    return err


SHOP_MAP = 'map: { subject: { orderId: "$.id" }, status: "$.state" }'


def shop_relay_config(port: int, db: Path, destinations: str, to: list[str], shop_map: str = SHOP_MAP) -> str:
    """A relay on 127.0.0.1:port (its admin API on an ephemeral port, store at `db`) with one unsigned generic source
    `shop` (mapped by `shop_map`) routed to the destinations `to`; `destinations` is the text inside
    `destinations: { ... }`."""
    return ("{\n"
            f'  server: {{ listen: "127.0.0.1:{port}", threads: 2, shutdownTimeout: "3s" }},\n'
            '  admin: { listen: "127.0.0.1:0" },\n'
            f'  store: {{ sqlite: "{db}" }},\n'
            '  log: { level: "warn" },\n'
            f'  sources: {{ shop: {{ adapter: "generic", verify: {{ none: true }}, type: "order.status_changed", {shop_map} }} }},\n'
            f"  destinations: {{\n{destinations}\n  }},\n"
            f'  routes: [ {{ from: "shop", to: {json.dumps(list(to))} }} ],\n'
            "}\n")
