"""Svix webhooks (preset `standard-webhooks`), signed by PyPI's `svix`, the Svix SDK: Svix sends the Standard Webhooks
scheme under `svix-*` header names (and `webhook-*` ones too), with a `whsec_` secret."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import datetime, timedelta, timezone

from svix.webhooks import Webhook, WebhookVerificationError

from conftest import assert_accepted, assert_unauthorized, tamper


def svix_signed(secret: str, payload: bytes, msg_id: str | None = None, at: datetime | None = None,
                prefix: str = "svix") -> dict[str, str]:
    """Headers as Svix sends them, signed with the SDK's Webhook.sign and checked with its own verify() first."""
    msg_id = msg_id or "msg_" + secrets.token_hex(12)
    at = at or datetime.now(tz=timezone.utc)
    wh = Webhook(secret)
    signature = wh.sign(msg_id, at, payload.decode())
    assert signature.startswith("v1,"), signature
    headers = {f"{prefix}-id": msg_id, f"{prefix}-timestamp": str(int(at.timestamp())),
               f"{prefix}-signature": signature}
    if abs((datetime.now(tz=timezone.utc) - at).total_seconds()) < 240:
        wh.verify(payload, headers)   # raises WebhookVerificationError if we built it wrong
    return headers


def message(event_type: str = "invoice.paid") -> bytes:
    return json.dumps({"type": event_type, "data": {"id": "inv_" + secrets.token_hex(4), "amount": 1999,
                                                    "currency": "EUR"}}).encode()


def test_svix_signed_webhook_is_accepted(relay):
    payload = message()
    event_id = assert_accepted(relay.post("acme", payload, svix_signed(relay.keys.standard_webhooks, payload)))
    assert event_id.startswith("evt_")


def test_svix_signature_under_webhook_header_names_is_accepted(relay):
    payload = message()
    assert_accepted(relay.post("acme", payload, svix_signed(relay.keys.standard_webhooks, payload, prefix="webhook")))


def test_svix_redelivery_is_a_duplicate(relay):
    payload = message()
    headers = svix_signed(relay.keys.standard_webhooks, payload)
    first = assert_accepted(relay.post("acme", payload, headers))
    again = relay.post("acme", payload, headers)
    assert again.status_code == 200, again.text
    assert again.json() == {"eventId": first, "duplicate": True}


def test_svix_tampered_body_is_rejected(relay):
    payload = message()
    headers = svix_signed(relay.keys.standard_webhooks, payload)
    changed = tamper(payload)
    try:   # the SDK refuses it as well
        Webhook(relay.keys.standard_webhooks).verify(changed, headers)
        raise AssertionError("svix verified a tampered body")
    except WebhookVerificationError:
        pass
    reason = assert_unauthorized(relay.post("acme", changed, headers))
    assert "signature" in reason
    assert_accepted(relay.post("acme", payload, headers))


def test_svix_stale_and_future_timestamps_are_rejected(relay):
    payload = message()
    now = datetime.now(tz=timezone.utc)
    for at in (now - timedelta(minutes=10), now + timedelta(minutes=10)):
        headers = svix_signed(relay.keys.standard_webhooks, payload, at=at)
        reason = assert_unauthorized(relay.post("acme", payload, headers))
        assert "timestamp" in reason


def test_svix_other_secret_is_rejected(relay):
    payload = message()
    other = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    assert_unauthorized(relay.post("acme", payload, svix_signed(other, payload)))
