"""Standard Webhooks (preset `standard-webhooks`), signed by PyPI's `standardwebhooks`, the spec's reference library."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import datetime, timedelta, timezone

from standardwebhooks.webhooks import Webhook

from conftest import assert_accepted, assert_unauthorized, tamper


def signed(secret: str, payload: bytes, msg_id: str | None = None, at: datetime | None = None) -> dict[str, str]:
    """Headers as a Standard Webhooks sender sends them, checked with the library's own verify() first."""
    msg_id = msg_id or "msg_" + secrets.token_hex(12)
    at = at or datetime.now(tz=timezone.utc)
    wh = Webhook(secret)
    signature = wh.sign(msg_id, at, payload.decode())
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())), "webhook-signature": signature}
    if abs((datetime.now(tz=timezone.utc) - at).total_seconds()) < 240:
        wh.verify(payload, headers)   # raises WebhookVerificationError if we built it wrong
    return headers


def order(state: str = "SHIPPED") -> bytes:
    return json.dumps({"type": "order.updated", "order": {"id": "ord_" + secrets.token_hex(4), "state": state},
                       "vendor": "acme"}).encode()


def test_signed_webhook_is_accepted(relay):
    payload = order()
    r = relay.post("acme", payload, signed(relay.keys.standard_webhooks, payload))
    event_id = assert_accepted(r)
    assert event_id.startswith("evt_")
    assert r.headers.get("X-Request-Id")


def test_duplicate_webhook_id_returns_first_event_id(relay):
    payload = order()
    headers = signed(relay.keys.standard_webhooks, payload)
    first = assert_accepted(relay.post("acme", payload, headers))
    again = relay.post("acme", payload, headers)
    assert again.status_code == 200, again.text
    assert again.json() == {"eventId": first, "duplicate": True}
    # A retry re-signed later (same webhook-id, new timestamp) is the same message.
    retry = relay.post("acme", payload, signed(relay.keys.standard_webhooks, payload, msg_id=headers["webhook-id"],
                                                at=datetime.now(tz=timezone.utc) + timedelta(seconds=1)))
    assert retry.status_code == 200, retry.text
    assert retry.json()["eventId"] == first


def test_one_changed_body_byte_is_rejected(relay):
    payload = order()
    headers = signed(relay.keys.standard_webhooks, payload)
    reason = assert_unauthorized(relay.post("acme", tamper(payload), headers))
    assert "signature" in reason
    # The untouched request still goes through afterwards: the rejection recorded nothing under that id.
    assert_accepted(relay.post("acme", payload, headers))


def test_wrong_secret_is_rejected(relay):
    payload = order()
    other = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    assert_unauthorized(relay.post("acme", payload, signed(other, payload)))


def test_rotation_any_listed_signature_matches(relay):
    payload = order()
    headers = signed(relay.keys.standard_webhooks, payload)
    headers["webhook-signature"] = "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= " + headers["webhook-signature"]
    assert_accepted(relay.post("acme", payload, headers))


def test_stale_and_future_timestamps_are_rejected(relay):
    payload = order()
    now = datetime.now(tz=timezone.utc)
    for at in (now - timedelta(minutes=10), now + timedelta(minutes=10)):
        reason = assert_unauthorized(relay.post("acme", payload, signed(relay.keys.standard_webhooks, payload, at=at)))
        assert "timestamp" in reason


def test_missing_headers_are_rejected(relay):
    payload = order()
    headers = signed(relay.keys.standard_webhooks, payload)
    for name in ("webhook-signature", "webhook-timestamp", "webhook-id"):
        partial = {k: v for k, v in headers.items() if k != name}
        assert_unauthorized(relay.post("acme", payload, partial))


def test_svix_header_names_are_accepted(relay):
    payload = order()
    headers = signed(relay.keys.standard_webhooks, payload)
    svix = {"svix-id": headers["webhook-id"], "svix-timestamp": headers["webhook-timestamp"],
            "svix-signature": headers["webhook-signature"]}
    assert_accepted(relay.post("acme", payload, svix))
