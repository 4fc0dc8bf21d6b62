import Crypto
import Foundation
import Synchronization

/// The inbound path of a webhook: find the source, verify, parse, normalise, deduplicate and commit, and only
/// then answer. Runs on the server's threads; the answer is sent from the store's thread once durable.
public final class Ingest: Sendable {
    let router: Router
    let store: any EventStore
    let log: Logger
    /// How each destination queues (its delivery policy's ordering), stored with each delivery.
    let disciplines: [String: QueueDiscipline]
    /// Where each source's events link their identifiers.
    let correlation: CorrelationSettings

    let metrics: Metrics?
    /// Trace context from the webhook's `traceparent` (or a new trace), and the ingest span when exported.
    let tracer: Tracer
    /// Each source's hot-path counters, looked up once here rather than by name and labels on every webhook.
    private let counters: [String: SourceCounters]
    /// The sources, each behind a reference: a webhook's lookup retains one object instead of copying the settings
    /// (a retain and a release for each of their fields).
    private let boxes: [String: SourceBox]

    final class SourceBox: Sendable {
        let settings: SourceSettings
        init(_ settings: SourceSettings) { self.settings = settings }
    }

    struct SourceCounters: Sendable {
        let received: Metrics.Counter
        let committed: Metrics.Counter
    }

    public init(sources: [String: SourceSettings], router: Router = Router(routes: []), store: any EventStore, log: Logger,
                metrics: Metrics? = nil, disciplines: [String: QueueDiscipline] = [:],
                correlation: CorrelationSettings = CorrelationSettings(), tracer: Tracer = .disabled) {
        self.tracer = tracer
        self.disciplines = disciplines
        self.correlation = correlation
        self.metrics = metrics
        self.counters = metrics.map { m in
            sources.mapValues { s in
                SourceCounters(received: m.counter("relay_webhooks_received_total", ["source": s.name]),
                               committed: m.counter("relay_events_committed_total", ["source": s.name]))
            }
        } ?? [:]
        self.boxes = sources.mapValues(SourceBox.init)
        self.router = router
        self.store = store
        self.log = log
    }

    static let hooksPrefix = "/v1/hooks/"

    /// Answers, from the request line alone and before any body is read, what will be refused whatever the body:
    /// an unknown path or source (404), a method other than GET, HEAD, POST, PUT (405). Nil lets the body come.
    public func preflight(method: String, path: String, requestID given: @autoclosure () -> String?) -> HTTPResponse? {
        if path == "/healthz" { return nil }
        let refusal: HTTPResponse
        var name = ""
        if !path.hasPrefix(Self.hooksPrefix) {
            refusal = .error(404, "not found")
        } else {
            name = Self.sourceName(path)
            if boxes[name] == nil {
                refusal = .error(404, "unknown source")
            } else if ["GET", "HEAD", "POST", "PUT"].contains(method) {
                return nil
            } else {
                refusal = HTTPResponse.error(405, "method not allowed").adding(headers: [("Allow", "GET, HEAD, POST, PUT")])
            }
        }
        let requestID = Self.requestID(given: given())
        if refusal.status == 404 && !name.isEmpty {
            log.warn("unknown source", ["requestId": requestID, "source": String(name.prefix(100))])
        }
        return refusal.adding(headers: [("X-Request-Id", requestID)])
    }

    /// The source named by a path under `hooksPrefix` (percent-decoded; "" when that fails).
    static func sourceName(_ path: String) -> String {
        let rest = path.utf8.dropFirst(hooksPrefix.utf8.count)
        let name = String(decoding: rest, as: UTF8.self)
        return rest.contains(UInt8(ascii: "%")) ? (name.removingPercentEncoding ?? "") : name
    }

    /// The server's handler: `/v1/hooks/{source}` and `/healthz`; everything else is 404.
    public func handle(_ request: HTTPRequest, _ responder: any HTTPResponder) {
        let requestID = Self.requestID(request)
        let idHeader = [("X-Request-Id", requestID)]
        if request.path == "/healthz" {
            responder.respond(.json(200, "{\"status\":\"ok\"}", headers: idHeader))
            return
        }
        guard request.path.hasPrefix(Self.hooksPrefix) else {
            responder.respond(withID(.error(404, "not found"), requestID))
            return
        }
        let name = Self.sourceName(request.path)
        guard let box = boxes[name] else {
            log.warn("unknown source", ["requestId": requestID, "source": String(name.prefix(100)), "remote": request.remoteAddress])
            responder.respond(withID(.error(404, "unknown source"), requestID))
            return
        }
        switch request.method {
        case "GET", "HEAD":
            // Providers (Punchh among them) probe the URL before they send.
            responder.respond(.json(200, "{\"status\":\"ok\",\"source\":\(Self.quoted(name))}", headers: idHeader))
            return
        case "POST", "PUT":
            break
        default:
            responder.respond(withID(.error(405, "method not allowed"), requestID, [("Allow", "GET, HEAD, POST, PUT")]))
            return
        }
        let now = Date()
        let counters = self.counters[name]
        counters?.received.increment()
        // The ingest span: a child of the sender's traceparent, or the root of a new trace. Only an exported trace
        // pays for the span itself (a responder that records it when the answer goes out).
        let (trace, parentSpan) = tracer.ingest(request.headers)
        var traced: IngestSpanResponder?
        if tracer.records(trace) {
            traced = IngestSpanResponder(responder, tracer: tracer, span: Span(
                traceID: trace.traceID, spanID: trace.spanID, parentSpanID: parentSpan, flags: trace.flags,
                parentIsRemote: parentSpan != 0, traceState: trace.state, name: "\(request.method) /v1/hooks/{source}",
                kind: .server, start: Span.now(),
                attributes: [("relay.source", .string(name)), ("http.request.method", .string(request.method)),
                             ("url.path", .string(request.path))]))
        }
        let responder: any HTTPResponder = traced ?? responder
        switch box.settings.verifier.verify(request, now: now) {
        case .rejected(let reason):
            metrics?.increment("relay_webhooks_rejected_total", ["source": name, "reason": "unauthorized"])
            log.warn("signature rejected", ["requestId": requestID, "source": name, "scheme": box.settings.verifier.scheme,
                                            "reason": reason, "remote": request.remoteAddress])
            responder.respond(withID(.error(401, "unauthorized", ["reason": reason]), requestID))
            return
        case .verified(let verified):
            accept(request, source: box.settings, verified: verified, now: now, requestID: requestID, committedCounter: counters?.committed,
               responder: responder, trace: trace, traced: traced)
        }
    }

    private func accept(_ request: HTTPRequest, source: borrowing SourceSettings, verified: VerifiedRequest, now: Date,
                        requestID: String, committedCounter: Metrics.Counter?, responder: any HTTPResponder,
                        trace: TraceContext, traced: IngestSpanResponder?) {
        let name = source.name   // the closure below keeps the name only, not a copy of the settings
        let reject = { (status: Int, message: String, reason: String) in
            self.log.warn("webhook refused", ["requestId": requestID, "source": name, "status": status,
                                              "reason": reason])
            responder.respond(self.withID(.error(status, message, ["reason": reason]), requestID))
        }
        let contentType = request.headers["Content-Type"] ?? ""
        let payload: LazyPayload
        switch Self.parse(request.body, contentType: contentType) {
        case .failure(let e):
            metrics?.increment("relay_webhooks_rejected_total", ["source": source.name, "reason": e.status == 415 ? "unsupported" : "unparsable"])
            reject(e.status, e.status == 415 ? "unsupported media type" : "unparsable body", e.reason)
            return
        case .success(let p):
            payload = p
        }
        let webhook = InboundWebhook(source: source.name, request: request, contentType: contentType, payload: payload,
                                     receivedAt: now, verified: verified)
        let normalized: NormalizedEvent
        do {
            normalized = try source.adapter.normalize(webhook)
        } catch {
            metrics?.increment("relay_webhooks_rejected_total", ["source": source.name, "reason": "unnormalizable"])
            reject(error.status, "cannot normalise webhook", error.reason)
            return
        }
        // A provider status that no map covers: seen (a warning with the raw value, a counter by source) and
        // either kept, marked so that the admin API lists it (status=unmapped), or refused (unmappedStatus: refuse).
        let unmapped = normalized.status == nil && normalized.providerStatus != nil
        if unmapped, let raw = normalized.providerStatus?.code {
            metrics?.increment("relay_unmapped_statuses_total", ["source": source.name])
            if source.unmappedStatus == .refuse {
                metrics?.increment("relay_webhooks_rejected_total", ["source": source.name, "reason": "unmapped_status"])
                reject(422, "unmapped status", "the status \(Self.quoted(String(raw.prefix(200)))) is not in the source's statusMap (unmappedStatus: refuse)")
                return
            }
            log.warn("unmapped status", ["requestId": requestID, "source": source.name, "providerStatus": raw,
                                         "hint": "add it to the source's statusMap, or to statuses: { ... } with a fallback"])
        }
        let key = Self.idempotencyKey(request: request, payload: payload, source: source, normalized: normalized,
                                      verified: verified)
        let event = CanonicalEvent(
            id: EventID.make(), source: source.name, type: normalized.type, subject: normalized.subject,
            status: normalized.status, providerStatus: normalized.providerStatus, occurredAt: normalized.occurredAt,
            receivedAt: Timestamp.iso8601(now), attributes: normalized.attributes, idempotencyKey: key,
            raw: RawPayload(contentType: contentType, bytes: request.body),
            statusFallback: normalized.status.flatMap(source.statuses.fallback(of:)),
            statusUnmapped: unmapped ? true : nil, trace: trace)
        let log = self.log
        let destinations = router.destinations(for: event)
        // The completion runs on the store's flush thread, once per event: it captures only what it uses (not the
        // event, its body or the source's settings, which would all be retained and released there).
        let sourceName = source.name
        let info = log.enabled(.info)
            ? (type: event.type, status: event.storedStatus ?? "", destinations: destinations.joined(separator: ","),
               traceId: trace.traceID.description)
            : nil
        let metrics = self.metrics
        let planned = destinations.map { PlannedDelivery($0, disciplines[$0] ?? .unordered) }
        let link = correlation.link(source: sourceName, subject: event.subject)
        // The event's last use here: it moves into the store's queue rather than being copied there.
        store.commit(consume event, deliveries: planned, link: link) { result in
            switch result {
            case .success(.inserted(let id)):
                committedCounter?.increment()
                if let info {
                    log.info("webhook accepted", ["requestId": requestID, "source": sourceName, "eventId": id,
                                                  "type": info.type, "status": info.status,
                                                  "destinations": info.destinations, "traceId": info.traceId])
                }
                let answer = HTTPResponse.json(202, "{\"eventId\":\"\(id)\"}", headers: [("X-Request-Id", requestID)])
                if let traced { traced.respond(answer, eventID: id) } else { responder.respond(answer) }
            case .success(.duplicate(let id)):
                metrics?.increment("relay_webhooks_duplicate_total", ["source": sourceName])
                log.info("duplicate webhook", ["requestId": requestID, "source": sourceName, "eventId": id])
                let answer = HTTPResponse.json(200, "{\"eventId\":\"\(id)\",\"duplicate\":true}",
                                               headers: [("X-Request-Id", requestID)])
                if let traced { traced.respond(answer, eventID: id, duplicate: true) } else { responder.respond(answer) }
            case .failure(let error):
                metrics?.increment("relay_store_failures_total", ["source": sourceName])
                log.error("store commit failed", ["requestId": requestID, "source": sourceName, "error": error.description])
                responder.respond(.json(503, "{\"error\":\"store unavailable\",\"reason\":\"the event could not be stored durably; retry later\"}",
                                        headers: [("X-Request-Id", requestID), ("Retry-After", "5")]))
            }
        }
    }

    private func withID(_ r: HTTPResponse, _ requestID: String, _ extra: [(String, String)] = []) -> HTTPResponse {
        var r = r
        r.headers.append(("X-Request-Id", requestID))
        r.headers += extra
        return r
    }

    /// The caller's `X-Request-Id` when it is short and plain, else a new one.
    static func requestID(_ request: HTTPRequest) -> String { requestID(given: request.headers["X-Request-Id"]) }

    static func requestID(given: String?) -> String {
        if let given, !given.isEmpty, given.utf8.count <= 128,
           given.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) {
            return given
        }
        return requestIDPrefix + String(requestCounter.add(1, ordering: .relaxed).newValue, radix: 36)
    }

    /// New request ids: a random per-process prefix and a counter (no random draw per request).
    static let requestIDPrefix = "req_" + ByteEncoding.hex(SecureRandom.bytes(5)) + "_"
    static let requestCounter = Atomic<UInt64>(0)

    static func quoted(_ s: String) -> String {
        var out = ""
        Logger.appendQuoted(s, to: &out)
        return out
    }

    struct ParseError: Error {
        let status: Int
        let reason: String
    }

    /// JSON (`application/json`, `*/*+json`) or form (`application/x-www-form-urlencoded`) bodies; a body without a
    /// Content-Type is taken as JSON when it parses as JSON. JSON is only validated here; the tree is built when an
    /// adapter or an idempotency rule reads it.
    static func parse(_ body: [UInt8], contentType: String) -> Result<LazyPayload, ParseError> {
        let media = mediaType(contentType)
        if body.isEmpty { return .failure(ParseError(status: 400, reason: "empty body")) }
        let isJSON = media == "application/json" || media == "text/json" || (media.hasPrefix("application/") && media.hasSuffix("+json"))
        if isJSON || media.isEmpty {
            do {
                try JSONParser.validate(body)
                return .success(LazyPayload(kind: .json, validatedBytes: body))
            } catch {
                if media.isEmpty {
                    return .failure(ParseError(status: 415, reason: "no Content-Type and the body is not JSON"))
                }
                return .failure(ParseError(status: 400, reason: "body is not valid JSON: \(error)"))
            }
        }
        if media == "application/x-www-form-urlencoded" {
            guard let fields = parseForm(body) else {
                return .failure(ParseError(status: 400, reason: "body is not valid form encoding"))
            }
            return .success(LazyPayload(.form(fields)))
        }
        return .failure(ParseError(status: 415, reason: "Content-Type \(media) is not accepted (JSON or form)"))
    }

    /// A Content-Type's media type: before any `;`, without surrounding spaces and tabs, in lower case.
    static func mediaType(_ contentType: String) -> String {
        let u = contentType.utf8
        let end = u.firstIndex(of: UInt8(ascii: ";")) ?? u.endIndex
        var lo = u.startIndex, hi = end
        while lo < hi, u[lo] == 0x20 || u[lo] == 0x09 { lo = u.index(after: lo) }
        while lo < hi, u[u.index(before: hi)] == 0x20 || u[u.index(before: hi)] == 0x09 { hi = u.index(before: hi) }
        let media = u[lo..<hi]
        if media.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) {
            return String(decoding: media.map { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") ? $0 | 0x20 : $0 }, as: UTF8.self)
        }
        return String(decoding: media, as: UTF8.self)
    }

    public static func parseForm(_ body: [UInt8]) -> [(String, String)]? {
        guard let text = String(validating: body, as: UTF8.self) else { return nil }
        var fields: [(String, String)] = []
        for pair in text.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String? { s.replacingOccurrences(of: "+", with: " ").removingPercentEncoding }
            guard let k = decode(parts[0]), let v = parts.count > 1 ? decode(parts[1]) : "" else { return nil }
            fields.append((k, v))
        }
        return fields
    }

    /// Source config first, then the adapter's event id, then the scheme's message id, then the body's hash.
    static func idempotencyKey(request: HTTPRequest, payload: LazyPayload, source: borrowing SourceSettings,
                               normalized: NormalizedEvent, verified: VerifiedRequest) -> String {
        func apply(_ rule: IdempotencyRule) -> String? {
            switch rule {
            case .header(let names): return request.headers.first(of: names).map(\.value).flatMap { $0.isEmpty ? nil : $0 }
            case .field(let path): return payload.value.json.value(atPath: path)?.scalarText.flatMap { $0.isEmpty ? nil : $0 }
            case .bodyHash: return nil
            }
        }
        if let rule = source.idempotency {
            if let k = apply(rule) { return k }
        } else {
            if let k = normalized.idempotencyKey, !k.isEmpty { return k }
            if let rule = source.verifier.defaultIdempotency, let k = apply(rule) { return k }
        }
        return "sha256:" + ByteEncoding.hex(Digest.sha256(request.body))
    }
}

/// Answers a webhook and then records its ingest span: ended as the answer goes out (after the durable commit for
/// a 2xx), with the status, the event id when there is one, and an error status for a 4xx or 5xx answer.
final class IngestSpanResponder: HTTPResponder {
    let inner: any HTTPResponder
    let tracer: Tracer
    let span: Span

    init(_ inner: any HTTPResponder, tracer: Tracer, span: Span) {
        self.inner = inner
        self.tracer = tracer
        self.span = span
    }

    func respond(_ response: HTTPResponse) { respond(response, eventID: nil) }

    func respond(_ response: HTTPResponse, eventID: String?, duplicate: Bool = false) {
        let end = Span.now()
        inner.respond(response)
        var s = span
        s.end = end
        if let eventID { s.attributes.append(("relay.event_id", .string(eventID))) }
        if duplicate { s.attributes.append(("relay.duplicate", .bool(true))) }
        s.attributes.append(("http.response.status_code", .int(Int64(response.status))))
        if response.status >= 400 {
            // The answer's own words: {"error": ..., "reason": ...} (what the sender is told, never a secret).
            let o = (try? JSONParser.parse(response.body))?.objectValue
            let error = o?["error"]?.stringValue ?? "HTTP \(response.status)"
            s.fail(o?["reason"]?.stringValue.map { "\(error): \($0)" } ?? error)
            s.attributes.append(("error.type", .string(String(response.status))))
        }
        tracer.record(s)
    }
}
