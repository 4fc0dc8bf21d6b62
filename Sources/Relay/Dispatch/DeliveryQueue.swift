import Foundation

/// A delivery taken from the queue by a dispatcher, with its event.
public struct ClaimedDelivery: Sendable {
    public var id: String
    public var eventSeq: Int64
    public var destination: String
    public var subjectKey: String
    /// Attempts made before this one.
    public var attempts: Int
    /// A multi-step delivery resumes at this step (0: the first), with the values earlier steps extracted.
    public var step: Int = 0
    public var values: [String: String] = [:]
}

/// Where a multi-step delivery stands after an attempt that did not finish it: the next attempt resumes at `step`
/// with `values`.
public struct StepProgress: Sendable, Equatable {
    public var step: Int
    public var values: [String: String]
    public init(step: Int, values: [String: String]) {
        self.step = step
        self.values = values
    }
}

/// One attempt's result, as recorded.
public struct AttemptRecord: Sendable, Equatable {
    public var startedAt: Int64
    public var latencyMillis: Int64
    public var status: Int?
    public var error: String?
    /// The response body, truncated to `AttemptRecord.maxResponse` bytes.
    public var response: String?
    public static let maxResponse = 2048

    public init(startedAt: Int64, latencyMillis: Int64, status: Int?, error: String?, response: String?) {
        self.startedAt = startedAt
        self.latencyMillis = latencyMillis
        self.status = status
        self.error = error
        self.response = response.map { String($0.utf8.prefix(Self.maxResponse)) ?? String($0.prefix(Self.maxResponse / 4)) }
    }
}

/// What happens to a delivery after an attempt.
public enum DeliveryResult: Sendable, Equatable {
    case delivered
    case retry(atMillis: Int64)
    case dead(reason: String)
    /// Nothing to send for this destination (a status with no mapping): finished, with why.
    case skipped(reason: String)
}

/// The delivery queue's SQL, run on the store's writer connection (`SQLiteStore.perform`). Claims are leases:
/// a dispatcher that dies leaves its claims to expire, and they are taken again (at-least-once).
public enum DeliveryQueue {
    /// Claims up to `limit` due deliveries of `destination`, oldest first. With `perSubject`, a delivery is taken
    /// only when no earlier delivery for the same subject at that destination is still waiting or in flight, so a
    /// later status never overtakes an earlier one.
    public static func claim(_ db: Database, destination: String, limit: Int, nowMillis: Int64, leaseMillis: Int64,
                             owner: String, perSubject: Bool) throws -> [ClaimedDelivery] {
        let ordering = perSubject ? """
             AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.destination = d.destination
                             AND e.subject_key = d.subject_key AND e.rowid < d.rowid
                             AND e.state IN ('pending', 'in_flight'))
            """ : ""
        let s = try db.statement("""
            UPDATE deliveries SET state = 'in_flight', lease_until = ?1, claimed_by = ?2
            WHERE rowid IN (SELECT d.rowid FROM deliveries d
                            WHERE d.state = 'pending' AND d.destination = ?3 AND d.next_attempt_at <= ?4\(ordering)
                            ORDER BY d.next_attempt_at, d.rowid LIMIT ?5)
            RETURNING id, event_seq, destination, subject_key, attempts, step, context
            """)
        defer { s.reset() }
        try s.bind(1, nowMillis + leaseMillis)
        try s.bind(2, owner)
        try s.bind(3, destination)
        try s.bind(4, nowMillis)
        try s.bind(5, Int64(limit))
        var out: [ClaimedDelivery] = []
        while try s.step() {
            var c = ClaimedDelivery(id: s.text(0) ?? "", eventSeq: s.int(1), destination: s.text(2) ?? "",
                                    subjectKey: s.text(3) ?? "", attempts: Int(s.int(4)))
            c.step = Int(s.int(5))
            if let json = s.text(6), let o = try? JSONParser.parse(Array(json.utf8)).objectValue {
                c.values = o.compactMapValues(\.stringValue)
            }
            out.append(c)
        }
        return out
    }

    /// Records an attempt and moves the delivery on: delivered, back to pending at a later time, or dead.
    public static func finish(_ db: Database, id: String, attempt: AttemptRecord, result: DeliveryResult,
                              nowMillis: Int64, progress: StepProgress? = nil) throws {
        let n = try db.statement("SELECT attempts FROM deliveries WHERE id = ?")
        try n.bind([id])
        guard try n.step() else {
            n.reset()
            throw DatabaseError(code: 12, extendedCode: 12, message: "no delivery \(id)", sql: nil)   // SQLITE_NOTFOUND
        }
        let number = n.int(0) + 1
        n.reset()
        let a = try db.statement("""
            INSERT INTO attempts (delivery_id, n, started_at, latency_ms, status, error, response)
            VALUES (?, ?, ?, ?, ?, ?, ?)
            """)
        defer { a.reset() }
        try a.bind(1, id)
        try a.bind(2, number)
        try a.bind(3, attempt.startedAt)
        try a.bind(4, attempt.latencyMillis)
        if let status = attempt.status { try a.bind(5, Int64(status)) } else { try a.bind(5, nil as String?) }
        try a.bind(6, attempt.error)
        try a.bind(7, attempt.response)
        try a.step()
        let state: String
        var next: Int64 = nowMillis
        var finished: Int64?
        switch result {
        case .delivered: state = "delivered"; finished = nowMillis
        case .retry(let at): state = "pending"; next = at
        case .dead: state = "dead"; finished = nowMillis
        case .skipped: state = "skipped"; finished = nowMillis
        }
        let u = try db.statement("""
            UPDATE deliveries SET state = ?, attempts = ?, next_attempt_at = ?, lease_until = NULL, claimed_by = NULL,
                   last_status = ?, last_error = ?, finished_at = ?, step = ?, context = ? WHERE id = ?
            """)
        defer { u.reset() }
        try u.bind(1, state)
        try u.bind(2, number)
        try u.bind(3, next)
        if let status = attempt.status { try u.bind(4, Int64(status)) } else { try u.bind(4, nil as String?) }
        switch result {
        case .dead(let reason), .skipped(let reason): try u.bind(5, reason)
        default: try u.bind(5, attempt.error)
        }
        if let finished { try u.bind(6, finished) } else { try u.bind(6, nil as String?) }
        try u.bind(7, Int64(progress?.step ?? 0))
        if let progress, !progress.values.isEmpty {
            var json = ""
            JSONValue.object(progress.values.mapValues(JSONValue.string)).write(to: &json)
            try u.bind(8, json)
        } else {
            try u.bind(8, nil as String?)
        }
        try u.bind(9, id)
        try u.step()
    }

    /// Gives claimed deliveries back to the queue untouched (no attempt made), due now.
    public static func release(_ db: Database, ids: [String]) throws {
        let s = try db.statement("""
            UPDATE deliveries SET state = 'pending', lease_until = NULL, claimed_by = NULL WHERE id = ? AND state = 'in_flight'
            """)
        for id in ids {
            s.reset()
            try s.bind([id])
            try s.step()
        }
        s.reset()
    }

    /// Records that a multi-step delivery has finished the steps before `progress.step`, with the values they
    /// extracted: whatever happens next (a crash, a restart), it resumes there.
    public static func saveProgress(_ db: Database, id: String, progress: StepProgress) throws {
        let s = try db.statement("UPDATE deliveries SET step = ?, context = ? WHERE id = ?")
        defer { s.reset() }
        try s.bind(1, Int64(progress.step))
        if progress.values.isEmpty {
            try s.bind(2, nil as String?)
        } else {
            var json = ""
            JSONValue.object(progress.values.mapValues(JSONValue.string)).write(to: &json)
            try s.bind(2, json)
        }
        try s.bind(3, id)
        try s.step()
    }

    /// Returns claims whose lease has run out (their dispatcher died or stalled) to the queue. Returns how many.
    @discardableResult
    public static func releaseExpiredLeases(_ db: Database, nowMillis: Int64) throws -> Int {
        let s = try db.statement("""
            UPDATE deliveries SET state = 'pending', lease_until = NULL, claimed_by = NULL
            WHERE state = 'in_flight' AND lease_until <= ?
            """)
        defer { s.reset() }
        try s.bind(1, nowMillis)
        try s.step()
        return db.changes
    }

    /// The earliest time a pending delivery of `destination` becomes due, if any. With `perSubject`, only
    /// deliveries that nothing earlier of their subject holds back count (the others wait for a finish, not a time).
    public static func nextDue(_ db: Database, destination: String, perSubject: Bool = false) throws -> Int64? {
        let ordering = perSubject ? """
             AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.destination = d.destination
                             AND e.subject_key = d.subject_key AND e.rowid < d.rowid
                             AND e.state IN ('pending', 'in_flight'))
            """ : ""
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
    public static func supersedeOlder(_ db: Database, destination: String) throws -> Int {
        let s = try db.statement("""
            UPDATE deliveries SET state = 'superseded', last_error = 'superseded by a newer status',
                   finished_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000
            WHERE state = 'pending' AND destination = ?1 AND step = 0 AND EXISTS (
                SELECT 1 FROM deliveries n WHERE n.destination = deliveries.destination
                AND n.subject_key = deliveries.subject_key AND n.rowid > deliveries.rowid AND n.state = 'pending')
            """)
        defer { s.reset() }
        try s.bind([destination])
        try s.step()
        return db.changes
    }

    /// The events (with their raw bodies) of the given sequence numbers.
    /// With `correlationKeys`, each event's subject is completed with the identifiers linked to it (`Correlation`).
    /// `scopes`: each source's correlation scope (absent: the source's name).
    public static func events(_ db: Database, seqs: [Int64], correlationKeys: Set<String> = [],
                              scopes: [String: String] = [:]) throws -> [Int64: CanonicalEvent] {
        guard !seqs.isEmpty else { return [:] }
        let s = try db.statement("SELECT event, content_type, body FROM events WHERE seq = ?")
        var out: [Int64: CanonicalEvent] = [:]
        let decoder = JSONDecoder()
        for seq in Set(seqs) {
            s.reset()
            try s.bind(1, seq)
            guard try s.step(), let json = s.text(0) else { continue }
            var event = try decoder.decode(CanonicalEvent.self, from: Data(json.utf8))
            event.raw = RawPayload(contentType: s.text(1) ?? "", bytes: s.blob(2))
            out[seq] = event
        }
        s.reset()
        if !correlationKeys.isEmpty {
            for (seq, event) in out where !event.subject.isEmpty {
                out[seq]!.subject = try Correlation.enrich(db, scope: scopes[event.source] ?? event.source,
                                                           subject: event.subject, keys: correlationKeys)
            }
        }
        return out
    }
}
