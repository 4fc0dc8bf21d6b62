"""Stripe (preset `stripe`): `Stripe-Signature: t=...,v1=...`, built with the `stripe` library's own signing helper
and checked with `stripe.Webhook.construct_event` before it is sent."""

from __future__ import annotations

import json
import secrets
import time

import pytest
import stripe

from conftest import assert_accepted, assert_unauthorized, tamper


def stripe_header(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The header exactly as Stripe's library builds it for tests."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    ws = stripe.WebhookSignature
    if hasattr(ws, "generate_signature_header"):           # stripe >= 12
        return ws.generate_signature_header(payload.decode(), secret, timestamp=timestamp)
    signature = ws._compute_signature(f"{timestamp}.{payload.decode()}", secret)
    return f"t={timestamp},{ws.EXPECTED_SCHEME}={signature}"


def event(kind: str = "payment_intent.succeeded") -> bytes:
    return json.dumps({
        "id": "evt_" + secrets.token_hex(12), "object": "event", "api_version": "2024-06-20",
        "created": int(time.time()), "type": kind, "livemode": False,
        "data": {"object": {"id": "pi_" + secrets.token_hex(8), "object": "payment_intent", "amount": 2000,
                            "currency": "usd", "status": "succeeded"}},
    }).encode()


def test_signed_event_is_accepted(relay):
    payload = event()
    header = stripe_header(payload, relay.keys.stripe)
    constructed = stripe.Webhook.construct_event(payload, header, relay.keys.stripe)
    assert constructed.id == json.loads(payload)["id"]
    event_id = assert_accepted(relay.post("stripe", payload, {"Stripe-Signature": header}))
    assert event_id.startswith("evt_")


def test_duplicate_stripe_event_id_returns_first_event_id(relay):
    payload = event()
    first = assert_accepted(relay.post("stripe", payload, {"Stripe-Signature": stripe_header(payload, relay.keys.stripe)}))
    # Stripe retries the same event (same evt_ id) with a fresh signature.
    again = relay.post("stripe", payload, {"Stripe-Signature": stripe_header(payload, relay.keys.stripe,
                                                                             timestamp=int(time.time()) + 1)})
    assert again.status_code == 200, again.text
    assert again.json() == {"eventId": first, "duplicate": True}


def test_tampered_body_is_rejected(relay):
    payload = event()
    header = stripe_header(payload, relay.keys.stripe)
    stripe.Webhook.construct_event(payload, header, relay.keys.stripe)
    changed = tamper(payload)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(changed, header, relay.keys.stripe)
    reason = assert_unauthorized(relay.post("stripe", changed, {"Stripe-Signature": header}))
    assert "signature" in reason


def test_stale_timestamp_is_rejected(relay):
    payload = event()
    stale = int(time.time()) - 600
    header = stripe_header(payload, relay.keys.stripe, timestamp=stale)
    # A valid signature (tolerance off) that Stripe's library refuses as too old (default tolerance, 300 s).
    stripe.WebhookSignature.verify_header(payload, header, relay.keys.stripe, tolerance=None)
    with pytest.raises(stripe.SignatureVerificationError, match="tolerance"):
        stripe.Webhook.construct_event(payload, header, relay.keys.stripe)
    reason = assert_unauthorized(relay.post("stripe", payload, {"Stripe-Signature": header}))
    assert "timestamp" in reason


def test_wrong_secret_is_rejected(relay):
    payload = event()
    header = stripe_header(payload, "whsec_" + secrets.token_hex(16))
    assert_unauthorized(relay.post("stripe", payload, {"Stripe-Signature": header}))


def test_rolled_secret_header_with_two_signatures(relay):
    """During a secret roll Stripe sends one v1 per secret; any may match."""
    payload = event()
    ts = int(time.time())
    good = stripe_header(payload, relay.keys.stripe, timestamp=ts)
    old = stripe_header(payload, "whsec_" + secrets.token_hex(16), timestamp=ts)
    header = f"{good},v1={old.split('v1=')[1]},v0={'0' * 64}"
    stripe.Webhook.construct_event(payload, header, relay.keys.stripe)
    assert_accepted(relay.post("stripe", payload, {"Stripe-Signature": header}))
