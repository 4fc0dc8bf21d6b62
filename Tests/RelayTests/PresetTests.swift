import Crypto
import Foundation
import Relay
import Testing

/// A 401 with a JSON body naming the reason, and nothing else.
func expectUnauthorized(_ r: Response, _ reason: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(r.status == 401, "\(r)", sourceLocation: sourceLocation)
    #expect(r.header("Content-Type") == "application/json", sourceLocation: sourceLocation)
    #expect(r["error"] == "unauthorized", "\(r)", sourceLocation: sourceLocation)
    #expect(r["reason"]?.contains(reason) == true, "expected a reason containing \"\(reason)\": \(r)",
            sourceLocation: sourceLocation)
}

/// The event id of a 202, failing the test otherwise.
@discardableResult
func expectAccepted(_ r: Response, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
    #expect(r.status == 202, "\(r)", sourceLocation: sourceLocation)
    let id = try #require(r["eventId"], "no eventId in \(r)", sourceLocation: sourceLocation)
    #expect(id.hasPrefix("evt_") && id.count == 30, "\(id)", sourceLocation: sourceLocation)
    return id
}

@Suite("Verification presets")
struct PresetTests {
    static func sources(_ preset: Preset) -> String {
        let url = preset == .punchh ? "publicURL: \"https://relay.example.com\"," : ""
        let separator = preset.nativeMultiSignature ? "" : "separator: \",\","
        return """
            "one": { adapter: "generic", \(url) verify: { preset: "\(preset.rawValue)", secrets: ["${env:SECRET}"] } },
            "rotated": { adapter: "generic", \(url)
                         verify: { preset: "\(preset.rawValue)", secrets: ["${env:OLD}", "${env:NEW}"], \(separator) } },
            """
    }

    static func message(_ preset: Preset, source: String, body: [UInt8] = Preset.body()) -> Preset.Message {
        var m = Preset.Message(body: body)
        m.uri = "https://relay.example.com/v1/hooks/\(source)"
        return m
    }

    @Test("valid, tampered, wrong-secret, missing and stale requests", arguments: Preset.allCases)
    func signatures(_ preset: Preset) throws {
        let secret = preset.makeSecret(), other = preset.makeSecret()
        let relay = try RunningRelay(sources: Self.sources(preset), environment: [
            "SECRET": secret.text, "OLD": other.text, "NEW": preset.makeSecret().text,
        ])
        defer { relay.stop() }
        let c = relay.client
        let path = "/v1/hooks/one"

        // Valid: 202, and the event is stored with the scheme's idempotency key and the body as sent.
        let m = Self.message(preset, source: "one")
        let id = try expectAccepted(try c.post(path, m.body, headers: preset.headers(m, keys: [secret.key])))
        let stored = try #require(try relay.store.event(id: id))
        #expect(stored.source == "one")
        #expect(stored.type == "passthrough")
        #expect(stored.idempotencyKey == preset.expectedKey(m))
        #expect(stored.raw == RawPayload(contentType: "application/json", body: String(decoding: m.body, as: UTF8.self)))

        // Tampered body: signed one body, sent another.
        var tampered = Self.message(preset, source: "one")
        let signed = preset.headers(tampered, keys: [secret.key])
        tampered.body = Array(String(decoding: tampered.body, as: UTF8.self).replacingOccurrences(of: "\"n\":1", with: "\"n\":2").utf8)
        expectUnauthorized(try c.post(path, tampered.body, headers: signed), "signature does not match")

        // Tampered signed metadata: the timestamp where the scheme signs one, the URL for Punchh.
        if preset.hasTimestamp {
            let t = Self.message(preset, source: "one")
            let h = preset.headers(t, keys: [secret.key], signedTimestamp: t.timestamp - 1)
            expectUnauthorized(try c.post(path, t.body, headers: h), "signature does not match")
        }
        if preset == .punchh {
            var t = Self.message(preset, source: "one")
            t.uri = "https://relay.example.com/v1/hooks/rotated"
            expectUnauthorized(try c.post(path, t.body, headers: preset.headers(t, keys: [secret.key])),
                               "signature does not match")
        }

        // Signed with a secret the source does not have.
        let w = Self.message(preset, source: "one")
        expectUnauthorized(try c.post(path, w.body, headers: preset.headers(w, keys: [other.key])), "signature does not match")

        // No signature at all; a signature header of the wrong form.
        let n = Self.message(preset, source: "one")
        let unsigned = preset.headers(n, keys: [secret.key]).filter { !["webhook-signature", "Stripe-Signature",
            "X-Hub-Signature-256", "X-Shopify-Hmac-SHA256", "X-Slack-Signature", "Authorization"].contains($0.0) }
        expectUnauthorized(try c.post(path, n.body, headers: unsigned), "missing signature header")
        let garbage = unsigned + [(preset.headers(n, keys: [secret.key]).first { h in !unsigned.contains { $0 == h } }!.0,
                                   "!!not-a-signature!!")]
        let g = try c.post(path, n.body, headers: garbage)
        #expect(g.status == 401 && g["reason"]?.isEmpty == false, "\(g)")

        var accepted = 1
        if preset.hasTimestamp {
            // Stale and future timestamps are refused even when correctly signed; within tolerance is fine.
            for offset in [-600, 600] {
                var s = Self.message(preset, source: "one")
                s.timestamp += offset
                expectUnauthorized(try c.post(path, s.body, headers: preset.headers(s, keys: [secret.key])),
                                   "outside tolerance")
            }
            var recent = Self.message(preset, source: "one")
            recent.timestamp -= 120
            try expectAccepted(try c.post(path, recent.body, headers: preset.headers(recent, keys: [secret.key])))
            accepted += 1
            // A timestamp header missing entirely.
            let t = Self.message(preset, source: "one")
            var h = preset.headers(t, keys: [secret.key])
            if preset == .stripe {
                h = h.map { ($0.0, $0.1.split(separator: ",").filter { !$0.hasPrefix("t=") }.joined(separator: ",")) }
            } else {
                h.removeAll { $0.0.lowercased().hasSuffix("timestamp") }
            }
            expectUnauthorized(try c.post(path, t.body, headers: h), "missing signature timestamp")
        } else {
            // A replay much later is still accepted by a scheme without a timestamp, as a duplicate.
            let again = try c.post(path, m.body, headers: preset.headers(m, keys: [secret.key]))
            #expect(again.status == 200 && again["eventId"] == id, "\(again)")
        }

        // Nothing refused was stored, and the refusals were logged without the secret.
        #expect(try relay.store.eventCount() == accepted)
        let log = relay.log
        #expect(log.contains("\"msg\":\"signature rejected\""))
        #expect(!log.contains(secret.text) && !log.contains(other.text))
    }

    @Test("rotated secrets: old and new accepted, multi-signature headers", arguments: Preset.allCases)
    func rotation(_ preset: Preset) throws {
        let old = preset.makeSecret(), new = preset.makeSecret(), stranger = preset.makeSecret()
        let relay = try RunningRelay(sources: Self.sources(preset), environment: [
            "SECRET": preset.makeSecret().text, "OLD": old.text, "NEW": new.text,
        ])
        defer { relay.stop() }
        let c = relay.client
        let path = "/v1/hooks/rotated"

        var ids: Set<String> = []
        for key in [old.key, new.key] {
            let m = Self.message(preset, source: "rotated")
            ids.insert(try expectAccepted(try c.post(path, m.body, headers: preset.headers(m, keys: [key]))))
        }
        let s = Self.message(preset, source: "rotated")
        expectUnauthorized(try c.post(path, s.body, headers: preset.headers(s, keys: [stranger.key])),
                           "signature does not match")

        // The sender signs with several secrets at once: one matching signature is enough, in any position.
        for keys in [[stranger.key, new.key], [old.key, stranger.key]] {
            let m = Self.message(preset, source: "rotated")
            ids.insert(try expectAccepted(try c.post(path, m.body, headers: preset.headers(m, keys: keys))))
        }
        let none = Self.message(preset, source: "rotated")
        expectUnauthorized(try c.post(path, none.body, headers: preset.headers(none, keys: [stranger.key, preset.makeSecret().key])),
                           "signature does not match")

        // The single-secret source does not know the rotated ones.
        let single = Self.message(preset, source: "one")
        expectUnauthorized(try c.post("/v1/hooks/one", single.body, headers: preset.headers(single, keys: [old.key])),
                           "signature does not match")

        #expect(ids.count == 4)
        #expect(try relay.store.eventIDs(source: "rotated").sorted() == ids.sorted())
        #expect(try relay.store.eventCount() == 4)
    }

    @Test("Punchh signs the URL from the Host header when no publicURL is set, query included")
    func punchhHostURI() throws {
        let secret = Preset.punchh.makeSecret()
        let relay = try RunningRelay(sources: """
            "p": { adapter: "generic", verify: { preset: "punchh", secrets: ["${env:S}"] } },
            """, environment: ["S": secret.text])
        defer { relay.stop() }
        let target = "/v1/hooks/p?business=42"
        var m = Preset.Message(body: Preset.body())
        m.uri = "http://127.0.0.1:\(relay.port)\(target)"
        let id = try expectAccepted(try relay.client.post(target, m.body, headers: Preset.punchh.headers(m, keys: [secret.key])))
        #expect(try relay.store.event(id: id)?.idempotencyKey == Preset.punchh.expectedKey(m))

        // Behind a proxy: X-Forwarded-Proto and X-Forwarded-Host name the URL the sender used.
        var p = Preset.Message(body: Preset.body())
        p.uri = "https://hooks.example.org\(target)"
        let forwarded = Preset.punchh.headers(p, keys: [secret.key]) + [("X-Forwarded-Proto", "https"),
                                                                        ("X-Forwarded-Host", "hooks.example.org")]
        try expectAccepted(try relay.client.post(target, p.body, headers: forwarded))

        // The same signature without the query no longer matches.
        var q = Preset.Message(body: Preset.body())
        q.uri = "http://127.0.0.1:\(relay.port)/v1/hooks/p"
        expectUnauthorized(try relay.client.post(target, q.body, headers: Preset.punchh.headers(q, keys: [secret.key])),
                           "signature does not match")
    }

    @Test("standard-webhooks also accepts Svix's svix-* header names")
    func svixHeaders() throws {
        let secret = Preset.standardWebhooks.makeSecret()
        let relay = try RunningRelay(sources: """
            "svix": { adapter: "generic", verify: { preset: "standard-webhooks", secrets: ["${env:S}"] } },
            """, environment: ["S": secret.text])
        defer { relay.stop() }
        let m = Preset.Message(body: Preset.body())
        let svix = Preset.standardWebhooks.headers(m, keys: [secret.key])
            .map { ($0.0.replacingOccurrences(of: "webhook-", with: "svix-"), $0.1) }
        let id = try expectAccepted(try relay.client.post("/v1/hooks/svix", m.body, headers: svix))
        #expect(try relay.store.event(id: id)?.idempotencyKey == m.id)
        let other = Preset.Message(body: Preset.body())
        let wrong = Preset.standardWebhooks.headers(other, keys: [Preset.standardWebhooks.makeSecret().key])
            .map { ($0.0.replacingOccurrences(of: "webhook-", with: "svix-"), $0.1) }
        expectUnauthorized(try relay.client.post("/v1/hooks/svix", other.body, headers: wrong), "signature does not match")
    }

    @Test("a configured tolerance overrides the preset's five minutes")
    func customTolerance() throws {
        let secret = Preset.stripe.makeSecret()
        let relay = try RunningRelay(sources: """
            "s": { adapter: "generic", verify: { preset: "stripe", tolerance: "10s", secrets: ["${env:S}"] } },
            """, environment: ["S": secret.text])
        defer { relay.stop() }
        var m = Preset.Message(body: Preset.body())
        m.timestamp -= 60
        expectUnauthorized(try relay.client.post("/v1/hooks/s", m.body, headers: Preset.stripe.headers(m, keys: [secret.key])),
                           "allowed 10s")
        m.timestamp += 55
        try expectAccepted(try relay.client.post("/v1/hooks/s", m.body, headers: Preset.stripe.headers(m, keys: [secret.key])))
    }
}
