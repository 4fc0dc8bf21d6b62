import Crypto
import Foundation
import Relay
import Testing

/// What the fuzz targets (Fuzz/, docs/fuzzing.md) found, each kept here as a unit test beside the input that
/// found it (Fuzz/regressions/<target>/, replayed by `make fuzz-smoke`).
@Suite("Fuzz regressions")
struct FuzzRegressionTests {
    /// An HMAC verifier over `{path}:{body}` (the target as sent), as a `signedContent` of the `hmac` block gives.
    static func pathVerifier() -> HMACVerifier {
        var v = HMACVerifier(scheme: "hmac")
        v.headers = ["X-Sig"]
        v.template = [.path, .literal(Array(":".utf8)), .body]
        v.keys = [HMACKey(.sha256, key: Array("fuzz-secret".utf8))]
        return v
    }

    static func request(_ target: String, _ headers: [(String, String)], _ body: [UInt8]) -> HTTPRequest {
        HTTPRequest(method: "POST", target: target, headers: HTTPHeaders(headers), body: body, remoteAddress: "127.0.0.1")
    }

    @Test("FuzzSignatures: a target ending in an empty query keeps its '?', so a signature over the target verifies")
    func emptyQueryMark() throws {
        let r = Self.request("/v1/hooks/x?", [], [])
        #expect(r.path == "/v1/hooks/x" && r.query == "" && r.target == "/v1/hooks/x?")
        #expect(Self.request("/v1/hooks/x", [], []).target == "/v1/hooks/x")
        #expect(Self.request("/v1/hooks/x?a=1", [], []).target == "/v1/hooks/x?a=1")

        let v = Self.pathVerifier()
        let body = Array("{}".utf8)
        let headers = try #require(v.senderHeaders(body: body, url: "http://relay.example/v1/hooks/x?", now: Date()))
        guard case .verified = v.verify(Self.request("/v1/hooks/x?", headers, body), now: Date()) else {
            Issue.record("a request signed over /v1/hooks/x? was refused")
            return
        }
        // Without the '?' it is another target, and the signature does not cover it.
        guard case .rejected = v.verify(Self.request("/v1/hooks/x", headers, body), now: Date()) else {
            Issue.record("a signature over /v1/hooks/x? verified /v1/hooks/x")
            return
        }
    }

    @Test("FuzzSignatures: `relay send` signs the whole target of a URL whose query holds another URL")
    func urlInQuery() throws {
        let v = Self.pathVerifier()
        let body = Array("{}".utf8)
        let target = "/v1/hooks/x?next=https://a.example/b"
        let headers = try #require(v.senderHeaders(body: body, url: "http://relay.example" + target, now: Date()))
        guard case .verified = v.verify(Self.request(target, headers, body), now: Date()) else {
            Issue.record("a request signed for \(target) was refused")
            return
        }
    }

    @Test("Tests/abuse/run: JSON nested as deep as the parser allows is taken on the epoll server's threads; one level more is 400")
    func deepestJSON() throws {
        let relay = try RunningRelay(sources: """
            "open": { adapter: "generic", verify: { none: true } },
            "mapped": { adapter: "generic", verify: { none: true }, map: { subject: { orderId: "$.order.id" }, attributes: { all: "$" } } },
            """)
        defer { relay.stop() }
        let c = relay.client
        let levels = JSONParser.maxDepth
        func nested(_ n: Int) -> String { String(repeating: "[", count: n) + String(repeating: "]", count: n) }
        // Passed through (validated only), and read by a map (parsed into a tree, kept whole as an attribute, encoded
        // for the store): a debug build overflowed the loop thread's 1 MiB stack on either.
        _ = try expectAccepted(try c.post("/v1/hooks/open", json: nested(levels)))
        _ = try expectAccepted(try c.post("/v1/hooks/mapped", json: #"{"order":{"id":"D-1"},"x":"# + nested(levels - 1) + "}"))
        let over = try c.post("/v1/hooks/open", json: nested(levels + 1))
        #expect(over.status == 400, "\(over)")
        #expect(try relay.store.eventCount() == 2)
    }

    @Test("Tests/abuse/run: an event whose attribute keeps the deepest body ingest accepts is read back from the store")
    func deepestEventReadBack() throws {
        let relay = try RunningRelay(sources: """
            "mapped": { adapter: "generic", verify: { none: true }, map: { subject: { orderId: "$.order.id" }, attributes: { all: "$" } } },
            """)
        defer { relay.stop() }
        let levels = JSONParser.maxDepth
        let body = #"{"order":{"id":"D-2"},"x":"# + String(repeating: "[", count: levels - 1) + String(repeating: "]", count: levels - 1) + "}"
        let id = try expectAccepted(try relay.client.post("/v1/hooks/mapped", json: body))
        // Stored as {"attributes":{"all":<body>},...}: two levels more than the body, which Foundation's JSONDecoder
        // (the stores' reader, at most 512 levels) must still take.
        let event = try #require(try relay.store.event(id: id))
        #expect(event.subject["orderId"] == "D-2")
        #expect(event.attributes["all"] == (try JSONParser.parse(Array(body.utf8))))
        #expect(levels + 2 <= 512)
    }

    @Test("FuzzHTTP: integers past 2^53 in an attribute read back from the store with all their digits")
    func bigIntegersReadBack() throws {
        let relay = try RunningRelay(sources: """
            "mapped": { adapter: "generic", verify: { none: true }, map: { subject: { orderId: "$.order.id" }, attributes: { all: "$" } } },
            """)
        defer { relay.stop() }
        let body = #"{"order":{"id":"B-1"},"reward":12345678901234567890,"big":12345678901234567890123456789012345678,"#
            + #""max":18446744073709551615,"neg":-9007199254740993,"edge":9007199254740992,"small":42,"frac":1.5,"#
            + #""exp":1e30,"huge":1e300,"long":123456789012345678901234567890123456789012}"#
        let id = try expectAccepted(try relay.client.post("/v1/hooks/mapped", json: body))
        let all = try #require(try relay.store.event(id: id)?.attributes["all"]?.objectValue)
        #expect(all["reward"] == .integer("12345678901234567890"))
        #expect(all["big"] == .integer("12345678901234567890123456789012345678"))
        #expect(all["max"] == .integer("18446744073709551615"))
        #expect(all["neg"] == .integer("-9007199254740993"))
        #expect(all["edge"] == .integer("9007199254740992"))
        #expect(all["small"] == .number(42) && all["frac"] == .number(1.5) && all["huge"] == .number(1e300))
        // Written as 1e+30 (a Double), read as its digits: the same number.
        #expect(all["exp"]?.numberValue == 1e30)
        // Past 38 digits a Double at ingest already, and the same Double after.
        #expect(all["long"] == .number(Double("123456789012345678901234567890123456789012")!))
    }
}
