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
/// table. JSON over its own listener, bearer-token protected. Everything it reads and writes goes through the
/// store's `AdminStore` methods, so on a shared store it shows (and replays) what every relay did; a replay is
/// followed by a wake of the dispatcher.
public final class AdminAPI: Sendable {
    let store: any RelayStore
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

    public init(store: any RelayStore, config: @escaping @Sendable () -> RelayConfig, token: Secret?, log: Logger, metrics: Metrics = Metrics(),
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
        // Readiness is asked by load balancers and Kubernetes probes, which carry no token: it says only whether
        // the store answers (the reason is in the log).
        if request.path == "/readyz" { return request.method == "GET" ? readyz() : HTTPResponse.error(405, "method not allowed").adding(headers: [("Allow", "GET")]) }
        // The console's page, script and style hold no data: they load without the token, and the script then
        // asks for it (every API call it makes is checked below like any other).
        if Console.owns(request.path) { return Console.answer(request) }
        return api(request).adding(headers: [("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-store")])
    }

    /// A browser's cross-site request that changes something (a page elsewhere posting to a loopback listener that
    /// has no token) is refused: its `Origin` names another site than the listener's own `Host`. Command-line
    /// clients send no `Origin`.
    static func crossSite(_ request: HTTPRequest) -> Bool {
        guard request.method != "GET" && request.method != "HEAD", let origin = request.headers["Origin"] else { return false }
        guard let host = request.headers["Host"], !host.isEmpty else { return true }
        return origin != "http://" + host && origin != "https://" + host
    }

    func api(_ request: HTTPRequest) -> HTTPResponse {
        if Self.crossSite(request) {
            log.warn("admin request refused", ["method": request.method, "path": request.path, "remote": request.remoteAddress,
                                               "reason": "cross-site Origin \(request.headers["Origin"] ?? "")"])
            return HTTPResponse.error(403, "forbidden", ["reason": "a request from another site's page (Origin) is refused"])
        }
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
            case 1 where parts[0] == "metrics": return try route("GET", try metricsText())
            case 2 where parts == ["v1", "events"]: return try route("GET", try events(query))
            case 3 where parts[0] == "v1" && parts[1] == "events": return try route("GET", try event(parts[2]))
            case 2 where parts == ["v1", "deliveries"]: return try route("GET", try deliveries(query))
            case 4 where parts[0] == "v1" && parts[1] == "deliveries" && parts[3] == "replay":
                return try route("POST", try replay(parts[2]))
            case 4 where parts[0] == "v1" && parts[1] == "deliveries" && parts[3] == "request":
                return try route("GET", try outboundRequest(parts[2]))
            case 2 where parts == ["v1", "destinations"]: return try route("GET", try destinations())
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

    func readyz() -> HTTPResponse {
        do {
            try store.ping()
            return .json(200, #"{"status":"ready"}"#)
        } catch {
            log.warn("not ready: the store does not answer", ["error": "\(error)"])
            return .json(503, #"{"status":"unavailable"}"#)
        }
    }

    /// `GET /metrics`: Prometheus text; queue depth, oldest waiting age and dead letters per destination read from
    /// the store at scrape time; token fetches from each destination's auth.
    func metricsText() throws -> HTTPResponse {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let queue = try store.queueStats().map { q in
            (q.destination, Double(q.waiting), q.oldestQueuedAt.map { Double(max(0, now - $0)) / 1000 } ?? 0, Double(q.dead))
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
            if let auth = d.auth, auth.tokenFetches > 0 || auth.fetchesTokens {
                gauges.append(("relay_token_fetches_total", ["destination": name], Double(auth.tokenFetches)))
            }
        }
        // Every relay sharing the store shows every destination's breaker, whoever dispatches it.
        if let circuits = try? store.circuits() {
            for name in config.destinations.keys.sorted() {
                let state = circuits[name]?.state ?? .closed
                gauges.append(("relay_circuit_state", ["destination": name, "state": state.rawValue], 1))
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
        var query = EventQuery(limit: try Self.limit(q) + 1)
        query.source = q["source"]
        query.type = q["type"]
        if let v = q["status"] {
            guard v == "unmapped" || config.statuses.status(named: v) != nil else {
                throw AdminError(status: 400, message: "status: \"\(v)\" is not a canonical status (\(config.statuses.names)) nor \"unmapped\" (events whose status no map covers)")
            }
            query.status = v
        }
        if let v = q["subject"] {
            guard let colon = v.firstIndex(of: ":"), colon > v.startIndex,
                  v[..<colon].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }) else {
                throw AdminError(status: 400, message: "subject: expected KEY:VALUE with a key of letters, digits or _, e.g. orderId:ORD-1")
            }
            query.subject = (String(v[..<colon]), String(v[v.index(after: colon)...]))
        }
        // Times compare as the stored text (RFC 3339, UTC, milliseconds), so a given time is normalised to that form.
        for key in ["since", "until"] {
            guard let v = q[key] else { continue }
            guard let date = Self.rfc3339(v) else {
                throw AdminError(status: 400, message: "\(key): an RFC 3339 time such as 2026-11-20T10:00:00Z")
            }
            if key == "since" { query.since = Timestamp.iso8601(date) } else { query.until = Timestamp.iso8601(date) }
        }
        let limit = query.limit - 1
        if let c = q["cursor"] {
            guard let seq = Int64(c), seq > 0 else { throw AdminError(status: 400, message: "cursor: not a cursor this API gave") }
            query.before = seq
        }
        let rows = try store.events(query).map { ($0.cursor, $0.json) }
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
        let deliveries = try store.deliveries(eventID: id)
        var out = "{\"event\":" + event.jsonText(includeRaw: true, includeTrace: true) + ",\"deliveries\":["
        out += try deliveries.map { d in try deliveryJSON(d, withAttempts: true) }.joined(separator: ",")
        out += "]}"
        return .json(200, out)
    }

    /// `GET /v1/deliveries?state=dead&destination=&cursor=&limit=`: newest first.
    func deliveries(_ q: [String: String]) throws -> HTTPResponse {
        var query = DeliveryQuery(limit: try Self.limit(q) + 1)
        if let v = q["state"] {
            guard let state = DeliveryState(rawValue: v) else {
                throw AdminError(status: 400, message: "state: one of \(DeliveryState.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            query.state = state
        }
        query.destination = q["destination"]
        if let c = q["cursor"] {
            guard let seq = Int64(c), seq > 0 else { throw AdminError(status: 400, message: "cursor: not a cursor this API gave") }
            query.before = seq
        }
        let limit = query.limit - 1
        let rows = try store.deliveries(query)
        let page = rows.prefix(limit)
        var out = "{\"deliveries\":["
        out += try page.map { try deliveryJSON($0, withAttempts: false) }.joined(separator: ",")
        out += "],\"nextCursor\":" + (rows.count > limit ? "\"\(page.last!.cursor)\"" : "null") + "}"
        return .json(200, out)
    }

    /// `POST /v1/deliveries/{id}/replay`: a finished delivery (dead, delivered, skipped, superseded) is queued again,
    /// due now, its attempts kept; the dispatcher is woken. A pending or in-flight one is left alone (409).
    func replay(_ id: String) throws -> HTTPResponse {
        let outcome = try store.replay(deliveryID: id, destinations: config.destinations.mapValues { $0.policy.discipline },
                                       nowMillis: Int64(Date().timeIntervalSince1970 * 1000))
        switch outcome {
        case .notFound:
            throw AdminError(status: 404, message: "no delivery \(id)")
        case .unconfigured(let destination):
            throw AdminError(status: 409, message: "delivery \(id) is for \(destination), which is no longer configured: nothing could send it")
        case .unfinished(let state):
            throw AdminError(status: 409, message: "delivery \(id) is \(state): it will be attempted anyway")
        case .replayed(let from):
            log.info("delivery replayed", ["deliveryId": id, "from": from])
            wake()
            return .json(202, JSONValue.object(["deliveryId": .string(id), "state": .string("pending"),
                                                "previousState": .string(from)]).jsonString())
        }
    }

    /// `GET /v1/destinations`: every configured destination with its adapter, auth scheme, pause, circuit breaker
    /// (as saved in the store, so any relay sharing it shows the same) and queue (waiting, the oldest one's age, dead).
    func destinations() throws -> HTTPResponse {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let queues = Dictionary(try store.queueStats().map { ($0.destination, $0) }, uniquingKeysWith: { a, _ in a })
        let circuits = try store.circuits()
        let paused = pausedNow()
        let rows = config.destinations.sorted(by: { $0.key < $1.key }).map { name, d -> JSONValue in
            var o: [String: JSONValue] = ["name": .string(name), "adapter": .string(d.adapterName),
                                          "paused": .bool(paused.contains(name))]
            if let auth = d.auth { o["auth"] = .string(auth.scheme) }
            let c = circuits[name]
            var circuit: [String: JSONValue] = ["state": .string((c?.state ?? .closed).rawValue)]
            // The store keeps a breaker at its transitions: the failures that opened it, and when it probes.
            if let c, c.state != .closed {
                circuit["consecutiveFailures"] = .number(Double(c.consecutiveFailures))
                if let at = c.reopensAtMillis {
                    circuit["reopensAt"] = .string(Timestamp.iso8601(Date(timeIntervalSince1970: Double(at) / 1000)))
                }
            }
            o["circuit"] = .object(circuit)
            let q = queues[name]
            o["queue"] = .object([
                "depth": .number(Double(q?.waiting ?? 0)),
                "oldestAgeSeconds": .number(q?.oldestQueuedAt.map { Double(max(0, now - $0)) / 1000 } ?? 0),
                "dead": .number(Double(q?.dead ?? 0)),
            ])
            return .object(o)
        }
        return .json(200, JSONValue.object(["destinations": .array(rows)]).jsonString())
    }

    /// `GET /v1/deliveries/{id}/request`: the request the delivery's destination is sent for it at its current step,
    /// as the adapter translates its event now, with the `Idempotency-Key` the dispatcher adds. Attempts record
    /// only their answers, so this is how an attempt's request is seen. Credentials are never shown: the auth
    /// scheme is named, not applied (a token scheme would fetch a token), credential-like headers are masked and
    /// every secret value the destination's auth knows is blanked out of the URL, headers and body.
    func outboundRequest(_ id: String) throws -> HTTPResponse {
        guard let d = try store.delivery(id: id) else { throw AdminError(status: 404, message: "no delivery \(id)") }
        guard let destination = config.destinations[d.destination] else {
            throw AdminError(status: 409, message: "delivery \(id) is for \(d.destination), which is no longer configured")
        }
        guard let event = try store.event(id: d.eventID) else {
            throw AdminError(status: 404, message: "the event \(d.eventID) of delivery \(id) is not in the store")
        }
        var o: [String: JSONValue] = ["deliveryId": .string(id), "destination": .string(d.destination),
                                      "step": .number(Double(d.step))]
        let context = DeliveryContext(deliveryID: id, destination: d.destination, attempt: d.attempts + 1, step: d.step,
                                      values: d.values)
        do throws(TranslateError) {
            var request = try destination.adapter.translate(event, context: context)
            request.headers.append(("Idempotency-Key", d.step == 0 ? id : "\(id)-\(d.step)"))
            var note: String?
            var added = Set<String>()
            if let auth = destination.auth {
                note = "auth: \(auth.scheme) adds its credentials when sent"
                // Static credentials and signatures are applied (and masked) to show where they go; a token scheme
                // is not asked, as that could start a token request or fail the one the dispatcher waits for.
                if !auth.fetchesTokens {
                    let box = Handoff<Result<OutboundRequest, AuthError>>()
                    auth.authorize(request, context: AuthContext(client: nil, deliveryID: id)) { box.put($0) }
                    if case .success(let signed)? = box.take(timeout: 1) {
                        let before = Set(request.headers.map { "\($0.0.lowercased()):\($0.1)" })
                        for (k, v) in signed.headers where !before.contains("\(k.lowercased()):\(v)") { added.insert(k.lowercased()) }
                        request = signed
                        note = "auth: \(auth.scheme) (credentials masked)"
                    }
                }
            }
            o["request"] = RequestPreview(request, credentialHeaders: added, redactions: destination.auth?.redactions ?? [], note: note).json
        } catch {
            let kind: String
            switch error.kind {
            case .skip: kind = "skip"
            case .terminal: kind = "terminal"
            case .retry: kind = "retry"
            }
            o["translation"] = .object(["outcome": .string(kind),
                                        "reason": .string(destination.auth?.redact(error.reason) ?? error.reason)])
        }
        return .json(200, JSONValue.object(o).jsonString())
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
        var filter = ReplayFilter(state: DeliveryState(rawValue: state)!,
                                  destinations: config.destinations.mapValues { $0.policy.discipline })
        if let d = o["destination"] {
            guard let name = d.stringValue else { throw AdminError(status: 400, message: "destination: a destination's name") }
            filter.destination = name
        }
        for key in ["since", "until"] {
            guard let v = o[key] else { continue }
            guard let text = v.stringValue, let date = Self.rfc3339(text) else {
                throw AdminError(status: 400, message: "\(key): an RFC 3339 time such as 2026-11-20T10:00:00Z")
            }
            let ms = Int64(date.timeIntervalSince1970 * 1000)
            if key == "since" { filter.finishedSince = ms } else { filter.finishedUntil = ms }
        }
        let dryRun = o["dryRun"]?.boolValue ?? true
        let count = try store.replay(filter, dryRun: dryRun, nowMillis: Int64(Date().timeIntervalSince1970 * 1000))
        if !dryRun {
            log.info("deliveries replayed in bulk", ["count": count, "state": state,
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

    func deliveryJSON(_ d: DeliveryInfo, withAttempts: Bool) throws -> String {
        var o: [String: JSONValue] = [
            "id": .string(d.id), "eventId": .string(d.eventID), "destination": .string(d.destination),
            "state": .string(d.state), "attempts": .number(Double(d.attempts)),
        ]
        if d.state == "pending" { o["nextAttemptAt"] = .string(Timestamp.iso8601(Date(timeIntervalSince1970: Double(d.nextAttemptAt) / 1000))) }
        if let v = d.lastStatus { o["lastStatus"] = .number(Double(v)) }
        if let v = d.lastError { o["lastError"] = .string(v) }
        if let v = d.finishedAt { o["finishedAt"] = .string(Timestamp.iso8601(Date(timeIntervalSince1970: Double(v) / 1000))) }
        if d.step > 0 { o["step"] = .number(Double(d.step)) }
        if !d.values.isEmpty { o["values"] = .object(d.values.mapValues { .string($0) }) }
        if withAttempts {
            let rows = try store.attempts(deliveryID: d.id).map { a -> JSONValue in
                var o: [String: JSONValue] = ["n": .number(Double(a.n)),
                                              "startedAt": .string(Timestamp.iso8601(Date(timeIntervalSince1970: Double(a.startedAt) / 1000))),
                                              "latencyMs": .number(Double(a.latencyMillis))]
                if let st = a.status { o["status"] = .number(Double(st)) }
                if let e = a.error { o["error"] = .string(e) }
                if let r = a.response { o["response"] = .string(r) }
                return .object(o)
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
