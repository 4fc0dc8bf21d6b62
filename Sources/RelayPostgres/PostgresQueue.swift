import Crypto
import Foundation
import Relay
import Synchronization

// MARK: - DeliveryQueueStore: on the queue connection, on the caller's thread.
//
// Claims take `FOR UPDATE SKIP LOCKED` on pending rows, so relays claiming at once never take the same delivery
// and never wait for each other. With per-subject order, a delivery is claimed only while no earlier delivery of
// its (destination, subject) is pending or in flight: whichever relay claims, at most one delivery of a subject is
// in flight and it is the oldest. (A relay's statement sees the earlier delivery pending or in flight in either
// case: it is only finished once its attempt is recorded.)

extension PostgresStore {
    static func newToken() -> Int64 { Int64(bitPattern: SecureRandom.uint64() & 0x7fff_ffff_ffff_ffff) | 1 }

    /// Claims of relays that are gone (lease run out, or no heartbeat for `heartbeat`) go back to the queue; this
    /// relay's heartbeat is written first, so its own claims are never taken for a dead relay's.
    public func recoverClaims() throws -> Int {
        try onQueue { c in
            try heartbeat(c)
            return try sweep(c)
        }
    }

    public func claim(_ lanes: [LaneRequest], nowMillis: Int64, correlation: CorrelationSettings) throws -> [String: ClaimedLane] {
        // A claim whose connection is lost may still have committed (the COMMIT reached the server, its answer did
        // not): the caller holds nothing, yet the rows are in_flight for this live relay. They are not held (the
        // heartbeat leaves them to run out their lease); their tokens are kept and the rows released as soon as the
        // connection is back (`onQueue`), sooner than the lease would.
        let tokens = Mutex<[Int64]>([])
        do {
            return try claimLanes(lanes, nowMillis: nowMillis, correlation: correlation) { t in tokens.withLock { $0.append(t) } }
        } catch {
            let sent = tokens.withLock { $0 }
            if !sent.isEmpty {
                uncertainClaims.withLock { $0.append(contentsOf: sent) }
                heldClaims.withLock { held in held = held.filter { !sent.contains($0.value) } }
            }
            throw error
        }
    }

    /// One statement per lane, in autocommit (one round trip): the paused check, the claim and the events' rows. The
    /// dispatcher's connection commits without waiting for the WAL flush (`onQueue`): a claim lost in a database crash
    /// only means the delivery is claimed again.
    private func claimLanes(_ lanes: [LaneRequest], nowMillis: Int64, correlation: CorrelationSettings,
                            noteToken: (Int64) -> Void) throws -> [String: ClaimedLane] {
        try onQueue { c in
            var out: [String: ClaimedLane] = [:]
            for lane in lanes {
                let ordered = lane.discipline.perSubject
                if lane.discipline.coalesce {
                    try c.query("""
                        UPDATE deliveries d SET state = 'superseded', last_error = 'superseded by a newer status', finished_at = $2
                        WHERE d.state = 'pending' AND d.destination = $1 AND d.step = 0 AND EXISTS (
                            SELECT 1 FROM deliveries n WHERE n.destination = d.destination AND n.subject_key = d.subject_key
                            AND n.seq > d.seq AND n.state = 'pending')
                        """, [lane.destination, String(nowMillis)], name: "supersede")
                }
                let token = Self.newToken()
                noteToken(token)
                let order = ordered ? """
                     AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.destination = d.destination
                                     AND e.subject_key = d.subject_key AND e.seq < d.seq AND e.state IN ('pending', 'in_flight'))
                    """ : ""
                let rows = try c.query("""
                    WITH due AS (
                        SELECT d.seq FROM deliveries d
                        WHERE d.state = 'pending' AND d.destination = $1 AND d.next_attempt_at <= $2\(order)
                          AND NOT EXISTS (SELECT 1 FROM paused_destinations p WHERE p.name = $1)
                        ORDER BY d.next_attempt_at, d.seq LIMIT $3
                        FOR UPDATE SKIP LOCKED),
                    claimed AS (
                        UPDATE deliveries SET state = 'in_flight', lease_until = \(Schema.nowMillis) + $4, claimed_by = $5, claim_token = $6
                        FROM due WHERE deliveries.seq = due.seq
                        RETURNING deliveries.id, deliveries.event_seq, deliveries.destination, deliveries.subject_key,
                                  deliveries.attempts, deliveries.step, deliveries.context, deliveries.seq)
                    SELECT c.id, c.event_seq, c.destination, c.subject_key, c.attempts, c.step, c.context, c.seq,
                           e.event, e.content_type, e.body
                    FROM claimed c JOIN events e ON e.seq = c.event_seq
                    """, [lane.destination, String(nowMillis), String(lane.limit), String(leaseMillis), instanceID,
                          String(token)], name: ordered ? "claim_ordered" : "claim")
                var claims: [(seq: Int64, claim: ClaimedDelivery)] = []
                var events: [Int64: CanonicalEvent] = [:]
                for r in rows.rows {
                    let claim = ClaimedDelivery(id: r.text(0), eventSeq: r.int(1), destination: r.text(2), subjectKey: r.text(3),
                                                attempts: Int(r.int(4)), step: Int(r.int(5)),
                                                values: r[6].flatMap(Correlation.decode) ?? [:], claimToken: token)
                    claims.append((r.int(7), claim))
                    if events[claim.eventSeq] == nil {
                        var event = try CanonicalEvent.fromStoredJSON(Array(r.text(8).utf8))
                        event.raw = RawPayload(contentType: r.text(9), bytes: try PGText.bytes(bytea: r.text(10)))
                        events[claim.eventSeq] = event
                    }
                }
                if !correlation.keys.isEmpty {
                    for (seq, event) in events where !event.subject.isEmpty {
                        events[seq]!.subject = try PGCorrelations.enrich(c, scope: correlation.scope(ofSource: event.source),
                                                                          subject: event.subject, keys: correlation.keys)
                    }
                }
                var next: Int64?
                if claims.count < lane.limit {
                    next = try c.query("""
                        SELECT min(d.next_attempt_at) FROM deliveries d WHERE d.state = 'pending' AND d.destination = $1\(order)
                        """, [lane.destination], name: ordered ? "next_due_ordered" : "next_due").first?.optionalInt(0)
                }
                hold(claims.map(\.claim))
                out[lane.destination] = ClaimedLane(claims: claims.sorted { $0.seq < $1.seq }.map(\.claim), events: events,
                                                    nextDueMillis: next)
            }
            return out
        }
    }

    public func release(_ claims: [ClaimedDelivery], completion: @escaping @Sendable (Result<Void, StoreError>) -> Void) {
        guard !claims.isEmpty else { return completion(.success(())) }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        // Given back, whether or not the database hears of it now: a release that fails runs out its lease.
        letGo(claims)
        completion(Result {
            try onQueue { c in
                try c.query("""
                    UPDATE deliveries d SET state = 'pending', lease_until = NULL, claimed_by = NULL, claim_token = NULL,
                           next_attempt_at = least(d.next_attempt_at, $3)
                    FROM unnest($1::text[], $2::bigint[]) AS t (id, token)
                    WHERE d.id = t.id AND d.claim_token = t.token
                    """, [PGText.array(claims.map(\.id)), PGText.array(claims.map { Optional($0.claimToken) }), String(now)])
                try c.query("SELECT pg_notify('relay_wake', '')")
            }
        }.mapError(Self.storeError))
    }

    static func storeError(_ e: any Error) -> StoreError {
        (e as? StoreError) ?? .unavailable("\(e)")
    }

    public func saveProgress(_ claim: ClaimedDelivery, _ progress: StepProgress,
                             completion: @escaping @Sendable (Result<Void, StoreError>) -> Void) {
        completion(Result {
            try onQueue { c in
                // Durable (unlike claims and finishes): a step that has been done must not be done again.
                let n = try c.transaction {
                    try c.query("SET LOCAL synchronous_commit = on")
                    return try c.query("""
                        UPDATE deliveries SET step = $3, context = $4 WHERE id = $1 AND claim_token = $2
                        """, [claim.id, String(claim.claimToken), String(progress.step),
                              progress.values.isEmpty ? nil : Correlation.encode(progress.values)], name: "progress").affected
                }
                guard n == 1 else {
                    letGo([claim])   // not this relay's any more
                    throw StoreError.unavailable("delivery \(claim.id) was claimed again: its lease ran out")
                }
            }
        }.mapError(Self.storeError))
    }

    /// Queued for the finisher thread (`PostgresStore.finisherLoop`): the dispatcher's loop does not wait for it.
    /// Outcomes queued while one batch is written go in the next, as one statement.
    public func finish(_ deliveries: [FinishedDelivery], links: [CorrelationLink], keys: Set<String>, nowMillis: Int64,
                       completion: @escaping @Sendable (Result<FinishReport, StoreError>) -> Void) {
        enqueueFinish(FinishJob(deliveries: deliveries, links: links, keys: keys, nowMillis: nowMillis, completion: completion))
    }

    /// Records outcomes and their attempts in one statement (autocommit on a connection that does not wait for the
    /// WAL flush: a lost finish means one more attempt, at-least-once). Returns the ids whose claim was no longer
    /// theirs (fenced off by the claim token).
    static func writeFinishes(_ c: Connection, _ items: [(FinishedDelivery, Int64)]) throws -> Set<String> {
        guard !items.isEmpty else { return [] }
        var ids: [String?] = [], tokens: [Int64?] = [], states: [String?] = [], next: [Int64?] = []
        var statuses: [Int64?] = [], lastErrors: [String?] = [], finished: [Int64?] = [], steps: [Int64?] = []
        var contexts: [String?] = [], started: [Int64?] = [], latency: [Int64?] = [], errors: [String?] = []
        var responses: [String?] = []
        for (f, nowMillis) in items {
            ids.append(f.claim.id)
            tokens.append(f.claim.claimToken)
            states.append(f.result.state.rawValue)
            var at = nowMillis
            if case .retry(let t) = f.result { at = t }
            next.append(at)
            statuses.append(f.attempt.status.map(Int64.init))
            lastErrors.append(f.lastError)
            if case .retry = f.result { finished.append(nil) } else { finished.append(nowMillis) }
            steps.append(Int64(f.progress?.step ?? 0))
            contexts.append(f.progress.flatMap { $0.values.isEmpty ? nil : Correlation.encode($0.values) })
            started.append(f.attempt.startedAt)
            latency.append(f.attempt.latencyMillis)
            errors.append(f.attempt.error)
            responses.append(f.attempt.response)
        }
        // A finished delivery may free its subject's next one, which another relay may be waiting for: wake them
        // (PostgreSQL folds the notifications of one transaction into one).
        let wake = items.contains { $0.0.discipline.perSubject && $0.0.result.state.isFinished }
        let done = try c.query("""
            WITH f AS (
                SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::integer[], $6::text[],
                                     $7::bigint[], $8::integer[], $9::text[], $10::bigint[], $11::bigint[],
                                     $12::text[], $13::text[])
                    AS f (id, token, state, next_at, status, last_error, finished_at, step, context,
                          started_at, latency, error, response)),
            u AS (
                UPDATE deliveries d SET state = f.state, attempts = d.attempts + 1, next_attempt_at = f.next_at,
                       lease_until = NULL, claimed_by = NULL, claim_token = NULL, last_status = f.status,
                       last_error = f.last_error, finished_at = f.finished_at, step = f.step, context = f.context
                -- The token alone fences: it is set by a claim and cleared by every way out of in_flight. (No state
                -- test here: it would steer the planner to the in_flight index instead of the id's.)
                FROM f WHERE d.id = f.id AND d.claim_token = f.token
                RETURNING d.id, d.attempts),
            a AS (
                INSERT INTO attempts (delivery_id, n, started_at, latency_ms, status, error, response)
                SELECT u.id, u.attempts, f.started_at, f.latency, f.status, f.error, f.response
                FROM u JOIN f ON f.id = u.id
                RETURNING delivery_id)
            SELECT delivery_id, CASE WHEN $14::boolean THEN pg_notify('relay_wake', '') END FROM a
            """, [PGText.array(ids), PGText.array(tokens), PGText.array(states), PGText.array(next),
                  PGText.array(statuses), PGText.array(lastErrors), PGText.array(finished), PGText.array(steps),
                  PGText.array(contexts), PGText.array(started), PGText.array(latency), PGText.array(errors),
                  PGText.array(responses), wake ? "true" : "false"], name: "finish")
        let recorded = Set(done.rows.map { $0.text(0) })
        return Set(items.map(\.0.claim.id).filter { !recorded.contains($0) })
    }

    /// One finisher batch: the jobs without correlation links in one statement, each with links in a transaction
    /// of its own (the links and the outcome together).
    func writeFinishJobs(_ c: Connection, _ jobs: [FinishJob]) throws -> [[String]] {
        let plain = jobs.indices.filter { jobs[$0].links.isEmpty }
        let stalePlain = try Self.writeFinishes(c, plain.flatMap { i in jobs[i].deliveries.map { ($0, jobs[i].nowMillis) } })
        var out = [[String]](repeating: [], count: jobs.count)
        for i in jobs.indices {
            let job = jobs[i]
            if job.links.isEmpty {
                out[i] = job.deliveries.map(\.claim.id).filter { stalePlain.contains($0) }
            } else {
                let stale = try c.transaction {
                    let stale = try Self.writeFinishes(c, job.deliveries.map { ($0, job.nowMillis) })
                    for link in job.links {
                        try PGCorrelations.link(c, scope: link.scope, subject: link.subject, keys: job.keys, nowMillis: job.nowMillis)
                    }
                    return stale
                }
                out[i] = job.deliveries.map(\.claim.id).filter { stale.contains($0) }
            }
        }
        return out
    }

    public func releaseExpiredLeases(nowMillis: Int64) throws -> Int {
        try onQueue { c in
            try c.query("""
                UPDATE deliveries SET state = 'pending', lease_until = NULL, claimed_by = NULL, claim_token = NULL
                WHERE state = 'in_flight' AND lease_until <= $1
                """, [String(nowMillis)]).affected
        }
    }

    public func pausedDestinations() throws -> Set<String> {
        try onQueue { c in Set(try c.query("SELECT name FROM paused_destinations").rows.map { $0.text(0) }) }
    }

    public func setPaused(_ destination: String, _ paused: Bool, nowMillis: Int64) throws {
        try onQueue { c in
            try c.transaction {
                try c.query("SET LOCAL synchronous_commit = on")   // an operator's pause is kept
                if paused {
                    try c.query("INSERT INTO paused_destinations (name, since) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                                [destination, String(nowMillis)])
                } else {
                    try c.query("DELETE FROM paused_destinations WHERE name = $1", [destination])
                }
                try c.query("SELECT pg_notify('relay_changed', '')")
            }
        }
    }

    public func circuits() throws -> [String: CircuitSnapshot] {
        try onQueue { c in
            var out: [String: CircuitSnapshot] = [:]
            for r in try c.query("SELECT destination, state, failures, reopens_at FROM circuits").rows {
                guard let state = CircuitBreaker.State(rawValue: r.text(1)) else { continue }
                out[r.text(0)] = CircuitSnapshot(state: state, consecutiveFailures: Int(r.int(2)), reopensAtMillis: r.optionalInt(3))
            }
            return out
        }
    }

    public func saveCircuit(_ destination: String, _ snapshot: CircuitSnapshot) {
        do {
            try onQueue { c in
                try c.query("""
                    INSERT INTO circuits (destination, state, failures, reopens_at, updated_at) VALUES ($1, $2, $3, $4, $5)
                    ON CONFLICT (destination) DO UPDATE SET state = excluded.state, failures = excluded.failures,
                        reopens_at = excluded.reopens_at, updated_at = excluded.updated_at
                    """, [destination, snapshot.state.rawValue, String(snapshot.consecutiveFailures),
                          snapshot.reopensAtMillis.map(String.init), String(Int64(Date().timeIntervalSince1970 * 1000))])
                try c.query("SELECT pg_notify('relay_changed', '')")
            }
        } catch {
            log?.warn("cannot save a circuit breaker's state", ["destination": destination, "error": "\(error)"])
        }
    }
}

// MARK: - AdminStore: on the admin pool.

extension PostgresStore {
    public func ping() throws {
        try onAdmin { c in _ = try c.query("SELECT 1") }
    }

    public func event(id: String) throws -> CanonicalEvent? {
        try onAdmin { c in
            guard let r = try c.query("SELECT event, content_type, body FROM events WHERE id = $1", [id]).first else { return nil }
            var event = try CanonicalEvent.fromStoredJSON(Array(r.text(0).utf8))
            event.raw = RawPayload(contentType: r.text(1), bytes: try PGText.bytes(bytea: r.text(2)))
            return event
        }
    }

    public func events(_ q: EventQuery) throws -> [EventRow] {
        var w = Filter()
        if let v = q.source { w.add("source = \(w.arg(v))") }
        if let v = q.type { w.add("type = \(w.arg(v))") }
        if let v = q.status { w.add("status = \(w.arg(v))") }
        if let (k, v) = q.subject { w.add("(event::jsonb -> 'subject' ->> \(w.arg(k))) = \(w.arg(v))") }
        if let v = q.since { w.add("received_at >= \(w.arg(v))") }
        if let v = q.until { w.add("received_at < \(w.arg(v))") }
        if let c = q.before { w.add("seq < \(w.arg(String(c)))::bigint") }
        let whereSQL = w.whereSQL
        let limit = w.arg(String(q.limit))
        let bound = w.args
        return try onAdmin { c in
            try c.query("SELECT seq, event FROM events \(whereSQL) ORDER BY seq DESC LIMIT \(limit)::bigint", bound).rows.map {
                EventRow(cursor: $0.int(0), json: $0.text(1))
            }
        }
    }

    /// A WHERE clause built from optional conditions, its values bound as `$1`, `$2`... in the order given.
    struct Filter {
        private(set) var clauses: [String] = []
        private(set) var args: [String?] = []

        /// Binds `value` and returns its placeholder.
        mutating func arg(_ value: String) -> String {
            args.append(value)
            return "$\(args.count)"
        }

        mutating func add(_ clause: String) { clauses.append(clause) }

        /// `WHERE a AND b`, or nothing without conditions.
        var whereSQL: String { clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ") }
    }

    public func eventCount() throws -> Int {
        try onAdmin { c in Int(try c.query("SELECT count(*) FROM events").first?.int(0) ?? 0) }
    }

    public func eventIDs(source: String) throws -> [String] {
        try onAdmin { c in try c.query("SELECT id FROM events WHERE source = $1 ORDER BY seq", [source]).rows.map { $0.text(0) } }
    }

    static let deliveryColumns = """
        seq, id, event_id, destination, subject_key, state, attempts, next_attempt_at, last_status, last_error,
        finished_at, step, claimed_by, context
        """

    static func deliveryInfo(_ r: [String?]) -> DeliveryInfo {
        var d = DeliveryInfo(id: r.text(1), eventID: r.text(2), destination: r.text(3), subjectKey: r.text(4), state: r.text(5),
                             attempts: Int(r.int(6)), nextAttemptAt: r.int(7), lastStatus: r.optionalInt(8).map(Int.init),
                             lastError: r[9], finishedAt: r.optionalInt(10), step: Int(r.int(11)), claimedBy: r[12], cursor: r.int(0))
        d.values = r[13].flatMap(Correlation.decode) ?? [:]
        return d
    }

    public func deliveries(eventID: String) throws -> [DeliveryInfo] {
        try onAdmin { c in
            try c.query("""
                SELECT \(Self.deliveryColumns) FROM deliveries WHERE event_seq = (SELECT seq FROM events WHERE id = $1) ORDER BY seq
                """, [eventID]).rows.map(Self.deliveryInfo)
        }
    }

    public func delivery(id: String) throws -> DeliveryInfo? {
        try onAdmin { c in
            try c.query("SELECT \(Self.deliveryColumns) FROM deliveries WHERE id = $1", [id]).rows.first.map(Self.deliveryInfo)
        }
    }

    public func deliveries(_ q: DeliveryQuery) throws -> [DeliveryInfo] {
        var w = Filter()
        if let v = q.state { w.add("state = \(w.arg(v.rawValue))") }
        if let v = q.destination { w.add("destination = \(w.arg(v))") }
        if let c = q.before { w.add("seq < \(w.arg(String(c)))::bigint") }
        let whereSQL = w.whereSQL
        let limit = w.arg(String(q.limit))
        let bound = w.args
        return try onAdmin { c in
            try c.query("SELECT \(Self.deliveryColumns) FROM deliveries \(whereSQL) ORDER BY seq DESC LIMIT \(limit)::bigint",
                        bound).rows.map(Self.deliveryInfo)
        }
    }

    public func attempts(deliveryID: String) throws -> [AttemptInfo] {
        try onAdmin { c in
            try c.query("""
                SELECT n, started_at, latency_ms, status, error, response FROM attempts WHERE delivery_id = $1 ORDER BY n
                """, [deliveryID]).rows.map { r in
                AttemptInfo(n: Int(r.int(0)), startedAt: r.int(1), latencyMillis: r.int(2), status: r.optionalInt(3).map(Int.init),
                            error: r[4], response: r[5])
            }
        }
    }

    public func queueStats() throws -> [QueueStat] {
        try onAdmin { c in
            try c.query("""
                SELECT destination, count(*) FILTER (WHERE state IN ('pending', 'in_flight')),
                       min(created_at) FILTER (WHERE state IN ('pending', 'in_flight')), count(*) FILTER (WHERE state = 'dead')
                FROM deliveries WHERE state IN ('pending', 'in_flight', 'dead') GROUP BY destination
                """).rows.map { r in
                QueueStat(destination: r.text(0), waiting: Int(r.int(1)), oldestQueuedAt: r.optionalInt(2), dead: Int(r.int(3)))
            }
        }
    }

    public func replay(deliveryID id: String, destinations: [String: QueueDiscipline], nowMillis: Int64) throws -> ReplayOutcome {
        try onAdmin { c in
            try c.transaction { () throws -> ReplayOutcome in
                guard let r = try c.query("SELECT state, destination FROM deliveries WHERE id = $1 FOR UPDATE", [id]).first else {
                    return .notFound
                }
                let state = r.text(0), destination = r.text(1)
                guard state != "pending" && state != "in_flight" else { return .unfinished(state: state) }
                guard destinations[destination] != nil else { return .unconfigured(destination: destination) }
                try c.query("""
                    UPDATE deliveries SET state = 'pending', next_attempt_at = $2, finished_at = NULL, lease_until = NULL,
                           claimed_by = NULL, claim_token = NULL WHERE id = $1
                    """, [id, String(nowMillis)])
                try c.query("SELECT pg_notify('relay_wake', '')")
                return .replayed(from: state)
            }
        }
    }

    public func replay(_ f: ReplayFilter, dryRun: Bool, nowMillis: Int64) throws -> Int {
        let configured = f.destinations.keys.sorted()
        guard !configured.isEmpty else { return 0 }
        var w = Filter()
        w.add("state = \(w.arg(f.state.rawValue))")
        w.add("destination = ANY(\(w.arg(PGText.array(configured.map { Optional($0) })))::text[])")
        if let d = f.destination { w.add("destination = \(w.arg(d))") }
        if let v = f.finishedSince { w.add("finished_at >= \(w.arg(String(v)))::bigint") }
        if let v = f.finishedUntil { w.add("finished_at < \(w.arg(String(v)))::bigint") }
        let whereSQL = w.whereSQL
        let bound = w.args
        return try onAdmin { c in
            if dryRun {
                return Int(try c.query("SELECT count(*) FROM deliveries \(whereSQL)", bound).first?.int(0) ?? 0)
            }
            return try c.transaction {
                let n = try c.query("""
                    UPDATE deliveries SET state = 'pending', next_attempt_at = \(nowMillis), finished_at = NULL,
                           lease_until = NULL, claimed_by = NULL, claim_token = NULL \(whereSQL)
                    """, bound).affected
                if n > 0 { try c.query("SELECT pg_notify('relay_wake', '')") }
                return n
            }
        }
    }
}
