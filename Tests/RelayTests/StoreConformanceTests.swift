import Foundation
import Relay
@testable import RelayPostgres
@testable import RelaySQLite
import Synchronization
import Testing

/// What every store must do, run on each: the embedded SQLite store on a fresh file, and PostgreSQL on a fresh
/// database of the server `RELAY_TEST_PG_DSN` names (`make test` starts a throwaway cluster and sets it; with
/// `RELAY_REQUIRE_PG=1`, as there, a missing server fails the run instead of leaving PostgreSQL untested).
enum StoreKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite, postgres
    var testDescription: String { rawValue }

    /// The kinds this run can test.
    static var available: [StoreKind] { PGTest.dsn == nil ? [.sqlite] : [.sqlite, .postgres] }
}

/// The PostgreSQL server tests use: `RELAY_TEST_PG_DSN` is a libpq key=value string without `dbname`.
enum PGTest {
    static var dsn: String? {
        let v = ProcessInfo.processInfo.environment["RELAY_TEST_PG_DSN"] ?? ""
        return v.isEmpty ? nil : v
    }

    /// A new, empty database; its connection string.
    static func createDatabase() throws -> (name: String, conninfo: String) {
        guard let dsn else { throw TestFailure("RELAY_TEST_PG_DSN is not set") }
        let name = "relay_t_" + EventID.make(prefix: "").lowercased()
        let admin = try RelayPostgres.Connection(dsn + " dbname=postgres", connectTimeout: 5, applicationName: "relay tests")
        try admin.query("CREATE DATABASE \(name)")
        return (name, dsn + " dbname=\(name)")
    }

    static func dropDatabase(_ name: String) {
        guard let dsn, let admin = try? RelayPostgres.Connection(dsn + " dbname=postgres", connectTimeout: 5, applicationName: "relay tests")
        else { return }
        _ = try? admin.query("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
    }
}

/// One store under test, and how to open it again (a restart) on the same data.
final class StoreUnderTest {
    let kind: StoreKind
    private let dir: TempDir?
    let database: String?
    let location: String
    private(set) var store: any RelayStore

    init(_ kind: StoreKind, lease: Double = 30, heartbeat: Double = 10, writers: Int? = nil) throws {
        self.kind = kind
        switch kind {
        case .sqlite:
            let dir = try TempDir("conformance")
            self.dir = dir
            database = nil
            location = dir.file("relay.db")
        case .postgres:
            let (name, conninfo) = try PGTest.createDatabase()
            dir = nil
            database = name
            location = conninfo
        }
        store = try Self.open(kind, location, lease: lease, heartbeat: heartbeat, writers: writers)
    }

    static func open(_ kind: StoreKind, _ location: String, lease: Double = 30, heartbeat: Double = 10,
                     writers: Int? = nil) throws -> any RelayStore {
        switch kind {
        case .sqlite:
            return try SQLiteStore(options: SQLiteStoreOptions(path: location))
        case .postgres:
            var o = PostgresStoreOptions(url: Secret(value: location, reference: "test"))
            o.lease = lease
            o.heartbeat = heartbeat
            if let writers { o.writers = writers }
            let s = try PostgresStore(options: o)
            guard s.waitUntilReady(timeout: 15) else { throw TestFailure("PostgreSQL not ready: \(s.unavailableReason ?? "")") }
            return s
        }
    }

    /// Another store on the same data, as a second relay (or the same one after a restart) opens it.
    func openAnother(lease: Double = 30, heartbeat: Double = 10) throws -> any RelayStore {
        try Self.open(kind, location, lease: lease, heartbeat: heartbeat)
    }

    func reopen() throws {
        store.close()
        store = try Self.open(kind, location)
    }

    func remove() {
        store.close()
        dir?.remove()
        if let database { PGTest.dropDatabase(database) }
    }
}

@Suite("Store conformance", .serialized)
struct StoreConformanceTests {
    static var now: Int64 { Int64(Date().timeIntervalSince1970 * 1000) + 1 }

    static func event(_ key: String, subject: [String: String] = ["orderId": "A"], source: String = "s",
                      body: [UInt8] = Array(#"{"x":1}"#.utf8)) -> CanonicalEvent {
        CanonicalEvent(id: EventID.make(), source: source, type: "t", subject: subject, status: .shipped,
                       receivedAt: Timestamp.iso8601(Date()), idempotencyKey: key,
                       raw: RawPayload(contentType: "application/json", bytes: body))
    }

    @discardableResult
    static func commit(_ store: any RelayStore, _ e: CanonicalEvent, _ deliveries: [PlannedDelivery],
                       link: CorrelationScope? = nil) throws -> CommitOutcome {
        try awaitCompletion { store.commit(e, deliveries: deliveries, link: link, completion: $0) }
    }

    static let ordered = QueueDiscipline(perSubject: true)

    /// Events for subjects A, A, B, A (in that order), each routed to "d1" and "d2".
    static func seed(_ store: any RelayStore, _ discipline: QueueDiscipline = ordered) throws -> [CanonicalEvent] {
        try ["A", "A", "B", "A"].enumerated().map { i, subject in
            let e = event("k\(i)", subject: ["orderId": subject])
            try commit(store, e, [PlannedDelivery("d1", discipline), PlannedDelivery("d2", discipline)])
            return e
        }
    }

    static func claim(_ store: any RelayStore, _ destination: String, limit: Int = 10,
                      _ discipline: QueueDiscipline = .unordered, at: Int64 = now,
                      correlation: CorrelationSettings = CorrelationSettings(keys: [])) throws -> ClaimedLane {
        try store.claim([LaneRequest(destination: destination, limit: limit, discipline: discipline)], nowMillis: at,
                        correlation: correlation)[destination] ?? ClaimedLane(claims: [], events: [:], nextDueMillis: nil)
    }

    @discardableResult
    static func finish(_ store: any RelayStore, _ claim: ClaimedDelivery, _ result: DeliveryResult, status: Int? = 200,
                       progress: StepProgress? = nil, links: [CorrelationLink] = [],
                       keys: Set<String> = []) throws -> FinishReport {
        let attempt = AttemptRecord(startedAt: now, latencyMillis: 12, status: status,
                                    error: status == 200 ? nil : "HTTP \(status ?? 0)", response: "ok")
        return try awaitCompletion {
            store.finish([FinishedDelivery(claim: claim, attempt: attempt, result: result, progress: progress)],
                         links: links, keys: keys, nowMillis: now, completion: $0)
        }
    }

    static func state(_ store: any RelayStore, _ e: CanonicalEvent, _ destination: String) throws -> String? {
        try store.deliveries(eventID: e.id).first { $0.destination == destination }?.state
    }

    // MARK: Ingest

    @Test("PostgreSQL is tested when the run requires it (RELAY_REQUIRE_PG=1: make test)")
    func postgresPresent() throws {
        if ProcessInfo.processInfo.environment["RELAY_REQUIRE_PG"] == "1" {
            #expect(PGTest.dsn != nil, "RELAY_REQUIRE_PG=1 but RELAY_TEST_PG_DSN is not set: the PostgreSQL store would go untested")
        }
    }

    @Test("dedup by (source, idempotency key) across batches; deliveries only for the new event; bodies byte for byte",
          arguments: StoreKind.available)
    func dedup(_ kind: StoreKind) throws {
        let t = try StoreUnderTest(kind)
        defer { t.remove() }
        let binary: [UInt8] = [0, 1, 0x7f, 0x80, 0xff, 0x5c, 0x22, 0x0a]
        let first = Self.event("same", body: binary)
        #expect(try Self.commit(t.store, first, [PlannedDelivery("d1")]) == .inserted(first.id))
        let again = Self.event("same")
        #expect(try Self.commit(t.store, again, [PlannedDelivery("d1"), PlannedDelivery("d2")]) == .duplicate(first.id))
        // Another source may use the same key.
        let other = Self.event("same", source: "s2")
        #expect(try Self.commit(t.store, other, []) == .inserted(other.id))
        #expect(try t.store.eventCount() == 2)
        #expect(try t.store.deliveries(eventID: first.id).map(\.destination) == ["d1"])
        #expect(try t.store.event(id: again.id) == nil)
        let stored = try #require(try t.store.event(id: first.id))
        #expect(stored.raw?.bytes == binary)
        #expect(stored.subject == first.subject && stored.status == .shipped && stored.idempotencyKey == "same")
    }

    @Test("group commit: many concurrent commits share transactions; duplicates within one batch are found",
          arguments: StoreKind.available)
    func groupCommit(_ kind: StoreKind) throws {
        let t = try StoreUnderTest(kind)
        defer { t.remove() }
        let n = 600
        let before = t.store.stats.transactions.load(ordering: .relaxed)
        let outcomes = Mutex<[CommitOutcome]>([])
        let failures = Mutex<[String]>([])
        let group = DispatchGroup()
        for i in 0..<n {
            group.enter()
            // Every key twice: 300 events, 300 duplicates.
            t.store.commit(Self.event("g\(i / 2)", subject: ["orderId": "G\(i % 7)"]),
                           deliveries: [PlannedDelivery("d1")], link: nil) { r in
                switch r {
                case .success(let o): outcomes.withLock { $0.append(o) }
                case .failure(let e): failures.withLock { $0.append(e.description) }
                }
                group.leave()
            }
        }
        #expect(group.wait(timeout: .now() + 60) == .success)
        #expect(failures.withLock { $0 }.isEmpty)
        let all = outcomes.withLock { $0 }
        let inserted = all.filter { if case .inserted = $0 { return true } else { return false } }.count
        #expect(inserted == n / 2)
        #expect(Set(all.map(\.eventID)).count == n / 2, "a duplicate names the id of the event it duplicates")
        #expect(try t.store.eventCount() == n / 2)
        let transactions = t.store.stats.transactions.load(ordering: .relaxed) - before
        #expect(transactions > 0 && transactions <= n / 4, "\(transactions) transactions for \(n) commits")
        #expect(try t.store.queueStats().first { $0.destination == "d1" }?.waiting == n / 2)
    }

    // MARK: The queue

    @Test("per subject: only the oldest open delivery of a subject is claimable; the rest follow in order",
          arguments: StoreKind.available)
    func perSubjectOrder(_ kind: StoreKind) throws {
        let t = try StoreUnderTest(kind)
        defer { t.remove() }
        let events = try Self.seed(t.store)
        let first = try Self.claim(t.store, "d1", Self.ordered).claims
        #expect(first.map(\.subjectKey) == ["orderId=A", "orderId=B"])
        #expect(try Self.claim(t.store, "d1", Self.ordered).claims.isEmpty, "A's second status waits for its first")
        #expect(try Self.claim(t.store, "d2", limit: 1, Self.ordered).claims.count == 1, "d2 is a queue of its own")
        // A retry keeps A's later statuses waiting; the next due time is the retry's.
        let retryAt = Self.now + 60_000
        try Self.finish(t.store, first[0], .retry(atMillis: retryAt), status: 503)
        let blocked = try Self.claim(t.store, "d1", Self.ordered)
        #expect(blocked.claims.isEmpty)
        #expect(blocked.nextDueMillis == retryAt, "only the head of a subject counts for the next due time")
        let again = try Self.claim(t.store, "d1", Self.ordered, at: retryAt + 1).claims
        #expect(again.map(\.id) == [first[0].id])
        try Self.finish(t.store, again[0], .delivered)
        let next = try Self.claim(t.store, "d1", Self.ordered).claims
        #expect(next.count == 1 && next[0].subjectKey == "orderId=A")
        #expect(try t.store.deliveries(eventID: events[1].id).first { $0.destination == "d1" }?.id == next[0].id)
    }

    @Test("coalescing keeps only the newest queued status of a subject; claimed events carry their bodies",
          arguments: StoreKind.available)
    func coalesce(_ kind: StoreKind) throws {
        let t = try StoreUnderTest(kind)
        defer { t.remove() }
        let discipline = QueueDiscipline(perSubject: true, coalesce: true)
        let events = try Self.seed(t.store, discipline)
        let lane = try Self.claim(t.store, "d1", discipline)
        #expect(Set(lane.claims.map(\.subjectKey)) == ["orderId=A", "orderId=B"])
        let newestA = try #require(lane.claims.first { $0.subjectKey == "orderId=A" })
        #expect(try t.store.deliveries(eventID: events[3].id).first { $0.destination == "d1" }?.id == newestA.id)
        #expect(try Self.state(t.store, events[0], "d1") == "superseded")
        #expect(try Self.state(t.store, events[1], "d1") == "superseded")
        #expect(try Self.state(t.store, events[0], "d2") == "pending", "d2 is untouched")
        #expect(lane.events[newestA.eventSeq]?.id == events[3].id)
        #expect(lane.events[newestA.eventSeq]?.raw?.bytes == Array(#"{"x":1}"#.utf8))
    }

    @Test("unordered: everything due is claimed at once, oldest first, never twice; later ones wait for their time",
          arguments: StoreKind.available)
    func unordered(_ kind: StoreKind) throws {
        let t = try StoreUnderTest(kind)
        defer { t.remove() }
        _ = try Self.seed(t.store, .unordered)
        let all = try Self.claim(t.store, "d1").claims
        #expect(all.map(\.subjectKey) == ["orderId=A", "orderId=A", "orderId=B", "orderId=A"])
        #expect(try Self.claim(t.store, "d1").claims.isEmpty, "claimed deliveries are not claimed twice")
        let later = Self.now + 5_000
        try Self.finish(t.store, all[0], .retry(atMillis: later), status: 500)
        let lane = try Self.claim(t.store, "d1")
        #expect(lane.claims.isEmpty && lane.nextDueMillis == later)
    }

    @Test("an expired lease returns a delivery to the queue; the old claim's finish is fenced off",
          arguments: StoreKind.available)
    func leasesAndFencing(_ kind: StoreKind) throws {
        let t = try StoreUnderTest(kind)
        defer { t.remove() }
        let events = try Self.seed(t.store, .unordered)
        let taken = try Self.claim(t.store, "d1", limit: 2).claims
        #expect(taken.count == 2)
        #expect(try t.store.releaseExpiredLeases(nowMillis: Self.now - 1_000) == 0, "live leases stay")
        // The database's clock or ours: a time far ahead has every lease run out.
        #expect(try t.store.releaseExpiredLeases(nowMillis: Self.now + 3_600_000) == 2)
        let retaken = try Self.claim(t.store, "d1").claims
        #expect(retaken.count == 4)
        let stale = try Self.finish(t.store, taken[0], .delivered)
        #expect(stale.stale == [taken[0].id], "a finish for a claim that ran out changes nothing")
        #expect(try Self.state(t.store, events[0], "d1") == "in_flight")
        #expect(try t.store.attempts(deliveryID: taken[0].id).isEmpty)
        let current = try #require(retaken.first { $0.id == taken[0].id })
        #expect(try Self.finish(t.store, current, .delivered).stale.isEmpty)
        #expect(try Self.state(t.store, events[0], "d1") == "delivered")
        // A release gives the claim back, due now.
        let rest = retaken.filter { $0.id != current.id }
        try awaitCompletion { t.store.release(rest, completion: $0) }
        #expect(try Self.claim(t.store, "d1").claims.count == 3)
    }

    @Test("an answer with a NUL byte is recorded (as U+FFFD), and so is the finish written beside it",
          arguments: StoreKind.available)
    func nulInAnswers(_ kind: StoreKind) throws {
        let t = try StoreUnderTest(kind)
        defer { t.remove() }
        _ = try Self.seed(t.store, .unordered)
        let claims = try Self.claim(t.store, "d1", limit: 2).claims
        #expect(claims.count == 2)
        let refused = AttemptRecord(startedAt: Self.now, latencyMillis: 3, status: 422, error: "HTTP 422",
                                    response: "{\"error\":\"bad\u{0}byte\"}")
        let fine = AttemptRecord(startedAt: Self.now, latencyMillis: 3, status: 200, error: nil, response: "ok")
        // One finish call: in PostgreSQL one statement, so a value it cannot take would fail both, at every retry.
        let report = try awaitCompletion {
            t.store.finish([FinishedDelivery(claim: claims[0], attempt: refused, result: .dead(reason: "refused: bad\u{0}byte")),
                            FinishedDelivery(claim: claims[1], attempt: fine, result: .delivered)],
                           links: [], keys: [], nowMillis: Self.now, completion: $0)
        }
        #expect(report.stale.isEmpty)
        let dead = try #require(try t.store.delivery(id: claims[0].id))
        #expect(dead.state == "dead" && dead.lastError == "refused: bad\u{FFFD}byte")
        #expect(try t.store.attempts(deliveryID: claims[0].id).first?.response == "{\"error\":\"bad\u{FFFD}byte\"}")
        #expect(try t.store.delivery(id: claims[1].id)?.state == "delivered")
    }

    @Test("a NUL in an event's key, type, subject or status is kept as U+FFFD, the same in both stores",
          arguments: StoreKind.available)
    func nulInEventFields(_ kind: StoreKind) throws {
        let t = try StoreUnderTest(kind)
        defer { t.remove() }
        // As a JSON body can have them (`\u0000`): decoded into the fields the stores keep as text and match on.
        let odd = CanonicalEvent(id: EventID.make(), source: "s", type: "order\u{0}shipped",
                                 subject: ["orderId": "A\u{0}1"], status: .shipped,
                                 providerStatus: ProviderStatus(code: "SH\u{0}", label: "ship\u{0}ped"),
                                 receivedAt: Timestamp.iso8601(Date()), idempotencyKey: "key\u{0}1",
                                 raw: RawPayload(contentType: "application/json", bytes: Array(#"{"k":"key\u0000"}"#.utf8)))
        #expect(odd.idempotencyKey == "key\u{FFFD}1" && odd.subject == ["orderId": "A\u{FFFD}1"])
        let plain = Self.event("plain")
        let discipline = Self.ordered
        // Committed together (one batch, one statement in PostgreSQL): a value it cannot take would fail both.
        let outcomes = Mutex<[String: CommitOutcome]>([:])
        let done = DispatchGroup()
        for e in [odd, plain] {
            done.enter()
            t.store.commit(e, deliveries: [PlannedDelivery("d1", discipline)], link: nil) { result in
                if case .success(let o) = result { outcomes.withLock { $0[e.idempotencyKey] = o } }
                done.leave()
            }
        }
        #expect(done.wait(timeout: .now() + 10) == .success)
        #expect(outcomes.withLock { $0 } == ["key\u{FFFD}1": .inserted(odd.id), "plain": .inserted(plain.id)])
        let stored = try #require(try t.store.event(id: odd.id))
        #expect(stored.idempotencyKey == "key\u{FFFD}1" && stored.type == "order\u{FFFD}shipped")
        #expect(stored.subject == ["orderId": "A\u{FFFD}1"] && stored.providerStatus?.code == "SH\u{FFFD}")
        #expect(stored.raw?.bytes == odd.raw?.bytes)
        // The same key again is a duplicate of the stored event, not a new one cut short at the NUL.
        let again = CanonicalEvent(id: EventID.make(), source: "s", type: "t", receivedAt: Timestamp.iso8601(Date()),
                                   idempotencyKey: "key\u{0}1")
        #expect(try Self.commit(t.store, again, [PlannedDelivery("d1", discipline)]) == .duplicate(odd.id))
        let cut = CanonicalEvent(id: EventID.make(), source: "s", type: "t", receivedAt: Timestamp.iso8601(Date()),
                                 idempotencyKey: "key")
        #expect(try Self.commit(t.store, cut, [PlannedDelivery("d1", discipline)]) == .inserted(cut.id))
        let claims = try Self.claim(t.store, "d1", limit: 10, discipline).claims
        // (The two first events were committed at once: either may be first in the queue.)
        let oddClaim = try #require(claims.first { $0.subjectKey.contains("A\u{FFFD}1") })
        // A destination's answer may hold one too: its identifiers are linked as U+FFFD, and complete a later event
        // that names them.
        let keys = Correlation.defaultKeys
        try Self.finish(t.store, oddClaim, .delivered,
                        links: [CorrelationLink(scope: "vendor", subject: ["orderId": "A\u{0}1", "vendorOrderId": "V\u{0}7"])],
                        keys: keys)
        let fromVendor = Self.event("v1", subject: ["vendorOrderId": "V\u{0}7"], source: "vendor")
        try Self.commit(t.store, fromVendor, [PlannedDelivery("d2")])
        let lane = try Self.claim(t.store, "d2", correlation: CorrelationSettings(keys: keys))
        #expect(lane.events.values.first?.subject == ["vendorOrderId": "V\u{FFFD}7", "orderId": "A\u{FFFD}1"])
    }

    @Test("attempts are numbered and kept; dead letters keep their reason", arguments: StoreKind.available)
    func attempts(_ kind: StoreKind) throws {
        let t = try StoreUnderTest(kind)
        defer { t.remove() }
        let events = try Self.seed(t.store, .unordered)
        let d = try #require(try Self.claim(t.store, "d2", limit: 1).claims.first)
        try Self.finish(t.store, d, .retry(atMillis: 1), status: 500)  // due before the other queued ones
        let again = try #require(try Self.claim(t.store, "d2", limit: 1).claims.first)
        #expect(again.id == d.id && again.attempts == 1)
        try Self.finish(t.store, again, .dead(reason: "422 from the destination"), status: 422)
        let rows = try t.store.attempts(deliveryID: d.id)
        #expect(rows.map(\.n) == [1, 2])
        #expect(rows.map(\.status) == [500, 422])
        #expect(rows[0].latencyMillis == 12 && rows[0].response == "ok" && rows[0].error == "HTTP 500")
        let record = try #require(try t.store.delivery(id: d.id))
        #expect(record.state == "dead" && record.attempts == 2 && record.lastError == "422 from the destination")
        #expect(record.lastStatus == 422 && record.finishedAt != nil)
        #expect(try t.store.deliveries(eventID: events[0].id).first { $0.destination == "d2" }?.id == d.id)
        #expect(try t.store.queueStats().first { $0.destination == "d2" }?.dead == 1)
    }

    @Test("progress of a multi-step delivery survives a lost claim", arguments: StoreKind.available)
    func progress(_ kind: StoreKind) throws {
        let t = try StoreUnderTest(kind)
        defer { t.remove() }
        _ = try Self.seed(t.store, .unordered)
        let c = try #require(try Self.claim(t.store, "d1", limit: 1).claims.first)
        #expect(throws: Never.self) {
            try awaitCompletion { t.store.saveProgress(c, StepProgress(step: 1, values: ["voucher": "V-9"]), completion: $0) }
        }
        _ = try t.store.releaseExpiredLeases(nowMillis: Self.now + 3_600_000)
        let resumed = try #require(try Self.claim(t.store, "d1", limit: 1).claims.first)
        #expect(resumed.id == c.id && resumed.step == 1 && resumed.values == ["voucher": "V-9"])
        // The old claim can no longer record progress.
        #expect(throws: StoreError.self) {
            try awaitCompletion { t.store.saveProgress(c, StepProgress(step: 2, values: [:]), completion: $0) }
        }
    }

    @Test("replay: one finished delivery, or all dead ones of a destination, queued again", arguments: StoreKind.available)
    func replay(_ kind: StoreKind) throws {
        let t = try StoreUnderTest(kind)
        defer { t.remove() }
        let events = try Self.seed(t.store, .unordered)
        let destinations: [String: QueueDiscipline] = ["d1": .unordered, "d2": .unordered]
        let claims = try Self.claim(t.store, "d1").claims
        for c in claims { try Self.finish(t.store, c, .dead(reason: "gone"), status: 410) }
        let one = claims[0].id
        #expect(try t.store.replay(deliveryID: "dlv_nope", destinations: destinations, nowMillis: Self.now) == .notFound)
        #expect(try t.store.replay(deliveryID: one, destinations: ["d2": .unordered], nowMillis: Self.now) == .unconfigured(destination: "d1"))
        #expect(try t.store.replay(deliveryID: one, destinations: destinations, nowMillis: Self.now) == .replayed(from: "dead"))
        #expect(try t.store.replay(deliveryID: one, destinations: destinations, nowMillis: Self.now) == .unfinished(state: "pending"))
        #expect(try Self.claim(t.store, "d1").claims.map(\.id) == [one])
        let filter = ReplayFilter(state: .dead, destination: "d1", destinations: destinations)
        #expect(try t.store.replay(filter, dryRun: true, nowMillis: Self.now) == 3)
        #expect(try Self.state(t.store, events[1], "d1") == "dead", "a dry run changes nothing")
        #expect(try t.store.replay(filter, dryRun: false, nowMillis: Self.now) == 3)
        #expect(try Self.claim(t.store, "d1").claims.count == 3)
        #expect(try t.store.attempts(deliveryID: claims[1].id).count == 1, "a replay keeps the attempts")
    }

    @Test("pause: nothing is claimed for a paused destination, and it is still paused after a restart",
          arguments: StoreKind.available)
    func pause(_ kind: StoreKind) throws {
        let t = try StoreUnderTest(kind)
        defer { t.remove() }
        _ = try Self.seed(t.store, .unordered)
        try t.store.setPaused("d1", true, nowMillis: Self.now)
        #expect(try Self.claim(t.store, "d1").claims.isEmpty)
        #expect(try Self.claim(t.store, "d2").claims.count == 4)
        try t.reopen()
        #expect(try t.store.pausedDestinations() == ["d1"])
        #expect(try Self.claim(t.store, "d1").claims.isEmpty)
        try t.store.setPaused("d1", false, nowMillis: Self.now)
        #expect(try Self.claim(t.store, "d1").claims.count == 4)
    }

    @Test("recovery: what a relay held when it stopped is claimed again by the next one", arguments: StoreKind.available)
    func recovery(_ kind: StoreKind) throws {
        let t = try StoreUnderTest(kind)
        defer { t.remove() }
        _ = try Self.seed(t.store, .unordered)
        #expect(try Self.claim(t.store, "d1").claims.count == 4)
        try t.reopen()
        _ = try t.store.recoverClaims()
        let again = try Self.claim(t.store, "d1").claims
        #expect(again.count == 4)
        for c in again { try Self.finish(t.store, c, .delivered) }
        #expect(try t.store.queueStats().first { $0.destination == "d1" }?.waiting ?? 0 == 0)
    }

    @Test("correlation: identifiers linked at commit and from answers complete later events' subjects",
          arguments: StoreKind.available)
    func correlation(_ kind: StoreKind) throws {
        let t = try StoreUnderTest(kind)
        defer { t.remove() }
        let keys = Correlation.defaultKeys
        let settings = CorrelationSettings(keys: keys)
        // The loyalty platform's event names both its transaction and the vendor's order.
        let linked = Self.event("c1", subject: ["transactionId": "T-1", "orderId": "O-1"], source: "loyalty")
        try Self.commit(t.store, linked, [], link: settings.link(source: "loyalty", subject: linked.subject))
        // A later event names only the order: it is completed with the transaction.
        let later = Self.event("c2", subject: ["orderId": "O-1"], source: "loyalty")
        try Self.commit(t.store, later, [PlannedDelivery("d1")])
        let lane = try Self.claim(t.store, "d1", correlation: settings)
        #expect(lane.events.values.first?.subject == ["orderId": "O-1", "transactionId": "T-1"])
        // A destination's answer links its own identifier, in its scope.
        let c = try #require(lane.claims.first)
        try Self.finish(t.store, c, .delivered,
                        links: [CorrelationLink(scope: "vendor", subject: ["orderId": "O-1", "vendorOrderId": "V-7"])], keys: keys)
        let fromVendor = Self.event("c3", subject: ["vendorOrderId": "V-7"], source: "vendor")
        try Self.commit(t.store, fromVendor, [PlannedDelivery("d1")])
        let vendorLane = try Self.claim(t.store, "d1", correlation: settings)
        #expect(vendorLane.events.values.first?.subject == ["vendorOrderId": "V-7", "orderId": "O-1"])
        // Another partner's identical value is another subject.
        let stranger = Self.event("c4", subject: ["vendorOrderId": "V-7"], source: "other")
        try Self.commit(t.store, stranger, [PlannedDelivery("d2")])
        #expect(try Self.claim(t.store, "d2", correlation: settings).events.values.first?.subject == ["vendorOrderId": "V-7"])
    }

    @Test("circuit breakers are kept by the store", arguments: StoreKind.available)
    func circuits(_ kind: StoreKind) throws {
        let t = try StoreUnderTest(kind)
        defer { t.remove() }
        let reopens = Self.now + 30_000
        t.store.saveCircuit("d1", CircuitSnapshot(state: .open, consecutiveFailures: 5, reopensAtMillis: reopens))
        try DeliveryTests.eventually("the circuit saved") { try t.store.circuits()["d1"] != nil }
        try t.reopen()
        #expect(try t.store.circuits()["d1"] == CircuitSnapshot(state: .open, consecutiveFailures: 5, reopensAtMillis: reopens))
        t.store.saveCircuit("d1", CircuitSnapshot(state: .closed, consecutiveFailures: 0, reopensAtMillis: nil))
        try DeliveryTests.eventually("the circuit closed") { try t.store.circuits()["d1"]?.state == .closed }
    }

    @Test("admin queries: filters, newest first, cursors", arguments: StoreKind.available)
    func adminQueries(_ kind: StoreKind) throws {
        let t = try StoreUnderTest(kind)
        defer { t.remove() }
        var ids: [String] = []
        for i in 0..<5 {
            let e = Self.event("q\(i)", subject: ["orderId": "Q\(i % 2)"], source: i < 4 ? "s" : "other")
            try Self.commit(t.store, e, [PlannedDelivery("d1")])
            ids.append(e.id)
        }
        var q = EventQuery(limit: 2)
        q.source = "s"
        let page1 = try t.store.events(q)
        #expect(page1.count == 2)
        #expect(page1.map { (try? JSONValue.parse(Data($0.json.utf8)))?["id"]?.stringValue } == [ids[3], ids[2]])
        q.before = page1.last!.cursor
        let page2 = try t.store.events(q)
        #expect(page2.map { (try? JSONValue.parse(Data($0.json.utf8)))?["id"]?.stringValue } == [ids[1], ids[0]])
        var bySubject = EventQuery(limit: 10)
        bySubject.subject = ("orderId", "Q1")
        #expect(try t.store.events(bySubject).count == 2)
        #expect(try t.store.eventIDs(source: "s") == Array(ids.prefix(4)))
        let d = try t.store.deliveries(DeliveryQuery(state: .pending, destination: "d1", limit: 3))
        #expect(d.count == 3 && d.map(\.eventID) == [ids[4], ids[3], ids[2]])
        let rest = try t.store.deliveries(DeliveryQuery(state: .pending, destination: "d1", before: d.last!.cursor, limit: 3))
        #expect(rest.map(\.eventID) == [ids[1], ids[0]])
        #expect(try t.store.deliveries(DeliveryQuery(state: .dead, limit: 3)).isEmpty)
        let stat = try #require(try t.store.queueStats().first { $0.destination == "d1" })
        #expect(stat.waiting == 5 && stat.dead == 0 && stat.oldestQueuedAt != nil)
        try t.store.ping()
    }

    @Test("status filter: an added status by its name, an unmapped one as \"unmapped\"; a delivered chain's values are kept",
          arguments: StoreKind.available)
    func statusesAndRecordedValues(_ kind: StoreKind) throws {
        let t = try StoreUnderTest(kind)
        defer { t.remove() }
        var packed = Self.event("st1")
        packed.status = CanonicalStatus(named: "packed")
        packed.statusFallback = .placed
        var unmapped = Self.event("st2")
        unmapped.status = nil
        unmapped.providerStatus = ProviderStatus(code: "MISPLACED")
        unmapped.statusUnmapped = true
        let shipped = Self.event("st3")
        for e in [packed, unmapped, shipped] { try Self.commit(t.store, e, [PlannedDelivery("d1")]) }
        func ids(_ status: String) throws -> [String?] {
            var q = EventQuery(limit: 10)
            q.status = status
            return try t.store.events(q).map { (try? JSONValue.parse(Data($0.json.utf8)))?["id"]?.stringValue }
        }
        #expect(try ids("packed") == [packed.id])
        #expect(try ids("unmapped") == [unmapped.id])
        #expect(try ids("shipped") == [shipped.id])
        let stored = try #require(try t.store.event(id: unmapped.id))
        #expect(stored.statusUnmapped == true && stored.providerStatus?.code == "MISPLACED" && stored.status == nil)
        #expect(try t.store.event(id: packed.id)?.statusFallback == .placed)
        // What a finished chain yielded (responseKeys) stays with the delivered delivery.
        let c = try #require(try Self.claim(t.store, "d1", limit: 1).claims.first)
        try Self.finish(t.store, c, .delivered, progress: StepProgress(step: 0, values: ["voucher": "VCH-1"]))
        let d = try #require(try t.store.delivery(id: c.id))
        #expect(d.state == "delivered" && d.values == ["voucher": "VCH-1"])
    }

    @Test("trace context: kept with the event (trace id, ingest span, flags, tracestate) through commit, claim, a restart and the admin reads",
          arguments: StoreKind.available)
    func traceContext(_ kind: StoreKind) throws {
        let t = try StoreUnderTest(kind)
        defer { t.remove() }
        var traced = Self.event("tr1", subject: ["orderId": "T1"])
        traced.trace = TraceContext(traceID: TraceID(high: 0x4bf92f3577b34da6, low: 0xa3ce929d0e0e4736),
                                    spanID: 0x00f067aa0ba902b7, flags: 1, state: "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        var unsampled = Self.event("tr2", subject: ["orderId": "T2"])
        unsampled.trace = TraceContext(traceID: TraceID(high: 1, low: 2), spanID: 3, flags: 0)
        let plain = Self.event("tr3", subject: ["orderId": "T3"])
        for e in [traced, unsampled, plain] { try Self.commit(t.store, e, [PlannedDelivery("d1")]) }
        let claimed = try Self.claim(t.store, "d1")
        #expect(claimed.claims.count == 3)
        let byID = Dictionary(uniqueKeysWithValues: claimed.events.values.map { ($0.id, $0) })
        #expect(byID[traced.id]?.trace == traced.trace)
        #expect(byID[unsampled.id]?.trace == unsampled.trace && byID[unsampled.id]?.trace?.sampled == false)
        #expect(byID[plain.id]?.trace == nil)
        // The body a destination gets is the same as without a trace.
        #expect(byID[traced.id]?.jsonText() == { var e = traced; e.trace = nil; return e.jsonText() }())
        try t.reopen()
        #expect(try t.store.event(id: traced.id)?.trace == traced.trace)
        #expect(try t.store.event(id: plain.id)?.trace == nil)
        var q = EventQuery(limit: 10)
        q.source = "s"
        let rows = try t.store.events(q).compactMap { try? JSONValue.parse(Data($0.json.utf8)) }
        let row = try #require(rows.first { $0["id"]?.stringValue == traced.id })
        #expect(row["trace"]?["parent"]?.stringValue == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        #expect(row["trace"]?["state"]?.stringValue == traced.trace?.state)
    }

    // MARK: Shared store only

    @Test("PostgreSQL: two relays on one database never claim the same delivery, and keep per-subject order between them",
          .enabled(if: PGTest.dsn != nil))
    func twoRelaysShareTheQueue() throws {
        let t = try StoreUnderTest(.postgres)
        defer { t.remove() }
        let other = try t.openAnother()
        defer { other.close() }
        for i in 0..<40 {
            try Self.commit(t.store, Self.event("m\(i)", subject: ["orderId": "S\(i % 4)"]), [PlannedDelivery("d1", Self.ordered)])
        }
        var seen = Set<String>()
        var delivered = 0
        var rounds = 0
        while delivered < 40 && rounds < 200 {
            rounds += 1
            let a = try Self.claim(t.store, "d1", Self.ordered).claims
            let b = try Self.claim(other, "d1", Self.ordered).claims
            let subjects = (a + b).map(\.subjectKey)
            #expect(Set(subjects).count == subjects.count, "two in flight for one subject: \(subjects)")
            for c in a + b {
                #expect(seen.insert(c.id).inserted, "\(c.id) claimed twice")
                try Self.finish(c.id.hashValue % 2 == 0 ? t.store : other, c, .delivered)
                delivered += 1
            }
        }
        #expect(delivered == 40)
    }

    @Test("PostgreSQL: a relay that stops heartbeating loses its claims to the others",
          .enabled(if: PGTest.dsn != nil))
    func deadRelaysClaimsAreTakenOver() throws {
        let t = try StoreUnderTest(.postgres)
        defer { t.remove() }
        _ = try Self.seed(t.store, .unordered)
        let pg = try #require(t.store as? PostgresStore)
        let held = try Self.claim(t.store, "d1").claims
        #expect(held.count == 4)
        // A relay that died: its claims carry an instance id whose heartbeat stopped long ago.
        try pg.onQueue { c in
            try c.query("UPDATE deliveries SET claimed_by = 'relay-gone' WHERE state = 'in_flight'")
            try c.query("INSERT INTO relay_instances VALUES ('relay-gone', 'h', 1, 0, 0)")
        }
        let next = try t.openAnother(heartbeat: 1)
        defer { next.close() }
        #expect(try next.recoverClaims() == 4)
        #expect(try Self.claim(next, "d1").claims.count == 4)
    }

    @Test("PostgreSQL: a finish lost in a database crash runs out its lease on a live relay; held claims are renewed",
          .enabled(if: PGTest.dsn != nil))
    func lostFinishIsNotRenewed() throws {
        let t = try StoreUnderTest(.postgres, lease: 2, heartbeat: 10)
        defer { t.remove() }
        _ = try Self.seed(t.store, .unordered)
        let pg = try #require(t.store as? PostgresStore)
        let claims = try Self.claim(t.store, "d1", limit: 2).claims
        #expect(claims.count == 2)
        let (done, held) = (claims[0], claims[1])
        try Self.finish(t.store, done, .delivered)
        // The crash: the finish was acknowledged (it commits without waiting for the WAL flush), then lost with the
        // database's last transactions, so the row is in flight again under this relay's name and claim.
        _ = try pg.onQueue { c in
            try c.query("""
                UPDATE deliveries SET state = 'in_flight', claimed_by = $1, claim_token = $2,
                       lease_until = (extract(epoch from clock_timestamp()) * 1000)::bigint + 2000, finished_at = NULL
                WHERE id = $3
                """, [pg.instanceID, String(done.claimToken), done.id])
        }
        // Past the lease, with the relay's heartbeat (renewal) and sweep run in between (its coordinator's work).
        let end = Date().addingTimeInterval(3.5)
        while Date() < end {
            _ = try pg.recoverClaims()
            usleep(300_000)
        }
        func state(_ id: String) throws -> String? { try t.store.delivery(id: id)?.state }
        #expect(try state(done.id) == "pending", "a claim this relay no longer holds is given back when its lease ends")
        #expect(try state(held.id) == "in_flight", "the claim it still holds is renewed")
        #expect(try Self.finish(t.store, held, .delivered).stale.isEmpty)
        #expect(try Self.claim(t.store, "d1").claims.map(\.id).contains(done.id), "and it is delivered again")
    }

    @Test("PostgreSQL connections cut by the server: the store reconnects by itself and commits again, also when its writer finds out only after the coordinator is back",
          .enabled(if: PGTest.dsn != nil))
    func reconnects() throws {
        // One writer: the commit after the cut meets the connection the first commit used.
        let t = try StoreUnderTest(.postgres, writers: 1)
        defer { t.remove() }
        let pg = try #require(t.store as? PostgresStore)
        let database = try #require(t.database)
        try Self.commit(t.store, Self.event("r0"), [PlannedDelivery("d1")])
        let admin = try RelayPostgres.Connection(PGTest.dsn! + " dbname=postgres", connectTimeout: 5, applicationName: "relay tests")
        // Every connection of this store (only its own database: other suites run beside this one).
        let cut = try admin.query("""
            SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE datname = $1 AND application_name LIKE 'relay %'
            """, [database])
        #expect(cut.count >= 2, "the writer and coordinator connections were cut")
        let cutPIDs = (0..<cut.count).compactMap { cut[$0][0] }
        // The order that once left a relay refusing for good: the coordinator (which waits on its socket) is back
        // before the writer, idle meanwhile, uses its dead connection and marks the database down.
        var coordinatorBack = false
        for _ in 0..<500 where !coordinatorBack {
            usleep(20_000)
            let c = try admin.query("""
                SELECT count(*) FROM pg_stat_activity
                WHERE datname = $1 AND application_name = 'relay coordinator' AND NOT (pid::text = ANY($2::text[]))
                """, [database, PGText.array(cutPIDs)])
            coordinatorBack = c[0][0] == "1" && pg.unavailableReason == nil
        }
        #expect(coordinatorBack, "the coordinator reconnected by itself")
        var accepted = false
        var refused = 0
        let deadline = Date().addingTimeInterval(15)
        var i = 1
        while !accepted && Date() < deadline {
            do {
                try Self.commit(t.store, Self.event("r\(i)"), [PlannedDelivery("d1")])
                accepted = true
            } catch {
                refused += 1
                usleep(100_000)
            }
            i += 1
        }
        #expect(accepted, "still refusing after 15 s: \(pg.unavailableReason ?? "")")
        #expect(refused >= 1, "the first commit met the writer's cut connection and was refused, never acknowledged")
        #expect(try Self.claim(t.store, "d1").claims.count == 2, "the queue works again, and nothing refused was stored")
        #expect(try t.store.eventCount() == 2)
    }

    @Test("PostgreSQL unreachable: commits are refused at once, never acknowledged; the summary has no password",
          .enabled(if: PGTest.dsn != nil))
    func unreachable() throws {
        let down = try PostgresStore(options: PostgresStoreOptions(url: Secret(value: "postgres://relay:s3cret@127.0.0.1:1/x?connect_timeout=1", reference: "test")))
        defer { down.close() }
        let started = Date()
        #expect(throws: StoreError.self) { try Self.commit(down, Self.event("u1"), []) }
        #expect(Date().timeIntervalSince(started) < 2, "a commit must not wait for a database that is down")
        #expect(throws: (any Error).self) { try down.ping() }
        #expect(down.summary.contains("127.0.0.1") && !down.summary.contains("s3cret"), "\(down.summary)")
    }
}
