"""Signals at the earliest moment: `relay serve` must stop in order (exit 0) on a SIGTERM sent the instant its
listener first answers, and must neither die nor lose a SIGHUP sent then.

It once did not: the listeners started before the process took over SIGTERM, so a signal in that window killed it
(exit -15) or was discarded (it never exited). Found by bench/startup.py, which SIGTERMs right after the first 200.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time

from conftest import free_port, relay_binary

CONFIG = """{{
  server: {{ listen: "127.0.0.1:{port}" }},
  admin: false,
  store: {{ sqlite: "{db}" }},
  log: {{ level: "info" }},
  sources: {{ shop: {{ adapter: "generic", verify: {{ none: true }} }} }},
}}
"""


def first_answer(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """Returns as soon as GET /healthz is answered (polled every 0.2 ms: the window this test is about is short)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"relay exited before answering: {proc.stderr.read().decode()}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            time.sleep(0.0002)
    raise AssertionError("relay never answered /healthz")


def start(tmp_path, n: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = tmp_path / f"relay-{n}.json5"
    config.write_text(CONFIG.format(port=port, db=tmp_path / "relay.db"))
    proc = subprocess.Popen([str(relay_binary()), "serve", "--config", str(config)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, port


def test_sigterm_at_the_first_answer_stops_in_order(tmp_path):
    for n in range(8):
        proc, port = start(tmp_path, n)
        first_answer(port, proc)
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"run {n}: SIGTERM at the first answer was lost: still running after 15 s")
        assert rc == 0, f"run {n}: exit {rc} after an early SIGTERM (-15 = killed, not stopped in order): " \
                        f"{proc.stderr.read().decode()[-500:]}"


def test_sighup_at_the_first_answer_is_a_reload_not_a_death(tmp_path):
    proc, port = start(tmp_path, 0)
    try:
        first_answer(port, proc)
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert proc.poll() is None, f"SIGHUP killed the relay: exit {proc.returncode}"
        first_answer(port, proc, timeout=5)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=15)
    assert rc == 0
    log = proc.stderr.read().decode()
    assert "SIGHUP" in log, f"the reload was not logged: {log[-500:]}"
