"""README.md's commands, run as written: the ```sh code blocks are extracted from the README and run with bash from
the repo root against a relay this test starts itself on the README's configuration (`config/relay.json5`, fixed
ports 8080, 9090 and 9099).

Only two substitutions make them runnable here:
- `.build/debug/relay` becomes the binary under test (RELAY_BINARY, or .build/debug/relay);
- `data/relay.db` becomes a store in a temp dir (the relay serves a copy of config/relay.json5 that differs only in
  `store.sqlite`), so that the README's fixed `X-GitHub-Delivery: delivery-1` is new and answers 202 as the README
  says, and nobody's data/relay.db is touched.
A background command (`... &`) is followed by a wait until its port answers, as a reader would wait before the next
line. `make run` / `make test` blocks are not run here (`make test` runs this file).

Skipped, with the reason, when one of the README's ports is already taken (a `make run` or `make demo` running).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests

from conftest import REPO_ROOT, relay_binary, start_relay, stop_relay, wait_for_health

README = REPO_ROOT / "README.md"
CONFIG = REPO_ROOT / "config" / "relay.json5"
PORTS = {8080: "the relay (config/relay.json5)", 9090: "its admin API", 9099: "relay simulate sink"}
BLOCK_TIMEOUT = 20


def sh_blocks() -> list[tuple[str, str]]:
    """(the `## ` heading above it, code) for every ```sh block of the README, in order."""
    blocks, heading = [], ""
    for m in re.finditer(r"^(## [^\n]*)$|^```sh\n(.*?)^```$", README.read_text(), re.M | re.S):
        if m.group(1):
            heading = m.group(1)[3:].strip()
        else:
            blocks.append((heading, m.group(2)))
    return blocks


def section(heading: str) -> list[str]:
    found = [code for h, code in sh_blocks() if h == heading]
    assert found, f"README.md has no ```sh block under '## {heading}'"
    return found


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def runnable(code: str, db: Path) -> str:
    """The block with the binary and the store substituted, and a wait for the port after each `&` command."""
    code = code.replace(".build/debug/relay", str(relay_binary())).replace("data/relay.db", str(db))
    out, pending = [], ""
    for line in code.splitlines():
        pending += line + "\n"
        if line.rstrip().endswith("\\"):
            continue
        out.append(pending)
        m = re.search(r"&\s*(#.*)?$", pending.rstrip())
        if m and not pending.rstrip().endswith("&&"):
            port = re.search(r"--listen\s+[\w.]+:(\d+)", pending)
            simulators = {"mastercard-digital-redemptions": "9101", "mastercard-fulfillment": "9102", "punchh": "9103",
                          "returning-ai": "9104", "capillary": "9105", "oauth2": "9106", "sink": "9099"}
            named = next((p for name, p in simulators.items() if f"simulate {name}" in pending), None)
            number = port.group(1) if port else named or (serve_port(pending) if " serve " in pending else None)
            assert number, f"a background command without --listen HOST:PORT: {pending}"
            out.append(f"for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/{number}) 2>/dev/null && break; "
                       f"sleep 0.1; done\n")
        pending = ""
    out.append(pending)
    return "".join(out)


def serve_port(command: str) -> str:
    """The port `relay serve --config FILE` listens on: FILE's server.listen (paths relative to the repo root)."""
    m = re.search(r"--config\s+(\S+)", command)
    assert m, f"relay serve without --config: {command}"
    path = Path(m.group(1))
    text = (path if path.is_absolute() else REPO_ROOT / path).read_text()
    listen = re.search(r'server:\s*\{[^}]*?listen:\s*"[^"]*:(\d+)"', text, re.S)
    assert listen, f"no server.listen in {path}"
    return listen.group(1)


class Shell:
    """Runs README blocks with bash at the repo root; background processes are in its process group, ended at the
    end of the test."""

    def __init__(self, db: Path, tmp: Path):
        self.db, self.tmp, self.n = db, tmp, 0
        self.groups: list[int] = []

    def run(self, *codes: str, timeout: float = BLOCK_TIMEOUT) -> subprocess.CompletedProcess:
        script = "set -e -o pipefail\n" + "\n".join(runnable(c, self.db) for c in codes)
        # Output to files, not pipes: a background command keeps its copy open after bash exits.
        self.n += 1
        out_path, err_path = self.tmp / f"block{self.n}.out", self.tmp / f"block{self.n}.err"
        with open(out_path, "wb") as out_f, open(err_path, "wb") as err_f:
            proc = subprocess.Popen(["bash", "-c", script], cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                    stdout=out_f, stderr=err_f, start_new_session=True)
        self.groups.append(proc.pid)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out, err = out_path.read_text(errors="replace"), err_path.read_text(errors="replace")
        if proc.returncode < 0:
            pytest.fail(f"README block did not finish in {timeout}s:\n{script}\n--- stdout\n{out}\n--- stderr\n{err}")
        result = subprocess.CompletedProcess(script, proc.returncode, out, err)
        assert result.returncode == 0, f"README block failed ({proc.returncode}):\n{script}\n--- stdout\n{out}\n" \
                                       f"--- stderr\n{err}"
        return result

    def close(self) -> None:
        for pgid in self.groups:   # the background commands (`relay simulate sink &`) left running
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        # Gone before the next test starts its own (the sink's port 9099 must be free again).
        deadline = time.monotonic() + 10
        for pgid in self.groups:
            while time.monotonic() < deadline:
                try:
                    os.killpg(pgid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)


@pytest.fixture(scope="module")
def readme_relay(tmp_path_factory):
    """`relay serve` on a copy of config/relay.json5 (its store in a temp dir), from the repo root."""
    busy = [f"{port} ({what})" for port, what in PORTS.items() if port_in_use(port)]
    if busy:
        pytest.skip(f"README ports already in use: {', '.join(busy)}; stop `make run`/`make demo` to run this test")
    tmp = tmp_path_factory.mktemp("readme")
    db = tmp / "relay.db"
    text = CONFIG.read_text()
    assert 'sqlite: "data/relay.db"' in text, "config/relay.json5 no longer stores in data/relay.db"
    config = tmp / "relay.json5"
    config.write_text(text.replace('sqlite: "data/relay.db"', f'sqlite: "{db}"'))
    env = dict(os.environ)
    env.pop("RELAY_LOG_LEVEL", None)
    cwd = os.getcwd()
    os.chdir(REPO_ROOT)   # ${file:config/secrets/...} is relative to the working directory, as with `make run`
    try:
        proc = start_relay(config, env=env, stderr=open(tmp / "relay.log", "wb"))
    finally:
        os.chdir(cwd)
    try:
        wait_for_health(proc, 8080)
        yield db
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        assert code == 0, (tmp / "relay.log").read_text()


@pytest.fixture
def shell(readme_relay, tmp_path):
    s = Shell(readme_relay, tmp_path)
    try:
        yield s
    finally:
        s.close()


def statuses(output: str) -> list[int]:
    """The status of each answer: `curl -i`'s status line (a body without a final newline runs into the next one)
    or `relay send`'s `HTTP 202`."""
    return [int(m) for m in re.findall(r"HTTP(?:/[\d.]+)? (\d{3})\b", output)]


def test_readme_blocks_are_found():
    headings = [h for h, _ in sh_blocks()]
    assert headings.count("Send it a signed webhook") == 4, headings
    # The receiver is started before anything is sent to the relay.
    sink, github, acme, listing = section("Send it a signed webhook")
    assert "simulate sink" in sink and "/v1/hooks/" not in sink and "relay send" not in sink, sink
    assert "relay send github-style" in github and "relay send vendor-acme" in acme
    # Signed by the relay itself, not by openssl one-liners.
    assert "openssl dgst" not in README.read_text()
    assert "_sink/requests" in listing
    for code in section("Set up and run"):
        assert "make run" in code   # not run here: `make test` is what runs this file


def test_signed_webhook_curl_examples_get_202(shell):
    sink, github, acme, _ = section("Send it a signed webhook")
    out = shell.run(sink, github, acme).stdout
    assert statuses(out) == [202, 202], out
    event_ids = re.findall(r'"eventId":"(evt_[0-9A-Z]+)"', out)
    assert len(event_ids) == 2 and len(set(event_ids)) == 2, out
    # `sqlite3 data/relay.db 'select id, source, status, event from events'` lists both
    rows = dict(re.findall(r"(evt_[0-9A-Z]+)\|([\w-]+\|\w*)\|\{", out))
    assert rows.get(event_ids[0]) == "github-style|", out               # pass-through: no status
    assert rows.get(event_ids[1]) == "vendor-acme|shipped", out         # statusMap: SHIPPED -> shipped
    # "sent again: 200, same eventId, "duplicate":true"
    again = shell.run(github).stdout
    assert statuses(again) == [200], again
    assert f'"eventId":"{event_ids[0]}"' in again and '"duplicate":true' in again, again


def test_simulate_sink_receives_the_translated_events(shell, readme_relay):
    """The README's order: the sink first, then the webhooks; their deliveries reach it at once (no retry waited
    for), translated, each with its Idempotency-Key."""
    sink, github, acme, listing = section("Send it a signed webhook")
    shell.run(sink, github, acme)   # the sink is left running until the test ends
    out = shell.run(listing).stdout
    json.loads(out)   # python3 -m json.tool printed JSON
    list_cmd = next(line for line in listing.splitlines() if "_sink/requests" in line)
    deadline = time.monotonic() + 10
    while True:
        listed = json.loads(shell.run(list_cmd).stdout)
        requests_ = listed.get("requests", listed) if isinstance(listed, dict) else listed
        bodies = [r for r in requests_ if r.get("path", "").startswith("/webhooks/relay")]
        events = [json.loads(r["body"]) for r in bodies]
        # vendor-acme's event is new every run (a fresh webhook-id); github-style's fixed delivery-1 is one only
        # the first time this module sends it.
        acme_events = [e for e in events if e.get("source") == "vendor-acme" and e.get("status") == "shipped"]
        if acme_events or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert acme_events, json.dumps(listed, indent=2)[:4000]
    text = json.dumps(bodies)
    assert "O-1" in text and "idempotency-key" in text.lower(), text[:4000]
    # Every delivery of the module so far reached a sink that was up: nothing waits for a retry.
    with sqlite3.connect(f"file:{readme_relay}?mode=ro", uri=True) as db:
        deadline = time.monotonic() + 10
        while True:
            states = [row[0] for row in db.execute("SELECT state FROM deliveries")]
            if (states and all(s == "delivered" for s in states)) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert states and all(s == "delivered" for s in states), states


def test_delivered_log_line_is_as_the_readme_shows(shell, readme_relay):
    """The README's success line: an `info` "delivered" line per delivery, with the same fields as the relay writes,
    status, latency and attempt as JSON numbers."""
    sample = next(line for line in README.read_text().splitlines() if line.startswith("{") and '"msg":"delivered"' in line)
    shown = json.loads(sample)
    sink, github, acme, _ = section("Send it a signed webhook")
    shell.run(sink, github, acme)
    log = readme_relay.parent / "relay.log"
    deadline = time.monotonic() + 15
    while True:
        lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
        delivered = [x for x in lines if x.get("msg") == "delivered" and x.get("destination") == "demo-sink"]
        if delivered or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert delivered, log.read_text()[-4000:]
    line = delivered[-1]
    assert set(line) == set(shown), (line, shown)
    assert line["level"] == shown["level"] == "info"
    for key in ("status", "latencyMs", "attempt"):
        assert type(line[key]) is int and type(shown[key]) is int, (key, line, shown)
    assert line["status"] == 200 and line["latencyMs"] >= 0 and line["deliveryId"].startswith("dlv_")


def test_admin_commands(shell):
    sink, github, acme, _ = section("Send it a signed webhook")
    shell.run(sink, github, acme)
    binary = str(relay_binary())
    events = subprocess.run([binary, "events"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    assert events.returncode == 0, events.stderr
    assert "github-style" in events.stdout and "vendor-acme" in events.stdout, events.stdout
    listed = subprocess.run([binary, "events", "--json"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    assert listed.returncode == 0, listed.stderr
    event_id = re.search(r'"(evt_[0-9A-Z]+)"', listed.stdout).group(1)
    show = subprocess.run([binary, "events", "show", event_id], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=10)
    assert show.returncode == 0 and event_id in show.stdout, show.stdout + show.stderr
    for args in (["deliveries"], ["deliveries", "--state", "dead"], ["deliveries", "--destination", "demo-sink"]):
        r = subprocess.run([binary, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, (args, r.stderr)
    everything = subprocess.run([binary, "deliveries", "--destination", "demo-sink"], cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=10).stdout
    assert "demo-sink" in everything, everything

