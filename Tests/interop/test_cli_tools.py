"""`relay send`, `relay translate` and `relay capillary export`, run as a user would.

- `relay send` signs a test webhook with each preset; the signatures it makes are checked with the providers' own
  libraries (standardwebhooks, stripe) and Python's hmac, and the relay accepts them.
- `relay translate` prints the request a destination would get, credentials masked.
- `relay capillary export --put` uploads a vendor redemption to the Capillary stand-in; the test then plays
  Capillary: it fills the action's apiBody with Capillary's variables and calls the relay as the action says.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time

import requests
import standardwebhooks
import stripe

from conftest import REPO_ROOT, assert_accepted, free_port, relay_binary

sys.path.insert(0, str(REPO_ROOT / "Tests" / "support"))
import harness  # noqa: E402


def run(args, env=None, cwd=None, stdin=None):
    return subprocess.run([str(relay_binary()), *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60, input=stdin)


def start(args, env, log_path):
    log = open(log_path, "ab")
    proc = subprocess.Popen([str(relay_binary()), *args], env=env, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT)
    log.close()
    return proc


def test_send_signs_with_each_preset_as_the_providers_libraries_verify(relay, tmp_path):
    body = tmp_path / "body.json"
    body.write_bytes(b'{"id":"evt_cli_1","type":"order.updated","data":{"state":"shipped"}}')
    # The relay accepts each.
    for source in ["acme", "stripe", "github", "shopify", "slack"]:
        r = run(["send", source, "--config", str(relay.config), "--body", str(body)], env=relay.env)
        assert r.returncode == 0, f"{source}: {r.stdout} {r.stderr}"
        assert r.stdout.startswith("HTTP 202"), r.stdout
        event = json.loads(r.stdout.splitlines()[1])
        assert event["eventId"].startswith("evt_")
        # No credential is printed.
        for secret in [relay.keys.standard_webhooks, relay.keys.stripe, relay.keys.github, relay.keys.shopify,
                       relay.keys.slack]:
            assert secret not in r.stdout + r.stderr

    # The same signatures, captured at a sink, verify with code nobody here wrote.
    port = free_port()
    sink = start(["simulate", "sink", "--listen", f"127.0.0.1:{port}"], relay.env, tmp_path / "sink.log")
    try:
        base = f"http://127.0.0.1:{port}"
        assert harness.wait_http(base + "/_sink/stats", sink)
        for source in ["acme", "stripe", "github", "shopify", "slack"]:
            r = run(["send", source, "--config", str(relay.config), "--body", str(body), "--url", f"{base}/{source}"],
                    env=relay.env)
            assert r.returncode == 0, r.stderr
        raw = body.read_bytes()

        def headers(path):
            [req], _ = harness.sink_requests(base, "/" + path)
            assert req["body"].encode() == raw
            return {k.lower(): v for k, v in req["headers"].items()}

        h = headers("acme")
        standardwebhooks.Webhook(relay.keys.standard_webhooks).verify(
            raw, {"webhook-id": h["webhook-id"], "webhook-timestamp": h["webhook-timestamp"],
                  "webhook-signature": h["webhook-signature"]})
        stripe.WebhookSignature.verify_header(raw.decode(), headers("stripe")["stripe-signature"], relay.keys.stripe,
                                              tolerance=300)
        gh = hmac.new(relay.keys.github.encode(), raw, hashlib.sha256).hexdigest()
        assert headers("github")["x-hub-signature-256"] == "sha256=" + gh
        sh = base64.b64encode(hmac.new(relay.keys.shopify.encode(), raw, hashlib.sha256).digest()).decode()
        assert headers("shopify")["x-shopify-hmac-sha256"] == sh
        s = headers("slack")
        mac = hmac.new(relay.keys.slack.encode(), b"v0:" + s["x-slack-request-timestamp"].encode() + b":" + raw,
                       hashlib.sha256).hexdigest()
        assert s["x-slack-signature"] == "v0=" + mac
        assert abs(int(s["x-slack-request-timestamp"]) - time.time()) < 60
    finally:
        harness.stop(sink)

    # Usage errors name the problem and exit 2.
    bad = run(["send", "nowhere", "--config", str(relay.config), "--body", str(body)], env=relay.env)
    assert bad.returncode == 2 and 'no source "nowhere"' in bad.stderr
    bad = run(["send", "acme", "--config", str(relay.config), "--body", str(body), "--bogus", "1"], env=relay.env)
    assert bad.returncode == 2 and "unknown option --bogus" in bad.stderr
    assert run(["send", "--help"]).returncode == 0


TRANSLATE_CONFIG = """{
  statuses: { packed: { fallback: "placed" } },
  sources: { "shop": { adapter: "generic", verify: { none: true } } },
  destinations: {
    "acme": { adapter: "generic", method: "PUT", url: "https://api.acme.example/orders/${subject.orderId}",
              auth: { bearer: "${env:ACME_TOKEN}" }, headers: { "X-Api-Key": "${env:ACME_KEY}", "X-Trace": "t-1" },
              statusMap: { placed: "ACCEPTED", shipped: "SHIPPED" }, body: { state: "${mappedStatus}", n: "${attributes.n}" } },
  },
  routes: [ { from: "shop", to: ["acme"] } ],
}
"""


def test_translate_shows_the_request_with_credentials_masked(tmp_path):
    config = tmp_path / "relay.json5"
    config.write_text(TRANSLATE_CONFIG)
    env = dict(os.environ, ACME_TOKEN="tok-secret-123456", ACME_KEY="key-secret-abcdef")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"type": "order.status_changed", "subject": {"orderId": "A/1"}, "status": "packed",
                                 "statusFallback": "placed", "attributes": {"n": 3}}))
    r = run(["translate", "--config", str(config), "--destination", "acme", "--event", str(event)], env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "PUT https://api.acme.example/orders/A%2F1"
    assert "Authorization: Bearer ***" in lines
    assert "X-Api-Key: ***" in lines and "X-Trace: t-1" in lines
    assert json.loads(lines[-1]) == {"state": "ACCEPTED", "n": 3}
    assert "tok-secret-123456" not in r.stdout + r.stderr and "key-secret-abcdef" not in r.stdout + r.stderr
    # A status the destination does not map: the skip and why.
    event.write_text(json.dumps({"status": "refunded", "subject": {"orderId": "A"}}))
    r = run(["translate", "--config", str(config), "--destination", "acme", "--event", str(event)], env=env)
    assert r.returncode == 0 and r.stdout.startswith('skipped: no mapping: status "refunded"'), r.stdout
    # A missing field the body needs: exit 1 with the reason.
    event.write_text(json.dumps({"status": "shipped", "subject": {"orderId": "A"}}))
    r = run(["translate", "--config", str(config), "--destination", "acme", "--event", str(event)], env=env)
    assert r.returncode == 1 and "attributes.n" in r.stderr, r.stderr


EXPORT_CONFIG = """{{
  server: {{ listen: "127.0.0.1:{port}" }},
  admin: {{ listen: "127.0.0.1:{admin}" }},
  store: {{ sqlite: "{db}" }},
  sources: {{
    "capillary-rewards": {{ adapter: "capillary", verify: {{ bearer: {{ tokens: ["${{env:CAPILLARY_ACTION_TOKEN}}"] }} }},
                            statusMap: {{ "received": "placed" }} }},
  }},
  destinations: {{
    "capillary": {{ adapter: "capillary", baseURL: "http://127.0.0.1:{cap}",
                   auth: {{ capillaryToken: {{ url: "http://127.0.0.1:{cap}/v3/oauth/token/generate",
                                             key: "${{env:CAPILLARY_KEY}}", secret: "${{env:CAPILLARY_SECRET}}" }} }},
                   statusMap: {{ placed: "received" }} }},
  }},
  routes: [],
}}
"""


def test_capillary_export_put_to_the_stand_in_then_capillary_calls_the_relay(tmp_path):
    port, admin, cap = harness.free_ports(3)
    config = tmp_path / "relay.json5"
    config.write_text(EXPORT_CONFIG.format(port=port, admin=admin, cap=cap, db=tmp_path / "relay.db"))
    env = dict(os.environ, CAPILLARY_ACTION_TOKEN="cap-action-7f3e91", CAPILLARY_KEY="key-1", CAPILLARY_SECRET="secret-1",
               RELAY_SIM_CAPILLARY_KEY="key-1", RELAY_SIM_CAPILLARY_SECRET="secret-1")
    env.pop("RELAY_LOG_LEVEL", None)
    stand_in = start(["simulate", "capillary", "--listen", f"127.0.0.1:{cap}"], env, tmp_path / "capillary.log")
    relay = start(["serve", "--config", str(config)], env, tmp_path / "relay.log")
    try:
        assert harness.wait_http(f"http://127.0.0.1:{cap}/_sink/stats", stand_in)
        assert harness.wait_http(f"http://127.0.0.1:{port}/healthz", relay)
        # Printed: the secret stays a placeholder.
        printed = run(["capillary", "export", "--config", str(config), "--source", "capillary-rewards",
                       "--vendor-id", "430", "--custom-field", "Partner_Order_Id"], env=env)
        assert printed.returncode == 0, printed.stderr
        doc = json.loads(printed.stdout)
        assert "cap-action-7f3e91" not in printed.stdout
        assert doc["responseKeys"] == ["relayEventId"] and doc["vendorId"] == "430"

        put = run(["capillary", "export", "--config", str(config), "--source", "capillary-rewards", "--vendor-id", "430",
                   "--custom-field", "Partner_Order_Id", "--put", "--redemption-id", "34443", "--brand-id", "61"], env=env)
        assert put.returncode == 0, put.stdout + put.stderr
        assert put.stdout.startswith("HTTP 200: Vendor redemption updated successfully"), put.stdout
        assert "cap-action-7f3e91" not in put.stdout + put.stderr
        [req], _ = harness.sink_requests(f"http://127.0.0.1:{cap}", "/api_gateway/rewards/core/v1/vendor/redemption/34443/brand/61")
        assert req["method"] == "PUT"
        assert req["headers"].get("x-cap-api-oauth-token", "").startswith("cap_")   # the token flow's token
        held = json.loads(req["body"])
        [action] = held["actions"]
        assert action["apiUrl"] == f"http://127.0.0.1:{port}/v1/hooks/capillary-rewards"
        assert action["apiHeaders"]["Authorization"] == "Bearer cap-action-7f3e91"
        assert action["contextKeys"] == {"relayEventId": "response.eventId"}

        # Capillary runs the action: its variables into apiBody, the headers as given.
        values = {"rewardTransactionId": "3482445", "customerId": "85076836", "rewardId": "177657",
                  "fulfillmentStatus": "received", "mobile": "919876543210", "customfield_Partner_Order_Id": "PO-9"}
        text = action["apiBody"]
        for k, v in values.items():
            text = text.replace("${" + k + "}", v)
        assert "${" not in text
        r = requests.request(action["apiType"], action["apiUrl"], data=text.encode(), headers=action["apiHeaders"], timeout=10)
        event_id = assert_accepted(r)
        assert r.json()["eventId"] == event_id   # what contextKeys relayEventId reads
        _, data = harness.http_get(f"http://127.0.0.1:{admin}/v1/events/{event_id}")
        event = json.loads(data)["event"]
        assert event["subject"] == {"transactionId": "3482445", "customerId": "85076836", "rewardId": "177657"}
        assert event["status"] == "placed" and event["providerStatus"]["code"] == "received"
        assert event["attributes"]["mobile"] == "919876543210"
        assert event["attributes"]["customFields"] == {"Partner_Order_Id": "PO-9"}

        # A source Capillary cannot sign for is refused, naming why.
        bad = run(["capillary", "export", "--config", str(config), "--source", "nowhere"], env=env)
        assert bad.returncode == 2 and 'no source "nowhere"' in bad.stderr
    finally:
        harness.stop(relay)
        harness.stop(stand_in)
