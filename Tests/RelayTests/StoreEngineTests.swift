import Foundation
import Relay
@testable import RelaySQLite
import Testing

/// The SQLite store on its own: group commit, the background checkpoint, close.
@Suite("Store engine")
struct StoreEngineTests {
    static func event(_ n: Int, source: String = "s", key: String? = nil) -> CanonicalEvent {
        CanonicalEvent(id: EventID.make(), source: source, type: "passthrough", receivedAt: Timestamp.iso8601(Date()),
                       idempotencyKey: key ?? "key-\(n)-\(UUID().uuidString)",
                       raw: RawPayload(contentType: "application/json",
                                       body: "{\"n\":\(n),\"pad\":\"\(String(repeating: "x", count: 900))\"}"))
    }

    /// Commits `events` from many threads at once and waits for every answer.
    static func commitAll(_ store: SQLiteStore, _ events: [CanonicalEvent]) -> [Result<CommitOutcome, StoreError>] {
        let results = LockedBox<[Int: Result<CommitOutcome, StoreError>]>([:])
        let group = DispatchGroup()
        for (i, e) in events.enumerated() {
            group.enter()
            store.commit(e) { r in
                results.values.withLock { $0[i] = r }
                group.leave()
            }
        }
        group.wait()
        return results.values.withLock { all in (0..<events.count).map { all[$0]! } }
    }

    @Test("the WAL stays bounded under sustained commits: the checkpointer and the writer keep it copied")
    func walStaysBounded() throws {
        let dir = try TempDir("store-wal")
        let path = dir.path + "/relay.db"
        let store = try SQLiteStore(options: SQLiteStoreOptions(path: path))
        var largestWAL: Int64 = 0
        for round in 0..<12 {
            let results = Self.commitAll(store, (0..<1000).map { Self.event(round * 1000 + $0) })
            #expect(results.allSatisfy { if case .success(.inserted) = $0 { return true } else { return false } })
            let size = (try? FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int64) ?? 0
            largestWAL = max(largestWAL, size)
        }
        // 12,000 events of ~1 KiB: about 15 MB of data. SQLite's own limit (1000 frames of 4 KiB) plus one batch
        // in flight keeps the WAL near 4 MB; without checkpoints it would hold everything.
        #expect(largestWAL < 8 << 20, "WAL grew to \(largestWAL) bytes")
        #expect(try store.eventCount() == 12_000)
        store.close()
        // After close the WAL has been folded into the database file.
        let wal = (try? FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int64) ?? 0
        #expect(wal == 0)
        let reopened = try SQLiteStore(options: SQLiteStoreOptions(path: path))
        #expect(try reopened.eventCount() == 12_000)
        reopened.close()
    }

    @Test("the background checkpoint finishes a copy that a reader held back, with nothing committed since")
    func checkpointFinishesAfterReader() throws {
        let dir = try TempDir("store-ckpt")
        let path = dir.path + "/relay.db"
        let store = try SQLiteStore(options: SQLiteStoreOptions(path: path))
        defer { store.close() }
        /// Frames in the WAL not yet copied into the database, from the WAL index (the -shm file, as
        /// https://sqlite.org/walformat.html lays it out: the header's mxFrame at byte 16, nBackfill at byte 96, in
        /// the machine's byte order); read without a checkpoint of our own, which would copy them.
        func uncopied() throws -> Int {
            let shm = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path + "-shm")).prefix(100))
            func u32(_ at: Int) -> Int { shm.withUnsafeBytes { Int($0.loadUnaligned(fromByteOffset: at, as: UInt32.self)) } }
            return u32(16) - u32(96)
        }
        _ = Self.commitAll(store, (0..<20).map { Self.event($0) })
        // A reader on this snapshot: frames committed after it cannot be copied while it reads.
        let reader = try Database(path: path, readOnly: true)
        try reader.execute("BEGIN")
        #expect(try reader.scalarText("SELECT count(*) FROM events") == "20")
        // 1,480 events of ~1 KiB fill at least 360 pages of 4 KiB however the writer batches them: one transaction
        // writes each page once, smaller batches write pages again (a loaded machine makes batches large).
        let results = Self.commitAll(store, (20..<1500).map { Self.event($0) })
        #expect(results.allSatisfy { if case .success(.inserted) = $0 { return true } else { return false } })
        usleep(200_000)   // the checkpointer's copies meanwhile stop at the reader's snapshot
        let held = try uncopied()
        #expect(held > 250, "the reader should have held back the copy of what came after it: \(held) frames uncopied")
        try reader.execute("COMMIT")
        var left = -1
        for _ in 0..<100 {
            usleep(20_000)
            left = try uncopied()
            if left == 0 { break }
        }
        #expect(left == 0, "\(left) frames still not copied into the database file, with the reader gone")
    }

    @Test("one event that does not fit fails alone: the rest of its batch is stored")
    func oversizeEventFailsAlone() throws {
        let dir = try TempDir("store-full")
        var options = SQLiteStoreOptions(path: dir.path + "/relay.db")
        options.maxSizeBytes = 256 * 1024
        options.commitDelay = 0.05   // make sure they share a batch
        let store = try SQLiteStore(options: options)
        defer { store.close() }
        // Prime the writer's batching (the delay applies once a batch had company).
        _ = Self.commitAll(store, [Self.event(0), Self.event(1)])
        var events = (2..<22).map { Self.event($0) }
        events.insert(CanonicalEvent(id: EventID.make(), source: "s", type: "passthrough",
                                     receivedAt: Timestamp.iso8601(Date()), idempotencyKey: "huge",
                                     raw: RawPayload(contentType: "application/json",
                                                     body: "\"" + String(repeating: "h", count: 400 * 1024) + "\"")),
                      at: 10)
        let results = Self.commitAll(store, events)
        for (e, r) in zip(events, results) {
            if e.idempotencyKey == "huge" {
                guard case .failure(.unavailable(let why)) = r else {
                    Issue.record("the oversize event was not refused: \(r)")
                    continue
                }
                #expect(why.contains("full"), "\(why)")
            } else {
                #expect((try? r.get()) == .inserted(e.id), "\(r)")
            }
        }
        #expect(try store.eventCount() == 22)
    }

    @Test("work on the writer's connection: its result comes back; a failing piece is undone alone")
    func performWork() throws {
        let dir = try TempDir("store-work")
        let store = try SQLiteStore(options: SQLiteStoreOptions(path: dir.path + "/relay.db"))
        defer { store.close() }
        let e = Self.event(1)
        _ = Self.commitAll(store, [e])
        let count = try store.performAndWait { db in
            try db.execute("UPDATE events SET type = 'changed' WHERE id = '\(e.id)'")
            return Int(try db.scalarText("SELECT count(*) FROM events WHERE type = 'changed'") ?? "0") ?? 0
        }
        #expect(count == 1)
        struct Boom: Error {}
        #expect(throws: StoreError.self) {
            try store.performAndWait { db -> Int in
                try db.execute("UPDATE events SET type = 'boom' WHERE id = '\(e.id)'")
                throw Boom()
            }
        }
        // The failed work's update was rolled back; the earlier one stands.
        #expect(try store.performAndWait { db in try db.scalarText("SELECT type FROM events WHERE id = '\(e.id)'") } == "changed")
    }

    @Test("concurrent commits of one key: one insert, the rest duplicates of it, across batches")
    func duplicatesAcrossBatches() throws {
        let dir = try TempDir("store-dup")
        let store = try SQLiteStore(options: SQLiteStoreOptions(path: dir.path + "/relay.db"))
        defer { store.close() }
        let events = (0..<300).map { Self.event($0, key: "same-\($0 % 3)") }
        let results = Self.commitAll(store, events)
        var firstIDs: [String: String] = [:]
        var inserted = 0
        for (e, r) in zip(events, results) {
            guard case .success(let outcome) = r else {
                Issue.record("commit failed: \(r)")
                continue
            }
            if case .inserted = outcome { inserted += 1 }
            if let first = firstIDs[e.idempotencyKey] {
                #expect(outcome.eventID == first)
            } else {
                firstIDs[e.idempotencyKey] = outcome.eventID
            }
        }
        #expect(inserted == 3)
        #expect(try store.eventCount() == 3)
    }

    @Test("after close, commits are refused (the sender gets 503), never silently dropped", arguments: [SQLiteStoreOptions.Sync.full, .normal])
    func closedStoreRefuses(_ sync: SQLiteStoreOptions.Sync) throws {
        let dir = try TempDir("store-closed")
        var options = SQLiteStoreOptions(path: dir.path + "/relay.db")
        options.synchronous = sync
        let store = try SQLiteStore(options: options)
        let before = Self.commitAll(store, [Self.event(1)])
        #expect((try? before[0].get()) != nil)
        store.close()
        let after = Self.commitAll(store, [Self.event(2)])
        guard case .failure(.closed) = after[0] else {
            Issue.record("expected .closed, got \(after[0])")
            return
        }
    }
}
