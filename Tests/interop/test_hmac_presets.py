"""GitHub, Shopify and Slack presets, signed with Python's `hmac` exactly as those providers document it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid

from conftest import assert_accepted, assert_unauthorized, tamper


def github_headers(secret: str, payload: bytes, delivery: str | None = None) -> dict[str, str]:
    digest = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": "sha256=" + digest, "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-GitHub-Event": "push"}


def shopify_headers(secret: str, payload: bytes, webhook_id: str | None = None) -> dict[str, str]:
    digest = base64.b64encode(hmac.new(secret.encode(), payload, hashlib.sha256).digest()).decode()
    return {"X-Shopify-Hmac-SHA256": digest, "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
            "X-Shopify-Topic": "orders/updated"}


def slack_headers(secret: str, payload: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + payload
    return {"X-Slack-Signature": "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest(),
            "X-Slack-Request-Timestamp": ts}


def push() -> bytes:
    return json.dumps({"ref": "refs/heads/main", "after": secrets.token_hex(20),
                       "repository": {"full_name": "acme/relay"}}).encode()


def shopify_order() -> bytes:
    return json.dumps({"id": secrets.randbelow(10**12), "financial_status": "paid", "total_price": "10.00"}).encode()


def slack_event() -> bytes:
    return json.dumps({"type": "event_callback", "event_id": "Ev" + secrets.token_hex(5).upper(),
                       "event": {"type": "app_mention", "text": "hello"}}).encode()


# GitHub: X-Hub-Signature-256 = sha256=<hex HMAC-SHA256(body)>; idempotency on X-GitHub-Delivery.

def test_github_accepted_and_deduplicated(relay):
    payload = push()
    headers = github_headers(relay.keys.github, payload)
    first = assert_accepted(relay.post("github", payload, headers))
    again = relay.post("github", payload, headers)
    assert again.status_code == 200 and again.json()["eventId"] == first, again.text


def test_github_tampered_body_rejected(relay):
    payload = push()
    assert_unauthorized(relay.post("github", tamper(payload), github_headers(relay.keys.github, payload)))


def test_github_sha1_header_alone_is_not_enough(relay):
    payload = push()
    sha1 = "sha1=" + hmac.new(relay.keys.github.encode(), payload, hashlib.sha1).hexdigest()
    assert_unauthorized(relay.post("github", payload, {"X-Hub-Signature": sha1, "X-GitHub-Delivery": str(uuid.uuid4())}))


def test_github_signature_prefix_is_case_insensitive_hex(relay):
    payload = push()
    headers = github_headers(relay.keys.github, payload)
    headers["X-Hub-Signature-256"] = "sha256=" + headers["X-Hub-Signature-256"][len("sha256="):].upper()
    assert_accepted(relay.post("github", payload, headers))


# Shopify: X-Shopify-Hmac-SHA256 = base64(HMAC-SHA256(body)); idempotency on X-Shopify-Webhook-Id.

def test_shopify_accepted_and_deduplicated(relay):
    payload = shopify_order()
    headers = shopify_headers(relay.keys.shopify, payload)
    first = assert_accepted(relay.post("shopify", payload, headers))
    again = relay.post("shopify", payload, headers)
    assert again.status_code == 200 and again.json()["eventId"] == first, again.text


def test_shopify_tampered_body_rejected(relay):
    payload = shopify_order()
    assert_unauthorized(relay.post("shopify", tamper(payload), shopify_headers(relay.keys.shopify, payload)))


# Slack: X-Slack-Signature = v0=<hex HMAC-SHA256("v0:" + ts + ":" + body)>; idempotency on $.event_id.

def test_slack_accepted_and_deduplicated(relay):
    payload = slack_event()
    first = assert_accepted(relay.post("slack", payload, slack_headers(relay.keys.slack, payload)))
    # Slack's retry carries the same event_id with a new timestamp and signature.
    retry = slack_headers(relay.keys.slack, payload, timestamp=int(time.time()) + 1)
    retry["X-Slack-Retry-Num"] = "1"
    again = relay.post("slack", payload, retry)
    assert again.status_code == 200 and again.json()["eventId"] == first, again.text


def test_slack_tampered_body_rejected(relay):
    payload = slack_event()
    assert_unauthorized(relay.post("slack", tamper(payload), slack_headers(relay.keys.slack, payload)))


def test_slack_stale_timestamp_rejected(relay):
    payload = slack_event()
    reason = assert_unauthorized(relay.post("slack", payload, slack_headers(relay.keys.slack, payload,
                                                                            timestamp=int(time.time()) - 600)))
    assert "timestamp" in reason


def test_secret_of_another_source_is_rejected(relay):
    """Each source verifies with its own secret only."""
    payload = push()
    assert_unauthorized(relay.post("github", payload, github_headers(relay.keys.slack, payload)))
