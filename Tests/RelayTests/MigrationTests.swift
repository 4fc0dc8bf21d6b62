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
        #expect(version == "5")
        #expect(claimed.map(\.id) == ["dlv_1"])
        #expect(claimed.first?.step == 0 && claimed.first?.values == [:])
        #expect(events[1]?.subject == ["orderId": "O-1", "vendorOrderId": "V-1"], "the old event is completed from a new link")
    }
}
