"""Helpers shared by the Python test and bench scripts (Python standard library only).

    import sys, os; sys.path.insert(0, os.path.join(ROOT, "Tests", "support")); import harness
"""
import json
import socket
import subprocess
import time
import urllib.request


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def free_ports(n):
    """n distinct free ports."""
    ports = set()
    while len(ports) < n:
        ports.add(free_port())
    return list(ports)


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def http_post_json(url, value, timeout=5):
    req = urllib.request.Request(url, data=json.dumps(value).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


def wait_http(url, proc=None, timeout=20):
    """Waits until GET url answers 200. False when proc exits first or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            if http_get(url, timeout=1)[0] == 200:
                return True
        except Exception:
            pass
        time.sleep(0.02)
    return False


def stop(proc, timeout=20):
    """SIGTERM, then SIGKILL after timeout. Returns the exit code (None when it had to be killed)."""
    if proc is None:
        return None
    if proc.poll() is not None:
        return proc.returncode
    proc.terminate()
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def sink_requests(base, path, since=0, limit=2000):
    """Every request the sink (`relay simulate sink`) recorded at path after seq `since`, in arrival order."""
    out = []
    while True:
        _, data = http_get("%s/_sink/requests?path=%s&since=%d&limit=%d" % (base, path, since, limit))
        reqs = json.loads(data)["requests"]
        out.extend(reqs)
        if reqs:
            since = max(r["seq"] for r in reqs)
        if len(reqs) < limit:
            return out, since
