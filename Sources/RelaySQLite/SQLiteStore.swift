import CSQLite
import Foundation
import Relay
import Synchronization

/// The embedded store: SQLite in WAL mode with group commit.
///
/// Threads: `commit` may be called from any thread; it queues the event and returns. The writer thread takes
/// everything queued and writes it in one transaction. With `synchronous: full` the writer does not wait for the
/// disk itself: SQLite runs with `synchronous=NORMAL` (a commit appends to the WAL without fsync) and the syncer
/// thread fdatasyncs the WAL file once for every batch committed since its last sync, and only then completes
/// their requests. So batch N+1 is written while batch N is being flushed, and nobody is answered before their
/// event is on disk: an acknowledged event is in the WAL (synced by us) or, once checkpointed, in the database
/// file (SQLite syncs the WAL before and the database after every checkpoint in NORMAL mode).
/// Readers use their own connection under a lock.
public final class SQLiteStore: RelayStore, @unchecked Sendable {
    /// A queued write: an accepted event (with its deliveries), or other work for the writer's transaction.
    private enum Pending {
        case event(PendingCommit)
        case work(Work)

        func fail(_ error: StoreError) {
            switch self {
            case .event(let e): e.completion(.failure(error))
            case .work(let w): w.completion(.failure(error))
            }
        }
    }

    private final class Work {
        init(run: @escaping @Sendable (Database) throws -> Void,
             completion: @escaping @Sendable (Result<Void, StoreError>) -> Void, durable: Bool) {
            self.run = run
            self.completion = completion
            self.durable = durable
        }
        let run: @Sendable (Database) throws -> Void
        let completion: @Sendable (Result<Void, StoreError>) -> Void
        /// false: completed as soon as its transaction commits, without waiting for the flush (for what a crash
        /// may lose without harm: a lost claim expires, a lost attempt record means one more attempt).
        let durable: Bool
    }

    /// What a write came to, handed to its completion once the batch is durable.
    private enum Outcome {
        case event(CommitOutcome)
        case work(Result<Void, StoreError>)
    }

    /// What the committing threads, the writer and the syncer share, under `monitor`.
    private struct State {
        /// Events waiting for the writer.
        var items: [Pending] = []
        /// Batches in the WAL, waiting for the syncer's fdatasync.
        var unsynced: [([Pending], [Outcome])] = []
        var closing = false
        var writerDone = false
        /// The writer waits for events to arrive (or, gathering a batch, for `writerWantsBatchOf` of them).
        var writerWaiting = false
        /// The writer waits for the syncer to take the previous batch.
        var writerWaitingForSyncer = false
        /// The writer is gathering a batch: wake it once this many events are queued.
        var writerWantsBatchOf = 1
        /// Set once the disk failed under us: everything is refused from then on (see `fail(_:)`).
        var failure: String?
        var syncerWaiting = false
        /// The syncer is flushing or answering a batch it took.
        var syncing = false
    }
    private static let writerCondition = 0, syncerCondition = 1

    public let options: SQLiteStoreOptions
    private let monitor = Monitor()
    private var state = State()                 // guarded by `monitor`
    private let writer: Database                // confined to the writer thread after init
    private let reader: Mutex<Database>
    /// Checkpoints run on their own thread and connection, so the writer never stalls copying the WAL into the
    /// database; `checkpointStop` ends that thread.
    private let checkpointer: Database
    private let checkpointStop = DispatchSemaphore(value: 0)
    private let checkpointDone = DispatchSemaphore(value: 0)
    /// Frames in the WAL after the writer's last commit (SQLite's WAL hook), read by the checkpointer.
    private let walFrames = WALFrameCounter()
    /// The checkpointer copies the WAL into the database in the background past this many frames; the writer
    /// finishes the job (copying what is left, so that its next commit can start the WAL over) past
    /// `writerCheckpointFrames`. A checkpoint by the writer alone would stall commits for the whole copy; one by
    /// the background alone can never catch up with a busy writer, and the WAL would grow without end.
    static let checkpointFrames = 250
    static let writerCheckpointFrames: Int32 = 10_000
    static let checkpointPeriod = DispatchTimeInterval.milliseconds(5)
    static let idleCheckpointPeriod = DispatchTimeInterval.milliseconds(50)
    private let finished = DispatchSemaphore(value: 0)
    private let syncFinished = DispatchSemaphore(value: 0)
    private var walFD: Int32 = -1               // the syncer thread's own descriptor of the -wal file
    private var walInode: UInt64 = 0

    let log: Logger?
    /// Who claims: this process (one relay per file).
    public let instanceID = "relay-" + EventID.make(prefix: "")

    public let stats = StoreStats()
    public let signals = StoreSignals()
    public var summary: String { "sqlite \(options.path)" }
    public let leaseMillis: Int64 = 120_000

    public init(options: SQLiteStoreOptions, log: Logger? = nil) throws {
        self.options = options
        self.log = log
        let dir = (options.path as NSString).deletingLastPathComponent
        if !dir.isEmpty {
            do {
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            } catch {
                throw DatabaseError(code: SQLITE_CANTOPEN, extendedCode: SQLITE_CANTOPEN,
                                    message: "cannot create directory \(dir): \(error.localizedDescription)", sql: nil)
            }
        }
        // The writer's WAL frames go out one write per commit (WALBatchingVFS); the other connections only read it.
        writer = try Database(path: options.path, vfs: WALBatchingVFS.registered)
        try writer.execute("PRAGMA journal_mode=WAL")
        // Durability for `full` comes from the syncer thread's fdatasync of the WAL (see the type's comment).
        try writer.execute("PRAGMA synchronous=NORMAL")
        // Our hook replaces SQLite's automatic checkpoint (which would run on the writer, stalling commits).
        sqlite3_wal_hook(writer.handle, relayWALHook, Unmanaged.passUnretained(walFrames).toOpaque())
        try writer.execute("PRAGMA foreign_keys=ON")
        try Self.migrate(writer)
        if let max = options.maxSizeBytes {
            let pageSize = Int64(try writer.scalarText("PRAGMA page_size") ?? "4096") ?? 4096
            try writer.execute("PRAGMA max_page_count=\(Swift.max(1, max / pageSize))")
        }
        reader = Mutex(try Database(path: options.path))
        checkpointer = try Database(path: options.path)
        try checkpointer.execute("PRAGMA synchronous=NORMAL")   // WAL synced before, database after, each checkpoint
        let ckpt = Thread { [self] in self.checkpointLoop() }
        ckpt.name = "relay-store-ckpt"
        ckpt.start()
        let thread = Thread { [self] in self.writerLoop() }
        thread.name = "relay-store-writer"
        thread.start()
        if options.synchronous == .full {
            let syncer = Thread { [self] in self.syncerLoop() }
            syncer.name = "relay-store-sync"
            syncer.start()
        }
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
        if version < 2 {
            // One row per (event, destination) the routing table named, written with the event.
            try db.execute("""
                BEGIN IMMEDIATE;
                CREATE TABLE IF NOT EXISTS deliveries (
                    id              TEXT PRIMARY KEY,
                    event_seq       INTEGER NOT NULL REFERENCES events (seq),
                    event_id        TEXT NOT NULL,
                    destination     TEXT NOT NULL,
                    subject_key     TEXT NOT NULL,
                    state           TEXT NOT NULL,     -- pending, in_flight, delivered, dead, skipped, superseded
                    attempts        INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at INTEGER NOT NULL,  -- ms since 1970
                    lease_until     INTEGER,           -- while in_flight: the claim expires then
                    claimed_by      TEXT,
                    last_status     INTEGER,
                    last_error      TEXT,
                    finished_at     INTEGER,
                    created_at      INTEGER NOT NULL
                );
                CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_attempt_at);
                CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_seq);
                CREATE INDEX IF NOT EXISTS deliveries_subject ON deliveries (destination, subject_key, state);
                CREATE TABLE IF NOT EXISTS attempts (
                    delivery_id     TEXT NOT NULL,
                    n               INTEGER NOT NULL,
                    started_at      INTEGER NOT NULL,
                    latency_ms      INTEGER NOT NULL,
                    status          INTEGER,           -- HTTP status, null when no answer
                    error           TEXT,              -- transport error or classifier reason
                    response        TEXT,              -- truncated response body
                    PRIMARY KEY (delivery_id, n)
                ) WITHOUT ROWID;
                PRAGMA user_version = 2;
                COMMIT;
                """)
        }
        if version < 3 {
            // Multi-step deliveries resume at the step that failed, with what earlier steps extracted; identifiers
            // known to name one subject are linked (correlation).
            try db.execute("""
                BEGIN IMMEDIATE;
                ALTER TABLE deliveries ADD COLUMN step INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE deliveries ADD COLUMN context TEXT;
                CREATE TABLE IF NOT EXISTS correlations (
                    scope           TEXT NOT NULL,     -- whose identifiers: a partner (source/destination name)
                    key             TEXT NOT NULL,     -- a subject key (vendorOrderId)
                    value           TEXT NOT NULL,     -- its value
                    subject         TEXT NOT NULL,     -- JSON object: every identifier known for that subject
                    updated_at      INTEGER NOT NULL,
                    PRIMARY KEY (scope, key, value)
                ) WITHOUT ROWID;
                PRAGMA user_version = 3;
                COMMIT;
                """)
        }
        if version < 4 {
            // Destinations an operator paused (admin API): still paused after a restart.
            try db.execute("""
                BEGIN IMMEDIATE;
                CREATE TABLE IF NOT EXISTS paused_destinations (
                    name            TEXT PRIMARY KEY,
                    since           INTEGER NOT NULL
                ) WITHOUT ROWID;
                PRAGMA user_version = 4;
                COMMIT;
                """)
        }
        if version < 5 {
            // Claims are fenced by a token (a finish for a claim that is no longer current changes nothing); circuit
            // breakers outlive a restart.
            try db.execute("""
                BEGIN IMMEDIATE;
                ALTER TABLE deliveries ADD COLUMN claim_token INTEGER;
                CREATE TABLE IF NOT EXISTS circuits (
                    destination     TEXT PRIMARY KEY,
                    state           TEXT NOT NULL,     -- closed, open, half-open
                    failures        INTEGER NOT NULL,
                    reopens_at      INTEGER,           -- ms since 1970, while open
                    updated_at      INTEGER NOT NULL
                ) WITHOUT ROWID;
                PRAGMA user_version = 5;
                COMMIT;
                """)
        }
        if version < 6 {
            // Deliveries keyed by their event: the rowid is the event's seq × 1024 plus the delivery's place among
            // the event's, so an event's deliveries are one rowid range (no index on event_seq), the id is derived
            // (no text key, no index on it) and the queue's finish finds its row by rowid. A delivery written before
            // keeps its id (legacy_id); its rowid takes the same shape, in the order it had.
            try db.execute("""
                BEGIN IMMEDIATE;
                CREATE TABLE deliveries_v6 (
                    rid             INTEGER PRIMARY KEY,   -- event seq × \(deliveriesPerEvent) + the delivery's index
                    legacy_id       TEXT,                  -- the id of a delivery written before version 6, else NULL
                    event_id        TEXT NOT NULL,
                    destination     TEXT NOT NULL,
                    subject_key     TEXT NOT NULL,
                    state           TEXT NOT NULL,     -- pending, in_flight, delivered, dead, skipped, superseded
                    attempts        INTEGER NOT NULL DEFAULT 0,
                    next_attempt_at INTEGER NOT NULL,  -- ms since 1970
                    lease_until     INTEGER,           -- while in_flight: the claim expires then
                    claimed_by      TEXT,
                    last_status     INTEGER,
                    last_error      TEXT,
                    finished_at     INTEGER,
                    created_at      INTEGER NOT NULL,
                    step            INTEGER NOT NULL DEFAULT 0,
                    context         TEXT,
                    claim_token     INTEGER
                );
                INSERT INTO deliveries_v6 (rid, legacy_id, event_id, destination, subject_key, state, attempts,
                                           next_attempt_at, lease_until, claimed_by, last_status, last_error,
                                           finished_at, created_at, step, context, claim_token)
                    SELECT event_seq * \(deliveriesPerEvent) + row_number() OVER (PARTITION BY event_seq ORDER BY rowid) - 1,
                           id, event_id, destination, subject_key, state, attempts, next_attempt_at, lease_until,
                           claimed_by, last_status, last_error, finished_at, created_at, step, context, claim_token
                    FROM deliveries;
                DROP TABLE deliveries;
                ALTER TABLE deliveries_v6 RENAME TO deliveries;
                CREATE UNIQUE INDEX deliveries_legacy_id ON deliveries (legacy_id) WHERE legacy_id IS NOT NULL;
                CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
                CREATE INDEX deliveries_subject ON deliveries (destination, subject_key, state);
                PRAGMA user_version = 6;
                COMMIT;
                """)
        }
        if version < 7 {
            // The subject index only for deliveries to destinations that order per subject (`ordering:
            // "per-subject"`, and so `coalesce`): it is what their claims check an older open delivery of the subject
            // in. A delivery to any other destination (the default) is then one index entry fewer to write, about a
            // sixth of a one-route webhook's B-tree work. Rows queued before keep theirs (`ordered` 1).
            try db.execute("""
                BEGIN IMMEDIATE;
                ALTER TABLE deliveries ADD COLUMN ordered INTEGER NOT NULL DEFAULT 1;
                DROP INDEX deliveries_subject;
                CREATE INDEX deliveries_subject ON deliveries (destination, subject_key, state) WHERE ordered = 1;
                PRAGMA user_version = 7;
                COMMIT;
                """)
        }
    }

    /// At most this many deliveries per event (one per destination the routing table names).
    static let deliveriesPerEvent: Int64 = 1024

    /// A delivery's id, as SQL over its row: the one it was written with before version 6, else `dlv_`, the event
    /// id's ULID, `_` and the delivery's index among the event's (`dlv_01JD…_0`).
    static let deliveryID = "coalesce(legacy_id, 'dlv_' || substr(event_id, 5) || '_' || (rid % \(deliveriesPerEvent)))"

    /// The SQL condition (and its arguments) that finds the delivery with this id.
    static func deliveryCondition(id: String) -> (sql: String, args: [String]) {
        let parts = id.split(separator: "_", omittingEmptySubsequences: false)
        if parts.count == 3, parts[0] == "dlv", parts[1].utf8.count == 26, let n = Int64(parts[2]),
           n >= 0, n < deliveriesPerEvent, String(n) == parts[2] {
            return ("rid = (SELECT seq FROM events WHERE id = ?) * \(deliveriesPerEvent) + \(n)", ["evt_" + parts[1]])
        }
        return ("legacy_id = ?", [id])
    }

    public func commit(_ event: consuming CanonicalEvent, deliveries: [PlannedDelivery], link: CorrelationScope?,
                       completion: @escaping @Sendable (Result<CommitOutcome, StoreError>) -> Void) {
        // PendingCommit encodes the event here, on the caller's thread: the writer thread only writes.
        enqueue(.event(PendingCommit(event: event, deliveries: deliveries, link: link, completion: completion)))
    }

    /// Runs `work` on the writer's connection inside the next group-commit transaction (in a savepoint of its own:
    /// if it throws, only its own changes are undone). The completion runs once the batch is as durable as the
    /// store's `synchronous` setting makes events, or, with `durable: false`, as soon as it is committed. For the
    /// dispatcher's claims and attempt records.
    public func perform(durable: Bool = true, _ work: @escaping @Sendable (Database) throws -> Void,
                        completion: @escaping @Sendable (Result<Void, StoreError>) -> Void) {
        enqueue(.work(Work(run: work, completion: completion, durable: durable)))
    }

    /// `perform`, waiting for the result (never call it on the store's own threads).
    public func performAndWait<T: Sendable>(durable: Bool = true, _ work: @escaping @Sendable (Database) throws -> T) throws -> T {
        let box = Mutex<Result<T, Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        perform(durable: durable, { db in
            let value = try work(db)
            box.withLock { $0 = .success(value) }
        }, completion: { result in
            if case .failure(let e) = result { box.withLock { $0 = .failure(e) } }   // not durable: a failure whatever the work said
            done.signal()
        })
        done.wait()
        return try box.withLock { $0! }.get()
    }

    private func enqueue(_ pending: Pending) {
        monitor.lock()
        if let failure = state.failure {
            monitor.unlock()
            pending.fail(.unavailable(failure))
            return
        }
        if state.closing {
            monitor.unlock()
            pending.fail(.closed)
            return
        }
        state.items.append(pending)
        if state.writerWaiting && state.items.count >= state.writerWantsBatchOf { monitor.signal(Self.writerCondition) }
        monitor.unlock()
    }

    public func close() {
        monitor.lock()
        state.closing = true
        monitor.signal(Self.writerCondition)
        monitor.unlock()
        finished.wait()      // every caller waits for the end of the writer...
        finished.signal()    // ... and passes the signal on to the next one
    }

    /// Called when the disk has failed (a flush or a commit reported an I/O error): refuses everything from now on
    /// and tells the owner (`signals.failed`), who should stop the process so that a restart recovers from what is
    /// really on disk.
    private func fail(_ reason: String) {
        monitor.lock()
        let first = state.failure == nil
        if first { state.failure = reason }
        let queued = state.items
        state.items.removeAll()
        monitor.unlock()
        for p in queued { p.fail(.unavailable(reason)) }
        if first {
            log?.error("store failed: refusing every write from now on", ["reason": reason])
            signals.failed(reason)
        }
    }

    /// Why the store refuses everything, if it does.
    public var failure: String? {
        monitor.lock()
        defer { monitor.unlock() }
        return state.failure
    }

    /// Takes everything queued and writes it in one transaction. With a syncer, it waits until the syncer has
    /// taken the previous batch: writing a second batch before the first is being flushed would only make two
    /// small transactions (each rewriting the same pages) for one fdatasync. So each batch is what arrived while
    /// the previous one was being flushed, and the write of one overlaps the flush of the other.
    private func writerLoop() {
        nameThisThread("relay-writer")
        let paced = options.synchronous == .full
        let delay = Int(options.commitDelay * 1_000_000)
        var lastBatch = 0
        while true {
            monitor.lock()
            while !(state.closing && state.items.isEmpty)
                    && (state.items.isEmpty || (paced && !state.unsynced.isEmpty)) {
                let forSyncer = !state.items.isEmpty
                if forSyncer { state.writerWaitingForSyncer = true } else { state.writerWaiting = true }
                monitor.wait(Self.writerCondition)
                state.writerWaiting = false
                state.writerWaitingForSyncer = false
            }
            if state.items.isEmpty {   // closing, and nothing left
                monitor.unlock()
                break
            }
            // Group commit under load: when the last batch had company, give the others a moment to join this one
            // (one transaction and one flush for all). A lone event at low load is written at once, and so is a
            // batch while the syncer is still flushing or answering the previous one: it cannot take this batch
            // before it is done, so waiting here would only leave it idle once it is (measured: about 35% more
            // flushes of smaller batches, and +2 to +5% webhooks/s under make bench's load).
            if lastBatch > 1 && state.items.count < lastBatch && delay > 0 && !state.closing && !state.syncing {
                state.writerWantsBatchOf = min(options.maxBatch, lastBatch * 2)
                state.writerWaiting = true
                monitor.wait(Self.writerCondition, microseconds: delay)
                state.writerWaiting = false
                state.writerWantsBatchOf = 1
            }
            let n = min(state.items.count, options.maxBatch)
            let batch: [Pending]
            if n == state.items.count {
                batch = state.items
                state.items = []
                state.items.reserveCapacity(batch.count)
            } else {
                batch = Array(state.items.prefix(n))
                state.items.removeFirst(n)
            }
            monitor.unlock()
            lastBatch = n
            write(batch)
        }
        monitor.lock()
        state.writerDone = true
        monitor.signal(Self.syncerCondition)
        monitor.unlock()
        if paced { syncFinished.wait() }   // every batch answered
        checkpointStop.signal()
        checkpointDone.wait()
        try? writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finished.signal()
    }

    /// Copies the WAL into the database whenever it holds more than `checkpointFrames` frames and has grown since
    /// the last whole copy (checked every `checkpointPeriod`, or `idleCheckpointPeriod` while nothing is
    /// committed), concurrently with the writer: a PASSIVE checkpoint never blocks it, and once everything is
    /// copied the writer's next commit starts the WAL over from its beginning.
    ///
    /// Every 5 ms rather than 20: what the background has not copied when the WAL reaches `writerCheckpointFrames`
    /// the writer copies itself, with commits stalled, and that stall is the ingest's p99 (`bench/run`, 1 and 3
    /// routes, 3 rounds each: p99 5.3 to 7.1 ms against 7.7 to 9.4 ms; the checkpoint thread's CPU rose by about
    /// 1.5 µs per webhook, the rate moved within the noise).
    private func checkpointLoop() {
        nameThisThread("relay-ckpt")
        var copiedUpTo = -1
        var lastSeen = -1
        var period = Self.checkpointPeriod
        while checkpointStop.wait(timeout: .now() + period) == .timedOut {
            let frames = walFrames.frames.load(ordering: .relaxed)
            // An idle store is looked at ten times less often (each wake-up costs the thread about 40 µs here).
            period = frames == lastSeen ? Self.idleCheckpointPeriod : Self.checkpointPeriod
            lastSeen = frames
            guard frames > Self.checkpointFrames, frames != copiedUpTo else { continue }   // idle: nothing new
            var log = Int32(0), copied = Int32(0)
            let rc = sqlite3_wal_checkpoint_v2(checkpointer.handle, nil, SQLITE_CHECKPOINT_PASSIVE, &log, &copied)
            if rc == SQLITE_OK {
                // All of it (a reader on an older snapshot can hold part back: then it is tried again).
                if copied >= log { copiedUpTo = frames }
            } else if rc != SQLITE_BUSY {
                self.log?.warn("checkpoint failed", ["error": String(cString: sqlite3_errmsg(checkpointer.handle))])
            }
        }
        checkpointDone.signal()
    }

    /// Flushes the WAL once for every batch committed since the last flush, then answers their senders.
    private func syncerLoop() {
        nameThisThread("relay-sync")
        while true {
            monitor.lock()
            state.syncing = false   // the batches taken last time round are answered
            while state.unsynced.isEmpty && !state.writerDone {
                state.syncerWaiting = true
                monitor.wait(Self.syncerCondition)
                state.syncerWaiting = false
            }
            if state.unsynced.isEmpty {   // the writer has finished and everything is answered
                monitor.unlock()
                break
            }
            let batches = state.unsynced
            state.unsynced.removeAll(keepingCapacity: true)
            state.syncing = true
            if state.writerWaitingForSyncer { monitor.signal(Self.writerCondition) }
            monitor.unlock()
            let flushStart = DispatchTime.now().uptimeNanoseconds
            let flushFailure = syncWAL()
            stats.flushes.add(1, ordering: .relaxed)
            stats.flushNanoseconds.add(Int(DispatchTime.now().uptimeNanoseconds - flushStart), ordering: .relaxed)
            if let failure = flushFailure {
                // After a failed flush Linux marks the pages clean and reports the error once: a later flush can
                // succeed without the data on disk. Nothing written from here on can be trusted, so the store stops.
                fail("WAL flush failed: \(failure)")
                for (batch, _) in batches { for p in batch { p.fail(.unavailable(failure)) } }
            } else {
                for (batch, outcomes) in batches { complete(batch, outcomes) }
            }
        }
        if walFD >= 0 { Glibc.close(walFD) }
        syncFinished.signal()
    }

    /// fdatasync of the -wal file through a descriptor of our own (a flush covers the file's data whoever wrote
    /// it). Reopened when the file was replaced. Returns why it failed, nil when the WAL is on disk.
    private func syncWAL() -> String? {
        let path = options.path + "-wal"
        var inode: UInt64 = 0
        guard relay_file_inode(path, &inode) == 0 else { return "cannot stat \(path): \(String(cString: strerror(errno)))" }
        if walFD < 0 || inode != walInode {
            if walFD >= 0 { Glibc.close(walFD) }
            walFD = open(path, O_RDONLY | O_CLOEXEC)
            guard walFD >= 0 else { return "cannot open \(path): \(String(cString: strerror(errno)))" }
            walInode = inode
        }
        guard fdatasync(walFD) == 0 else { return "fdatasync \(path): \(String(cString: strerror(errno)))" }
        return nil
    }

    /// Answers a durable batch, then signals `newDeliveries` once if it holds any new event with deliveries.
    private func complete(_ batch: [Pending], _ outcomes: [Outcome]) {
        var newDeliveries = false
        for (p, outcome) in zip(batch, outcomes) {
            switch (p, outcome) {
            case (.event(let e), .event(let o)):
                if case .inserted = o, !e.deliveries.isEmpty { newDeliveries = true }
                e.completion(.success(o))
            case (.work(let w), .work(let r)): w.completion(r)
            default: p.fail(.unavailable("internal: outcome does not match its write"))
            }
        }
        // Once per durable batch rather than once per event, so that a busy ingest does not wake the dispatcher
        // thirty times per flush.
        if newDeliveries { signals.newDeliveries() }
    }

    private func write(_ batch: [Pending]) {
        var outcomes: [Outcome] = []
        outcomes.reserveCapacity(batch.count)
        do {
            try writer.statement("BEGIN IMMEDIATE").step()
            do {
                for p in batch {
                    switch p {
                    case .event(let e):
                        outcomes.append(.event(try insert(e, e.event)))
                    case .work(let w):
                        try writer.statement("SAVEPOINT work").step()
                        do {
                            try w.run(writer)
                            try writer.statement("RELEASE work").step()
                            outcomes.append(.work(.success(())))
                        } catch let error as DatabaseError where error.isFull || error.code == SQLITE_IOERR {
                            throw error   // the whole batch is in trouble
                        } catch {
                            try writer.statement("ROLLBACK TO work").step()
                            try writer.statement("RELEASE work").step()
                            outcomes.append(.work(.failure(.unavailable("\(error)"))))
                        }
                    }
                }
                try writer.statement("COMMIT").step()
                stats.transactions.add(1, ordering: .relaxed)
                let inserted = outcomes.reduce(0) { n, o in
                    if case .event(.inserted) = o { return n + 1 }
                    return n
                }
                stats.events.add(inserted, ordering: .relaxed)
            } catch {
                try? writer.execute("ROLLBACK")
                throw error
            }
        } catch {
            if let db = error as? DatabaseError, db.code == SQLITE_IOERR || db.code == SQLITE_CORRUPT {
                fail("SQLite I/O error: \(db)")
                for p in batch { p.fail(.unavailable(db.description)) }
                return
            }
            if batch.count > 1 {
                // One write that does not fit (a full disk, the size cap) must not sink the others: write them one
                // by one, so that each that fits is stored and only the rest are refused.
                for p in batch { write([p]) }
                return
            }
            let reason = (error as? DatabaseError).map { $0.isFull ? "disk full: \($0.message)" : $0.description }
                ?? "\(error)"
            for p in batch { p.fail(.unavailable(reason)) }
            return
        }
        if options.synchronous == .full {
            // What need not wait for the flush is answered now; the rest after it.
            var waiting: [Pending] = []
            var waitingOutcomes: [Outcome] = []
            for (p, o) in zip(batch, outcomes) {
                if case .work(let w) = p, !w.durable {
                    complete([p], [o])
                } else {
                    waiting.append(p)
                    waitingOutcomes.append(o)
                }
            }
            if waiting.isEmpty { return }
            let batch = waiting, outcomes = waitingOutcomes
            monitor.lock()
            state.unsynced.append((batch, outcomes))
            if state.syncerWaiting { monitor.signal(Self.syncerCondition) }
            monitor.unlock()
        } else {
            complete(batch, outcomes)
        }
    }

    // The writer's hottest statements, kept here rather than looked up by their SQL text for every event (hashing
    // the text was a measurable part of an insert). Writer thread only.
    private var insertEvent: Statement?
    private var insertDelivery: Statement?
    /// The writer's buffer for the text an insert binds: every value is copied here once and SQLite reads it in
    /// place (no copy of its own, nothing to free when the statement is reset).
    private var scratch: [UInt8] = []

    /// Appends `s` to `scratch`: where it is, or nil for a NULL.
    private func stage(_ s: String?) -> Range<Int>? {
        guard let s else { return nil }
        let start = scratch.count
        scratch.append(contentsOf: s.utf8)
        return start..<scratch.count
    }

    private func statement(_ slot: inout Statement?, _ sql: String) throws -> Statement {
        if let s = slot {
            s.reset()
            return s
        }
        let s = try writer.statement(sql)
        slot = s
        return s
    }

    /// Inserts an event and, when it is new, its deliveries; or finds the event it duplicates. `e` is `p.event`,
    /// borrowed where it is (a local copy would retain and release each of its fields).
    private func insert(_ p: PendingCommit, _ e: borrowing CanonicalEvent) throws -> CommitOutcome {
        let insert = try statement(&insertEvent, """
            INSERT INTO events (id, source, idempotency_key, type, status, received_at, event, content_type, body)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, idempotency_key) DO NOTHING
            """)
        // Every value is read where it is (the event's JSON and body in their own buffers, the rest staged in
        // `scratch`): bound, stepped and unbound while the buffers are lent.
        scratch.removeAll(keepingCapacity: true)
        let texts = [stage(e.id), stage(e.source), stage(e.idempotencyKey), stage(e.type), stage(e.storedStatus),
                     stage(e.receivedAt), nil, stage(e.raw?.contentType)]
        try scratch.withUnsafeBytes { staged in
            try p.jsonBytes.withUnsafeBytes { json in
                try p.body.withUnsafeBytes { body in
                    defer { insert.reset() }
                    for (i, range) in texts.enumerated() where i != 6 {
                        try insert.bindInPlace(Int32(i + 1), text: range.map { UnsafeRawBufferPointer(rebasing: staged[$0]) })
                    }
                    try insert.bindInPlace(7, text: json)
                    try insert.bindInPlace(9, blob: body)
                    try insert.step()
                }
            }
        }
        guard writer.changes == 1 else {
            let find = try writer.statement("SELECT id FROM events WHERE source = ? AND idempotency_key = ?")
            defer { find.reset() }
            try find.bind([e.source, e.idempotencyKey])
            guard try find.step(), let id = find.text(0) else {
                throw DatabaseError(code: SQLITE_INTERNAL, extendedCode: SQLITE_INTERNAL,
                                    message: "conflicting row not found", sql: nil)
            }
            return .duplicate(id)
        }
        let seq = writer.lastInsertRowID
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        if let link = p.link {
            try SQLiteCorrelations.link(writer, scope: link.scope, subject: e.subject, keys: link.keys, nowMillis: now)
        }
        if !p.deliveries.isEmpty {
            guard Int64(p.deliveries.count) <= Self.deliveriesPerEvent else {
                throw DatabaseError(code: SQLITE_TOOBIG, extendedCode: SQLITE_TOOBIG,
                                    message: "\(p.deliveries.count) deliveries for one event: at most \(Self.deliveriesPerEvent)", sql: nil)
            }
            let delivery = try statement(&insertDelivery, """
                INSERT INTO deliveries (rid, event_id, destination, subject_key, state, next_attempt_at, created_at, ordered)
                VALUES (?, ?, ?, ?, 'pending', ?, ?, ?)
                """)
            scratch.removeAll(keepingCapacity: true)
            let id = stage(e.id), subject = stage(e.subjectKey)
            let destinations = p.deliveries.map { stage($0.destination) }
            try scratch.withUnsafeBytes { staged in
                defer { delivery.reset() }
                for i in p.deliveries.indices {
                    delivery.reset()
                    try delivery.bind(1, seq * Self.deliveriesPerEvent + Int64(i))
                    try delivery.bindInPlace(2, text: id.map { UnsafeRawBufferPointer(rebasing: staged[$0]) })
                    try delivery.bindInPlace(3, text: destinations[i].map { UnsafeRawBufferPointer(rebasing: staged[$0]) })
                    try delivery.bindInPlace(4, text: subject.map { UnsafeRawBufferPointer(rebasing: staged[$0]) })
                    try delivery.bind(5, now)
                    try delivery.bind(6, now)
                    try delivery.bind(7, p.deliveries[i].discipline.perSubject ? 1 : 0)
                    try delivery.step()
                }
            }
        }
        return .inserted(e.id)
    }

    /// `WALBatchingVFS.counts` of the writer's WAL, read on the writer thread (tests).
    func writerWALCounts() throws -> (buffered: Int, written: Int)? {
        try performAndWait(durable: false) { db in WALBatchingVFS.counts(db) }
    }

    /// Runs `body` on the reader connection (reads only; writes go through `perform`).
    func read<T: Sendable>(_ body: @Sendable (Database) throws -> T) throws -> T {
        try reader.withLock { db in try body(db) }
    }
}

/// Shared between the writer's WAL hook (a C callback on the writer thread) and the checkpointer thread.
final class WALFrameCounter: Sendable {
    let frames = Atomic<Int>(0)
}

/// `sqlite3_wal_hook` callback, on the writer thread after every commit, with the number of frames now in the WAL:
/// records it for the checkpointer, and past `writerCheckpointFrames` checkpoints what the background has not
/// copied yet (as SQLite's automatic checkpoint would, which this hook replaces).
let relayWALHook: @convention(c) (UnsafeMutableRawPointer?, OpaquePointer?, UnsafePointer<CChar>?, Int32) -> Int32 = {
    ctx, db, name, frames in
    Unmanaged<WALFrameCounter>.fromOpaque(ctx!).takeUnretainedValue().frames.store(Int(frames), ordering: .relaxed)
    if frames >= SQLiteStore.writerCheckpointFrames {
        _ = sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
    }
    return SQLITE_OK
}
