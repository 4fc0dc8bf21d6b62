import Crypto
import Foundation
import Relay
import Testing

/// The HTTP surface of the ingest path: routing, methods, media types, body limits and slow senders.
@Suite("Ingest over HTTP")
struct IngestTests {
    static let openSource = """
        "open": { adapter: "generic", verify: { none: true } },
        """

    @Test("GET answers 200 for a known source and /healthz; unknown sources and paths are 404")
    func routing() throws {
        let relay = try RunningRelay(sources: Self.openSource)
        defer { relay.stop() }
        let c = relay.client

        let health = try c.get("/healthz")
        #expect(health.status == 200 && health["status"] == "ok", "\(health)")

        // Providers (Punchh among them) probe the URL with GET before sending.
        let probe = try c.get("/v1/hooks/open")
        #expect(probe.status == 200, "\(probe)")
        #expect(probe["status"] == "ok" && probe["source"] == "open", "\(probe)")
        let head = try c.request("HEAD", "/v1/hooks/open")
        #expect(head.status == 200, "\(head)")

        for target in ["/v1/hooks/nope", "/v1/hooks/open/extra", "/v1/hooks/"] {
            let r = try c.post(target, json: "{}")
            #expect(r.status == 404 && r["error"] == "unknown source", "\(target): \(r)")
            #expect(r.header("Content-Type") == "application/json")
        }
        let unknownGet = try c.get("/v1/hooks/nope")
        #expect(unknownGet.status == 404, "\(unknownGet)")
        for target in ["/", "/v1/hooks", "/hooks/open"] {
            let r = try c.post(target, json: "{}")
            #expect(r.status == 404 && r["error"] == "not found", "\(target): \(r)")
        }

        let delete = try c.request("DELETE", "/v1/hooks/open")
        #expect(delete.status == 405, "\(delete)")
        #expect(delete.header("Allow")?.contains("POST") == true)

        // A percent-encoded source name is decoded.
        try expectAccepted(try c.post("/v1/hooks/op%65n", json: "{\"encoded\":true}"))

        // PUT is taken like POST; a query string does not change the source.
        try expectAccepted(try c.request("PUT", "/v1/hooks/open?via=put", headers: [("Content-Type", "application/json")],
                                         body: Array("{\"a\":1}".utf8)))
        #expect(try relay.store.eventCount() == 2)
    }

    @Test("X-Request-Id is echoed when given and made up otherwise")
    func requestID() throws {
        let relay = try RunningRelay(sources: Self.openSource)
        defer { relay.stop() }
        let mine = try relay.client.post("/v1/hooks/open", json: "{\"a\":1}", headers: [("X-Request-Id", "trace-123")])
        #expect(mine.status == 202 && mine.header("X-Request-Id") == "trace-123", "\(mine)")
        let made = try relay.client.post("/v1/hooks/nope", json: "{}")
        #expect(made.header("X-Request-Id")?.hasPrefix("req_") == true, "\(made.headers)")
        #expect(relay.log.contains("trace-123"))
    }

    @Test("unparsable bodies are 400, unsupported media types 415, and nothing is stored")
    func mediaTypes() throws {
        let relay = try RunningRelay(sources: Self.openSource)
        defer { relay.stop() }
        let c = relay.client
        let path = "/v1/hooks/open"

        for (body, type) in [("{\"a\":", "application/json"), ("not json", "application/json"),
                             ("{\"a\":1}}", "application/json; charset=utf-8"), ("[1,]", "application/vnd.acme+json"),
                             ("a=%ZZ", "application/x-www-form-urlencoded"), ("", "application/json")] {
            let r = try c.post(path, Array(body.utf8), contentType: type)
            #expect(r.status == 400, "\(type) \(body): \(r)")
            #expect(r["error"] == "unparsable body" && r["reason"]?.isEmpty == false, "\(r)")
        }
        for (body, type) in [("hello", "text/plain"), ("<a/>", "application/xml"), ("{\"a\":1}", "text/html"),
                             ("hello", nil)] {
            let r = try c.post(path, Array(body.utf8), contentType: type)
            #expect(r.status == 415, "\(type ?? "no type") \(body): \(r)")
            #expect(r["error"] == "unsupported media type" && r["reason"]?.isEmpty == false, "\(r)")
        }
        #expect(try relay.store.eventCount() == 0)

        // JSON without a Content-Type, +json types and a charset parameter are all accepted.
        try expectAccepted(try c.post(path, Array("{\"b\":1}".utf8), contentType: nil))
        try expectAccepted(try c.post(path, Array("{\"b\":2}".utf8), contentType: "application/cloudevents+json"))
        try expectAccepted(try c.post(path, Array("{\"b\":3}".utf8), contentType: "Application/JSON; charset=UTF-8"))
        #expect(try relay.store.eventCount() == 3)
    }

    @Test("verification comes first: an unsigned request to a signed source is 401 whatever its body")
    func verificationBeforeParsing() throws {
        let relay = try RunningRelay(sources: """
            "gh": { adapter: "generic", verify: { preset: "github", secrets: ["${env:S}"] } },
            """, environment: ["S": "s3cr3t-value"])
        defer { relay.stop() }
        let r = try relay.client.post("/v1/hooks/gh", Array("not json".utf8), contentType: "text/plain")
        expectUnauthorized(r, "missing signature header")
        // Signed but unparsable: 400 after verification.
        let body = Array("{oops".utf8)
        let sig = "sha256=" + ByteEncoding.hex(HMAC.authenticate(.sha256, key: Array("s3cr3t-value".utf8), message: body))
        let bad = try relay.client.post("/v1/hooks/gh", body, headers: [("X-Hub-Signature-256", sig)])
        #expect(bad.status == 400, "\(bad)")
    }

    @Test("form bodies: signed Slack commands and mapped form fields")
    func formBodies() throws {
        let secret = "slack-signing-" + ByteEncoding.hex(SecureRandom.bytes(8))
        let relay = try RunningRelay(sources: """
            "slack": { adapter: "generic", verify: { preset: "slack", secrets: ["${env:SLACK}"] } },
            "shop": { adapter: "generic", verify: { none: true }, type: "order.status_changed",
                      map: { subject: { orderId: "$.order_id", customer: "$.customer" }, status: "$.state" },
                      statusMap: { "done": "delivered" } },
            """, environment: ["SLACK": secret])
        defer { relay.stop() }
        let c = relay.client
        let form = "token=x&team_id=T0001&command=%2Fweather&text=94070+sunny&response_url=https%3A%2F%2Fhooks.slack.com%2Fx"
        let ts = Int(Date().timeIntervalSince1970)
        let sig = "v0=" + ByteEncoding.hex(HMAC.authenticate(.sha256, key: Array(secret.utf8),
                                                             message: Array("v0:\(ts):\(form)".utf8)))
        let r = try c.post("/v1/hooks/slack", Array(form.utf8), headers: [
            ("X-Slack-Request-Timestamp", String(ts)), ("X-Slack-Signature", sig),
        ], contentType: "application/x-www-form-urlencoded")
        let id = try expectAccepted(r)
        let stored = try #require(try relay.store.event(id: id))
        #expect(stored.raw?.body == form)
        #expect(stored.raw?.contentType == "application/x-www-form-urlencoded")
        // No event_id in a slash command: deduplicated on the body's hash.
        #expect(stored.idempotencyKey == "sha256:" + ByteEncoding.hex(Digest.sha256(Array(form.utf8))))

        let mapped = try c.post("/v1/hooks/shop", Array("order_id=O-77&customer=Ann+Lee%21&state=done".utf8),
                                contentType: "application/x-www-form-urlencoded")
        let e = try #require(try relay.store.event(id: try expectAccepted(mapped)))
        #expect(e.subject == ["orderId": "O-77", "customer": "Ann Lee!"])
        #expect(e.status == .delivered)
        #expect(e.type == "order.status_changed")
    }

    @Test("oversize bodies are 413: announced, chunked, and at the exact limit")
    func oversize() throws {
        let relay = try RunningRelay(sources: Self.openSource, server: "maxBodyBytes: 1024, requestTimeout: \"5s\",")
        defer { relay.stop() }
        let port = relay.port

        // Announced too large: refused from the headers alone, before any of the body is sent (no 100 Continue).
        let c = try Connection(port: port, timeout: 5)
        try c.send(requestBytes("POST", "/v1/hooks/open", port: port,
                                headers: [("Content-Type", "application/json"), ("Expect", "100-continue")],
                                body: nil, contentLength: 50_000_000))
        let r = try c.readResponse()
        #expect(r.status == 413, "\(r)")
        #expect(r["error"] == "body too large" && r["limit"] == "1024", "\(r)")

        // Exactly the limit is accepted; one byte more is not.
        func body(_ size: Int) -> [UInt8] {
            let head = "{\"pad\":\"", tail = "\"}"
            return Array((head + String(repeating: "x", count: size - head.count - tail.count) + tail).utf8)
        }
        try expectAccepted(try relay.client.post("/v1/hooks/open", body(1024)))
        let over = try relay.client.post("/v1/hooks/open", body(1025))
        #expect(over.status == 413, "\(over)")

        // Chunked: no length announced, the limit is enforced as the body arrives.
        let chunkedOver = try relay.client.request("POST", "/v1/hooks/open", headers: [("Content-Type", "application/json")],
                                                   body: body(5000), chunked: true)
        #expect(chunkedOver.status == 413, "\(chunkedOver)")
        #expect(try relay.store.eventCount() == 1)
    }

    @Test("a chunked body within the limit is read whole")
    func chunkedBody() throws {
        let relay = try RunningRelay(sources: Self.openSource, server: "maxBodyBytes: 65536,")
        defer { relay.stop() }
        let json = "{\"items\":[" + (0..<600).map { "{\"n\":\($0)}" }.joined(separator: ",") + "]}"
        let r = try relay.client.request("POST", "/v1/hooks/open", headers: [("Content-Type", "application/json")],
                                         body: Array(json.utf8), chunked: true)
        let id = try expectAccepted(r)
        #expect(try relay.store.event(id: id)?.raw?.body == json)
    }

    static func slowRelay() throws -> RunningRelay {
        try RunningRelay(sources: openSource, server: "requestTimeout: \"600ms\", idleTimeout: \"1s\",")
    }

    static let slowJSON = Array("{\"slow\":\"\(String(repeating: "s", count: 40))\"}".utf8)

    /// Headers announcing `slowJSON`, then its bytes in `pieces` sends `every` microseconds apart.
    static func trickle(port: UInt16, pieces: Int, every micros: UInt32) throws -> Connection {
        let c = try Connection(port: port, timeout: 5)
        try c.send(requestBytes("POST", "/v1/hooks/open", port: port, headers: [("Content-Type", "application/json")],
                                body: nil, contentLength: slowJSON.count))
        let size = (slowJSON.count + pieces - 1) / pieces
        for start in stride(from: 0, to: slowJSON.count, by: size) {
            usleep(micros)
            try? c.send(Array(slowJSON[start..<min(slowJSON.count, start + size)]))
        }
        return c
    }

    @Test("a slow body that arrives within requestTimeout is accepted whole")
    func slowBodyInTime() throws {
        let relay = try Self.slowRelay()
        defer { relay.stop() }
        let c = try Self.trickle(port: relay.port, pieces: 4, every: 40_000)
        let id = try expectAccepted(try c.readResponse())
        #expect(try relay.store.event(id: id)?.raw?.body == String(decoding: Self.slowJSON, as: UTF8.self))
    }

    @Test("a body still trickling in after requestTimeout is dropped unanswered and not stored")
    func slowBodyTooSlow() throws {
        let relay = try Self.slowRelay()
        defer { relay.stop() }
        let c = try Self.trickle(port: relay.port, pieces: 8, every: 150_000)
        let sent = try #require(c.waitForClose(timeout: 3), "the server kept a trickling request open")
        #expect(!String(decoding: sent, as: UTF8.self).hasPrefix("HTTP/1.1 2"), "\(String(decoding: sent, as: UTF8.self))")
        #expect(try relay.store.eventCount() == 0)
        // The server is still serving.
        try expectAccepted(try relay.client.post("/v1/hooks/open", json: "{\"after\":true}"))
    }

    @Test("a body that stalls is closed after idleTimeout and not stored")
    func stalledBody() throws {
        let relay = try Self.slowRelay()
        defer { relay.stop() }
        let c = try Connection(port: relay.port, timeout: 5)
        try c.send(requestBytes("POST", "/v1/hooks/open", port: relay.port, headers: [("Content-Type", "application/json")],
                                body: nil, contentLength: Self.slowJSON.count) + Self.slowJSON[0..<5])
        let started = Date()
        let reply = try #require(c.waitForClose(timeout: 4), "a stalled request was never closed")
        let waited = Date().timeIntervalSince(started)
        #expect(waited >= 0.5 && waited < 3.5, "closed after \(waited)s")
        #expect(!String(decoding: reply, as: UTF8.self).hasPrefix("HTTP/1.1 2"))
        #expect(try relay.store.eventCount() == 0)
    }

    @Test("keep-alive: several requests on one connection")
    func keepAlive() throws {
        let relay = try RunningRelay(sources: Self.openSource)
        defer { relay.stop() }
        let c = try Connection(port: relay.port)
        var ids: [String] = []
        for i in 0..<5 {
            try c.send(requestBytes("POST", "/v1/hooks/open", port: relay.port, headers: [("Content-Type", "application/json")],
                                    body: Array("{\"i\":\(i)}".utf8), keepAlive: true))
            ids.append(try expectAccepted(try c.readResponse()))
        }
        try c.send(requestBytes("GET", "/healthz", port: relay.port, keepAlive: true))
        #expect(try c.readResponse().status == 200)
        #expect(Set(ids).count == 5)
        #expect(try relay.store.eventIDs(source: "open") == ids)   // ids sort in arrival order
        c.close()
    }

    @Test("a client that disconnects mid-request does not hold up shutdown")
    func abandonedRequest() throws {
        let relay = try RunningRelay(sources: Self.openSource, server: "requestTimeout: \"30s\", idleTimeout: \"30s\",")
        let c = try Connection(port: relay.port)
        try c.send(requestBytes("POST", "/v1/hooks/open", port: relay.port, headers: [("Content-Type", "application/json")],
                                body: nil, contentLength: 100) + Array("{\"a\":".utf8))
        usleep(100_000)
        c.close()
        usleep(100_000)
        let started = Date()
        relay.stop()
        let took = Date().timeIntervalSince(started)
        #expect(took < 2, "shutdown waited \(took)s for a request whose client had gone")
    }
}
