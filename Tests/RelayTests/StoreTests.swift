import Crypto
import Foundation
import Relay
@testable import RelaySQLite
import Synchronization
import Testing

/// A value shared between threads under a lock.
final class LockedBox<Value: Sendable>: Sendable {
    let values: Mutex<Value>
    init(_ value: Value) { values = Mutex(value) }
}

/// Runs `body(i)` for i in 0..<n on n threads at once (released together) and returns the results in order.
func concurrently<T: Sendable>(_ n: Int, _ body: @escaping @Sendable (Int) throws -> T) throws -> [T] {
    let results = LockedBox<[Int: Result<T, TestFailure>]>([:])
    let group = DispatchGroup()
    let start = DispatchSemaphore(value: 0)
    for i in 0..<n {
        group.enter()
        Thread {
            start.wait()
            let r: Result<T, TestFailure>
            do { r = .success(try body(i)) } catch { r = .failure(TestFailure("\(error)")) }
            results.values.withLock { $0[i] = r }
            group.leave()
        }.start()
    }
    for _ in 0..<n { start.signal() }
    group.wait()
    return try results.values.withLock { all in try (0..<n).map { try all[$0]!.get() } }
}

/// Deduplication and the store's promise: a 202 only for a committed event, a 503 when it cannot commit.
@Suite("Store: duplicates and durability of answers")
struct StoreTests {
    @Test("a duplicate gets 200 and the first event's id; keys come from the scheme, the config or the body")
    func duplicates() throws {
        let secret = randomSecret()
        let relay = try RunningRelay(sources: """
            "gh": { adapter: "generic", verify: { preset: "github", secrets: ["${env:S}"] } },
            "gh2": { adapter: "generic", verify: { preset: "github", secrets: ["${env:S}"] } },
            "plain": { adapter: "generic", verify: { none: true } },
            "byfield": { adapter: "generic", verify: { none: true }, idempotency: { field: "$.order.id" } },
            "byheader": { adapter: "generic", verify: { none: true }, idempotency: { header: "Idempotency-Key" } },
            """, environment: ["S": secret])
        defer { relay.stop() }
        let c = relay.client
        func github(_ source: String, delivery: String, body: String) throws -> Response {
            let sig = "sha256=" + ByteEncoding.hex(HMAC.authenticate(.sha256, key: Array(secret.utf8), message: Array(body.utf8)))
            return try c.post("/v1/hooks/\(source)", json: body, headers: [("X-Hub-Signature-256", sig), ("X-GitHub-Delivery", delivery)])
        }
        func expectDuplicate(_ r: Response, of id: String, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(r.status == 200, "\(r)", sourceLocation: sourceLocation)
            #expect(r["eventId"] == id, "\(r)", sourceLocation: sourceLocation)
            #expect(r.json?["duplicate"] == .bool(true), "\(r)", sourceLocation: sourceLocation)
        }

        // The delivery id decides: a redelivery, even with another body, is the same event.
        let first = try expectAccepted(try github("gh", delivery: "d-1", body: "{\"a\":1}"))
        expectDuplicate(try github("gh", delivery: "d-1", body: "{\"a\":1}"), of: first)
        expectDuplicate(try github("gh", delivery: "d-1", body: "{\"a\":2}"), of: first)
        let second = try expectAccepted(try github("gh", delivery: "d-2", body: "{\"a\":1}"))
        #expect(second != first)
        // Keys are per source.
        try expectAccepted(try github("gh2", delivery: "d-1", body: "{\"a\":1}"))

        // No key in scheme or config: the body's hash, byte for byte.
        let p = try expectAccepted(try c.post("/v1/hooks/plain", json: "{\"x\":1}"))
        expectDuplicate(try c.post("/v1/hooks/plain", json: "{\"x\":1}"), of: p)
        try expectAccepted(try c.post("/v1/hooks/plain", json: "{\"x\": 1}"))

        // Configured keys: a field of the payload, a header.
        let f = try expectAccepted(try c.post("/v1/hooks/byfield", json: "{\"order\":{\"id\":17},\"v\":1}"))
        expectDuplicate(try c.post("/v1/hooks/byfield", json: "{\"order\":{\"id\":17},\"v\":2}"), of: f)
        #expect(try relay.store.event(id: f)?.idempotencyKey == "17")
        let h = try expectAccepted(try c.post("/v1/hooks/byheader", json: "{\"v\":1}", headers: [("Idempotency-Key", "k-1")]))
        expectDuplicate(try c.post("/v1/hooks/byheader", json: "{\"v\":2}", headers: [("Idempotency-Key", "k-1")]), of: h)

        #expect(try relay.store.eventCount() == 7)
        #expect(relay.log.contains("\"msg\":\"duplicate webhook\""))
    }

    @Test("concurrent copies of one webhook: exactly one 202, every answer names the same event")
    func concurrentDuplicates() throws {
        let relay = try RunningRelay(sources: """
            "plain": { adapter: "generic", verify: { none: true }, idempotency: { header: "Idempotency-Key" } },
            """)
        defer { relay.stop() }
        let client = relay.client
        for round in 0..<3 {
            let responses = try concurrently(12) { i in
                try client.post("/v1/hooks/plain", json: "{\"copy\":\(i)}", headers: [("Idempotency-Key", "same-\(round)")])
            }
            #expect(responses.filter { $0.status == 202 }.count == 1, "\(responses)")
            #expect(responses.allSatisfy { $0.status == 202 || $0.status == 200 }, "\(responses)")
            #expect(Set(responses.compactMap { $0["eventId"] }).count == 1, "\(responses)")
        }
        #expect(try relay.store.eventCount() == 3)
    }

    static func bigBody(_ tag: String) -> String {
        "{\"tag\":\"\(tag)\",\"pad\":\"\(ByteEncoding.hex(SecureRandom.bytes(3000)))\"}"
    }

    @Test("a full store answers 503 and acknowledges nothing it did not commit")
    func storeFull() throws {
        let relay = try RunningRelay(sources: """
            "open": { adapter: "generic", verify: { none: true } },
            """, store: "maxSizeBytes: 98304,")  // the empty schema takes about 17 of these 24 pages
        defer { relay.stop() }
        let c = relay.client
        var accepted: [String] = []
        var refused: Response?
        for i in 0..<100 {
            let r = try c.post("/v1/hooks/open", json: Self.bigBody("e\(i)"))
            if r.status == 503 {
                refused = r
                break
            }
            accepted.append(try expectAccepted(r))
        }
        let full = try #require(refused, "the store never filled up")
        #expect(full["error"] == "store unavailable", "\(full)")
        #expect(full.header("Retry-After") == "5")
        #expect(full.json?["eventId"] == nil)
        #expect(accepted.count >= 2, "only \(accepted.count) events fit before the store was full")

        // Still full: more big events are refused, each one.
        for i in 0..<3 {
            let r = try c.post("/v1/hooks/open", json: Self.bigBody("more\(i)"))
            #expect(r.status == 503, "\(r)")
        }
        // Every acknowledged event is there, and nothing else.
        for id in accepted { #expect(try relay.store.event(id: id) != nil, "acknowledged \(id) is missing") }
        #expect(try relay.store.eventCount() == accepted.count)
        #expect(try relay.store.eventIDs(source: "open") == accepted)
        #expect(relay.log.contains("store commit failed"))
    }

    @Test("under concurrent load a full store never loses an acknowledged event")
    func storeFullConcurrent() throws {
        let relay = try RunningRelay(sources: """
            "open": { adapter: "generic", verify: { none: true } },
            """, store: "maxSizeBytes: 98304,")  // the empty schema takes about 17 of these 24 pages
        defer { relay.stop() }
        let client = relay.client
        let perThread = try concurrently(6) { t -> [Response] in
            var out: [Response] = []
            for i in 0..<12 {
                let r = try client.post("/v1/hooks/open", json: Self.bigBody("t\(t)-\(i)"))
                out.append(r)
                if r.status == 503 { break }
            }
            return out
        }
        let all = perThread.flatMap { $0 }
        #expect(all.allSatisfy { $0.status == 202 || $0.status == 503 }, "\(all.filter { $0.status != 202 && $0.status != 503 })")
        let acknowledged = all.filter { $0.status == 202 }.compactMap { $0["eventId"] }
        #expect(acknowledged.count == all.filter { $0.status == 202 }.count)
        #expect(all.contains { $0.status == 503 }, "the store never filled up")
        #expect(!acknowledged.isEmpty)
        for id in acknowledged { #expect(try relay.store.event(id: id) != nil, "acknowledged \(id) is missing") }
        #expect(try relay.store.eventCount() == acknowledged.count)
    }

    @Test("the store keeps the body byte for byte and the canonical event without it")
    func storedRows() throws {
        let relay = try RunningRelay(sources: """
            "open": { adapter: "generic", verify: { none: true } },
            """)
        defer { relay.stop() }
        let body = "{ \"b\" : [1, 2.5, \"\\u00e9\\n\"],\n  \"a\": {\"z\": null} }"
        let id = try expectAccepted(try relay.client.post("/v1/hooks/open", Array(body.utf8),
                                                          contentType: "application/json; charset=utf-8"))
        let db = try Database(path: relay.dir.file("relay.db"), readOnly: true)
        let s = try db.statement("SELECT source, type, status, content_type, body, event FROM events WHERE id = ?")
        try s.bind([id])
        #expect(try s.step())
        #expect(s.text(0) == "open")
        #expect(s.text(1) == "passthrough")
        #expect(s.text(2) == nil)
        #expect(s.text(3) == "application/json; charset=utf-8")
        #expect(s.blob(4) == Array(body.utf8))
        let event = try JSONValue.parse(Data((s.text(5) ?? "").utf8))
        #expect(event["id"]?.stringValue == id)
        #expect(event["raw"] == nil)
        s.reset()
    }
}
