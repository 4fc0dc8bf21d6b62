import CPostgres
import Crypto
import Foundation
import Relay
import Synchronization

/// The shared store: one PostgreSQL database for any number of relays.
///
/// Threads and connections (each connection belongs to one of them, or to a lock):
/// - `writers` writer threads, each with its own connection, take the queued events together (group commit: one
///   transaction, one multi-row insert per table, one WAL flush for everything queued while the previous batch was
///   being written) and answer each sender only after `COMMIT` returned;
/// - the coordinator thread holds the control connection: it runs the migrations, `LISTEN`s for other relays'
///   wake-ups (`relay_wake`: new or replayed deliveries; `relay_changed`: pauses and circuits), writes this relay's
///   heartbeat, renews its leases and returns to the queue the leases of relays that are gone;
/// - the dispatcher's claims and other queue operations run on the caller's thread on the queue connection (under a
///   lock);
/// - the finisher thread writes the dispatcher's outcomes (`finish`) on a connection of its own, so that the
///   dispatcher's loop goes on claiming and sending meanwhile; what queues up while it writes goes in one statement;
/// - admin reads take a connection from a pool of `pool`.
///
/// The database going away is not a failure of the store: commits are refused at once (503, with Retry-After, to
/// senders) while it is unreachable, every connection is opened again on its next use, and the coordinator says
/// in the log when it is back. Nothing is answered 2xx that was not committed.
/// Outcomes handed to `finish`, waiting for the finisher thread.
struct FinishJob: Sendable {
    let deliveries: [FinishedDelivery]
    let links: [CorrelationLink]
    let keys: Set<String>
    let nowMillis: Int64
    let completion: @Sendable (Result<FinishReport, StoreError>) -> Void
}

public final class PostgresStore: RelayStore, @unchecked Sendable {
    public let options: PostgresStoreOptions
    /// Who claims: this process, unique among every relay that ever shared the database.
    public let instanceID: String
    public let signals = StoreSignals()
    public let stats = StoreStats()
    public let leaseMillis: Int64
    public let summary: String
    /// A shared store does not fail for good: while the database is unreachable it is unavailable.
    public var failure: String? { nil }

    let conninfo: String
    let log: Logger?
    private let heartbeatMillis: Int64

    // MARK: the write queue (under `monitor`)

    private struct State {
        var items: [PendingCommit] = []
        var closing = false
        var writersRunning = 0
        /// Why the database cannot be used now (nil: it can). Commits are refused at once meanwhile.
        var down: String? = "not connected yet"
    }
    private let monitor = Monitor()
    private var state = State()
    private let writersDone = DispatchSemaphore(value: 0)
    private let coordinatorDone = DispatchSemaphore(value: 0)
    private let coordinatorStop = Atomic<Bool>(false)
    /// Set once the coordinator has connected and migrated the schema; queue and admin calls wait for it first.
    private let schemaReady = Atomic<Bool>(false)

    private let queueConnection = Mutex<Connection?>(nil)
    private let finishConnection = Mutex<Connection?>(nil)
    private let finishQueue = Mutex<(jobs: [FinishJob], stopping: Bool)>(([], false))
    private let finishWake = DispatchSemaphore(value: 0)
    private let finisherDone = DispatchSemaphore(value: 0)
    /// Claim tokens of claims that failed with a lost connection (they may have committed); released by `onQueue`.
    let uncertainClaims = Mutex<[Int64]>([])
    /// The claims this relay holds, not yet finished or released: delivery id → claim token. Only these leases are
    /// renewed. A row that is in_flight under this relay's name but not held here
    /// (its finish was acknowledged, then lost when the database crashed: finishes commit without waiting for the
    /// WAL flush) runs out its lease and goes back to the queue, instead of being renewed for as long as the relay
    /// lives.
    let heldClaims = Mutex<[String: Int64]>([:])

    func hold(_ claims: [ClaimedDelivery]) {
        heldClaims.withLock { held in for c in claims { held[c.id] = c.claimToken } }
    }

    func letGo(_ claims: [ClaimedDelivery]) {
        heldClaims.withLock { held in
            for c in claims where held[c.id] == c.claimToken { held[c.id] = nil }
        }
    }
    private let adminPool: Mutex<[Connection]>
    private let adminSlots: DispatchSemaphore

    /// Opens the store. It does not wait for the database: if it is unreachable, the relay starts anyway, refuses
    /// commits (503) and keeps trying; the log says why. Throws only when `options.url` cannot be a connection
    /// string at all.
    public init(options: PostgresStoreOptions, log: Logger? = nil) throws {
        if let problem = PostgresURL.problem(options.url.value) {
            throw StoreError.unavailable("store.postgres.url: \(problem)")
        }
        self.options = options
        self.log = log
        conninfo = options.url.value
        summary = PostgresURL.display(options.url.value)
        leaseMillis = Int64(options.lease * 1000)
        heartbeatMillis = Int64(options.heartbeat * 1000)
        instanceID = "relay-" + (ProcessInfo.processInfo.hostName.prefix(40)) + "-\(getpid())-" + EventID.make(prefix: "").suffix(6)
        adminPool = Mutex([])
        adminSlots = DispatchSemaphore(value: options.pool)
        state.writersRunning = options.writers
        let coordinator = Thread { [self] in coordinatorLoop() }
        coordinator.name = "relay-pg-coord"
        coordinator.start()
        let finisher = Thread { [self] in finisherLoop() }
        finisher.name = "relay-pg-finish"
        finisher.start()
        for i in 0..<options.writers {
            let t = Thread { [self] in writerLoop(i) }
            t.name = "relay-pg-writer"
            t.start()
        }
    }

    deinit { close() }

    func connect(_ role: String) throws -> Connection {
        let c = try Connection(conninfo, connectTimeout: options.connectTimeout, applicationName: "relay \(role)")
        // A statement that runs away (a lock held by a stuck session) must not hold a sender or the dispatcher.
        try c.query("SET statement_timeout = '30s'")
        return c
    }

    /// Marks the database unreachable (commits are refused from now on) and logs it once.
    func markDown(_ reason: String) {
        monitor.lock()
        let was = state.down
        state.down = reason
        let queued = state.items
        state.items.removeAll()
        monitor.unlock()
        for w in queued { w.completion(.failure(.unavailable("database unreachable: \(reason)"))) }
        if was == nil {
            log?.error("database unreachable: refusing webhooks (503) until it is back", ["store": summary, "error": reason])
        }
    }

    private func markUp() {
        monitor.lock()
        let was = state.down
        state.down = nil
        monitor.unlock()
        schemaReady.store(true, ordering: .releasing)
        if was != nil { log?.info("database reachable", ["store": summary, "instance": instanceID]) }
    }

    /// Why the database cannot be used now; nil once it is reachable and migrated.
    public var unavailableReason: String? {
        monitor.lock()
        defer { monitor.unlock() }
        return state.down
    }

    /// Waits (up to `timeout` seconds) until the database is reachable and its schema migrated. True when it is.
    @discardableResult
    public func waitUntilReady(timeout: Double) -> Bool {
        let end = Date().addingTimeInterval(timeout)
        while unavailableReason != nil {
            if Date() > end { return false }
            usleep(20_000)
        }
        return true
    }

    // MARK: EventStore

    public func commit(_ event: consuming CanonicalEvent, deliveries: [PlannedDelivery], link: CorrelationScope?,
                       completion: @escaping @Sendable (Result<CommitOutcome, StoreError>) -> Void) {
        let write = PendingCommit(event: event, deliveries: deliveries, link: link, completion: completion)
        monitor.lock()
        if state.closing {
            monitor.unlock()
            completion(.failure(.closed))
            return
        }
        if let down = state.down {
            monitor.unlock()
            completion(.failure(.unavailable("database unreachable: \(down)")))
            return
        }
        state.items.append(write)
        monitor.signal(0)
        monitor.unlock()
    }

    private func writerLoop(_ index: Int) {
        nameThisThread("relay-pg-writer")
        var connection: Connection?
        while true {
            monitor.lock()
            while state.items.isEmpty && !state.closing { monitor.wait(0) }
            if state.items.isEmpty {
                state.writersRunning -= 1
                let last = state.writersRunning == 0
                monitor.unlock()
                if last { writersDone.signal() }
                return
            }
            let n = min(state.items.count, options.maxBatch)
            let batch = Array(state.items.prefix(n))
            state.items.removeFirst(n)
            if !state.items.isEmpty { monitor.signal(0) }   // another writer takes the rest at once
            monitor.unlock()
            do {
                if connection == nil { connection = try connect("writer \(index + 1)") }
                let outcomes = try write(batch, on: connection!)
                for (w, o) in zip(batch, outcomes) { w.completion(.success(o)) }
                if zip(batch, outcomes).contains(where: Self.queuedDeliveries) { signals.newDeliveries() }
            } catch let e as PostgresError where e.connectionLost {
                connection = nil
                // The outcome of a COMMIT cut off is unknown: the sender is told to retry, and a retry that finds
                // the event is answered as a duplicate. Never a 2xx for what may not be there.
                for w in batch { w.completion(.failure(.unavailable("database unreachable: \(e.message)"))) }
                markDown(e.message)
            } catch {
                if batch.count > 1 {
                    // One event that cannot be written must not sink the others: one by one.
                    for w in batch {
                        do {
                            let o = try write([w], on: connection!)[0]
                            w.completion(.success(o))
                            if Self.queuedDeliveries(w, o) { signals.newDeliveries() }
                        } catch {
                            if let pe = error as? PostgresError, pe.connectionLost { connection = nil; markDown(pe.message) }
                            w.completion(.failure(.unavailable("\(error)")))
                            if connection == nil { break }
                        }
                    }
                } else {
                    if let pe = error as? PostgresError, pe.connectionLost { connection = nil }
                    for w in batch { w.completion(.failure(.unavailable("\(error)"))) }
                }
            }
        }
    }

    /// Whether a commit put new deliveries in the queue (the dispatchers are then woken).
    private static func queuedDeliveries(_ w: PendingCommit, _ o: CommitOutcome) -> Bool {
        if case .inserted = o { return !w.deliveries.isEmpty }
        return false
    }

    /// Writes a batch in one transaction: events (`ON CONFLICT DO NOTHING`: duplicates found after), the new
    /// events' deliveries, their correlation links, one wake-up for every relay. Retried once on a deadlock.
    private func write(_ batch: [PendingCommit], on c: Connection) throws -> [CommitOutcome] {
        var tries = 0
        while true {
            do {
                let started = DispatchTime.now().uptimeNanoseconds
                let outcomes = try c.transaction { try insert(batch, on: c) }
                stats.transactions.add(1, ordering: .relaxed)
                stats.flushes.add(1, ordering: .relaxed)
                stats.flushNanoseconds.add(Int(DispatchTime.now().uptimeNanoseconds - started), ordering: .relaxed)
                stats.events.add(outcomes.filter { if case .inserted = $0 { return true } else { return false } }.count,
                                 ordering: .relaxed)
                return outcomes
            } catch let e as PostgresError where e.isRetryable && tries < 3 {
                tries += 1
            }
        }
    }

    private func insert(_ batch: [PendingCommit], on c: Connection) throws -> [CommitOutcome] {
        let inserted = try c.query("""
            INSERT INTO events (id, source, idempotency_key, type, status, received_at, event, content_type, body)
            SELECT id, source, key, type, status, received_at, event, content_type, decode(body, 'hex')
            FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])
                 AS t (id, source, key, type, status, received_at, event, content_type, body)
            ON CONFLICT (source, idempotency_key) DO NOTHING
            RETURNING id, seq
            """, [PGText.array(batch.map { $0.event.id }), PGText.array(batch.map { $0.event.source }),
                  PGText.array(batch.map { $0.event.idempotencyKey }), PGText.array(batch.map { $0.event.type }),
                  PGText.array(batch.map { $0.event.storedStatus }), PGText.array(batch.map { $0.event.receivedAt }),
                  PGText.array(batch.map { $0.json }), PGText.array(batch.map { $0.event.raw?.contentType }),
                  PGText.array(batch.map { ByteEncoding.hex($0.body) })], name: "insert_events")
        var seqs: [String: Int64] = [:]
        for row in inserted.rows { seqs[row.text(0)] = row.int(1) }
        var existing: [String: String] = [:]   // "source\u{1f}key" -> id
        let dups = batch.filter { seqs[$0.event.id] == nil }
        if !dups.isEmpty {
            let found = try c.query("""
                SELECT e.source, e.idempotency_key, e.id FROM events e
                JOIN unnest($1::text[], $2::text[]) AS t (source, key) ON e.source = t.source AND e.idempotency_key = t.key
                """, [PGText.array(dups.map { $0.event.source }), PGText.array(dups.map { $0.event.idempotencyKey })],
                name: "find_duplicates")
            for row in found.rows { existing[row.text(0) + "\u{1f}" + row.text(1)] = row.text(2) }
        }
        var outcomes: [CommitOutcome] = []
        var dIDs: [String?] = [], dSeqs: [Int64?] = [], dEvents: [String?] = [], dDest: [String?] = [], dSubjects: [String?] = []
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        for w in batch {
            guard let seq = seqs[w.event.id] else {
                guard let id = existing[w.event.source + "\u{1f}" + w.event.idempotencyKey] else {
                    throw PostgresError(message: "conflicting event not found", sqlState: nil, connectionLost: false)
                }
                outcomes.append(.duplicate(id))
                continue
            }
            outcomes.append(.inserted(w.event.id))
            for d in w.deliveries {
                dIDs.append(EventID.make(prefix: "dlv_"))
                dSeqs.append(seq)
                dEvents.append(w.event.id)
                dDest.append(d.destination)
                dSubjects.append(w.event.subjectKey)
            }
            if let link = w.link {
                try PGCorrelations.link(c, scope: link.scope, subject: w.event.subject, keys: link.keys, nowMillis: now)
            }
        }
        if !dIDs.isEmpty {
            try c.query("""
                INSERT INTO deliveries (id, event_seq, event_id, destination, subject_key, state, next_attempt_at, created_at)
                SELECT id, seq, event_id, destination, subject, 'pending', $6, $6
                FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[]) AS t (id, seq, event_id, destination, subject)
                """, [PGText.array(dIDs), PGText.array(dSeqs), PGText.array(dEvents), PGText.array(dDest),
                      PGText.array(dSubjects), String(now)], name: "insert_deliveries")
            try c.query("SELECT pg_notify('relay_wake', '')", name: "notify_wake")
        }
        return outcomes
    }

    // MARK: the coordinator

    private func coordinatorLoop() {
        nameThisThread("relay-pg-coord")
        var control: Connection?
        // Reconnect quickly: while the database is away every webhook is refused (503), so a relay must not sleep
        // long after it is back. A refused connection costs next to nothing.
        var backoff = 0.25
        var lastRenew: Double = 0
        var firstFailureLogged = false
        while !coordinatorStop.load(ordering: .acquiring) {
            if control == nil {
                do {
                    let c = try connect("coordinator")
                    let (from, to) = try Schema.migrate(c)
                    if from != to { log?.info("database schema migrated", ["from": from, "to": to]) }
                    try c.query("LISTEN relay_wake")
                    try c.query("LISTEN relay_changed")
                    try heartbeat(c)
                    control = c
                    backoff = 0.25
                    firstFailureLogged = false
                    markUp()
                    signals.changed()         // pauses and circuits may have changed while we were away
                    signals.newDeliveries()   // and so may the queue
                } catch {
                    let reason = (error as? PostgresError)?.message ?? "\(error)"
                    markDown(reason)
                    if !firstFailureLogged {
                        log?.error("cannot reach the database: retrying", ["store": summary, "error": reason])
                        firstFailureLogged = true
                    }
                    sleepUnlessStopped(backoff)
                    backoff = min(backoff * 2, 1)
                    continue
                }
            }
            guard let c = control else { continue }
            // Wait up to a second for a notification (a tenth while the database is marked down: see below).
            var fds = pollfd(fd: c.socket, events: Int16(POLLIN), revents: 0)
            _ = poll(&fds, 1, unavailableReason == nil ? 1000 : 100)
            guard c.consumeInput() else {
                markDown(Connection.message(c.handle))
                control = nil
                continue
            }
            if unavailableReason != nil {
                // A writer or the queue found its own connection cut and marked the database down, maybe after
                // this connection had already come back (a restart cuts every connection; each finds out when it
                // is next used). Only this loop marks it up, so it asks the database itself; without this, the
                // relay would refuse every webhook until its own connection broke again.
                do {
                    _ = try c.query("SELECT 1")
                    markUp()
                } catch let e as PostgresError where e.connectionLost {
                    markDown(e.message)
                    control = nil
                    continue
                } catch {
                    log?.warn("database probe failed", ["error": "\(error)"])
                }
            }
            var wake = false, changed = false
            for channel in c.notifications() {
                if channel == "relay_wake" { wake = true } else if channel == "relay_changed" { changed = true }
            }
            if wake { signals.newDeliveries() }
            if changed { signals.changed() }
            let now = Double(DispatchTime.now().uptimeNanoseconds) / 1e9
            if now - lastRenew >= min(1, options.lease / 3) {
                lastRenew = now
                do {
                    try heartbeat(c)
                    let released = try sweep(c)
                    if released > 0 {
                        log?.info("leases of relays that are gone returned to the queue", ["count": released])
                        try c.query("SELECT pg_notify('relay_wake', '')")
                        signals.newDeliveries()
                    }
                } catch let e as PostgresError where e.connectionLost {
                    markDown(e.message)
                    control = nil
                } catch {
                    log?.warn("heartbeat failed", ["error": "\(error)"])
                }
            }
        }
        if let c = control {
            // What this relay still holds goes back to the queue now rather than when its lease runs out.
            let released = (try? c.query("""
                UPDATE deliveries SET state = 'pending', lease_until = NULL, claimed_by = NULL, claim_token = NULL
                WHERE state = 'in_flight' AND claimed_by = $1
                """, [instanceID]).affected) ?? 0
            if released > 0 { _ = try? c.query("SELECT pg_notify('relay_wake', '')") }
            _ = try? c.query("DELETE FROM relay_instances WHERE id = $1", [instanceID])
        }
        coordinatorDone.signal()
    }

    private func sleepUnlessStopped(_ seconds: Double) {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end && !coordinatorStop.load(ordering: .acquiring) { usleep(50_000) }
    }

    /// This relay is alive; the leases of the claims it holds (`heldClaims`) are renewed (those past half their
    /// time: an attempt of a few milliseconds is never rewritten for it).
    func heartbeat(_ c: Connection) throws {
        try c.query("""
            INSERT INTO relay_instances (id, host, pid, started_at, seen_at) VALUES ($1, $2, $3, \(Schema.nowMillis), \(Schema.nowMillis))
            ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at
            """, [instanceID, ProcessInfo.processInfo.hostName, String(getpid())], name: "heartbeat")
        let held = heldClaims.withLock { Array($0) }
        guard !held.isEmpty else { return }
        try c.query("""
            UPDATE deliveries d SET lease_until = \(Schema.nowMillis) + $2
            FROM unnest($3::text[], $4::bigint[]) AS h (id, token)
            WHERE d.id = h.id AND d.claim_token = h.token AND d.state = 'in_flight' AND d.claimed_by = $1
              AND d.lease_until < \(Schema.nowMillis) + $2 / 2
            """, [instanceID, String(leaseMillis), PGText.array(held.map { Optional($0.key) }),
                  PGText.array(held.map { Optional($0.value) })], name: "renew")
    }

    /// Returns to the queue every claim whose lease ran out or whose relay has not been seen for `heartbeat`, and
    /// forgets relays not seen for three heartbeats (killed ones; one that comes back registers again).
    func sweep(_ c: Connection) throws -> Int {
        try c.query("DELETE FROM relay_instances WHERE seen_at < \(Schema.nowMillis) - 3 * $1::bigint",
                    [String(heartbeatMillis)], name: "forget_gone")
        return try c.query("""
            UPDATE deliveries d SET state = 'pending', lease_until = NULL, claimed_by = NULL, claim_token = NULL
            WHERE d.state = 'in_flight' AND (d.lease_until <= \(Schema.nowMillis) OR NOT EXISTS (
                SELECT 1 FROM relay_instances i WHERE i.id = d.claimed_by AND i.seen_at > \(Schema.nowMillis) - $1))
            """, [String(heartbeatMillis)], name: "sweep").affected
    }

    // MARK: connections for the dispatcher and the admin API

    /// Runs `body` on the queue connection (connecting first if need be). A lost connection is dropped (the next
    /// call connects again) and reported as `StoreError.unavailable`.
    func onQueue<T>(_ body: (Connection) throws -> T) throws -> T {
        try onDispatch(queueConnection, role: "dispatcher", body)
    }

    private func onDispatch<T>(_ connection: borrowing Mutex<Connection?>, role: String, _ body: (Connection) throws -> T) throws -> T {
        try awaitSchema()
        return try connection.withLock { slot in
            do {
                if slot == nil {
                    let c = try connect(role)
                    // Claims, finishes and releases commit without waiting for the WAL flush: losing the last of them
                    // in a database crash means deliveries are sent again (at-least-once), never lost. What must be
                    // kept (an operator's pause, a step's progress) sets synchronous_commit back on for itself.
                    try c.query("SET synchronous_commit = off")
                    slot = c
                }
                let uncertain = uncertainClaims.withLock { $0 }
                if !uncertain.isEmpty {
                    let n = try slot!.query("""
                        UPDATE deliveries SET state = 'pending', lease_until = NULL, claimed_by = NULL, claim_token = NULL
                        WHERE state = 'in_flight' AND claim_token = ANY($1::bigint[])
                        """, [PGText.array(uncertain.map { Optional($0) })]).affected
                    uncertainClaims.withLock { $0.removeAll { uncertain.contains($0) } }
                    if n > 0 {
                        log?.warn("claims whose answer was lost with the connection returned to the queue", ["count": n])
                    }
                }
                return try body(slot!)
            } catch let e as PostgresError {
                if e.connectionLost || !(slot?.isOK ?? false) { slot = nil }
                throw StoreError.unavailable(e.description)
            }
        }
    }

    /// Before the first migration has run, a query would find no tables: wait for it (briefly; a database that is
    /// down at start is reported as unavailable and the caller retries).
    private func awaitSchema() throws {
        if schemaReady.load(ordering: .acquiring) { return }
        if !waitUntilReady(timeout: 2) { throw StoreError.unavailable(unavailableReason ?? "not connected yet") }
    }

    /// Runs `body` on a pooled admin connection.
    func onAdmin<T>(_ body: (Connection) throws -> T) throws -> T {
        try awaitSchema()
        adminSlots.wait()
        defer { adminSlots.signal() }
        var c = adminPool.withLock { $0.popLast() }
        do {
            if c == nil { c = try connect("admin") }
            let value = try body(c!)
            let keep = c!
            adminPool.withLock { $0.append(keep) }
            return value
        } catch let e as PostgresError {
            if let c, c.isOK, !e.connectionLost { adminPool.withLock { $0.append(c) } }
            throw StoreError.unavailable(e.description)
        }
    }

    // MARK: the finisher

    func enqueueFinish(_ job: FinishJob) {
        let refused = finishQueue.withLock { q -> Bool in
            if q.stopping { return true }
            q.jobs.append(job)
            return false
        }
        if refused { return job.completion(.failure(.unavailable("the store is closed"))) }
        finishWake.signal()
    }

    private func finisherLoop() {
        nameThisThread("relay-pg-finish")
        var stop = false
        while true {
            if !stop { finishWake.wait() }
            let (jobs, stopping) = finishQueue.withLock { q -> ([FinishJob], Bool) in
                defer { q.jobs.removeAll() }
                return (q.jobs, q.stopping)
            }
            stop = stopping
            if jobs.isEmpty {
                if stop { break }
                continue
            }
            do {
                let stale: [[String]] = try onDispatch(finishConnection, role: "finisher") { c in try writeFinishJobs(c, jobs) }
                // Written (or fenced off): no longer this relay's to renew. A failed finish is kept by the
                // dispatcher and offered again, so its claim stays held until then.
                letGo(jobs.flatMap { $0.deliveries.map(\.claim) })
                for (job, ids) in zip(jobs, stale) { job.completion(.success(FinishReport(stale: ids))) }
            } catch {
                let e: StoreError = (error as? StoreError) ?? .unavailable("\(error)")
                for job in jobs { job.completion(.failure(e)) }
            }
        }
        finisherDone.signal()
    }

    public func close() {
        monitor.lock()
        let already = state.closing
        state.closing = true
        monitor.broadcast(0)
        monitor.unlock()
        if already { return }
        // Outcomes already handed over are written first (while the database answers).
        finishQueue.withLock { $0.stopping = true }
        finishWake.signal()
        finisherDone.wait()
        writersDone.wait()
        coordinatorStop.store(true, ordering: .releasing)
        coordinatorDone.wait()
        queueConnection.withLock { $0 = nil }
        finishConnection.withLock { $0 = nil }
        adminPool.withLock { $0.removeAll() }
    }
}

/// Correlation links in PostgreSQL; the rules are `Correlation`'s.
enum PGCorrelations {
    static func lookup(_ c: Connection, scope: String) -> (String, String) throws -> [String: String]? {
        { key, value in
            let rows = try c.query("SELECT subject FROM correlations WHERE scope = $1 AND key = $2 AND value = $3",
                                   [scope, key, value], name: "correlation_lookup")
            return rows.first.flatMap { $0[0] }.flatMap(Correlation.decode)
        }
    }

    static func enrich(_ c: Connection, scope: String, subject: [String: String], keys: Set<String>) throws -> [String: String] {
        guard !keys.isEmpty, !subject.isEmpty else { return subject }
        return try Correlation.enrich(subject, keys: keys, linked: lookup(c, scope: scope))
    }

    static func link(_ c: Connection, scope: String, subject: [String: String], keys: Set<String>, nowMillis: Int64) throws {
        guard let (merged, ids) = try Correlation.linkage(subject, keys: keys, linked: lookup(c, scope: scope)) else { return }
        let json = Correlation.encode(merged)
        for (k, v) in ids {
            try c.query("""
                INSERT INTO correlations (scope, key, value, subject, updated_at) VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (scope, key, value) DO UPDATE SET subject = excluded.subject, updated_at = excluded.updated_at
                WHERE correlations.subject <> excluded.subject
                """, [scope, k, v, json, String(nowMillis)], name: "correlation_link")
        }
    }
}
