import Foundation
@testable import Relay
@testable import RelaySQLite
import Testing

/// A store written by an earlier version opens, is migrated in place, and keeps its queue.
@Suite("Store migrations")
struct MigrationTests {
    @Test("a version-2 database (before multi-step progress and correlation) is migrated; its pending delivery is claimed")
    func fromVersion2() throws {
        let dir = try TempDir("relay-migrate")
        defer { dir.remove() }
        let path = dir.file("relay.db")
        do {
            // The schema as version 2 of the relay wrote it.
            let db = try Database(path: path)
            try db.execute("""
                PRAGMA journal_mode=WAL;
                CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, source TEXT NOT NULL,
                    idempotency_key TEXT NOT NULL, type TEXT NOT NULL, status TEXT, received_at TEXT NOT NULL,
                    event TEXT NOT NULL, content_type TEXT, body BLOB, UNIQUE (source, idempotency_key));
                CREATE TABLE deliveries (id TEXT PRIMARY KEY, event_seq INTEGER NOT NULL REFERENCES events (seq),
                    event_id TEXT NOT NULL, destination TEXT NOT NULL, subject_key TEXT NOT NULL, state TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL, lease_until INTEGER,
                    claimed_by TEXT, last_status INTEGER, last_error TEXT, finished_at INTEGER, created_at INTEGER NOT NULL);
                CREATE TABLE attempts (delivery_id TEXT NOT NULL, n INTEGER NOT NULL, started_at INTEGER NOT NULL,
                    latency_ms INTEGER NOT NULL, status INTEGER, error TEXT, response TEXT,
                    PRIMARY KEY (delivery_id, n)) WITHOUT ROWID;
                INSERT INTO events (seq, id, source, idempotency_key, type, status, received_at, event, content_type, body)
                VALUES (1, 'evt_1', 'shop', 'k1', 'order.status_changed', 'shipped', '2026-11-20T10:00:00.000Z',
                        '{"attributes":{},"id":"evt_1","idempotencyKey":"k1","receivedAt":"2026-11-20T10:00:00.000Z","source":"shop","status":"shipped","subject":{"orderId":"O-1"},"type":"order.status_changed"}',
                        'application/json', X'7B7D');
                INSERT INTO deliveries (id, event_seq, event_id, destination, subject_key, state, next_attempt_at, created_at)
                VALUES ('dlv_1', 1, 'evt_1', 'd', 'orderId=O-1', 'pending', 0, 0);
                PRAGMA user_version = 2;
                """)
        }
        let store = try SQLiteStore(options: SQLiteStoreOptions(path: path))
        defer { store.close() }
        let settings = CorrelationSettings(keys: Correlation.defaultKeys)
        let lane = try #require(try store.claim([LaneRequest(destination: "d", limit: 10, discipline: QueueDiscipline(perSubject: true))],
                                                nowMillis: 1, correlation: settings)["d"])
        let claimed = lane.claims
        let version = try store.read { db in try db.scalarText("PRAGMA user_version") }
        // A link made after the migration completes the old event's subject.
        _ = try awaitCompletion {
            store.finish([], links: [CorrelationLink(scope: "shop", subject: ["orderId": "O-1", "vendorOrderId": "V-1"])],
                         keys: Correlation.defaultKeys, nowMillis: 1, completion: $0)
        }
        let events = try store.read { db in try DeliveryQueue.events(db, seqs: claimed.map(\.eventSeq), correlation: settings) }
        #expect(version == "7")
        #expect(claimed.map(\.id) == ["dlv_1"])
        #expect(claimed.first?.step == 0 && claimed.first?.values == [:])
        #expect(events[1]?.subject == ["orderId": "O-1", "vendorOrderId": "V-1"], "the old event is completed from a new link")
    }

    @Test("a version-5 database keeps its delivery ids, their order and every lookup by id; new deliveries get derived ids")
    func fromVersion5() throws {
        let dir = try TempDir("relay-migrate5")
        defer { dir.remove() }
        let path = dir.file("relay.db")
        do {
            let store = try SQLiteStore(options: SQLiteStoreOptions(path: path))
            store.close()
            // Back to version 5's deliveries table: a text key, rows in an order that is not the ids' order.
            let db = try Database(path: path)
            try db.execute("""
                DROP TABLE deliveries;
                CREATE TABLE deliveries (id TEXT PRIMARY KEY, event_seq INTEGER NOT NULL REFERENCES events (seq),
                    event_id TEXT NOT NULL, destination TEXT NOT NULL, subject_key TEXT NOT NULL, state TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL, lease_until INTEGER,
                    claimed_by TEXT, last_status INTEGER, last_error TEXT, finished_at INTEGER, created_at INTEGER NOT NULL,
                    step INTEGER NOT NULL DEFAULT 0, context TEXT, claim_token INTEGER);
                CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
                CREATE INDEX deliveries_event ON deliveries (event_seq);
                CREATE INDEX deliveries_subject ON deliveries (destination, subject_key, state);
                INSERT INTO events (seq, id, source, idempotency_key, type, status, received_at, event, content_type, body)
                VALUES (7, 'evt_A', 'shop', 'k1', 'order.status_changed', 'shipped', '2026-11-20T10:00:00.000Z',
                        '{"attributes":{},"id":"evt_A","idempotencyKey":"k1","receivedAt":"2026-11-20T10:00:00.000Z","source":"shop","status":"shipped","subject":{"orderId":"O-1"},"type":"order.status_changed"}',
                        'application/json', X'7B7D'),
                       (8, 'evt_B', 'shop', 'k2', 'order.status_changed', 'delivered', '2026-11-20T10:00:01.000Z',
                        '{"attributes":{},"id":"evt_B","idempotencyKey":"k2","receivedAt":"2026-11-20T10:00:01.000Z","source":"shop","status":"delivered","subject":{"orderId":"O-1"},"type":"order.status_changed"}',
                        'application/json', X'7B7D');
                INSERT INTO deliveries (id, event_seq, event_id, destination, subject_key, state, attempts, next_attempt_at,
                                        last_error, finished_at, created_at)
                VALUES ('dlv_Z', 7, 'evt_A', 'd', 'orderId=O-1', 'dead', 3, 0, 'HTTP 500', 5, 0),
                       ('dlv_Y', 7, 'evt_A', 'e', 'orderId=O-1', 'pending', 0, 0, NULL, NULL, 0),
                       ('dlv_X', 8, 'evt_B', 'e', 'orderId=O-1', 'pending', 0, 0, NULL, NULL, 0);
                PRAGMA user_version = 5;
                """)
        }
        let store = try SQLiteStore(options: SQLiteStoreOptions(path: path))
        defer { store.close() }
        #expect(try store.read { db in try db.scalarText("PRAGMA user_version") } == "7")
        #expect(try store.deliveries(eventID: "evt_A").map(\.id) == ["dlv_Z", "dlv_Y"], "an event's deliveries, in their old order")
        #expect(try store.deliveries(eventID: "evt_B").map(\.id) == ["dlv_X"])
        #expect(try store.delivery(id: "dlv_Z")?.lastError == "HTTP 500")
        // Per-subject order survives: evt_A's delivery to e goes before evt_B's.
        let settings = CorrelationSettings(keys: Correlation.defaultKeys)
        let lane = try #require(try store.claim([LaneRequest(destination: "e", limit: 10, discipline: QueueDiscipline(perSubject: true))],
                                                nowMillis: 1, correlation: settings)["e"])
        #expect(lane.claims.map(\.id) == ["dlv_Y"])
        #expect(lane.claims.map(\.eventSeq) == [7])
        let destinations = ["d": QueueDiscipline(), "e": QueueDiscipline()]
        #expect(try store.replay(deliveryID: "dlv_Z", destinations: destinations, nowMillis: 2) == .replayed(from: "dead"))
        #expect(try store.delivery(id: "dlv_Z")?.state == "pending")

        // A new event's deliveries: ids derived from the event's, found again by id.
        let event = CanonicalEvent(id: EventID.make(), source: "shop", type: "order.status_changed", subject: ["orderId": "O-2"],
                                   status: .shipped, receivedAt: "2026-11-20T10:00:02.000Z", idempotencyKey: "k3")
        let outcome = try awaitCompletion {
            store.commit(event, deliveries: [PlannedDelivery("d", QueueDiscipline()), PlannedDelivery("e", QueueDiscipline())],
                         link: nil, completion: $0)
        }
        #expect(outcome == .inserted(event.id))
        let ulid = event.id.dropFirst(4)
        let fresh = try store.deliveries(eventID: event.id)
        #expect(fresh.map(\.id) == ["dlv_\(ulid)_0", "dlv_\(ulid)_1"])
        #expect(fresh.map(\.destination) == ["d", "e"])
        #expect(try store.delivery(id: "dlv_\(ulid)_1")?.destination == "e")
        #expect(try store.delivery(id: "dlv_\(ulid)_2") == nil)
        #expect(try store.delivery(id: "dlv_\(ulid)_01") == nil, "one spelling per id")
    }

    @Test("version 7: only deliveries to destinations that order per subject are in the subject index, which the order check and coalescing use")
    func subjectIndexOnlyWhenOrdered() throws {
        let dir = try TempDir("relay-migrate")
        defer { dir.remove() }
        let store = try SQLiteStore(options: SQLiteStoreOptions(path: dir.file("relay.db")))
        defer { store.close() }
        let ordered = QueueDiscipline(perSubject: true, coalesce: true)
        var ids: [String] = []
        for key in ["k1", "k2"] {
            let e = CanonicalEvent(id: EventID.make(), source: "shop", type: "order.status_changed", subject: ["orderId": "O-1"],
                                   status: .shipped, receivedAt: "2026-11-20T10:00:02.000Z", idempotencyKey: key)
            _ = try awaitCompletion {
                store.commit(e, deliveries: [PlannedDelivery("u", QueueDiscipline()), PlannedDelivery("o", ordered)],
                             link: nil, completion: $0)
            }
            ids.append(e.id)
        }
        let indexed = try store.read { db -> [String] in
            let s = try db.statement("SELECT destination FROM deliveries INDEXED BY deliveries_subject WHERE ordered = 1 ORDER BY rid")
            defer { s.reset() }
            var out: [String] = []
            while try s.step() { out.append(s.text(0) ?? "") }
            return out
        }
        #expect(indexed == ["o", "o"])
        // The order check finds the older open delivery through the index: only the first of the subject is claimed,
        // and coalescing (which needs it too) supersedes the older one in favour of the newer.
        let settings = CorrelationSettings(keys: Correlation.defaultKeys)
        let lane = try store.claim([LaneRequest(destination: "o", limit: 10, discipline: ordered),
                                    LaneRequest(destination: "u", limit: 10, discipline: QueueDiscipline())],
                                   nowMillis: Int64(Date().timeIntervalSince1970 * 1000) + 1000, correlation: settings)
        #expect(lane["o"]?.claims.count == 1)
        #expect(try store.deliveries(eventID: ids[0]).first { $0.destination == "o" }?.state == "superseded")
        #expect(lane["u"]?.claims.count == 2)
        let plan = try store.read { db -> String in
            let s = try db.statement("""
                EXPLAIN QUERY PLAN SELECT 1 FROM deliveries d WHERE d.rowid = 5000\(DeliveryQueue.heldBackBySubject)
                """)
            defer { s.reset() }
            var out = ""
            while try s.step() { out += (s.text(3) ?? "") + "\n" }
            return out
        }
        #expect(plan.contains("deliveries_subject"), "\(plan)")
    }
}
