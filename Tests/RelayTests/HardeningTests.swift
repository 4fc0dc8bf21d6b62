import Adapters
import Crypto
import Foundation
@testable import Relay
import Testing

/// Regressions for what a review of the ingest path found: inputs that crashed the process, lost events or
/// passed a broken config.
@Suite("Hardening")
struct HardeningTests {
    @Test("hostile timestamps are refused with 401, never crash the relay", arguments: [
        "1e300", "inf", "-inf", "nan", "0x1p40", "-5", "+5", "1.5e9", "99999999999999999", "", " ", "12.", ".5",
    ])
    func hostileTimestamps(_ t: String) throws {
        let secret = randomSecret("whsec_")
        let relay = try RunningRelay(sources: """
            "stripe": { adapter: "generic", verify: { preset: "stripe", secrets: ["${env:S}"] } },
            "slack": { adapter: "generic", verify: { preset: "slack", secrets: ["${env:S}"] } },
            """, environment: ["S": secret])
        defer { relay.stop() }
        let c = relay.client
        let r1 = try c.post("/v1/hooks/stripe", json: "{\"id\":\"evt_1\"}", headers: [("Stripe-Signature", "t=\(t),v1=00")])
        #expect(r1.status == 401, "\(r1)")
        let r2 = try c.post("/v1/hooks/slack", json: "{}", headers: [("X-Slack-Request-Timestamp", t), ("X-Slack-Signature", "v0=00")])
        #expect(r2.status == 401, "\(r2)")
        // Still alive.
        #expect(try c.get("/healthz").status == 200)
    }

    @Test("the signature prefix matches ASCII letters without regard to case, and nothing else")
    func signaturePrefix() {
        var v = HMACVerifier(scheme: "hmac")
        v.headers = ["X-Hub-Signature-256"]
        v.prefix = "sha256="
        v.keys = [HMACKey(.sha256, key: Array("k".utf8))]
        let body = Array("{}".utf8)
        let hex = ByteEncoding.hex(HMAC.authenticate(.sha256, key: Array("k".utf8), message: body))
        func outcome(_ header: String) -> Bool {
            let request = HTTPRequest(method: "POST", path: "/v1/hooks/x",
                                      headers: HTTPHeaders([("X-Hub-Signature-256", header)]), body: body)
            if case .verified = v.verify(request, now: Date()) { return true }
            return false
        }
        #expect(outcome("sha256=" + hex))
        #expect(outcome("SHA256=" + hex))
        #expect(outcome("  Sha256=" + hex))
        #expect(!outcome("sha256=" + hex.uppercased().replacingOccurrences(of: "A", with: "G")))
        #expect(!outcome("sha256="))
        #expect(!outcome("sha257=" + hex))
        #expect(!outcome("sha256" + hex))
        #expect(!outcome("sh\u{0430}256=" + hex))   // a Cyrillic a
        #expect(!outcome("sha256\u{1D}" + hex))     // 0x1D | 0x20 == "=": only letters are case-folded
    }

    @Test("several signatures in one header: any one may match; empty pieces, and spaces or tabs around each, are skipped")
    func signatureLists() {
        let key = Array("k".utf8), body = Array("{\"a\":1}".utf8)
        let mac = HMAC.authenticate(.sha256, key: key, message: body)
        func outcome(_ v: HMACVerifier, _ header: String) -> String {
            let request = HTTPRequest(method: "POST", path: "/v1/hooks/x",
                                      headers: HTTPHeaders([(v.headers[0], header)]), body: body)
            switch v.verify(request, now: Date()) {
            case .verified: return "verified"
            case .rejected(let reason): return reason
            }
        }
        // Standard Webhooks' form: `v1,<base64>` pieces separated by spaces.
        var b64 = HMACVerifier(scheme: "hmac")
        b64.headers = ["Webhook-Signature"]
        b64.prefix = "v1,"
        b64.separator = " "
        b64.encoding = .base64
        b64.keys = [HMACKey(.sha256, key: key)]
        let good = ByteEncoding.base64(mac)
        #expect(outcome(b64, "v1,\(good)") == "verified")
        #expect(outcome(b64, "v1,AAAA v1,\(good)") == "verified")
        #expect(outcome(b64, "  v1,\(good)   v1,AAAA ") == "verified")
        #expect(outcome(b64, "v1,\(good)\t") == "verified")
        #expect(outcome(b64, "v2,\(good)").contains("no signature of the expected form"))
        #expect(outcome(b64, "v1,").contains("no signature of the expected form"))
        #expect(outcome(b64, "v1,!!!! v1,???").contains("is not valid base64"))
        #expect(outcome(b64, "v1,AAAA").contains("signature does not match"))
        // Hex behind a prefix, separated by commas.
        var hex = HMACVerifier(scheme: "hmac")
        hex.headers = ["X-Sig"]
        hex.prefix = "sha256="
        hex.separator = ","
        hex.keys = [HMACKey(.sha256, key: key)]
        let h = ByteEncoding.hex(mac)
        #expect(outcome(hex, "sha256=00,,sha256=\(h.uppercased())") == "verified")
        #expect(outcome(hex, "sha256=\(h) ,sha256=00") == "verified")
        #expect(outcome(hex, "sha256=\(h.dropLast())").contains("is not valid hex"))
        #expect(outcome(hex, "sha256=zz\(h.dropFirst(2))").contains("is not valid hex"))
        #expect(outcome(hex, ",,").contains("no signature of the expected form"))
        // No prefix: the whole (trimmed) value is the signature.
        var bare = hex
        bare.prefix = ""
        bare.separator = nil
        #expect(outcome(bare, " \(h)\t") == "verified")
        #expect(outcome(bare, "").contains("signature does not match"))
        // A separator beyond ASCII is matched as its UTF-8 bytes.
        var wide = hex
        wide.separator = "§"
        #expect(outcome(wide, "sha256=00§§sha256=\(h)") == "verified")
        #expect(outcome(wide, "sha256=00,sha256=\(h)").contains("is not valid hex"))   // one piece: a comma does not split
    }

    @Test("millisecond and fractional timestamps still work")
    func timestampForms() {
        #expect(HMACVerifier.unixTimestamp("1700000000") == 1_700_000_000)
        #expect(HMACVerifier.unixTimestamp("1700000000123") == 1_700_000_000.123)
        #expect(HMACVerifier.unixTimestamp("1700000000.5") == 1_700_000_000.5)
        #expect(HMACVerifier.unixTimestamp("1e9") == nil)
    }

    @Test("ids beyond 2^53 stay distinct: no event is dropped as a duplicate of another")
    func bigIntegerKeys() throws {
        let relay = try RunningRelay(sources: """
            "big": { adapter: "generic", verify: { none: true }, idempotency: { field: "$.id" },
                     map: { subject: { orderId: "$.order" } } },
            """)
        defer { relay.stop() }
        let ids = ["9007199254740993", "9007199254740992", "12345678901234567890", "12345678901234567891", "-9007199254740993"]
        var events: [String] = []
        for id in ids {
            events.append(try expectAccepted(try relay.client.post("/v1/hooks/big", json: "{\"id\":\(id),\"order\":\(id)}")))
        }
        #expect(Set(events).count == ids.count)
        for (id, e) in zip(ids, events) {
            let stored = try #require(try relay.store.event(id: e))
            #expect(stored.idempotencyKey == id)
            #expect(stored.subject["orderId"] == id)
        }
        #expect(try JSONParser.parse(Array("[9007199254740993]".utf8)).jsonString() == "[9007199254740993]")
    }

    @Test("config values that used to pass check and crash later are problems now")
    func brokenValues() {
        let text = """
            { server: { idleTimeout: "inf", requestTimeout: "1e30" }, store: { sqlite: "/tmp/x.db", commitDelay: "nan" },
              sources: { s: { adapter: "generic", verify: { hmac: { header: "S", secrets: ["${env:S}"],
                keyed: { separator: ", " }, tolerance: "-5s" } } } } }
            """
        do {
            _ = try RelayConfig.parse(Data(text.utf8), registry: BuiltinAdapters.registry, environment: ["S": "x"])
            Issue.record("expected problems")
        } catch let error as ConfigError {
            let paths = Set(error.problems.map(\.path))
            for p in ["server.idleTimeout", "server.requestTimeout", "store.commitDelay",
                      "sources.s.verify.hmac.keyed.separator", "sources.s.verify.hmac.tolerance"] {
                #expect(paths.contains(p), "\(p) missing from \(error)")
            }
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("an unknown source or method is refused before its body is read")
    func refusedBeforeTheBody() throws {
        let relay = try RunningRelay(sources: """
            "open": { adapter: "generic", verify: { none: true } },
            """)
        defer { relay.stop() }
        for (method, path, status) in [("POST", "/v1/hooks/nope", 404), ("POST", "/elsewhere", 404), ("DELETE", "/v1/hooks/open", 405)] {
            let conn = try Connection(port: relay.port, timeout: 5)
            // Announce a large body and send none of it: the answer must come anyway.
            try conn.send("\(method) \(path) HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 900000\r\nX-Request-Id: pre-\(status)\r\n\r\n")
            let r = try conn.readResponse()
            #expect(r.status == status, "\(method) \(path): \(r)")
            #expect(r.header("X-Request-Id") == "pre-\(status)")
        }
        #expect(try relay.store.eventCount() == 0)
    }
}
