import Foundation
import Relay

// MARK: - AdminStore: reads on the reader connection, replays in the writer's transaction.

extension SQLiteStore {
    public func ping() throws {
        if let failure { throw StoreError.unavailable(failure) }
        _ = try performAndWait(durable: false) { db in try db.scalarText("SELECT 1") }
    }

    public func event(id: String) throws -> CanonicalEvent? {
        try read { db in
            let s = try db.statement("SELECT event, content_type, body FROM events WHERE id = ?")
            defer { s.reset() }
            try s.bind([id])
            guard try s.step() else { return nil }
            var event = try CanonicalEvent.fromStoredJSON(s.blob(0))
            event.raw = RawPayload(contentType: s.text(1) ?? "", bytes: s.blob(2))
            return event
        }
    }

    public func events(_ q: EventQuery) throws -> [EventRow] {
        var clauses: [String] = []
        var args: [String] = []
        if let v = q.source { clauses.append("source = ?"); args.append(v) }
        if let v = q.type { clauses.append("type = ?"); args.append(v) }
        if let v = q.status { clauses.append("status = ?"); args.append(v) }
        if let (k, v) = q.subject {
            clauses.append("json_extract(event, '$.subject.' || ?) = ?")
            args += [k, v]
        }
        if let v = q.since { clauses.append("received_at >= ?"); args.append(v) }
        if let v = q.until { clauses.append("received_at < ?"); args.append(v) }
        if let c = q.before { clauses.append("seq < ?"); args.append(String(c)) }
        let whereSQL = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
        let bound = args, limit = q.limit
        return try read { db in
            let s = try db.statement("SELECT seq, event FROM events \(whereSQL) ORDER BY seq DESC LIMIT ?")
            defer { s.reset() }
            var i: Int32 = 1
            for a in bound { try s.bind(i, a); i += 1 }
            try s.bind(i, Int64(limit))
            var out: [EventRow] = []
            while try s.step() { out.append(EventRow(cursor: s.int(0), json: s.text(1) ?? "{}")) }
            return out
        }
    }

    public func eventCount() throws -> Int {
        try read { db in Int(try db.scalarText("SELECT count(*) FROM events") ?? "0") ?? 0 }
    }

    public func eventIDs(source: String) throws -> [String] {
        try read { db in
            let s = try db.statement("SELECT id FROM events WHERE source = ? ORDER BY seq")
            defer { s.reset() }
            try s.bind([source])
            var ids: [String] = []
            while try s.step() { if let id = s.text(0) { ids.append(id) } }
            return ids
        }
    }

    static let deliveryColumns = """
        rid, \(deliveryID), event_id, destination, subject_key, state, attempts, next_attempt_at, last_status, last_error,
        finished_at, step, claimed_by, context
        """

    static func deliveryRows(_ db: Database, where clause: String, args: [String], limit: Int,
                             newestFirst: Bool = false) throws -> [DeliveryInfo] {
        let s = try db.statement("""
            SELECT \(deliveryColumns) FROM deliveries WHERE \(clause) ORDER BY rid \(newestFirst ? "DESC" : "") LIMIT ?
            """)
        defer { s.reset() }
        var i: Int32 = 1
        for a in args { try s.bind(i, a); i += 1 }
        try s.bind(i, Int64(limit))
        var out: [DeliveryInfo] = []
        while try s.step() {
            var d = DeliveryInfo(id: s.text(1) ?? "", eventID: s.text(2) ?? "", destination: s.text(3) ?? "",
                                 subjectKey: s.text(4) ?? "", state: s.text(5) ?? "", attempts: Int(s.int(6)),
                                 nextAttemptAt: s.int(7), lastStatus: s.text(8).flatMap { Int($0) },
                                 lastError: s.text(9), finishedAt: s.text(10).flatMap { Int64($0) },
                                 step: Int(s.int(11)), claimedBy: s.text(12), cursor: s.int(0))
            d.values = s.text(13).flatMap(Correlation.decode) ?? [:]
            out.append(d)
        }
        return out
    }

    public func deliveries(eventID: String) throws -> [DeliveryInfo] {
        try read { db in
            // The event's deliveries are the rowids seq × deliveriesPerEvent up to the next event's.
            let seq = "(SELECT seq FROM events WHERE id = ?1)"
            return try Self.deliveryRows(db, where: "rid >= \(seq) * \(Self.deliveriesPerEvent) AND rid < (\(seq) + 1) * \(Self.deliveriesPerEvent)",
                                         args: [eventID], limit: 100_000)
        }
    }

    public func delivery(id: String) throws -> DeliveryInfo? {
        let key = Self.deliveryCondition(id: id)
        return try read { db in try Self.deliveryRows(db, where: key.sql, args: key.args, limit: 1).first }
    }

    public func deliveries(_ q: DeliveryQuery) throws -> [DeliveryInfo] {
        var clauses: [String] = []
        var args: [String] = []
        if let v = q.state { clauses.append("state = ?"); args.append(v.rawValue) }
        if let v = q.destination { clauses.append("destination = ?"); args.append(v) }
        if let c = q.before { clauses.append("rid < ?"); args.append(String(c)) }
        let clause = clauses.isEmpty ? "1" : clauses.joined(separator: " AND "), bound = args, limit = q.limit
        return try read { db in try Self.deliveryRows(db, where: clause, args: bound, limit: limit, newestFirst: true) }
    }

    public func attempts(deliveryID: String) throws -> [AttemptInfo] {
        try read { db in
            let s = try db.statement("""
                SELECT n, started_at, latency_ms, status, error, response FROM attempts WHERE delivery_id = ? ORDER BY n
                """)
            defer { s.reset() }
            try s.bind([deliveryID])
            var out: [AttemptInfo] = []
            while try s.step() {
                out.append(AttemptInfo(n: Int(s.int(0)), startedAt: s.int(1), latencyMillis: s.int(2),
                                       status: s.text(3).flatMap { Int($0) }, error: s.text(4), response: s.text(5)))
            }
            return out
        }
    }

    public func queueStats() throws -> [QueueStat] {
        try read { db in
            let s = try db.statement("""
                SELECT destination, sum(state IN ('pending', 'in_flight')),
                       min(CASE WHEN state IN ('pending', 'in_flight') THEN created_at END), sum(state = 'dead')
                FROM deliveries WHERE state IN ('pending', 'in_flight', 'dead') GROUP BY destination
                """)
            defer { s.reset() }
            var out: [QueueStat] = []
            while try s.step() {
                out.append(QueueStat(destination: s.text(0) ?? "", waiting: Int(s.int(1)),
                                     oldestQueuedAt: s.text(2).flatMap { Int64($0) }, dead: Int(s.int(3))))
            }
            return out
        }
    }

    public func replay(deliveryID id: String, destinations: [String: QueueDiscipline], nowMillis: Int64) throws -> ReplayOutcome {
        let configured = Set(destinations.keys)
        let key = Self.deliveryCondition(id: id)
        return try performAndWait { db -> ReplayOutcome in
            let s = try db.statement("SELECT state, destination, rid FROM deliveries WHERE \(key.sql)")
            try s.bind(key.args)
            guard try s.step(), let state = s.text(0) else { s.reset(); return .notFound }
            let destination = s.text(1) ?? "", rid = s.int(2)
            s.reset()
            guard state != "pending" && state != "in_flight" else { return .unfinished(state: state) }
            guard configured.contains(destination) else { return .unconfigured(destination: destination) }
            let u = try db.statement("""
                UPDATE deliveries SET state = 'pending', next_attempt_at = ?, finished_at = NULL, lease_until = NULL,
                       claimed_by = NULL, claim_token = NULL WHERE rid = ?
                """)
            defer { u.reset() }
            try u.bind(1, nowMillis)
            try u.bind(2, rid)
            try u.step()
            return .replayed(from: state)
        }
    }

    public func replay(_ f: ReplayFilter, dryRun: Bool, nowMillis: Int64) throws -> Int {
        let configured = f.destinations.keys.sorted()
        guard !configured.isEmpty else { return 0 }
        var clauses = ["state = ?", "destination IN (\(configured.map { _ in "?" }.joined(separator: ", ")))"]
        var args: [String] = [f.state.rawValue] + configured
        if let d = f.destination { clauses.append("destination = ?"); args.append(d) }
        if let v = f.finishedSince { clauses.append("finished_at >= ?"); args.append(String(v)) }
        if let v = f.finishedUntil { clauses.append("finished_at < ?"); args.append(String(v)) }
        let clause = clauses.joined(separator: " AND "), bound = args
        return try performAndWait { db -> Int in
            let sql = dryRun ? "SELECT count(*) FROM deliveries WHERE \(clause)"
                : """
                  UPDATE deliveries SET state = 'pending', next_attempt_at = \(nowMillis), finished_at = NULL,
                         lease_until = NULL, claimed_by = NULL, claim_token = NULL WHERE \(clause)
                  """
            let s = try db.statement(sql)
            defer { s.reset() }
            for (i, a) in bound.enumerated() { try s.bind(Int32(i + 1), a) }
            if dryRun { _ = try s.step(); return Int(s.int(0)) }
            try s.step()
            return db.changes
        }
    }
}
