"""Mastercard OAuth 1.0a (RSA-SHA256, oauth_body_hash) checked against Mastercard's own Python signer, PyPI's
`mastercard-oauth1-signer` (module `oauth1`):

- for the same method, URL, body, consumer key, nonce, timestamp and key, `relay sign mastercard-oauth1` prints
  exactly the Authorization header `oauth1.oauth.OAuth.get_authorization_header` (and `OAuthSigner`) produces,
  over a table of URLs (query strings with repeated and percent-encoded parameters, default and other ports,
  upper-case scheme and host, encoded paths, empty paths) and bodies (JSON, empty for GET and POST, non-ASCII),
  and the signature verifies with the public key (`cryptography`);
- `relay simulate mastercard-digital-redemptions` with RELAY_SIM_MASTERCARD_PUBLIC_KEY accepts requests signed by
  the reference signer (through `requests` and `OAuth1RSA`) and refuses, with a Gateway 401, a request signed with
  another key or whose body was changed after signing;
- `relay check` names the key path and says why for: a missing key file, a wrong PKCS#12 password, an archive
  without a private key, a certificate that has expired (and when), a PEM holding only a certificate.

Keys and certificates are made with `cryptography` in a temp dir.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

import oauth1.coreutils
from oauth1 import authenticationutils
from oauth1.oauth import OAuth
from oauth1.oauth_ext import OAuth1RSA
from oauth1.signer import OAuthSigner

from conftest import free_port, relay_binary

PASSWORD = "p12-pw-4e1d"
CONSUMER_KEY = "L5BsiPgaF-O3qA36znUATgQXwJB6MRoMSdhjd7wt50c97279!50596e52466e3966546d434b7354584c4975693238513d3d"
NONCE = "Xk3vQ9pL2mZr7TbW"
TIMESTAMP = 1763632800


# -- keys ----------------------------------------------------------------------------------------------------------

def certificate(key, cn: str, not_before: datetime.datetime, not_after: datetime.datetime) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))


def p12(key, cert, password: str | None, alias: bytes = b"keyalias") -> bytes:
    enc = serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    return pkcs12.serialize_key_and_certificates(alias, key, cert, None, enc)


class Keys:
    def __init__(self, d: Path):
        now = datetime.datetime.now(datetime.timezone.utc)
        self.dir = d
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.cert = certificate(self.key, "relay-mc-signing", now - datetime.timedelta(days=1),
                                now + datetime.timedelta(days=365))
        self.p12 = d / "mc.p12"
        self.p12.write_bytes(p12(self.key, self.cert, PASSWORD))
        self.pem = d / "mc-key.pem"
        self.pem.write_bytes(self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
        self.public_pem = d / "mc-public.pem"
        self.public_pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        # The reference's own loader reads the same archive.
        self.signing_key = authenticationutils.load_signing_key(str(self.p12), PASSWORD)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> Keys:
    return Keys(tmp_path_factory.mktemp("mc-keys"))


# -- the table -----------------------------------------------------------------------------------------------------

URLS = [
    "https://sandbox.api.mastercard.com/loyalty/redemptions",
    "https://sandbox.api.mastercard.com/loyalty/rewards/vendors/V%2042%2Fx/orders/status",  # encoded path
    "HTTPS://SANDBOX.API.Mastercard.COM:443/loyalty/redemptions",  # upper-case scheme and host, default port
    "http://Example.com:80/a/b?c=d",  # default http port
    "https://example.com:8443/x?y=2",  # another port
    "http://example.com:443/x",  # 443 is not http's default
    "https://example.com",  # empty path
    "https://example.com?x=1&y=2",  # empty path with a query
    "https://example.com/",
    "https://example.com/list?a=2&a=1&a=1&b=&c",  # repeated keys, empty value, no value
    "https://example.com/q?q=caf%C3%A9&sp=a%20b&plus=a+b&star=%2A&tilde=%7E&slash=%2F&amp=%26&eq=%3D",  # encoded
    "https://example.com/q?Q=%7e&lower=%c3%a9&key%20with%20space=v",  # lower-case escapes, encoded key
    "https://example.com/raw?q=a+b&list=1,2&t=x:y&at=@&star=*&bang=!",  # nothing encoded: kept as written
    "https://example.com/sort?a1=1&a=2&a-b=3&a.b=4&A=5&b=0",  # sorting by whole k=v strings
    "https://example.com/pct?p=100%&q=%zz&r=%41",  # stray percent signs next to a real escape
    "https://example.com/bad?bad=%FF&part=%E2%82&ok=%E2%82%AC",  # escapes that are not UTF-8
    "https://example.com/x?&&flag&&y=1&",  # empty pieces
    "https://example.com/%7euser/a%2fb/%E2%82%AC",  # path escapes kept as written
    "https://example.com/x?y=1#fragment",  # the fragment is not signed
    "http://[::1]:8080/v6?z=1",  # IPv6 literal
    "https://example.com/o?oauth_extra=1&z=%3Fq",  # a query key that looks like an oauth parameter
    "https://user:Pw@Example.com/userinfo",  # user info, lower-cased with the authority
]

BODIES = [
    ("PUT", b'{"redemptionId":"R-1","statusCode":"S"}'),
    ("get", b""),  # GET without a body: the empty-string hash; lower-case method
    ("POST", b""),
    ("POST", '{"name":"Zürich ✓","amount":12.5,"note":"a+b=c&d"}'.encode()),
    ("PATCH", b'{"OrderStatusArray":[{"orderId":"O-1","status":"SHIPPED"}]}'),
]


def relay_sign(key_path: Path, method: str, url: str, body: bytes, tmp_path: Path, password: str | None = PASSWORD,
               consumer_key: str = CONSUMER_KEY) -> str:
    args = [str(relay_binary()), "sign", "mastercard-oauth1", "--consumer-key", consumer_key, "--key", str(key_path),
            "--method", method, "--url", url, "--nonce", NONCE, "--timestamp", str(TIMESTAMP)]
    env = dict(os.environ)
    if password is not None:
        env["RELAY_TEST_MC_PW"] = password
        args += ["--password-env", "RELAY_TEST_MC_PW"]
    if body:
        body_file = tmp_path / "body.bin"
        body_file.write_bytes(body)
        args += ["--body-file", str(body_file)]
    done = subprocess.run(args, capture_output=True, env=env, timeout=20)
    assert done.returncode == 0, f"relay sign exited {done.returncode}: {done.stderr.decode()}"
    return done.stdout.decode().rstrip("\n")


@pytest.fixture
def fixed_nonce_and_time(monkeypatch):
    monkeypatch.setattr(oauth1.coreutils, "get_nonce", lambda length=16: NONCE)
    monkeypatch.setattr(oauth1.coreutils, "get_timestamp", lambda: TIMESTAMP)


def header_params(header: str) -> dict[str, str]:
    assert header.startswith("OAuth ")
    out = {}
    for part in header[len("OAuth "):].split(","):
        k, v = part.split("=", 1)
        out[k] = v.strip('"')
    return out


@pytest.mark.parametrize("method,body", BODIES, ids=["put-json", "get-empty", "post-empty", "post-utf8", "patch"])
@pytest.mark.parametrize("url", URLS)
def test_header_equals_reference(keys, tmp_path, fixed_nonce_and_time, url, method, body):
    ours = relay_sign(keys.p12, method, url, body, tmp_path)
    reference = OAuth.get_authorization_header(url, method, body, CONSUMER_KEY, keys.signing_key)
    assert ours == reference

    # The signature verifies with the public key, over the reference's base string.
    params = header_params(ours)
    assert params["oauth_body_hash"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
    signed = {k: v for k, v in params.items() if k != "oauth_signature"}
    base_string = OAuth.get_base_string(url, method, signed)
    signature = base64.b64decode(urllib.parse.unquote(params["oauth_signature"]))
    keys.cert.public_key().verify(signature, base_string.encode(), padding.PKCS1v15(), hashes.SHA256())


def test_empty_body_hash_and_pem_key_and_signer_class(keys, tmp_path, fixed_nonce_and_time):
    url = "https://sandbox.api.mastercard.com/loyalty/rewards/vendors/V1/orders/status?limit=10"
    ours = relay_sign(keys.pem, "GET", url, b"", tmp_path, password=None)
    assert header_params(ours)["oauth_body_hash"] == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="

    # OAuthSigner (the reference's request signer) over a prepared `requests` request gives the same header.
    prepared = requests.Request("GET", url).prepare()
    OAuthSigner(CONSUMER_KEY, keys.signing_key).sign_request(url, prepared)
    assert ours == prepared.headers["Authorization"]

    body = b'{"redemptionId":"R-9","statusCode":"B","backOrderDate":"2026-12-24"}'
    prepared = requests.Request("PUT", "https://sandbox.api.mastercard.com/loyalty/redemptions", data=body).prepare()
    OAuthSigner(CONSUMER_KEY, keys.signing_key).sign_request(prepared.url, prepared)
    assert relay_sign(keys.pem, "PUT", prepared.url, body, tmp_path, password=None) == prepared.headers["Authorization"]


def test_fresh_nonce_and_timestamp_without_fixed_values(keys, tmp_path):
    args = [str(relay_binary()), "sign", "mastercard-oauth1", "--consumer-key", CONSUMER_KEY, "--key", str(keys.pem),
            "--method", "GET", "--url", "https://example.com/x"]
    a = header_params(subprocess.run(args, capture_output=True, check=True).stdout.decode().strip())
    b = header_params(subprocess.run(args, capture_output=True, check=True).stdout.decode().strip())
    assert a["oauth_nonce"] != b["oauth_nonce"]
    for p in (a, b):
        assert len(p["oauth_nonce"]) == 16 and p["oauth_nonce"].isalnum() and p["oauth_nonce"].isascii()
        assert abs(int(p["oauth_timestamp"]) - time.time()) < 60


# -- the stand-in verifies what the reference signs ----------------------------------------------------------------

def wait_for_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"stand-in exited: {proc.stderr.read().decode() if proc.stderr else ''}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("stand-in did not start")


def test_stand_in_verifies_reference_signatures(keys, tmp_path):
    port = free_port()
    env = dict(os.environ, RELAY_SIM_MASTERCARD_PUBLIC_KEY=str(keys.public_pem))
    proc = subprocess.Popen([str(relay_binary()), "simulate", "mastercard-digital-redemptions",
                             "--listen", f"127.0.0.1:{port}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_for_port(port, proc)
        url = f"http://127.0.0.1:{port}/loyalty/redemptions"
        body = b'{"redemptionId":"R-1","statusCode":"S"}'
        headers = {"Content-Type": "application/json"}
        ok = requests.put(url, data=body, headers=headers, auth=OAuth1RSA(CONSUMER_KEY, keys.signing_key), timeout=5)
        assert ok.status_code == 200, ok.text
        with_query = requests.put(url + "?trace=a%20b&trace=c", data=body, headers=headers,
                                  auth=OAuth1RSA(CONSUMER_KEY, keys.signing_key), timeout=5)
        assert with_query.status_code == 200, with_query.text

        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        refused = requests.put(url, data=body, headers=headers, auth=OAuth1RSA(CONSUMER_KEY, other), timeout=5)
        assert refused.status_code == 401
        item = refused.json()["Errors"]["Error"][0]
        assert item["Source"] == "Gateway" and item["Recoverable"] == "false"
        assert "signature does not verify" in item["Description"]

        # Signed for one body, sent with another.
        prepared = requests.Request("PUT", url, data=body, headers=headers).prepare()
        OAuthSigner(CONSUMER_KEY, keys.signing_key).sign_request(url, prepared)
        prepared.body = body.replace(b'"S"', b'"N"')
        changed = requests.Session().send(prepared, timeout=5)
        assert changed.status_code == 401
        assert "oauth_body_hash does not match the body" in changed.json()["Errors"]["Error"][0]["Description"]

        unsigned = requests.put(url, data=body, headers={**headers, "Authorization": 'OAuth oauth_consumer_key="x"'},
                                timeout=5)
        assert unsigned.status_code == 401
        assert "is missing" in unsigned.json()["Errors"]["Error"][0]["Description"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- relay check ---------------------------------------------------------------------------------------------------

CHECK_CONFIG = """{{
  server: {{ listen: "127.0.0.1:0" }},
  store: {{ sqlite: "{db}" }},
  sources: {{ shop: {{ adapter: "generic", verify: {{ none: true }} }} }},
  destinations: {{
    mc: {{ adapter: "mastercard-digital-redemptions",
          auth: {{ mastercardOAuth1: {{ consumerKey: "${{env:MC_CONSUMER_KEY}}", {key} }} }} }},
  }},
  routes: [ {{ from: "shop", to: ["mc"] }} ],
}}
"""


def relay_check(tmp_path: Path, key: str, password: str | None = PASSWORD) -> subprocess.CompletedProcess:
    config = tmp_path / "relay.json5"
    config.write_text(CHECK_CONFIG.format(db=tmp_path / "relay.db", key=key))
    env = dict(os.environ, MC_CONSUMER_KEY=CONSUMER_KEY)
    if password is not None:
        env["MC_KEY_PASSWORD"] = password
    return subprocess.run([str(relay_binary()), "check", "--config", str(config)], capture_output=True, text=True,
                          env=env, timeout=20)


def expect_problem(done: subprocess.CompletedProcess, path: str, *words: str) -> str:
    assert done.returncode == 2, f"exit {done.returncode}: {done.stdout}{done.stderr}"
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip().startswith(path + ":")]
    assert lines, done.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert PASSWORD not in done.stderr and CONSUMER_KEY not in done.stderr
    return lines[0]


KEY_PATH = "destinations.mc.auth.mastercardOAuth1"


def test_check_accepts_a_good_key(keys, tmp_path):
    done = relay_check(tmp_path, f'keyFile: "{keys.p12}", keyPassword: "${{env:MC_KEY_PASSWORD}}", keyAlias: "keyalias"')
    assert done.returncode == 0, done.stderr
    done = relay_check(tmp_path, f'keyPem: "${{file:{keys.pem}}}"', password=None)
    assert done.returncode == 0, done.stderr


def test_check_key_errors(keys, tmp_path):
    pw = 'keyPassword: "${env:MC_KEY_PASSWORD}"'
    missing = tmp_path / "nowhere.p12"
    expect_problem(relay_check(tmp_path, f'keyFile: "{missing}", {pw}'), f"{KEY_PATH}.keyFile",
                   str(missing), "no such file")
    expect_problem(relay_check(tmp_path, f'keyFile: "{tmp_path}", {pw}'), f"{KEY_PATH}.keyFile", "directory")

    expect_problem(relay_check(tmp_path, f'keyFile: "{keys.p12}", {pw}', password="not-it"), f"{KEY_PATH}.keyFile",
                   str(keys.p12), "wrong PKCS#12 password")
    expect_problem(relay_check(tmp_path, f'keyFile: "{keys.p12}"'), f"{KEY_PATH}.keyFile",
                   "protected by a password", "keyPassword")
    expect_problem(relay_check(tmp_path, f'keyFile: "{keys.p12}", {pw}, keyAlias: "other"'), f"{KEY_PATH}.keyFile",
                   'no key with alias "other"', '"keyalias"')

    cert_only = tmp_path / "cert-only.p12"
    cert_only.write_bytes(pkcs12.serialize_key_and_certificates(
        b"ca", None, keys.cert, None, serialization.BestAvailableEncryption(PASSWORD.encode())))
    expect_problem(relay_check(tmp_path, f'keyFile: "{cert_only}", {pw}'), f"{KEY_PATH}.keyFile",
                   str(cert_only), "holds no private key")
    expect_problem(relay_check(tmp_path, f'keyFile: "{keys.public_pem}"'), f"{KEY_PATH}.keyFile",
                   "holds no private key", "CERTIFICATE")
    expect_problem(relay_check(tmp_path, f'keyPem: "${{file:{keys.public_pem}}}"'), f"{KEY_PATH}.keyPem",
                   "holds no private key")

    not_after = datetime.datetime(2025, 3, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
    expired_cert = certificate(keys.key, "relay-mc-expired", not_after - datetime.timedelta(days=365), not_after)
    expired = tmp_path / "expired.p12"
    expired.write_bytes(p12(keys.key, expired_cert, PASSWORD))
    expect_problem(relay_check(tmp_path, f'keyFile: "{expired}", {pw}'), f"{KEY_PATH}.keyFile",
                   str(expired), "expired", "2025-03-01T12:00:00Z", "relay-mc-expired")

    garbage = tmp_path / "garbage.p12"
    garbage.write_bytes(os.urandom(300))
    expect_problem(relay_check(tmp_path, f'keyFile: "{garbage}", {pw}'), f"{KEY_PATH}.keyFile",
                   "neither a PKCS#12 archive")

    # The consumer key is a secret: a reference, never inline text.
    done = relay_check(tmp_path, f'keyFile: "{keys.p12}", {pw}')
    assert done.returncode == 0, done.stderr
    config = (tmp_path / "relay.json5").read_text().replace('"${env:MC_CONSUMER_KEY}"', '"inline-key"')
    (tmp_path / "relay.json5").write_text(config)
    done = subprocess.run([str(relay_binary()), "check", "--config", str(tmp_path / "relay.json5")],
                          capture_output=True, text=True, env=dict(os.environ, MC_KEY_PASSWORD=PASSWORD), timeout=20)
    assert done.returncode == 2 and f"{KEY_PATH}.consumerKey: secrets must be a reference" in done.stderr
