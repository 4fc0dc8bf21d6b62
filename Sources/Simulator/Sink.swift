import Foundation
import Relay
import Synchronization

/// Settings of a `Sink`.
public struct SinkOptions: Sendable {
    /// A numeric IPv4 or IPv6 address.
    public var host: String
    /// 0: any free port (read it back from `Sink.port` after `start()`).
    public var port: UInt16
    /// Recorded requests kept in memory: the most recent ones (every request is counted).
    public var keep: Int
    /// The fault rules in force at the start, and again after a reset.
    public var faults: [SinkFault]
    /// Server event-loop threads. Held answers (`hang`, `slow`) hold none of them.
    public var threads: Int
    /// Larger bodies are answered 413 by the server (and not recorded).
    public var maxBodyBytes: Int
    /// How long a stop waits for answers in flight.
    public var shutdownTimeout: Double
    /// A provider stand-in's answers (`relay simulate punchh`...); nil answers 200 {"ok":true}. Fault rules
    /// apply before it.
    public var responder: (any SinkResponder)?

    public init(host: String = "127.0.0.1", port: UInt16 = 9099, keep: Int = 100_000, faults: [SinkFault] = [],
                threads: Int = 2, maxBodyBytes: Int = 16 << 20, shutdownTimeout: Double = 5) {
        self.host = host
        self.port = port
        self.keep = keep
        self.faults = faults
        self.threads = threads
        self.maxBodyBytes = maxBodyBytes
        self.shutdownTimeout = shutdownTimeout
    }

    /// Reads the arguments of `relay simulate sink` (after `sink`): `--listen HOST:PORT`, `--fault SPEC`
    /// (repeatable; see `SinkFault.parse(spec:)`), `--keep N`; `--name=value` works too.
    public init(arguments: [String]) throws(SinkError) {
        self.init()
        var i = 0
        while i < arguments.count {
            var flag = arguments[i]
            var value: String?
            if flag.hasPrefix("--"), let eq = flag.firstIndex(of: "=") {
                value = String(flag[flag.index(after: eq)...])
                flag = String(flag[..<eq])
            }
            guard ["--listen", "--fault", "--keep"].contains(flag) else {
                throw SinkError(message: "unknown argument \"\(arguments[i])\"")
            }
            if value == nil {
                guard i + 1 < arguments.count else { throw SinkError(message: "\(flag) needs a value") }
                i += 1
                value = arguments[i]
            }
            let v = value!
            switch flag {
            case "--listen":
                guard let (host, port) = RelayConfig.parseListen(v) else {
                    throw SinkError(message: "--listen \(v): not HOST:PORT (e.g. 127.0.0.1:9099, [::1]:9099)")
                }
                self.host = host
                self.port = port
            case "--keep":
                guard let n = Int(v), n >= 1 else { throw SinkError(message: "--keep \(v): not a whole number of at least 1") }
                keep = n
            default:
                faults += try SinkFault.parse(spec: v)
            }
            i += 1
        }
    }
}

/// A stand-in receiver for delivery tests and demos (`relay simulate sink`): accepts any method and path, records
/// every request in memory and answers 200 `{"ok":true}`, unless a fault rule says otherwise.
///
/// Control endpoints (JSON; never recorded, never faulted):
/// - `GET /_sink/requests?path=/x&since=SEQ&limit=N`: `{requests: [...], lastSeq, total, kept}`, oldest first
///   (`path`: that exact path only; `since`: sequence numbers above SEQ only).
/// - `GET /_sink/stats`: `{total, kept, lastSeq, statuses: {"200": n}, paths: {"/x": {count, statuses}}}`.
/// - `GET /_sink/faults`: the rules in force (`times`: what is left); `POST /_sink/faults` with a JSON list of
///   rules replaces them.
/// - `POST /_sink/reset`: forgets every request and count, and restores the start's fault rules. Sequence numbers
///   go on (a `since` taken before a reset stays valid).
///
/// Every answer carries `X-Sink-Seq` (the request's sequence number); faulted ones also `X-Sink-Fault` (the action).
public final class Sink: Sendable {
    /// The status recorded for a connection dropped without an answer (the `reset` fault).
    public static let droppedStatus = 0
    /// `SinkStats.paths` counts this many distinct paths, the rest together under `otherPaths`.
    public static let maxStatsPaths = 10_000
    public static let otherPaths = "(other paths)"
    /// Paths under it are the sink's control endpoints.
    public static let controlPrefix = "/_sink/"

    /// Whether the `reset` fault really drops the connection.
    public static let dropsConnections = true

    public let options: SinkOptions
    public let log: Logger
    let core: SinkCore
    let server: HTTPServer

    public init(options: SinkOptions = SinkOptions(), log: Logger = Logger(level: .warn)) {
        self.options = options
        self.log = log
        let core = SinkCore(options: options, log: log)
        self.core = core
        var http = HTTPServerOptions()
        http.host = options.host
        http.port = options.port
        http.threads = max(1, options.threads)
        http.maxBodyBytes = options.maxBodyBytes
        server = HTTPServer(options: http) { request, responder in core.handle(request, responder) }
    }

    /// Binds and starts serving. Throws when the address cannot be bound.
    public func start() throws {
        try server.start()
        log.info("sink listening", ["address": "\(options.host):\(server.port)", "url": baseURL,
                                    "port": server.port, "faults": options.faults.count, "keep": options.keep])
    }

    /// The bound port (useful when `options.port` is 0).
    public var port: UInt16 { server.port }

    /// `http://HOST:PORT` to reach the sink (loopback when it listens on every interface).
    public var baseURL: String {
        var host = options.host
        if host == "0.0.0.0" { host = "127.0.0.1" } else if host == "::" { host = "::1" }
        if host.contains(":") { host = "[\(host)]" }
        return "http://\(host):\(port)"
    }

    /// Graceful stop: held answers (`hang`, `slow`) go out at once, then the server stops taking connections and
    /// closes once the answers in flight are out.
    public func stop() {
        let held = core.releaseAll()
        log.info("sink stopping", ["released": held])
        server.shutdown(timeout: options.shutdownTimeout)
        log.info("sink stopped", ["requests": core.stats.total])
    }

    /// Blocks until SIGTERM or SIGINT, then stops gracefully.
    public func runUntilSignalled() {
        waitForTerminationSignal()
        stop()
    }

    /// Handles one request as the server would (control endpoints included): for driving the sink without sockets.
    public func handle(_ request: HTTPRequest, _ responder: any HTTPResponder) { core.handle(request, responder) }

    /// The kept requests with a sequence number above `since`, oldest first; those to exactly `path` when given.
    public func requests(path: String? = nil, since: Int = 0, limit: Int = .max) -> [SinkRequest] {
        core.state.withLock { $0.ring.select(since: since, path: path, limit: limit) }
    }

    public var stats: SinkStats { core.stats }

    /// The rules in force, in order; `times` is what is left of each (expired ones are gone).
    public var faults: [SinkFault] { core.state.withLock { $0.faults } }

    /// Replaces the fault rules.
    public func setFaults(_ faults: [SinkFault]) { core.state.withLock { $0.faults = faults } }

    /// Forgets every request and count and restores the start's fault rules; sequence numbers go on.
    public func reset() { core.reset() }

    /// `Retry-After`'s HTTP-date form (RFC 9110 IMF-fixdate), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
    public static func httpDate(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970.rounded(.down))
        var tmv = tm()
        gmtime_r(&t, &tmv)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(days[Int(tmv.tm_wday)]), \(two(tmv.tm_mday)) \(months[Int(tmv.tm_mon)]) \(tmv.tm_year + 1900) "
            + "\(two(tmv.tm_hour)):\(two(tmv.tm_min)):\(two(tmv.tm_sec)) GMT"
    }

    /// The answer for the `reset` fault.
    /// The `reset` fault: the connection is closed without an answer.
    static func dropAnswer(seq: Int) -> HTTPResponse { .dropConnection }
}

/// The sink's state and request handling; the server's handler holds it (not the `Sink`, which owns the server).
final class SinkCore: Sendable {
    struct Held {
        let responder: any HTTPResponder
        let response: HTTPResponse
    }

    struct State {
        var ring: SinkRing
        var stats = SinkStats()
        var nextSeq = 1
        /// In force, in order; `times` counts down and a rule is removed when it reaches 0.
        var faults: [SinkFault]
        /// Answers being held (`hang`, `slow`), by sequence number.
        var held: [Int: Held] = [:]
        /// After a stop began: nothing more is held.
        var stopped = false
    }

    /// What to do with a request.
    enum Plan {
        case now(HTTPResponse)
        case later(HTTPResponse, after: Double)
        case drop

        var status: Int {
            switch self {
            case .now(let r), .later(let r, _): return r.status
            case .drop: return Sink.dropsConnections ? Sink.droppedStatus : 502
            }
        }
    }

    let state: Mutex<State>
    let initialFaults: [SinkFault]
    let responder: (any SinkResponder)?
    let log: Logger
    let timers = DispatchQueue(label: "relay.sink.timers")

    init(options: SinkOptions, log: Logger) {
        initialFaults = options.faults
        responder = options.responder
        self.log = log
        state = Mutex(State(ring: SinkRing(capacity: options.keep), faults: options.faults))
    }

    var stats: SinkStats {
        state.withLock { s in
            var st = s.stats
            st.kept = s.ring.count
            return st
        }
    }

    func reset() {
        state.withLock { s in
            s.ring.removeAll()
            s.stats = SinkStats()
            s.stats.lastSeq = s.nextSeq - 1
            s.faults = initialFaults
        }
    }

    func handle(_ request: HTTPRequest, _ responder: any HTTPResponder) {
        if request.path.hasPrefix(Sink.controlPrefix) || request.path == "/_sink" {
            let response = control(request)
            log.debug("sink control", ["method": request.method, "target": request.target,
                                       "status": response.status])
            responder.respond(response)
            return
        }
        let now = Date()
        // Numbered, matched against the rules and recorded in one step: concurrent requests each use up their own
        // share of a rule's `times`, and a request is on record before its answer goes out.
        let (seq, plan, fault): (Int, Plan, String?) = state.withLock { s in
            let seq = s.nextSeq
            s.nextSeq += 1
            var action: SinkFault.Action?
            if let i = s.faults.firstIndex(where: { $0.matches(path: request.path) }) {
                action = s.faults[i].action
                if let left = s.faults[i].times {
                    if left <= 1 { s.faults.remove(at: i) } else { s.faults[i].times = left - 1 }
                }
            }
            let plan = SinkCore.plan(action, seq: seq, now: now, request: request, responder: self.responder)
            s.ring.append(SinkRequest(seq: seq, receivedAt: now, method: request.method, path: request.path,
                                      query: request.query, headers: request.headers, body: request.body,
                                      remoteAddress: request.remoteAddress, status: plan.status, fault: action?.name))
            s.stats.count(path: request.path, status: plan.status)
            s.stats.lastSeq = seq
            return (seq, plan, action?.name)
        }
        if log.enabled(.info) {
            if let fault {
                log.info("sink request", ["seq": seq, "method": request.method, "target": request.target,
                                          "status": plan.status, "fault": fault,
                                          "bytes": request.body.count, "remote": request.remoteAddress])
            } else {
                log.info("sink request", ["seq": seq, "method": request.method, "target": request.target,
                                          "status": plan.status, "bytes": request.body.count,
                                          "remote": request.remoteAddress])
            }
        }
        switch plan {
        case .now(let response): responder.respond(response)
        case .later(let response, let seconds): hold(seq, responder, response, seconds: seconds)
        case .drop: responder.respond(Sink.dropAnswer(seq: seq))
        }
    }

    // MARK: Answers

    /// How `request` is answered: by the fault rule `action` when one applies, else by the provider stand-in
    /// (`responder`) or the sink's 200 `{"ok":true}`. With a stand-in, `slow` holds the stand-in's own answer, and
    /// the error answers a rule gives no body of its own (`status` 4xx/5xx, `retryAfter`, `hang`) are in the
    /// provider's error envelope (`SinkResponder.errorBody`).
    static func plan(_ action: SinkFault.Action?, seq: Int, now: Date, request: HTTPRequest? = nil,
                     responder: (any SinkResponder)? = nil) -> Plan {
        let seqHeader = ("X-Sink-Seq", String(seq))
        /// What the stand-in (or the sink) answers when no rule applies.
        func normal(_ extra: [(String, String)]) -> HTTPResponse {
            guard let responder, let request else { return .json(200, #"{"ok":true}"#, headers: extra) }
            var answer = responder.answer(request)
            answer.headers += extra
            return answer
        }
        /// An error body: the stand-in's envelope for `message`, else the sink's `fallback`.
        func error(_ status: Int, _ message: String, fallback: [String: JSONValue]) -> JSONValue {
            if status >= 400, let body = responder?.errorBody(status: status, message: message) { return body }
            return .object(fallback)
        }
        guard let action else { return .now(normal([seqHeader])) }
        let faultHeader = ("X-Sink-Fault", action.name)
        switch action {
        case .status(let status, let body, let headers):
            return .now(answer(status, body, headers,
                               fallback: error(status, "injected fault: HTTP \(status)",
                                               fallback: ["ok": .bool(false), "error": .string("injected fault"),
                                                          "status": .number(Double(status))]),
                               extra: [seqHeader, faultHeader]))
        case .retryAfter(let status, let seconds, let httpDate, let body, let headers):
            let whole = Int(seconds.rounded(.up))
            let value = httpDate ? Sink.httpDate(now.addingTimeInterval(Double(whole))) : String(whole)
            return .now(answer(status, body, headers,
                               fallback: error(status, "rate limited: retry after \(httpDate ? value : "\(value) s")",
                                               fallback: ["ok": .bool(false), "error": .string("rate limited"),
                                                          "retryAfter": .string(value)]),
                               extra: [("Retry-After", value), seqHeader, faultHeader]))
        case .hang(let seconds, let status):
            return .later(answer(status, nil, [:],
                                 fallback: error(status, "no answer within \(seconds) s: the request timed out",
                                                 fallback: ["ok": .bool(false), "error": .string("hung"),
                                                            "heldSeconds": .number(seconds)]),
                                 extra: [seqHeader, faultHeader]), after: seconds)
        case .slow(let seconds):
            return .later(normal([seqHeader, faultHeader]), after: seconds)
        case .reset:
            return .drop
        case .json(let status, let body, let headers):
            return .now(answer(status, .json(body), headers, fallback: .object([:]), extra: [seqHeader, faultHeader]))
        }
    }

    /// A fault's answer: its body (text or JSON; `fallback` as JSON when it has none), its headers, and `extra`.
    /// The rule's headers win over the defaults (Content-Type, Retry-After).
    static func answer(_ status: Int, _ body: SinkFault.Body?, _ headers: [String: String],
                       fallback: JSONValue, extra: [(String, String)]) -> HTTPResponse {
        let bytes: [UInt8]
        var defaults: [(String, String)]
        switch body {
        case .text(let s):
            bytes = Array(s.utf8)
            defaults = [("Content-Type", "text/plain; charset=utf-8")]
        case .json(let v):
            bytes = Array(v.jsonString().utf8)
            defaults = [("Content-Type", "application/json")]
        case nil:
            bytes = Array(fallback.jsonString().utf8)
            defaults = [("Content-Type", "application/json")]
        }
        defaults += extra
        let given = HTTPHeaders(headers.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
        var out = defaults.filter { given[$0.0] == nil }
        out += given.fields.map { ($0.name, $0.value) }
        return HTTPResponse(status: status, headers: out, body: bytes)
    }

    /// Holds an answer for `seconds` without holding a thread: the server keeps the connection suspended.
    func hold(_ seq: Int, _ responder: any HTTPResponder, _ response: HTTPResponse, seconds: Double) {
        let stopping = state.withLock { s -> Bool in
            if s.stopped { return true }
            s.held[seq] = Held(responder: responder, response: response)
            return false
        }
        if stopping {
            responder.respond(response)
            return
        }
        timers.asyncAfter(deadline: .now() + seconds) { [self] in release(seq) }
    }

    /// Sends a held answer, unless a stop sent it already.
    func release(_ seq: Int) {
        guard let h = state.withLock({ $0.held.removeValue(forKey: seq) }) else { return }
        h.responder.respond(h.response)
    }

    /// Sends every held answer now, and holds none from here on. Returns how many there were.
    func releaseAll() -> Int {
        let held = state.withLock { s in
            s.stopped = true
            let h = s.held
            s.held = [:]
            return h
        }
        for key in held.keys.sorted() { held[key]!.responder.respond(held[key]!.response) }
        return held.count
    }

    // MARK: Control endpoints

    func control(_ request: HTTPRequest) -> HTTPResponse {
        let name = request.path.hasPrefix(Sink.controlPrefix) ? String(request.path.dropFirst(Sink.controlPrefix.count)) : ""
        let methods: [String: [String]] = ["requests": ["GET"], "stats": ["GET"], "faults": ["GET", "POST", "PUT"],
                                           "reset": ["POST"]]
        guard let allowed = methods[name] else {
            return .error(404, "no such sink endpoint", ["endpoints": "GET /_sink/requests, GET /_sink/stats, GET|POST /_sink/faults, POST /_sink/reset"])
        }
        let method = request.method == "HEAD" ? "GET" : request.method
        guard allowed.contains(method) else {
            return HTTPResponse.error(405, "method not allowed", ["allowed": allowed.joined(separator: ", ")])
                .adding(headers: [("Allow", allowed.joined(separator: ", "))])
        }
        switch (method, name) {
        case ("GET", "requests"):
            return listRequests(query: request.query)
        case ("GET", "stats"):
            return .json(200, stats.json.jsonString())
        case ("GET", "faults"):
            let faults = state.withLock { $0.faults }
            return .json(200, JSONValue.object(["faults": .array(faults.map(\.json))]).jsonString())
        case (_, "faults"):
            let faults: [SinkFault]
            do {
                let value = try JSONValue.parse(request.body)
                faults = try SinkFault.list(json: value, at: "faults")
            } catch let e as SinkError {
                return .error(400, e.message)
            } catch {
                return .error(400, "the body is not JSON: \(error)")
            }
            state.withLock { $0.faults = faults }
            log.info("sink faults replaced", ["faults": faults.count])
            return .json(200, JSONValue.object(["ok": .bool(true), "faults": .array(faults.map(\.json))]).jsonString())
        default: // POST reset
            reset()
            log.info("sink reset")
            return .json(200, #"{"ok":true}"#)
        }
    }

    func listRequests(query: String) -> HTTPResponse {
        var path: String?
        var since = 0
        var limit = Int.max
        for item in query.split(separator: "&") where !item.isEmpty {
            let eq = item.firstIndex(of: "=")
            let key = String(eq.map { item[..<$0] } ?? item)
            let raw = eq.map { String(item[item.index(after: $0)...]) } ?? ""
            let value = raw.removingPercentEncoding ?? raw
            switch key {
            case "path": path = value
            case "since":
                guard let n = Int(value), n >= 0 else { return .error(400, "since must be a sequence number (0 or more)") }
                since = n
            case "limit":
                guard let n = Int(value), n >= 0 else { return .error(400, "limit must be a whole number (0 or more)") }
                limit = n
            default:
                return .error(400, "unknown parameter \"\(key)\" (parameters: path, since, limit)")
            }
        }
        let (requests, st): ([SinkRequest], SinkStats) = state.withLock { s in
            var st = s.stats
            st.kept = s.ring.count
            return (s.ring.select(since: since, path: path, limit: limit), st)
        }
        var out = "{\"requests\":["
        for (i, r) in requests.enumerated() {
            if i > 0 { out += "," }
            r.json.write(to: &out)
        }
        out += "],\"lastSeq\":\(st.lastSeq),\"total\":\(st.total),\"kept\":\(st.kept)}"
        return .json(200, out)
    }
}

/// A provider stand-in: checks a request the way the provider documents it (required fields, body encoding,
/// the form of the auth header) and answers in that provider's success and error formats.
public protocol SinkResponder: Sendable {
    func answer(_ request: HTTPRequest) -> HTTPResponse

    /// An error answer's body in the provider's own envelope (`status`: the HTTP status, 400 or more; `message`:
    /// what happened), for the fault rules that answer an error without a body of their own: `status`,
    /// `retryAfter`, and `hang`'s answer once the hold is over. nil (the default): the sink's `{"ok":false,...}`.
    func errorBody(status: Int, message: String) -> JSONValue?
}

extension SinkResponder {
    public func errorBody(status: Int, message: String) -> JSONValue? { nil }
}
