import Foundation
import Relay
import Testing

/// The delivery queue's claims, leases, per-subject order and attempt records, on a real SQLite file.
@Suite("Delivery queue")
struct DeliveryQueueTests {
    /// A store with events for subjects A, A, B, A (in that order), each routed to "d1" and "d2".
    static func seeded() throws -> (TempDir, SQLiteStore, [CanonicalEvent]) {
        let dir = try TempDir("queue")
        let store = try SQLiteStore(options: SQLiteStoreOptions(path: dir.path + "/relay.db"))
        var events: [CanonicalEvent] = []
        for (i, subject) in ["A", "A", "B", "A"].enumerated() {
            let e = CanonicalEvent(id: EventID.make(), source: "s", type: "t", subject: ["orderId": subject],
                                   status: .shipped, receivedAt: Timestamp.iso8601(Date()), idempotencyKey: "k\(i)")
            events.append(e)
            let done = DispatchSemaphore(value: 0)
            store.commit(e, deliveries: ["d1", "d2"]) { _ in done.signal() }
            done.wait()
        }
        return (dir, store, events)
    }

    static var now: Int64 { Int64(Date().timeIntervalSince1970 * 1000) + 1 }

    func claim(_ store: SQLiteStore, _ destination: String, limit: Int = 10, perSubject: Bool, at: Int64 = now,
               owner: String = "w1") throws -> [ClaimedDelivery] {
        try store.performAndWait { db in
            try DeliveryQueue.claim(db, destination: destination, limit: limit, nowMillis: at, leaseMillis: 30_000,
                                    owner: owner, perSubject: perSubject)
        }
    }

    func finish(_ store: SQLiteStore, _ id: String, _ result: DeliveryResult, status: Int? = 200) throws {
        try store.performAndWait { db in
            try DeliveryQueue.finish(db, id: id, attempt: AttemptRecord(startedAt: Self.now, latencyMillis: 12, status: status,
                                                                        error: nil, response: "ok"),
                                     result: result, nowMillis: Self.now)
        }
    }

    @Test("per subject: only the oldest waiting delivery of each subject is claimable; others follow in order")
    func perSubjectOrder() throws {
        let (dir, store, events) = try Self.seeded()
        defer { store.close(); dir.remove() }
        let first = try claim(store, "d1", perSubject: true)
        #expect(first.map(\.subjectKey) == ["orderId=A", "orderId=B"])
        #expect(try claim(store, "d1", perSubject: true).isEmpty, "A's second status must wait for its first")
        // d2 is a separate queue.
        #expect(try claim(store, "d2", limit: 1, perSubject: true).count == 1)
        // A's first is retried later: A's next statuses still wait (the first is pending again, not finished).
        try finish(store, first[0].id, .retry(atMillis: Self.now + 60_000), status: 503)
        #expect(try claim(store, "d1", perSubject: true).isEmpty)
        #expect(try claim(store, "d1", perSubject: true, at: Self.now + 61_000).map(\.id) == [first[0].id])
        try finish(store, first[0].id, .delivered)
        let next = try claim(store, "d1", perSubject: true)
        #expect(next.count == 1 && next[0].subjectKey == "orderId=A")
        #expect(try store.deliveries(eventID: events[1].id).first { $0.destination == "d1" }?.id == next[0].id)
    }

    @Test("coalescing keeps only the newest queued status of a subject; the event comes back with its body")
    func coalesce() throws {
        let (dir, store, events) = try Self.seeded()
        defer { store.close(); dir.remove() }
        #expect(try store.performAndWait { db in try DeliveryQueue.supersedeOlder(db, destination: "d1") } == 2)
        let claimed = try claim(store, "d1", perSubject: true)
        #expect(Set(claimed.map(\.subjectKey)) == ["orderId=A", "orderId=B"])
        let newestA = try #require(claimed.first { $0.subjectKey == "orderId=A" })
        #expect(try store.deliveries(eventID: events[3].id).first { $0.destination == "d1" }?.id == newestA.id)
        #expect(try store.deliveries(eventID: events[0].id).first { $0.destination == "d1" }?.state == "superseded")
        // d2 is untouched.
        #expect(try store.deliveries(eventID: events[0].id).first { $0.destination == "d2" }?.state == "pending")
        let loaded = try store.performAndWait { db in try DeliveryQueue.events(db, seqs: claimed.map(\.eventSeq)) }
        #expect(loaded[newestA.eventSeq]?.id == events[3].id)
        #expect(loaded[newestA.eventSeq]?.subject == ["orderId": "A"])
    }

    @Test("without per-subject order everything due is claimable at once, oldest first")
    func unordered() throws {
        let (dir, store, _) = try Self.seeded()
        defer { store.close(); dir.remove() }
        let all = try claim(store, "d1", perSubject: false)
        #expect(all.map(\.subjectKey) == ["orderId=A", "orderId=A", "orderId=B", "orderId=A"])
        #expect(try claim(store, "d1", perSubject: false).isEmpty, "claimed deliveries are not claimed twice")
    }

    @Test("an expired lease returns the delivery to the queue; a live one does not")
    func leases() throws {
        let (dir, store, _) = try Self.seeded()
        defer { store.close(); dir.remove() }
        let taken = try claim(store, "d1", limit: 2, perSubject: false)
        #expect(taken.count == 2)
        #expect(try store.performAndWait { db in try DeliveryQueue.releaseExpiredLeases(db, nowMillis: Self.now + 1_000) } == 0)
        #expect(try store.performAndWait { db in try DeliveryQueue.releaseExpiredLeases(db, nowMillis: Self.now + 31_000) } == 2)
        #expect(try claim(store, "d1", perSubject: false, owner: "w2").count == 4)
    }

    @Test("attempts are numbered and kept; dead letters keep their reason")
    func attempts() throws {
        let (dir, store, events) = try Self.seeded()
        defer { store.close(); dir.remove() }
        let d = try #require(try claim(store, "d2", limit: 1, perSubject: false).first)
        try finish(store, d.id, .retry(atMillis: Self.now), status: 500)
        _ = try claim(store, "d2", limit: 1, perSubject: false)
        try finish(store, d.id, .dead(reason: "422 from the destination"), status: 422)
        let rows = try store.performAndWait { db -> [String] in
            let s = try db.statement("SELECT n || ':' || status FROM attempts WHERE delivery_id = ? ORDER BY n")
            defer { s.reset() }
            try s.bind([d.id])
            var out: [String] = []
            while try s.step() { out.append(s.text(0) ?? "") }
            return out
        }
        #expect(rows == ["1:500", "2:422"])
        let record = try #require(try store.deliveries(eventID: events[0].id).first { $0.id == d.id })
        #expect(record.state == "dead" && record.attempts == 2)
    }
}
