import Crypto
import Foundation

/// Where the admin API listens and who may use it (`admin:` in configuration).
public struct AdminSettings: Sendable {
    public var http: HTTPServerOptions
    /// Required unless the listener is on a loopback address: `Authorization: Bearer <token>` on every request.
    public var token: Secret?

    public init(host: String = "127.0.0.1", port: UInt16 = 9090, token: Secret? = nil) {
        var http = HTTPServerOptions()
        http.host = host
        http.port = port
        http.threads = 2
        self.http = http
        self.token = token
    }

    public static func isLoopback(_ host: String) -> Bool {
        if host == "::1" || host == "localhost" { return true }
        let octets = host.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { o in UInt8(o) != nil }
    }
}

/// The admin API: what happened to an event, its deliveries and every attempt; dead letters; replay; the routing
/// table. JSON over its own listener, bearer-token protected. Reads use the store's reader connection; a replay
/// is a write in the store's writer transaction, followed by a wake of the dispatcher.
public final class AdminAPI: Sendable {
    let store: SQLiteStore
    /// The configuration in force (it changes with a reload).
    let currentConfig: @Sendable () -> RelayConfig
    var config: RelayConfig { currentConfig() }
    let token: Secret?
    let wake: @Sendable () -> Void
    let log: Logger
    let metrics: Metrics
    /// Pauses (true) or resumes a destination; false when there is no such destination.
    let setPaused: @Sendable (String, Bool) throws -> Bool
    let pausedNow: @Sendable () -> Set<String>

    public init(store: SQLiteStore, config: @escaping @Sendable () -> RelayConfig, token: Secret?, log: Logger, metrics: Metrics = Metrics(),
                setPaused: @escaping @Sendable (String, Bool) throws -> Bool = { _, _ in false },
                paused: @escaping @Sendable () -> Set<String> = { [] },
                wake: @escaping @Sendable () -> Void) {
        self.metrics = metrics
        self.setPaused = setPaused
        self.pausedNow = paused
        self.store = store
        self.currentConfig = config
        self.token = token
        self.log = log
        self.wake = wake
    }

    static let pageLimit = 100, maxLimit = 1000

    public func handle(_ request: HTTPRequest, _ responder: any HTTPResponder) {
        responder.respond(answer(request))
    }

    func answer(_ request: HTTPRequest) -> HTTPResponse {
        if request.path == "/healthz" { return .json(200, #"{"status":"ok"}"#) }
        if let token {
            let given = request.headers["Authorization"] ?? ""
            let want = "Bearer " + token.value
            guard ConstantTime.equals(Array(given.utf8), Array(want.utf8)) else {
                log.warn("admin request refused", ["method": request.method, "path": request.path,
                                                   "remote": request.remoteAddress,
                                                   "reason": given.isEmpty ? "no Authorization header" : "wrong token"])
                return HTTPResponse.error(401, "unauthorized", ["reason": "Authorization: Bearer <admin token> required"])
                    .adding(headers: [("WWW-Authenticate", "Bearer")])
            }
        }
        let query = Self.query(request.query)
        let parts = request.path.split(separator: "/").map(String.init)
        do {
            let m = request.method
            func route(_ method: String, _ response: @autoclosure () throws -> HTTPResponse) throws -> HTTPResponse {
                m == method ? try response() : HTTPResponse.error(405, "method not allowed").adding(headers: [("Allow", method)])
            }
            switch parts.count {
            case 1 where parts[0] == "readyz": return try route("GET", try readyz())
            case 1 where parts[0] == "metrics": return try route("GET", try metricsText())
            case 2 where parts == ["v1", "events"]: return try route("GET", try events(query))
            case 3 where parts[0] == "v1" && parts[1] == "events": return try route("GET", try event(parts[2]))
            case 2 where parts == ["v1", "deliveries"]: return try route("GET", try deliveries(query))
            case 4 where parts[0] == "v1" && parts[1] == "deliveries" && parts[3] == "replay":
                return try route("POST", try replay(parts[2]))
            case 2 where parts == ["v1", "routes"]: return try route("GET", routes())
            case 2 where parts == ["v1", "replay"]: return try route("POST", try bulkReplay(request.body))
            case 4 where parts[0] == "v1" && parts[1] == "destinations" && (parts[3] == "pause" || parts[3] == "resume"):
                return try route("POST", try pause(parts[2], parts[3] == "pause"))
            default: return HTTPResponse.error(404, "not found")
            }
        } catch let e as AdminError {
            return HTTPResponse.error(e.status, e.message)
        } catch {
            log.error("admin request failed", ["path": request.path, "error": "\(error)"])
            return HTTPResponse.error(503, "store unavailable", ["reason": "the store could not answer; see the relay's log"])
        }
    }

    struct AdminError: Error {
        let status: Int
        let message: String
    }

    // MARK: Endpoints

    func readyz() throws -> HTTPResponse {
        if let failure = store.failure {
            return .json(503, JSONValue.object(["status": .string("unavailable"), "reason": .string(failure)]).jsonString())
        }
        _ = try store.performAndWait(durable: false) { db in try db.scalarText("SELECT 1") }
        return .json(200, #"{"status":"ready"}"#)
    }

    /// `GET /metrics`: Prometheus text; queue depth, oldest waiting age and dead letters per destination read from
    /// the store at scrape time; token fetches from each destination's auth.
    func metricsText() throws -> HTTPResponse {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let queue = try store.read { db -> [(String, Double, Double, Double)] in
            let s = try db.statement("""
                SELECT destination, sum(state IN ('pending', 'in_flight')),
                       min(CASE WHEN state IN ('pending', 'in_flight') THEN created_at END), sum(state = 'dead')
                FROM deliveries WHERE state IN ('pending', 'in_flight', 'dead') GROUP BY destination
                """)
            defer { s.reset() }
            var out: [(String, Double, Double, Double)] = []
            while try s.step() {
                let oldest = s.text(2).flatMap { Int64($0) }.map { Double(max(0, now - $0)) / 1000 } ?? 0
                out.append((s.text(0) ?? "", Double(s.int(1)), oldest, Double(s.int(3))))
            }
            return out
        }
        var gauges: [(name: String, labels: [String: String], value: Double)] = []
        var seen = Set<String>()
        for (destination, depth, oldest, dead) in queue {
            seen.insert(destination)
            gauges.append(("relay_queue_depth", ["destination": destination], depth))
            gauges.append(("relay_queue_oldest_age_seconds", ["destination": destination], oldest))
            gauges.append(("relay_deliveries_dead", ["destination": destination], dead))
        }
        for name in config.destinations.keys.sorted() where !seen.contains(name) {
            gauges.append(("relay_queue_depth", ["destination": name], 0))
            gauges.append(("relay_queue_oldest_age_seconds", ["destination": name], 0))
            gauges.append(("relay_deliveries_dead", ["destination": name], 0))
        }
        for (name, d) in config.destinations.sorted(by: { $0.key < $1.key }) {
            if let auth = d.auth, auth.tokenFetches > 0 || auth.scheme.contains("oauth2") || auth.scheme.contains("capillary") {
                gauges.append(("relay_token_fetches_total", ["destination": name], Double(auth.tokenFetches)))
            }
        }
        let st = store.stats
        gauges.append(("relay_store_transactions_total", [:], Double(st.transactions.load(ordering: .relaxed))))
        gauges.append(("relay_store_events_written_total", [:], Double(st.events.load(ordering: .relaxed))))
        gauges.append(("relay_store_flushes_total", [:], Double(st.flushes.load(ordering: .relaxed))))
        gauges.append(("relay_store_flush_seconds_total", [:], Double(st.flushNanoseconds.load(ordering: .relaxed)) / 1e9))
        return HTTPResponse(status: 200, headers: [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")],
                            body: Array(metrics.prometheusText(extraGauges: gauges).utf8))
    }

    /// `GET /v1/events?source=&type=&status=&subject=key:value&since=&until=&cursor=&limit=`: newest first.
    func events(_ q: [String: String]) throws -> HTTPResponse {
        var clauses: [String] = []
        var args: [String] = []
        if let v = q["source"] { clauses.append("source = ?"); args.append(v) }
        if let v = q["type"] { clauses.append("type = ?"); args.append(v) }
        if let v = q["status"] {
            guard CanonicalStatus(rawValue: v) != nil else { throw AdminError(status: 400, message: "status: \"\(v)\" is not a canonical status") }
            clauses.append("status = ?"); args.append(v)
        }
        if let v = q["subject"] {
            guard let colon = v.firstIndex(of: ":"), colon > v.startIndex,
                  v[..<colon].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }) else {
                throw AdminError(status: 400, message: "subject: expected KEY:VALUE with a key of letters, digits or _, e.g. orderId:ORD-1")
            }
            clauses.append("json_extract(event, '$.subject.' || ?) = ?")
            args.append(String(v[..<colon]))
            args.append(String(v[v.index(after: colon)...]))
        }
        // Times compare as the stored text (RFC 3339, UTC, milliseconds), so a given time is normalised to that form.
        for (key, op) in [("since", ">="), ("until", "<")] {
            guard let v = q[key] else { continue }
            guard let date = Self.rfc3339(v) else {
                throw AdminError(status: 400, message: "\(key): an RFC 3339 time such as 2026-11-20T10:00:00Z")
            }
            clauses.append("received_at \(op) ?"); args.append(Timestamp.iso8601(date))
        }
        let limit = try Self.limit(q)
        var cursorSeq: Int64?
        if let c = q["cursor"] {
            guard let seq = Int64(c), seq > 0 else { throw AdminError(status: 400, message: "cursor: not a cursor this API gave") }
            cursorSeq = seq
            clauses.append("seq < ?")
        }
        let whereSQL = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
        let boundArgs = args, boundCursor = cursorSeq
        let rows = try store.read { db -> [(Int64, String)] in
            let s = try db.statement("SELECT seq, event FROM events \(whereSQL) ORDER BY seq DESC LIMIT ?")
            defer { s.reset() }
            var i: Int32 = 1
            for a in boundArgs { try s.bind(i, a); i += 1 }
            if let boundCursor { try s.bind(i, boundCursor); i += 1 }
            try s.bind(i, Int64(limit + 1))
            var out: [(Int64, String)] = []
            while try s.step() { out.append((s.int(0), s.text(1) ?? "{}")) }
            return out
        }
        let page = rows.prefix(limit)
        var out = "{\"events\":["
        out += page.map { $0.1 }.joined(separator: ",")
        out += "],\"nextCursor\":"
        out += rows.count > limit ? "\"\(page.last!.0)\"" : "null"
        out += "}"
        return .json(200, out)
    }

    /// `GET /v1/events/{id}`: the event (with its raw body), its deliveries, and every attempt of each.
    func event(_ id: String) throws -> HTTPResponse {
        guard let event = try store.event(id: id) else { throw AdminError(status: 404, message: "no event \(id)") }
        let deliveries = try store.read { db in try Self.deliveryRows(db, where: "event_seq = (SELECT seq FROM events WHERE id = ?)", args: [id], limit: 10_000) }
        var out = "{\"event\":" + event.jsonText(includeRaw: true) + ",\"deliveries\":["
        out += try deliveries.map { d in try deliveryJSON(d, withAttempts: true) }.joined(separator: ",")
        out += "]}"
        return .json(200, out)
    }

    /// `GET /v1/deliveries?state=dead&destination=&cursor=&limit=`: newest first.
    func deliveries(_ q: [String: String]) throws -> HTTPResponse {
        var clauses: [String] = []
        var args: [String] = []
        if let v = q["state"] {
            let states = ["pending", "in_flight", "delivered", "dead", "skipped", "superseded"]
            guard states.contains(v) else { throw AdminError(status: 400, message: "state: one of \(states.joined(separator: ", "))") }
            clauses.append("state = ?"); args.append(v)
        }
        if let v = q["destination"] { clauses.append("destination = ?"); args.append(v) }
        if let c = q["cursor"] {
            guard let seq = Int64(c), seq > 0 else { throw AdminError(status: 400, message: "cursor: not a cursor this API gave") }
            clauses.append("rowid < ?"); args.append(String(seq))
        }
        let limit = try Self.limit(q)
        let clause = clauses.isEmpty ? "1" : clauses.joined(separator: " AND "), boundArgs = args
        let rows = try store.read { db in
            try Self.deliveryRows(db, where: clause, args: boundArgs,
                                  limit: limit + 1, newestFirst: true)
        }
        let page = rows.prefix(limit)
        var out = "{\"deliveries\":["
        out += try page.map { try deliveryJSON($0, withAttempts: false) }.joined(separator: ",")
        out += "],\"nextCursor\":" + (rows.count > limit ? "\"\(page.last!.rowid)\"" : "null") + "}"
        return .json(200, out)
    }

    /// `POST /v1/deliveries/{id}/replay`: a finished delivery (dead, delivered, skipped, superseded) is queued again,
    /// due now, its attempts kept; the dispatcher is woken. A pending or in-flight one is left alone (409).
    func replay(_ id: String) throws -> HTTPResponse {
        let configured = Set(config.destinations.keys)
        let outcome = try store.performAndWait { db -> String? in
            let s = try db.statement("SELECT state FROM deliveries WHERE id = ?")
            try s.bind([id])
            let state = try s.step() ? s.text(0) : nil
            s.reset()
            guard let state else { return nil }
            guard !["pending", "in_flight"].contains(state) else { return state }
            let dest = try db.statement("SELECT destination FROM deliveries WHERE id = ?")
            try dest.bind([id])
            let destination = try dest.step() ? dest.text(0) ?? "" : ""
            dest.reset()
            guard configured.contains(destination) else { return "for \(destination), which is no longer configured" }
            let u = try db.statement("""
                UPDATE deliveries SET state = 'pending', next_attempt_at = ?, finished_at = NULL, lease_until = NULL,
                       claimed_by = NULL WHERE id = ?
                """)
            defer { u.reset() }
            try u.bind(1, Int64(Date().timeIntervalSince1970 * 1000))
            try u.bind(2, id)
            try u.step()
            return "replayed from " + state
        }
        guard let outcome else { throw AdminError(status: 404, message: "no delivery \(id)") }
        if outcome.hasPrefix("for ") {
            throw AdminError(status: 409, message: "delivery \(id) is \(outcome): nothing could send it")
        }
        guard outcome.hasPrefix("replayed") else {
            throw AdminError(status: 409, message: "delivery \(id) is \(outcome): it will be attempted anyway")
        }
        log.info("delivery replayed", ["deliveryId": id, "from": String(outcome.dropFirst("replayed from ".count))])
        wake()
        return .json(202, JSONValue.object(["deliveryId": .string(id), "state": .string("pending"),
                                            "previousState": .string(String(outcome.dropFirst("replayed from ".count)))]).jsonString())
    }

    /// `POST /v1/destinations/{name}/pause|resume`.
    func pause(_ name: String, _ pause: Bool) throws -> HTTPResponse {
        guard try setPaused(name, pause) else { throw AdminError(status: 404, message: "no destination \(name)") }
        return .json(200, JSONValue.object(["destination": .string(name), "paused": .bool(pause)]).jsonString())
    }

    /// `POST /v1/replay` `{"state": "dead", "destination": "...", "since": RFC3339, "until": RFC3339, "dryRun": true}`:
    /// how many finished deliveries match (`dryRun`, the default), or queue them all again, due now.
    func bulkReplay(_ body: [UInt8]) throws -> HTTPResponse {
        let json = body.isEmpty ? JSONValue.object([:]) : ((try? JSONParser.parse(body)) ?? .null)
        guard let o = json.objectValue else { throw AdminError(status: 400, message: "expected a JSON object: {state, destination, since, until, dryRun}") }
        let allowed: Set<String> = ["state", "destination", "since", "until", "dryRun"]
        if let unknown = o.keys.first(where: { !allowed.contains($0) }) { throw AdminError(status: 400, message: "unknown key \(unknown)") }
        let state = o["state"]?.stringValue ?? "dead"
        guard ["dead", "skipped", "delivered"].contains(state) else {
            throw AdminError(status: 400, message: "state: dead, skipped or delivered (a superseded status is older than one already sent)")
        }
        if state == "delivered" && o["destination"] == nil {
            throw AdminError(status: 400, message: "replaying delivered deliveries needs a destination")
        }
        let configured = config.destinations.keys.sorted()
        guard !configured.isEmpty else { throw AdminError(status: 409, message: "no destination is configured") }
        var clauses = ["state = ?", "destination IN (\(configured.map { _ in "?" }.joined(separator: ", ")))"]
        var args: [String] = [state] + configured
        if let d = o["destination"]?.stringValue { clauses.append("destination = ?"); args.append(d) }
        for (key, op) in [("since", ">="), ("until", "<")] {
            guard let v = o[key] else { continue }
            guard let text = v.stringValue, let date = Self.rfc3339(text) else {
                throw AdminError(status: 400, message: "\(key): an RFC 3339 time such as 2026-11-20T10:00:00Z")
            }
            clauses.append("finished_at \(op) ?"); args.append(String(Int64(date.timeIntervalSince1970 * 1000)))
        }
        let dryRun = o["dryRun"]?.boolValue ?? true
        let clause = clauses.joined(separator: " AND "), boundArgs = args
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let count = try store.performAndWait { db -> Int in
            let sql = dryRun ? "SELECT count(*) FROM deliveries WHERE \(clause)"
                : "UPDATE deliveries SET state = 'pending', next_attempt_at = \(now), finished_at = NULL, lease_until = NULL, claimed_by = NULL WHERE \(clause)"
            let s = try db.statement(sql)
            defer { s.reset() }
            for (i, a) in boundArgs.enumerated() { try s.bind(Int32(i + 1), a) }
            if dryRun { _ = try s.step(); return Int(s.int(0)) }
            try s.step()
            return db.changes
        }
        if !dryRun {
            log.info("deliveries replayed in bulk", ["count": String(count), "state": state,
                                                      "destination": o["destination"]?.stringValue ?? "*"])
            if count > 0 { wake() }
        }
        return .json(dryRun ? 200 : 202, JSONValue.object(["matched": .number(Double(count)), "dryRun": .bool(dryRun),
                                                            "replayed": .number(Double(dryRun ? 0 : count))]).jsonString())
    }

    static func rfc3339(_ text: String) -> Date? {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = f.date(from: text) { return d }
        f.formatOptions = [.withInternetDateTime]
        return f.date(from: text)
    }

    /// `GET /v1/routes`: the routing table as loaded, with each destination's adapter.
    func routes() -> HTTPResponse {
        var routes: [JSONValue] = []
        for r in config.routes {
            var o: [String: JSONValue] = ["from": .string(r.from), "to": .array(r.to.map(JSONValue.string))]
            if let types = r.when.types { o["types"] = .array(types.map(JSONValue.string)) }
            if let statuses = r.when.statuses { o["statuses"] = .array(statuses.map { .string($0.rawValue) }) }
            routes.append(.object(o))
        }
        let sources = config.sources.mapValues { JSONValue.object(["adapter": .string($0.adapterName), "verify": .string($0.verifier.scheme)]) }
        let destinations = config.destinations.mapValues { d -> JSONValue in
            var o: [String: JSONValue] = ["adapter": .string(d.adapterName)]
            if let auth = d.auth { o["auth"] = .string(auth.scheme) }
            o["paused"] = .bool(pausedNow().contains(d.name))
            return .object(o)
        }
        return .json(200, JSONValue.object(["routes": .array(routes), "sources": .object(sources),
                                            "destinations": .object(destinations)]).jsonString())
    }

    // MARK: Helpers

    struct DeliveryRow {
        let rowid: Int64
        let id, eventID, destination, state: String
        let attempts: Int
        let nextAttemptAt: Int64
        let lastStatus: Int?
        let lastError: String?
        let finishedAt: Int64?
        let step: Int
    }

    static func deliveryRows(_ db: Database, where clause: String, args: [String], limit: Int,
                             newestFirst: Bool = false) throws -> [DeliveryRow] {
        let s = try db.statement("""
            SELECT rowid, id, event_id, destination, state, attempts, next_attempt_at, last_status, last_error,
                   finished_at, step FROM deliveries WHERE \(clause) ORDER BY rowid \(newestFirst ? "DESC" : "") LIMIT ?
            """)
        defer { s.reset() }
        var i: Int32 = 1
        for a in args { try s.bind(i, a); i += 1 }
        try s.bind(i, Int64(limit))
        var out: [DeliveryRow] = []
        while try s.step() {
            out.append(DeliveryRow(rowid: s.int(0), id: s.text(1) ?? "", eventID: s.text(2) ?? "", destination: s.text(3) ?? "",
                                   state: s.text(4) ?? "", attempts: Int(s.int(5)), nextAttemptAt: s.int(6),
                                   lastStatus: s.text(7).flatMap { Int($0) }, lastError: s.text(8),
                                   finishedAt: s.text(9).flatMap { Int64($0) }, step: Int(s.int(10))))
        }
        return out
    }

    func deliveryJSON(_ d: DeliveryRow, withAttempts: Bool) throws -> String {
        var o: [String: JSONValue] = [
            "id": .string(d.id), "eventId": .string(d.eventID), "destination": .string(d.destination),
            "state": .string(d.state), "attempts": .number(Double(d.attempts)),
        ]
        if d.state == "pending" { o["nextAttemptAt"] = .string(Timestamp.iso8601(Date(timeIntervalSince1970: Double(d.nextAttemptAt) / 1000))) }
        if let v = d.lastStatus { o["lastStatus"] = .number(Double(v)) }
        if let v = d.lastError { o["lastError"] = .string(v) }
        if let v = d.finishedAt { o["finishedAt"] = .string(Timestamp.iso8601(Date(timeIntervalSince1970: Double(v) / 1000))) }
        if d.step > 0 { o["step"] = .number(Double(d.step)) }
        if withAttempts {
            let rows = try store.read { db -> [JSONValue] in
                let s = try db.statement("""
                    SELECT n, started_at, latency_ms, status, error, response FROM attempts WHERE delivery_id = ? ORDER BY n
                    """)
                defer { s.reset() }
                try s.bind([d.id])
                var out: [JSONValue] = []
                while try s.step() {
                    var a: [String: JSONValue] = ["n": .number(Double(s.int(0))),
                                                  "startedAt": .string(Timestamp.iso8601(Date(timeIntervalSince1970: Double(s.int(1)) / 1000))),
                                                  "latencyMs": .number(Double(s.int(2)))]
                    if let st = s.text(3).flatMap({ Int($0) }) { a["status"] = .number(Double(st)) }
                    if let e = s.text(4) { a["error"] = .string(e) }
                    if let r = s.text(5) { a["response"] = .string(r) }
                    out.append(.object(a))
                }
                return out
            }
            o["attemptLog"] = .array(rows)
        }
        return JSONValue.object(o).jsonString()
    }

    static func limit(_ q: [String: String]) throws -> Int {
        guard let v = q["limit"] else { return pageLimit }
        guard let n = Int(v), n >= 1, n <= maxLimit else {
            throw AdminError(status: 400, message: "limit: 1 to \(maxLimit)")
        }
        return n
    }

    static func query(_ raw: String) -> [String: String] {
        var out: [String: String] = [:]
        for pair in raw.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(kv[0]).removingPercentEncoding ?? String(kv[0])
            let value = kv.count > 1 ? (String(kv[1]).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? "") : ""
            if out[key] == nil { out[key] = value }
        }
        return out
    }
}
