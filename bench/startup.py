#!/usr/bin/env python3
"""Start-up time of the relay, for bench/run: spawns `BINARY serve --config CONFIG`, polls URL until it answers 200
and takes the time from just before the spawn to that first 200 (time.monotonic); then SIGTERM, and the time until
the process has exited. Repeated RUNS times on the same configuration (and so the same store: a store filled before
the first run is opened by every run).

Polling: a raw TCP connect and a minimal `GET PATH HTTP/1.1` with `Connection: close` in a loop, about --interval ms
apart (0.3 ms by default; a refused connect on loopback costs tens of microseconds, so the figure is within about
half a millisecond of the moment the server could first answer), instead of urllib, whose per-try overhead is
larger than what is measured. A try that connects but gets something other than 200 (e.g. 503 from the admin
/readyz while the store is unavailable) is retried too.

Which URL: the relay's main listener answers GET /healthz (always 200, nothing checked) as soon as it is up; the
admin listener (`admin: { listen: "127.0.0.1:PORT" }`, a fixed port the caller chooses, since port 0 would not be
known here) answers GET /readyz with 200 after a round trip through the store's writer thread (503 once the store has
failed). `relay serve` opens (and migrates) the store, then starts the dispatcher (after asking the writer to return
expired leases to the queue), then the main listener, and the admin listener last. So at start-up /readyz adds no
condition that /healthz lacks (both mean: store open, dispatcher started); it is ready a little later, by the admin
listener's start. They differ afterwards: /readyz says 503 when the store has failed, /healthz does not.

usage: startup.py --binary PATH --config CONFIG --url http://127.0.0.1:PORT/healthz [--runs 10] [--json OUT]
                  [--log FILE] [--ready-timeout 10] [--stop-timeout 15] [--interval 0.3] [--settle 0]
The relay inherits this process's environment (set the variables its `${env:NAME}` secrets name). Prints each run
and min/median/max on stderr; --json writes {"runs_ms": [...], "median_ms": ..., "max_ms": ..., ...}. Exits 1, with
the relay's log, when a run never answers 200 within --ready-timeout, exits before it answers, does not exit within
--stop-timeout after SIGTERM, or exits non-zero.

SIGTERM right after the first 200 (--settle 0, the default) also tests that the relay shuts down cleanly however
early it is told to. It once did not: `relay serve` started its listeners before it took over SIGTERM, so a signal
in that window killed it (exit -15) or, landing between `signal(SIGTERM, SIG_IGN)` and the arming of libdispatch's
signal source, was lost and the relay never exited. `serve` now blocks the signals before any thread starts and
takes them with sigwait; both failures are still reported as such. --settle MS waits that long after the 200 before
SIGTERM.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse


def parse_args():
    p = argparse.ArgumentParser(description="relay start-up time: spawn to first 200 from --url")
    p.add_argument("--binary", required=True, help="the relay executable")
    p.add_argument("--config", required=True, help="configuration for `relay serve --config`")
    p.add_argument("--url", required=True,
                   help="http://127.0.0.1:PORT/healthz (main listener) or http://127.0.0.1:ADMIN_PORT/readyz")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--log", help="the relay's stdout and stderr, appended over all runs (default: a temporary file)")
    p.add_argument("--ready-timeout", type=float, default=10, help="seconds for the first 200 (default 10)")
    p.add_argument("--stop-timeout", type=float, default=15, help="seconds for the exit after SIGTERM (default 15)")
    p.add_argument("--interval", type=float, default=0.3, help="milliseconds between tries (default 0.3)")
    p.add_argument("--settle", type=float, default=0,
                   help="milliseconds to wait after the first 200 before SIGTERM (default 0: at once)")
    a = p.parse_args()
    if a.runs < 1:
        p.error("--runs must be at least 1")
    if not (os.path.isfile(a.binary) and os.access(a.binary, os.X_OK)):
        p.error("--binary %s is not an executable file" % a.binary)
    if not os.path.isfile(a.config):
        p.error("--config %s does not exist" % a.config)
    u = urllib.parse.urlsplit(a.url)
    if u.scheme != "http" or not u.hostname or not u.port:
        p.error("--url must be http://HOST:PORT/PATH with an explicit port, not %s" % a.url)
    return a


class Failure(Exception):
    pass


def log(msg):
    print("startup: " + msg, file=sys.stderr, flush=True)


def try_get(addr, request):
    """One try: the HTTP status (an int), or None when nothing accepts the connection yet or it breaks off."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(1.0)
        if s.connect_ex(addr) != 0:
            return None
        s.sendall(request)
        data = b""
        while b"\r\n" not in data and len(data) < 4096:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        # "HTTP/1.1 200 OK"
        parts = data.split(b" ", 2)
        if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
            return int(parts[1])
        return None
    except OSError:
        return None
    finally:
        s.close()


def tail(path, lines=40):
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
    except OSError as e:
        return "(cannot read %s: %s)" % (path, e)


def one_run(a, addr, request, logf, log_path):
    """Spawns, polls, stops. Returns (ms to the first 200, ms to the first accepted connection, ms to exit)."""
    interval = a.interval / 1000
    logf.write(("--- startup.py: %s serve --config %s\n" % (a.binary, a.config)).encode())
    logf.flush()
    t0 = time.monotonic()
    proc = subprocess.Popen([a.binary, "serve", "--config", a.config], stdin=subprocess.DEVNULL, stdout=logf,
                            stderr=subprocess.STDOUT, close_fds=True)
    try:
        connected = None
        deadline = t0 + a.ready_timeout
        while True:
            status = try_get(addr, request)
            now = time.monotonic()
            if status is not None and connected is None:
                connected = now
            if status == 200:
                ready = now
                break
            if proc.poll() is not None:
                raise Failure("the relay exited with %s before %s answered 200:\n%s"
                              % (proc.returncode, a.url, tail(log_path)))
            if now > deadline:
                raise Failure("%s did not answer 200 within %g s (last answer: %s):\n%s"
                              % (a.url, a.ready_timeout, status or "no connection", tail(log_path)))
            time.sleep(interval)
        if a.settle > 0:
            time.sleep(a.settle / 1000)
        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=a.stop_timeout)
        except subprocess.TimeoutExpired:
            raise Failure("the relay did not exit within %g s of SIGTERM sent %.1f ms after it answered 200 (a SIGTERM "
                          "that arrives while it is still taking over the signal is lost; see --settle):\n%s"
                          % (a.stop_timeout, (t_term - ready) * 1000, tail(log_path)))
        stopped = time.monotonic()
        if rc == -signal.SIGTERM:
            raise Failure("the relay was killed by SIGTERM sent %.1f ms after it answered 200: it answered before it "
                          "had taken over SIGTERM for a graceful stop (see --settle):\n%s"
                          % ((t_term - ready) * 1000, tail(log_path)))
        if rc != 0:
            raise Failure("the relay exited with %d after SIGTERM (want 0):\n%s" % (rc, tail(log_path)))
        return (ready - t0) * 1000, (connected - t0) * 1000, (stopped - t_term) * 1000
    finally:
        if proc.poll() is None:       # a failure above: leave nothing running
            proc.kill()
            proc.wait()


def median(v):
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def main():
    a = parse_args()
    u = urllib.parse.urlsplit(a.url)
    addr = (u.hostname, u.port)
    path = (u.path or "/") + ("?" + u.query if u.query else "")
    request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" % (path, u.hostname, u.port)).encode()
    # Something already answering there would be measured instead of the relay.
    if try_get(addr, request) is not None:
        log("FAILED: something already answers at %s before the relay is started" % a.url)
        return 1

    if a.log:
        log_path = a.log
    else:
        fd, log_path = tempfile.mkstemp(prefix="relay-startup.", suffix=".log")
        os.close(fd)
    ready, connect, stop = [], [], []
    try:
        with open(log_path, "ab") as logf:
            for i in range(a.runs):
                r, c, s = one_run(a, addr, request, logf, log_path)
                ready.append(r)
                connect.append(c)
                stop.append(s)
                log("run %d/%d: %s answered 200 after %.1f ms (first connection %.1f ms); exited %.1f ms after SIGTERM"
                    % (i + 1, a.runs, a.url, r, c, s))
    except Failure as e:
        log("FAILED: run %d/%d: %s" % (len(ready) + 1, a.runs, e))
        log("the relay's log: %s" % log_path)
        return 1

    out = {
        "url": a.url, "runs": a.runs, "settle_ms": a.settle,
        "runs_ms": [round(x, 2) for x in ready],
        "min_ms": round(min(ready), 2), "median_ms": round(median(ready), 2), "max_ms": round(max(ready), 2),
        "connect_ms": [round(x, 2) for x in connect],
        "stop_ms": [round(x, 2) for x in stop], "stop_median_ms": round(median(stop), 2),
    }
    log("%d runs: spawn -> 200 from %s: min %.1f ms, median %.1f ms, max %.1f ms; SIGTERM -> exit median %.1f ms"
        % (a.runs, a.url, out["min_ms"], out["median_ms"], out["max_ms"], out["stop_median_ms"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")
    if not a.log:
        os.unlink(log_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
