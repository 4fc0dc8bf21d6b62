import Crypto
import Foundation
import Relay
import Synchronization

/// The delivery queue's SQL on one SQLite connection (the store's writer, inside its group-commit transaction, or
/// the reader for reads). Claims are leases: a dispatcher that dies leaves its claims to expire, and they are taken
/// again (at-least-once); each claim carries a random token that fences its finish.
enum DeliveryQueue {
    static func newToken() -> Int64 { Int64(bitPattern: SecureRandom.uint64() & 0x7fff_ffff_ffff_ffff) | 1 }

    /// The per-subject order, as a condition on a delivery `d`: no earlier delivery of its subject at its destination
    /// is still waiting or in flight. Found through the subject index, which holds only `ordered` deliveries.
    static let heldBackBySubject = """
         AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.ordered = 1 AND e.destination = d.destination
                         AND e.subject_key = d.subject_key AND e.rowid < d.rowid
                         AND e.state IN ('pending', 'in_flight'))
        """

    /// Claims up to `limit` due deliveries of `destination`, oldest first. With `perSubject`, a delivery is taken
    /// only when no earlier delivery for the same subject at that destination is still waiting or in flight, so a
    /// later status never overtakes an earlier one.
    static func claim(_ db: Database, destination: String, limit: Int, nowMillis: Int64, leaseMillis: Int64,
                      owner: String, perSubject: Bool, token: Int64 = newToken()) throws -> [ClaimedDelivery] {
        let ordering = perSubject ? heldBackBySubject : ""
        let s = try db.statement("""
            UPDATE deliveries SET state = 'in_flight', lease_until = ?1, claimed_by = ?2, claim_token = ?6
            WHERE rowid IN (SELECT d.rowid FROM deliveries d
                            WHERE d.state = 'pending' AND d.destination = ?3 AND d.next_attempt_at <= ?4\(ordering)
                            ORDER BY d.next_attempt_at, d.rowid LIMIT ?5)
            RETURNING \(SQLiteStore.deliveryID), rid / \(SQLiteStore.deliveriesPerEvent), destination, subject_key, attempts,
                      step, context, rid
            """)
        defer { s.reset() }
        try s.bind(1, nowMillis + leaseMillis)
        try s.bind(2, owner)
        try s.bind(3, destination)
        try s.bind(4, nowMillis)
        try s.bind(5, Int64(limit))
        try s.bind(6, token)
        var out: [ClaimedDelivery] = []
        while try s.step() {
            out.append(ClaimedDelivery(id: s.text(0) ?? "", eventSeq: s.int(1), destination: s.text(2) ?? "",
                                       subjectKey: s.text(3) ?? "", attempts: Int(s.int(4)), step: Int(s.int(5)),
                                       values: s.text(6).flatMap(Correlation.decode) ?? [:], claimToken: token,
                                       rowKey: s.int(7)))
        }
        return out
    }

    /// Records an attempt and moves the delivery on, if the claim is still the delivery's. Returns false (and
    /// changes nothing) when it is not.
    static func finish(_ db: Database, _ f: FinishedDelivery, nowMillis: Int64) throws -> Bool {
        let n = try db.statement("SELECT attempts FROM deliveries WHERE rid = ? AND state = 'in_flight' AND claim_token = ?")
        try n.bind(1, f.claim.rowKey)
        try n.bind(2, f.claim.claimToken)
        guard try n.step() else {
            n.reset()
            return false
        }
        let number = n.int(0) + 1
        n.reset()
        let a = try db.statement("""
            INSERT INTO attempts (delivery_id, n, started_at, latency_ms, status, error, response)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            """)
        defer { a.reset() }
        try a.bind(1, f.claim.id)
        try a.bind(2, number)
        try a.bind(3, f.attempt.startedAt)
        try a.bind(4, f.attempt.latencyMillis)
        if let status = f.attempt.status { try a.bind(5, Int64(status)) } else { try a.bind(5, nil as String?) }
        try a.bind(6, f.attempt.error)
        try a.bind(7, f.attempt.response)
        try a.step()
        var next: Int64 = nowMillis
        var finished: Int64? = nowMillis
        if case .retry(let at) = f.result { next = at; finished = nil }
        let u = try db.statement("""
            UPDATE deliveries SET state = ?, attempts = ?, next_attempt_at = ?, lease_until = NULL, claimed_by = NULL,
                   claim_token = NULL, last_status = ?, last_error = ?, finished_at = ?, step = ?, context = ? WHERE rid = ?
            """)
        defer { u.reset() }
        try u.bind(1, f.result.state.rawValue)
        try u.bind(2, number)
        try u.bind(3, next)
        if let status = f.attempt.status { try u.bind(4, Int64(status)) } else { try u.bind(4, nil as String?) }
        try u.bind(5, f.lastError)
        if let finished { try u.bind(6, finished) } else { try u.bind(6, nil as String?) }
        try u.bind(7, Int64(f.progress?.step ?? 0))
        if let progress = f.progress, !progress.values.isEmpty {
            try u.bind(8, Correlation.encode(progress.values))
        } else {
            try u.bind(8, nil as String?)
        }
        try u.bind(9, f.claim.rowKey)
        try u.step()
        return true
    }

    /// Gives claimed deliveries back to the queue untouched (no attempt made), due now.
    static func release(_ db: Database, _ claims: [ClaimedDelivery], nowMillis: Int64) throws {
        let s = try db.statement("""
            UPDATE deliveries SET state = 'pending', lease_until = NULL, claimed_by = NULL, claim_token = NULL,
                   next_attempt_at = min(next_attempt_at, ?) WHERE rid = ? AND state = 'in_flight' AND claim_token = ?
            """)
        for c in claims {
            s.reset()
            try s.bind(1, nowMillis)
            try s.bind(2, c.rowKey)
            try s.bind(3, c.claimToken)
            try s.step()
        }
        s.reset()
    }

    /// Records that a multi-step delivery has finished the steps before `progress.step`, with the values they
    /// extracted. Returns false when the claim is no longer the delivery's.
    static func saveProgress(_ db: Database, _ claim: ClaimedDelivery, _ progress: StepProgress) throws -> Bool {
        let s = try db.statement("UPDATE deliveries SET step = ?, context = ? WHERE rid = ? AND claim_token = ?")
        defer { s.reset() }
        try s.bind(1, Int64(progress.step))
        try s.bind(2, progress.values.isEmpty ? nil : Correlation.encode(progress.values))
        try s.bind(3, claim.rowKey)
        try s.bind(4, claim.claimToken)
        try s.step()
        return db.changes == 1
    }

    /// Returns claims whose lease has run out (their dispatcher died or stalled) to the queue. Returns how many.
    @discardableResult
    static func releaseExpiredLeases(_ db: Database, nowMillis: Int64) throws -> Int {
        let s = try db.statement("""
            UPDATE deliveries SET state = 'pending', lease_until = NULL, claimed_by = NULL, claim_token = NULL
            WHERE state = 'in_flight' AND lease_until <= ?
            """)
        defer { s.reset() }
        try s.bind(1, nowMillis)
        try s.step()
        return db.changes
    }

    /// The earliest time a pending delivery of `destination` becomes due, if any. With `perSubject`, only
    /// deliveries that nothing earlier of their subject holds back count (the others wait for a finish, not a time).
    static func nextDue(_ db: Database, destination: String, perSubject: Bool = false) throws -> Int64? {
        let ordering = perSubject ? heldBackBySubject : ""
        let s = try db.statement("""
            SELECT min(d.next_attempt_at) FROM deliveries d WHERE d.state = 'pending' AND d.destination = ?\(ordering)
            """)
        defer { s.reset() }
        try s.bind([destination])
        guard try s.step(), s.text(0) != nil else { return nil }
        return s.int(0)
    }

    /// Coalescing: of the statuses queued (pending, not in flight) for one subject at `destination`, only the
    /// newest is sent; the older ones are marked `superseded` (never one part-way through its steps). Returns how
    /// many.
    @discardableResult
    static func supersedeOlder(_ db: Database, destination: String, nowMillis: Int64) throws -> Int {
        let s = try db.statement("""
            UPDATE deliveries SET state = 'superseded', last_error = 'superseded by a newer status', finished_at = ?2
            WHERE state = 'pending' AND destination = ?1 AND step = 0 AND ordered = 1 AND EXISTS (
                SELECT 1 FROM deliveries n WHERE n.ordered = 1 AND n.destination = deliveries.destination
                AND n.subject_key = deliveries.subject_key AND n.rowid > deliveries.rowid AND n.state = 'pending')
            """)
        defer { s.reset() }
        try s.bind(1, destination)
        try s.bind(2, nowMillis)
        try s.step()
        return db.changes
    }

    /// The events (with their raw bodies) of the given sequence numbers, subjects completed from correlation.
    static func events(_ db: Database, seqs: [Int64], correlation: CorrelationSettings) throws -> [Int64: CanonicalEvent] {
        guard !seqs.isEmpty else { return [:] }
        let s = try db.statement("SELECT event, content_type, body FROM events WHERE seq = ?")
        var out: [Int64: CanonicalEvent] = [:]
        for seq in Set(seqs) {
            s.reset()
            try s.bind(1, seq)
            guard try s.step() else { continue }
            var event = try CanonicalEvent.fromStoredJSON(s.blob(0))
            event.raw = RawPayload(contentType: s.text(1) ?? "", bytes: s.blob(2))
            out[seq] = event
        }
        s.reset()
        if !correlation.keys.isEmpty {
            for (seq, event) in out where !event.subject.isEmpty {
                out[seq]!.subject = try SQLiteCorrelations.enrich(db, scope: correlation.scope(ofSource: event.source),
                                                                  subject: event.subject, keys: correlation.keys)
            }
        }
        return out
    }

    static func pausedNames(_ db: Database) throws -> Set<String> {
        let s = try db.statement("SELECT name FROM paused_destinations")
        defer { s.reset() }
        var out = Set<String>()
        while try s.step() { if let n = s.text(0) { out.insert(n) } }
        return out
    }
}

/// Correlation links in SQLite (`correlations`: scope, key, value, subject); the rules are `Correlation`'s.
enum SQLiteCorrelations {
    static func lookup(_ db: Database, scope: String) throws -> (String, String) throws -> [String: String]? {
        let s = try db.statement("SELECT subject FROM correlations WHERE scope = ? AND key = ? AND value = ?")
        return { key, value in
            s.reset()
            defer { s.reset() }
            try s.bind([scope, key, value])
            guard try s.step(), let json = s.text(0) else { return nil }
            return Correlation.decode(json)
        }
    }

    static func enrich(_ db: Database, scope: String, subject: [String: String], keys: Set<String>) throws -> [String: String] {
        guard !keys.isEmpty, !subject.isEmpty else { return subject }
        return try Correlation.enrich(subject, keys: keys, linked: try lookup(db, scope: scope))
    }

    /// Records, in `scope`, that the identifiers of `subject` (with what is already linked to them) name one subject.
    static func link(_ db: Database, scope: String, subject: [String: String], keys: Set<String>, nowMillis: Int64) throws {
        guard let (merged, ids) = try Correlation.linkage(subject, keys: keys, linked: try lookup(db, scope: scope))
        else { return }
        let json = Correlation.encode(merged)
        let s = try db.statement("""
            INSERT INTO correlations (scope, key, value, subject, updated_at) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (scope, key, value) DO UPDATE SET subject = excluded.subject, updated_at = excluded.updated_at
            WHERE correlations.subject <> excluded.subject
            """)
        defer { s.reset() }
        for (k, v) in ids {
            s.reset()
            try s.bind(1, scope)
            try s.bind(2, k)
            try s.bind(3, v)
            try s.bind(4, json)
            try s.bind(5, nowMillis)
            try s.step()
        }
    }
}

// MARK: - DeliveryQueueStore

extension SQLiteStore {
    /// This process is the file's only relay: whatever is claimed at its start was claimed by a run that is gone.
    public func recoverClaims() throws -> Int {
        try performAndWait { db in try DeliveryQueue.releaseExpiredLeases(db, nowMillis: Int64.max) }
    }

    public func claim(_ lanes: [LaneRequest], nowMillis: Int64, correlation: CorrelationSettings) throws -> [String: ClaimedLane] {
        let lease = leaseMillis, owner = instanceID
        return try performAndWait(durable: false) { db in
            let paused = try DeliveryQueue.pausedNames(db)
            var out: [String: ClaimedLane] = [:]
            for lane in lanes where !paused.contains(lane.destination) {
                if lane.discipline.coalesce {
                    try DeliveryQueue.supersedeOlder(db, destination: lane.destination, nowMillis: nowMillis)
                }
                let claims = try DeliveryQueue.claim(db, destination: lane.destination, limit: lane.limit, nowMillis: nowMillis,
                                                     leaseMillis: lease, owner: owner, perSubject: lane.discipline.perSubject)
                let events = try DeliveryQueue.events(db, seqs: claims.map(\.eventSeq), correlation: correlation)
                let next = claims.count < lane.limit
                    ? try DeliveryQueue.nextDue(db, destination: lane.destination, perSubject: lane.discipline.perSubject) : nil
                out[lane.destination] = ClaimedLane(claims: claims, events: events, nextDueMillis: next)
            }
            return out
        }
    }

    public func release(_ claims: [ClaimedDelivery], completion: @escaping @Sendable (Result<Void, StoreError>) -> Void) {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        perform(durable: false, { db in try DeliveryQueue.release(db, claims, nowMillis: now) }, completion: completion)
    }

    public func saveProgress(_ claim: ClaimedDelivery, _ progress: StepProgress,
                             completion: @escaping @Sendable (Result<Void, StoreError>) -> Void) {
        perform(durable: true, { db in
            guard try DeliveryQueue.saveProgress(db, claim, progress) else {
                throw StoreError.unavailable("delivery \(claim.id) was claimed again: its lease ran out")
            }
        }, completion: completion)
    }

    public func finish(_ deliveries: [FinishedDelivery], links: [CorrelationLink], keys: Set<String>, nowMillis: Int64,
                       completion: @escaping @Sendable (Result<FinishReport, StoreError>) -> Void) {
        let stale = Mutex<[String]>([])
        perform(durable: false, { db in
            var lost: [String] = []
            for f in deliveries where !(try DeliveryQueue.finish(db, f, nowMillis: nowMillis)) { lost.append(f.claim.id) }
            for link in links {
                try SQLiteCorrelations.link(db, scope: link.scope, subject: link.subject, keys: keys, nowMillis: nowMillis)
            }
            stale.withLock { $0 = lost }
        }, completion: { result in
            completion(result.map { FinishReport(stale: stale.withLock { $0 }) })
        })
    }

    public func releaseExpiredLeases(nowMillis: Int64) throws -> Int {
        try performAndWait(durable: false) { db in try DeliveryQueue.releaseExpiredLeases(db, nowMillis: nowMillis) }
    }

    public func pausedDestinations() throws -> Set<String> {
        try read { db in try DeliveryQueue.pausedNames(db) }
    }

    public func setPaused(_ destination: String, _ paused: Bool, nowMillis: Int64) throws {
        try performAndWait { db in
            if paused {
                let s = try db.statement("INSERT INTO paused_destinations (name, since) VALUES (?, ?) ON CONFLICT (name) DO NOTHING")
                defer { s.reset() }
                try s.bind(1, destination)
                try s.bind(2, nowMillis)
                try s.step()
            } else {
                let s = try db.statement("DELETE FROM paused_destinations WHERE name = ?")
                defer { s.reset() }
                try s.bind([destination])
                try s.step()
            }
        }
    }

    public func circuits() throws -> [String: CircuitSnapshot] {
        try read { db in
            let s = try db.statement("SELECT destination, state, failures, reopens_at FROM circuits")
            defer { s.reset() }
            var out: [String: CircuitSnapshot] = [:]
            while try s.step() {
                guard let name = s.text(0), let state = s.text(1).flatMap(CircuitBreaker.State.init(rawValue:)) else { continue }
                out[name] = CircuitSnapshot(state: state, consecutiveFailures: Int(s.int(2)),
                                            reopensAtMillis: s.text(3).flatMap { Int64($0) })
            }
            return out
        }
    }

    public func saveCircuit(_ destination: String, _ snapshot: CircuitSnapshot) {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let log = self.log
        perform(durable: false, { db in
            let s = try db.statement("""
                INSERT INTO circuits (destination, state, failures, reopens_at, updated_at) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (destination) DO UPDATE SET state = excluded.state, failures = excluded.failures,
                    reopens_at = excluded.reopens_at, updated_at = excluded.updated_at
                """)
            defer { s.reset() }
            try s.bind(1, destination)
            try s.bind(2, snapshot.state.rawValue)
            try s.bind(3, Int64(snapshot.consecutiveFailures))
            if let r = snapshot.reopensAtMillis { try s.bind(4, r) } else { try s.bind(4, nil as String?) }
            try s.bind(5, now)
            try s.step()
        }, completion: { result in
            if case .failure(let e) = result { log?.warn("cannot save a circuit breaker's state", ["destination": destination, "error": e.description]) }
        })
    }
}
