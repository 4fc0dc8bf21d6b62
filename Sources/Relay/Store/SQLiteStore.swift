import CSQLite
import Foundation
import Synchronization

/// Settings of the embedded SQLite store.
public struct SQLiteStoreOptions: Sendable {
    public enum Sync: String, Sendable { case full, normal }
    public var path: String
    /// `full` (default): every commit is fsynced before anyone is answered. `normal`: survives a crash of the
    /// relay but not of the machine.
    public var synchronous: Sync = .full
    /// Most events written in one transaction.
    public var maxBatch: Int = 1024
    /// Refuse new events (503) once the file would grow past this size.
    public var maxSizeBytes: Int64?

    public init(path: String) { self.path = path }
}

/// The embedded store: SQLite in WAL mode, one writer thread doing group commit.
///
/// Threads: `commit` may be called from any thread; it queues the event and returns. The writer thread takes
/// everything queued, writes it in one transaction, commits (one fsync for the batch), then completes each
/// commit. Readers use their own connection under a lock.
public final class SQLiteStore: EventStore, @unchecked Sendable {
    private struct Pending {
        let event: CanonicalEvent
        let json: String
        let body: [UInt8]
        let completion: @Sendable (Result<CommitOutcome, StoreError>) -> Void
    }

    private struct Queue {
        var items: [Pending] = []
        var closing = false
    }

    public let options: SQLiteStoreOptions
    private let condition = NSCondition()
    private var queue = Queue()                 // guarded by `condition`
    private let writer: Database                // confined to the writer thread after init
    private let reader: Mutex<Database>
    private let finished = DispatchSemaphore(value: 0)

    public init(options: SQLiteStoreOptions) throws {
        self.options = options
        let dir = (options.path as NSString).deletingLastPathComponent
        if !dir.isEmpty {
            do {
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            } catch {
                throw DatabaseError(code: SQLITE_CANTOPEN, extendedCode: SQLITE_CANTOPEN,
                                    message: "cannot create directory \(dir): \(error.localizedDescription)", sql: nil)
            }
        }
        writer = try Database(path: options.path)
        try writer.execute("PRAGMA journal_mode=WAL")
        try writer.execute("PRAGMA synchronous=\(options.synchronous == .full ? "FULL" : "NORMAL")")
        try writer.execute("PRAGMA foreign_keys=ON")
        try Self.migrate(writer)
        if let max = options.maxSizeBytes {
            let pageSize = Int64(try writer.scalarText("PRAGMA page_size") ?? "4096") ?? 4096
            try writer.execute("PRAGMA max_page_count=\(Swift.max(1, max / pageSize))")
        }
        reader = Mutex(try Database(path: options.path))
        let thread = Thread { [self] in self.writerLoop() }
        thread.name = "relay-store-writer"
        thread.start()
    }

    deinit { close() }

    static func migrate(_ db: Database) throws {
        let version = Int(try db.scalarText("PRAGMA user_version") ?? "0") ?? 0
        if version < 1 {
            try db.execute("""
                BEGIN IMMEDIATE;
                CREATE TABLE IF NOT EXISTS events (
                    seq             INTEGER PRIMARY KEY,
                    id              TEXT NOT NULL UNIQUE,
                    source          TEXT NOT NULL,
                    idempotency_key TEXT NOT NULL,
                    type            TEXT NOT NULL,
                    status          TEXT,
                    received_at     TEXT NOT NULL,
                    event           TEXT NOT NULL,
                    content_type    TEXT,
                    body            BLOB,
                    UNIQUE (source, idempotency_key)
                );
                PRAGMA user_version = 1;
                COMMIT;
                """)
        }
    }

    public func commit(_ event: CanonicalEvent, completion: @escaping @Sendable (Result<CommitOutcome, StoreError>) -> Void) {
        // Encode on the caller's thread: the writer thread only writes.
        let pending = Pending(event: event, json: event.jsonText(includeRaw: false),
                              body: Array((event.raw?.body ?? "").utf8), completion: completion)
        condition.lock()
        if queue.closing {
            condition.unlock()
            completion(.failure(.closed))
            return
        }
        queue.items.append(pending)
        condition.signal()
        condition.unlock()
    }

    public func close() {
        condition.lock()
        let already = queue.closing
        queue.closing = true
        condition.signal()
        condition.unlock()
        if !already { finished.wait() }
    }

    private func writerLoop() {
        while true {
            condition.lock()
            while queue.items.isEmpty && !queue.closing { condition.wait() }
            if queue.items.isEmpty && queue.closing {
                condition.unlock()
                break
            }
            let n = min(queue.items.count, options.maxBatch)
            let batch = Array(queue.items.prefix(n))
            queue.items.removeFirst(n)
            condition.unlock()
            write(batch)
        }
        try? writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finished.signal()
    }

    private func write(_ batch: [Pending]) {
        var outcomes: [CommitOutcome] = []
        outcomes.reserveCapacity(batch.count)
        do {
            try writer.execute("BEGIN IMMEDIATE")
            do {
                let insert = try writer.statement("""
                    INSERT INTO events (id, source, idempotency_key, type, status, received_at, event, content_type, body)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, idempotency_key) DO NOTHING
                    """)
                for p in batch {
                    let e = p.event
                    insert.reset()
                    try insert.bind([e.id, e.source, e.idempotencyKey, e.type, e.status?.rawValue, e.receivedAt, p.json,
                                     e.raw?.contentType])
                    try insert.bind(9, blob: p.body)
                    try insert.step()
                    if writer.changes == 1 {
                        outcomes.append(.inserted(e.id))
                    } else {
                        let find = try writer.statement("SELECT id FROM events WHERE source = ? AND idempotency_key = ?")
                        try find.bind([e.source, e.idempotencyKey])
                        guard try find.step(), let id = find.text(0) else {
                            throw DatabaseError(code: SQLITE_INTERNAL, extendedCode: SQLITE_INTERNAL,
                                                message: "conflicting row not found", sql: nil)
                        }
                        find.reset()
                        outcomes.append(.duplicate(id))
                    }
                }
                try writer.execute("COMMIT")
            } catch {
                try? writer.execute("ROLLBACK")
                throw error
            }
        } catch {
            let reason = (error as? DatabaseError).map { $0.isFull ? "disk full: \($0.message)" : $0.description }
                ?? "\(error)"
            for p in batch { p.completion(.failure(.unavailable(reason))) }
            return
        }
        for (p, outcome) in zip(batch, outcomes) { p.completion(.success(outcome)) }
    }

    // MARK: reading

    public func event(id: String) throws -> CanonicalEvent? {
        try reader.withLock { db in
            let s = try db.statement("SELECT event, content_type, body FROM events WHERE id = ?")
            defer { s.reset() }
            try s.bind([id])
            guard try s.step(), let json = s.text(0) else { return nil }
            var event = try JSONDecoder().decode(CanonicalEvent.self, from: Data(json.utf8))
            event.raw = RawPayload(contentType: s.text(1) ?? "", body: String(decoding: s.blob(2), as: UTF8.self))
            return event
        }
    }

    public func eventCount() throws -> Int {
        try reader.withLock { db in Int(try db.scalarText("SELECT count(*) FROM events") ?? "0") ?? 0 }
    }

    /// Event ids of a source, oldest first (tests and tools).
    public func eventIDs(source: String) throws -> [String] {
        try reader.withLock { db in
            let s = try db.statement("SELECT id FROM events WHERE source = ? ORDER BY seq")
            defer { s.reset() }
            try s.bind([source])
            var ids: [String] = []
            while try s.step() { if let id = s.text(0) { ids.append(id) } }
            return ids
        }
    }
}
