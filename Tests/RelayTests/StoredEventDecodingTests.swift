import Foundation
@testable import Relay
import Testing

/// `CanonicalEvent.fromStoredJSON` (the relay's parser, used by the stores' claims) against `JSONDecoder` (what it
/// replaced), on the JSON the stores write and on JSON of other shapes.
@Suite("Stored event decoding")
struct StoredEventDecodingTests {
    static let events: [CanonicalEvent] = {
        let trace = TraceContext(traceID: TraceID(high: 0x0123_4567_89ab_cdef, low: 0xfedc_ba98_7654_3210), spanID: 0xabc,
                                 flags: 1, state: "vendor=x,other=y")
        let attributes: [String: JSONValue] = [
            "big": .integer("9007199254740993"), "negative": .integer("-9223372036854775809"), "n": .number(42),
            "pi": .number(3.14159), "tiny": .number(1.5e-300), "flag": .bool(true), "none": .null,
            "text": .string("héllo \"quoted\" \\ back\nline\t\u{0001} ☃ 𝄞"),
            "nested": .object(["list": .array([.number(1), .string("two"), .object(["three": .array([])])])]),
        ]
        return [
            CanonicalEvent(id: "evt_01", source: "punchh", type: "redemption.status", receivedAt: "2026-12-07T10:00:00.000Z",
                           idempotencyKey: "k-1"),
            CanonicalEvent(id: "evt_02", source: "mdr", type: "order.updated",
                           subject: ["vendorOrderId": "V-9", "memberId": "M ü 1"], status: .shipped,
                           providerStatus: ProviderStatus(code: "SHP", label: "Shipped \"fast\""),
                           occurredAt: "2026-12-07T09:59:59Z", receivedAt: "2026-12-07T10:00:00.001Z",
                           attributes: attributes, idempotencyKey: "k-2",
                           raw: RawPayload(contentType: "application/json", body: "{\"a\":1}"),
                           statusFallback: .processed, trace: trace),
            CanonicalEvent(id: "evt_03", source: "capillary", type: "t", providerStatus: ProviderStatus(code: "X"),
                           receivedAt: "r", idempotencyKey: "k", statusUnmapped: true,
                           trace: TraceContext(traceID: TraceID(high: 1, low: 2), spanID: 3, flags: 0)),
            CanonicalEvent(id: "evt_04", source: "s", type: "t", status: CanonicalStatus(named: "custom-added"),
                           receivedAt: "r", idempotencyKey: "k"),
        ]
    }()

    @Test("the JSON the stores write reads back as the same event as JSONDecoder reads it")
    func sameAsJSONDecoder() throws {
        for e in Self.events {
            for includeRaw in [false, true] {
                let bytes = e.jsonBytes(includeRaw: includeRaw, includeTrace: true)
                #expect(CanonicalEvent.storedShape(try #require(try? JSONParser.parse(bytes).objectValue)) != nil,
                        "the stored shape of \(e.id) should take the fast path")
                let fast = try CanonicalEvent.fromStoredJSON(bytes)
                let slow = try JSONDecoder().decode(CanonicalEvent.self, from: Data(bytes))
                #expect(fast == slow)
                #expect(fast.jsonBytes(includeRaw: includeRaw, includeTrace: true) == bytes)
            }
        }
    }

    @Test("JSON of another shape goes to JSONDecoder: it reads, or fails, as before", arguments: [
        #"{"id":"a","source":"s","type":"t","receivedAt":"r","idempotencyKey":"k","attributes":{}}"#,      // no subject
        #"{"id":"a","source":"s","type":"t","receivedAt":"r","idempotencyKey":"k","subject":{},"attributes":{},"status":5}"#,
        #"{"id":"a","source":"s","type":"t","receivedAt":"r","idempotencyKey":"k","subject":{"x":1},"attributes":{}}"#,
        #"{"id":"a","source":"s","type":"t","receivedAt":"r","idempotencyKey":"k","subject":{},"attributes":{},"trace":{"parent":"nope"}}"#,
        #"{"id":"a","source":"s","type":"t","receivedAt":"r","idempotencyKey":"k","subject":{},"attributes":{},"statusUnmapped":"yes"}"#,
        #"{"id":"a","source":"s","type":"t","receivedAt":"r","idempotencyKey":"k","subject":{},"attributes":{},"raw":{"body":"b"}}"#,
        #"{"id":"a","source":"s","type":"t","receivedAt":"r","idempotencyKey":"k","subject":{},"attributes":{},"providerStatus":{"label":"l"}}"#,
        #"{"id":null,"source":"s","type":"t","receivedAt":"r","idempotencyKey":"k","subject":{},"attributes":{}}"#,
        #"[1,2]"#, #"{"id":"a""#,
    ])
    func otherShapes(json: String) throws {
        let bytes = Array(json.utf8)
        let slow = Result { try JSONDecoder().decode(CanonicalEvent.self, from: Data(bytes)) }
        let fast = Result { try CanonicalEvent.fromStoredJSON(bytes) }
        switch (slow, fast) {
        case (.success(let a), .success(let b)): #expect(a == b)
        case (.failure, .failure): break
        default: Issue.record("JSONDecoder: \(slow), fromStoredJSON: \(fast)")
        }
    }

    @Test("unknown fields and nulls for optional ones are read as JSONDecoder reads them")
    func unknownAndNulls() throws {
        let json = #"{"id":"a","source":"s","type":"t","receivedAt":"r","idempotencyKey":"k","subject":{},"attributes":{"x":[null]},"status":null,"trace":null,"later":{"field":1}}"#
        let fast = try CanonicalEvent.fromStoredJSON(Array(json.utf8))
        #expect(fast == (try JSONDecoder().decode(CanonicalEvent.self, from: Data(json.utf8))))
        #expect(fast.status == nil && fast.trace == nil && fast.attributes["x"] == .array([.null]))
    }
}
