#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (Fuzz/corpus/<target>/) from the repo's own test bodies and config
examples. Run it again after changing it; the files are committed, small (a few KB per target), and named by their
content's hash so that a rerun rewrites the same ones.

Field-separated targets (FuzzTemplate, FuzzSignatures, FuzzHTTP's structured mode) take NUL-separated fields; see
each target's main.swift for their meaning.
"""

import hashlib
import pathlib
import shutil

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORPUS = ROOT / "Fuzz" / "corpus"

# Webhook bodies from Tests/RelayTests (IngestTests, GenericFlowTests, PunchhTests, CapillaryTests, MastercardTests)
# and the README.
BODIES = [
    b'{"order":{"id":"O-1","state":"SHIPPED"},"vendor":"124"}',
    b'{"redemption":{"id":"R-1001","state":"BACKORDER","eta":"2026-12-01"}}',
    b'{"content_id":"c-1","timestamp":1767225600,"business_id":312,"event_name":"redemptions",'
    b'"event_type":"redemption","action":"update","payload":{"redemption_id":987654,"redemption_status":"processed",'
    b'"redemption_amount":5.5,"location_id":4411,"redemption_code":{"redemption_code":"RC-1","status":"processed",'
    b'"processed_at":"2025-11-20T10:00:00Z","transaction_no":"TX-77"},"user":{"id":123456,"first_name":"Ada"}}}',
    b'{"rewardTransactionId": 3482445, "customerId": 85076836, "rewardId": 177657, "fulfillmentStatus": "In Progress",'
    b' "mobile": "919876543210", "customfield_Partner_Order_Id": "V-77", "customfield_Qty": 2}',
    b'{"transactions":[{"transactionId":3482445,"fulfillmentDetails":{"status":"in-progress"}}]}',
    b'{"OrderStatusArray":[{"orderId":"O-1","status":"SHIPPED"}]}',
    b'{"backOrderDate":"2026-12-01","redemptionId":"R-1001","statusCode":"B"}',
    b'{"id":"evt_1","type":"order.updated","order":{"id":"O-9","state":"PACKED","address":[{"city":"Oslo"}]},'
    b'"vendor id":"V 1","items":[{"sku":"A-1","qty":2},{"sku":"B"}],"at":"2026-01-01T00:00:00Z"}',
    b'{"state":"LOST"}',
    b'{"a":1e308,"b":-0,"c":9007199254740993,"d":"\\u00e9\\ud83d\\ude00\\n","e":[true,false,null,0.5,-1.25E-3]}',
    b'[1,]',
    b'{"a":',
    b'[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]',
    # CapillaryTests: a reward id beyond 2^64
    b'{"transactions":[{"customerId":"0085076836","fulfillmentDetails":{"status":"received"},'
    b'"rewardId":12345678901234567890,"transactionId":"TX-3482445"}]}',
]

FORMS = [
    b"token=x&team_id=T0001&command=%2Fweather&text=94070+sunny&response_url=https%3A%2F%2Fhooks.slack.com%2Fx",
    b"order_id=1001&customer=c-9&state=done",
    b"a=%ZZ",
    b"a=1&&b=&=c&d",
    b"k=%C3%A9%E2%82%AC+x%2B",
]

# Templates and JSON paths as config/partners/*.json5 and the adapters' tests write them.
TEMPLATES = [
    "${subject.orderId}", "https://api.example.com/orders/${subject.orderId}/status?s=${mappedStatus}",
    "${attributes.carrier?}", "Token token=\"${env:A}\"", "${raw.order.id}", "${raw.items.0.sku}",
    "${delivery.id}-${delivery.attempt}", "${context.voucher}", "${providerStatus.code}", "${customfield_Partner_Order_Id}",
    "${subject.}", "${attributes.a[0]}", "x${", "${id}${source}${type}${status}${occurredAt}${receivedAt}${idempotencyKey}",
]
PATHS = [
    "$.order.id", "$['vendor id']", "$.items[0].sku", "$.order.address.get(0).city", "subject.orderId",
    "attributes.items[0].sku", "response.headers.Location", "response.coupon.code", "$..a", "$.a[*]", "$[?(@.x)]",
    "$.a.", "$[-1]", "$[99999999999999999999]", "$[\"k\"]",
]

# Source names in FuzzSources.signed order (Fuzz/Support/FuzzSupport/FuzzSources.swift).
SIGNED = ["sw", "stripe", "gh", "slack", "shopify", "punchh-signed", "keyed", "list", "b64url", "basic", "bearer",
          "apikey", "token"]
ALL = SIGNED + ["open", "mapped", "punchh", "capillary", "refuse"]

# Signature headers as the providers send them (made-up signatures: they never verify). The selector bytes are
# never 0 (a NUL ends the field): the source index is taken modulo the count, the mode by its lowest bit.
HEADERS = [
    (0, b"v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= v1,bm9wZQ==", b"1767225600", b"msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
    (1, b"t=1767225600,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,v0=abc", b"", b""),
    (2, b"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", b"", b"delivery-1"),
    (3, b"v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503", b"1767225600", b""),
    (4, b"XWmrwMey6OsLMeiZKwP4FppHH3cmAiiJJAweH5Jo4bM=", b"", b"wh-1"),
    (5, b"hmac 0f9a", b"", b""),
    (6, b"ts=1767225600;sig=AAAA;sig=", b"", b""),
    (7, b"v1=00,v1=", b"1767225600.5", b"id-1"),
    (8, b"sig -_-_", b"", b""),
    (9, b"Basic cmVsYXk6cGFzc3dvcmQ=", b"", b""),
    (10, b"Bearer tok", b"", b""),
    (11, b"key", b"", b""),
    (12, b"Token tok", b"", b""),
    (1, b"t=99999999999999,v1=", b"", b""),
    (3, b"v0=", b"-1e9", b""),
]

RAW_REQUESTS = [
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /v1/hooks/open HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}",
    b"POST /v1/hooks/mapped HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
    b"5\r\n{\"id\"\r\n7\r\n:\"e1\"}\n\r\n0\r\n\r\n",
    b"POST /v1/hooks/open HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
    b"POST /v1/hooks/open HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"POST /v1/hooks/gh HTTP/1.1\r\nX-Hub-Signature-256: sha256=00\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /v1/hooks/open HTTP/1.1\r\nExpect: 100-continue\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 7\r\n\r\na=1&b=2",
    b"GET /v1/hooks/op%65n HTTP/1.1\r\n\r\nDELETE /v1/hooks/open HTTP/1.1\r\n\r\nHEAD /v1/hooks/nope HTTP/1.1\r\n\r\n",
    b"POST /v1/hooks/refuse HTTP/1.0\r\nContent-Length: 16\r\n\r\n{\"state\":\"LOST\"}",
    b"POST /v1/hooks/capillary HTTP/1.1\r\nContent-Length: 19\r\n\r\n{\"rewardTransactionId\":1}",
    b"PUT /v1/hooks/punchh?x=1 HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi",
    b"GARBAGE\r\n\r\n",
]
# Nested as deep as the ingest parser takes (JSONParser.maxDepth), kept whole as an attribute by the mapped source.
DEEP = b'{"order":{"id":"D","state":"SHIPPED"},"items":' + b"[" * 255 + b"]" * 255 + b"}"
RAW_REQUESTS.append(b"POST /v1/hooks/mapped HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                    % len(DEEP) + DEEP)


def write(target: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


def main() -> None:
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    for b in BODIES:
        write("FuzzJSON", b)
    for name in ["relay.json5", "demo.json5", "partners/generic.json5", "partners/punchh.json5"]:
        write("FuzzJSON5", (ROOT / "config" / name).read_bytes())
    write("FuzzJSON5", (ROOT / "config" / "partners" / "capillary-vendor-redemption.json").read_bytes())
    write("FuzzJSON5", b"{a: 0x1F, b: .5, c: +1, d: 'it\\'s', e: [1,], /* c */ f: \"\\x41\\u{0}\", // x\n g: 1e3,}")
    write("FuzzJSON5", b'{"a": 1, "a": 2}')
    for b in BODIES[:6]:
        write("FuzzJSON5", b)
    for f in FORMS:
        write("FuzzForm", f)
    for i, t in enumerate(TEMPLATES):
        write("FuzzTemplate", bytes([i + 1]) + b"\0" + t.encode() + b"\0" + PATHS[i % len(PATHS)].encode() + b"\0"
              + BODIES[i % len(BODIES)])
    for (index, sig, ts, mid) in HEADERS:
        for mode in (0, 1):
            write("FuzzSignatures", bytes([index + len(SIGNED), 2 - mode, 2, 7, 3]) + b"\0" + sig + b"\0" + ts + b"\0" + mid + b"\0"
                  + b"/v1/hooks/x?a=1" + b"\0" + BODIES[index % len(BODIES)])
    for r in RAW_REQUESTS:
        write("FuzzHTTP", b"\x00" + r)
    for i, name in enumerate(ALL):
        framing = i % 3
        extra = b"X-Request-Id: r-1" if i % 4 == 3 else b""
        ctype = b"application/x-www-form-urlencoded" if name == "slack" else b""
        body = FORMS[0] if name == "slack" else BODIES[i % 9]
        # Selector bytes are never 0 (a NUL ends the field): each value is taken modulo its range.
        write("FuzzHTTP", bytes([2, i + len(ALL), 1, framing + 3, 5, i % 3 + 3]) + b"\0" + b"q=1" + b"\0" + extra
              + b"\0" + ctype + b"\0" + body)


if __name__ == "__main__":
    main()
