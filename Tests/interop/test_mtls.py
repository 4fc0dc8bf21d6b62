"""Mutual TLS, checked against Python's own TLS server (`ssl`, OpenSSL underneath but not our code): a destination
that requires a client certificate gets the one the destination's `tls` block names, and a relay without it is
refused in the handshake (the delivery is retried, never reported delivered). Certificates are made with the
openssl command line.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from conftest import free_port, relay_binary, start_relay, stop_relay, wait_for_health


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> None:
    """A CA; a server certificate for 127.0.0.1 signed by it; a client certificate (CN relay-client) signed by it,
    with its key encrypted under a password."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=relay-test-ca", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1", cwd=d)
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "2", "-extfile", "server.ext", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-passout", "pass:client-key-pw", "-keyout", "client.key",
            "-out", "client.csr", "-subj", "/CN=relay-client", cwd=d)
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "client.pem", "-days", "2", cwd=d)


class Recorder(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        cert = self.connection.getpeercert()
        subject = dict(x[0] for x in cert["subject"]) if cert else {}
        Recorder.received.append(subject.get("commonName"))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


CONFIG = """{{
  server: {{ listen: "127.0.0.1:{port}", threads: 2, shutdownTimeout: "3s" }},
  admin: {{ listen: "127.0.0.1:0" }},
  store: {{ sqlite: "{db}" }},
  log: {{ level: "info" }},
  client: {{ caBundle: "{d}/ca.pem" }},
  sources: {{ shop: {{ adapter: "generic", verify: {{ none: true }} }} }},
  destinations: {{
    "with-cert": {{ adapter: "generic", url: "https://127.0.0.1:{sink}/in",
                   tls: {{ certificate: "{d}/client.pem", key: "{d}/client.key", keyPassword: "${{env:CLIENT_KEY_PW}}" }} }},
    "without-cert": {{ adapter: "generic", url: "https://127.0.0.1:{sink}/in", retry: {{ schedule: ["100ms"], jitter: "none" }} }},
  }},
  routes: [ {{ from: "shop", to: ["with-cert", "without-cert"] }} ],
}}
"""


def test_client_certificate():
    Recorder.received = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        make_pki(d)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(d / "server.pem", d / "server.key")
        context.load_verify_locations(d / "ca.pem")
        context.verify_mode = ssl.CERT_REQUIRED
        sink_port = free_port()
        server = ThreadingHTTPServer(("127.0.0.1", sink_port), Recorder)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()

        port = free_port()
        config = d / "relay.json5"
        config.write_text(CONFIG.format(port=port, db=d / "relay.db", d=d, sink=sink_port))
        log = open(d / "relay.log", "wb")
        proc = start_relay(config, env={"CLIENT_KEY_PW": "client-key-pw", "PATH": "/usr/bin:/bin"}, stderr=log)
        try:
            wait_for_health(proc, port)
            r = requests.post(f"http://127.0.0.1:{port}/v1/hooks/shop", json={"order": "O-1"})
            assert r.status_code == 202, r.text
            deadline = time.time() + 10
            lines: list = []
            while time.time() < deadline:
                lines = [json.loads(x) for x in (d / "relay.log").read_text().splitlines() if x.startswith("{")]
                dead = [x for x in lines if x.get("msg") == "delivery dead-lettered"]
                if Recorder.received and dead:
                    break
                time.sleep(0.05)
        finally:
            stop_relay(proc, d / "relay.log")
            server.shutdown()
            log.close()

        # The destination with the certificate got through, presenting the client certificate.
        assert Recorder.received == ["relay-client"]
        # The one without it was refused in the handshake: retried, then dead, never delivered.
        dead = [x for x in lines if x.get("msg") == "delivery dead-lettered"]
        assert [x["destination"] for x in dead] == ["without-cert"], dead
        assert "client-key-pw" not in (d / "relay.log").read_text()


def test_check_refuses_unusable_client_certificates():
    """`relay check` catches what would otherwise fail every handshake: an encrypted key without its password, a
    key that is not the certificate's, a wrong password."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        make_pki(d)
        cases = [
            ('certificate: "{d}/client.pem", key: "{d}/client.key"',
             "destinations.d.tls.key: the private key is encrypted and no password was given"),
            ('certificate: "{d}/client.pem", key: "{d}/server.key"',
             "destinations.d.tls.key: the key does not belong to the certificate"),
            ('certificate: "{d}/client.pem", key: "{d}/client.key", keyPassword: "${{env:WRONG_PW}}"',
             "destinations.d.tls.keyPassword: wrong password for the encrypted private key"),
            ('certificate: "{d}/client.key", key: "{d}/client.key", keyPassword: "${{env:WRONG_PW}}"',
             "destinations.d.tls.certificate: not a PEM certificate"),
        ]
        for tls, want in cases:
            config = d / "check.json5"
            config.write_text(("""{{ sources: {{ s: {{ adapter: "generic", verify: {{ none: true }} }} }},
              destinations: {{ d: {{ adapter: "generic", url: "https://127.0.0.1:1/x", tls: {{ """ + tls + """ }} }} }},
              routes: [ {{ from: "s", to: ["d"] }} ] }}""").format(d=d))
            r = subprocess.run([str(relay_binary()), "check", "--config", str(config)], capture_output=True, text=True,
                               env={"WRONG_PW": "not-it", "PATH": "/usr/bin:/bin"})
            assert r.returncode == 2, (tls, r.stdout, r.stderr)
            assert want in r.stderr, (want, r.stderr)
            assert "not-it" not in r.stderr + r.stdout
