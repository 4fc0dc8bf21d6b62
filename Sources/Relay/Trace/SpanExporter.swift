import Foundation
import Synchronization

/// Sends finished spans to an OTLP/HTTP endpoint (`POST`, `Content-Type: application/x-protobuf`, an
/// `ExportTraceServiceRequest`) from a thread of its own, over an HTTP client of its own.
///
/// Spans wait in a bounded queue: a span that finds it full is dropped and counted
/// (`relay_trace_spans_dropped_total{reason="queue_full"}`), so a collector that is slow or away never holds up a
/// webhook or a delivery. The queue is sent every `interval` seconds, or as soon as `batchSize` spans wait, in
/// requests of at most `batchSize` spans. A failed export (no answer, 408, 429, 5xx) is tried again after 0.5 s,
/// 1 s and 2 s, then dropped (`reason="export_failed"`); another refusal (other 4xx) drops at once. `shutdown`
/// sends what is queued before it returns (within its timeout).
public final class SpanExporter: Sendable {
    public static let batchSize = 512
    public static let maxQueue = 4096
    static let backoff: [Double] = [0.5, 1, 2]

    private struct State {
        var queue: [Span] = []
        var stopping = false
        var deadline = Double.infinity
    }

    let settings: OTLPSettings
    let interval: Double
    private let client: HTTPClient
    private let log: Logger
    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)
    private let done = DispatchSemaphore(value: 0)
    /// Signalled once by `shutdown`: cuts a retry's pause short.
    private let stopped = DispatchSemaphore(value: 0)
    private let exported: Metrics.Counter
    private let droppedFull: Metrics.Counter
    private let droppedFailed: Metrics.Counter
    /// When the last failure was logged (the exporter's thread only: logged at most once a minute).
    private let lastFailureLog = Mutex<Double>(-.infinity)

    public init(settings: OTLPSettings, client options: HTTPClientOptions, log: Logger, metrics: Metrics,
                interval: Double = 1) throws {
        self.settings = settings
        self.interval = interval
        self.log = log
        var o = options
        o.maxConnectionsPerHost = 2
        o.maxTotalConnections = 2
        client = try HTTPClient(options: o)
        exported = metrics.counter("relay_trace_spans_exported_total")
        droppedFull = metrics.counter("relay_trace_spans_dropped_total", ["reason": "queue_full"])
        droppedFailed = metrics.counter("relay_trace_spans_dropped_total", ["reason": "export_failed"])
        let t = Thread { [self] in self.run() }
        t.name = "relay-otlp"
        t.start()
    }

    /// Queues a span (any thread; never blocks on the network).
    public func enqueue(_ span: Span) {
        let (accepted, full) = state.withLock { s -> (Bool, Bool) in
            guard !s.stopping || s.deadline > Self.clock(), s.queue.count < Self.maxQueue else { return (false, false) }
            s.queue.append(span)
            return (true, s.queue.count == Self.batchSize)
        }
        if !accepted { droppedFull.increment() }
        if full { wake.signal() }
    }

    /// Sends what is queued (for up to `timeout` seconds), then stops the thread and the client. Spans that arrive
    /// meanwhile are still taken until the deadline.
    public func shutdown(timeout: Double) {
        state.withLock { s in
            s.stopping = true
            s.deadline = Self.clock() + max(0, timeout)
        }
        wake.signal()
        stopped.signal()
        _ = done.wait(timeout: .now() + max(0, timeout) + 2)
        client.shutdown(timeout: 0)
    }

    static func clock() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    private func run() {
        nameThisThread("relay-otlp")
        var nextFlush = Self.clock() + interval
        while true {
            let wait = max(0, nextFlush - Self.clock())
            _ = wake.wait(timeout: .now() + .microseconds(Int(wait * 1_000_000)))
            while true {
                let now = Self.clock()
                let (batch, stopping, deadline) = state.withLock { s -> ([Span], Bool, Double) in
                    guard s.queue.count >= Self.batchSize || now >= nextFlush || s.stopping else { return ([], s.stopping, s.deadline) }
                    let n = min(Self.batchSize, s.queue.count)
                    let batch = Array(s.queue.prefix(n))
                    s.queue.removeFirst(n)
                    return (batch, s.stopping, s.deadline)
                }
                if stopping && (batch.isEmpty || now >= deadline) {
                    if !batch.isEmpty { droppedFailed.increment(by: batch.count) }
                    let left = state.withLock { s -> Int in
                        defer { s.queue.removeAll() }
                        return s.queue.count
                    }
                    if left > 0 { droppedFailed.increment(by: left) }
                    done.signal()
                    return
                }
                if batch.isEmpty { break }
                export(batch, deadline: stopping ? deadline : .infinity)
                if batch.count < Self.batchSize && !stopping { break }
            }
            if Self.clock() >= nextFlush { nextFlush = Self.clock() + interval }
        }
    }

    /// One batch, tried up to four times; true when the endpoint took it.
    @discardableResult
    func export(_ spans: [Span], deadline: Double) -> Bool {
        var request = OutboundRequest(method: "POST", url: settings.endpoint,
                                      headers: [("Content-Type", "application/x-protobuf")],
                                      body: OTLPTraces.exportRequest(spans, serviceName: settings.serviceName),
                                      connectTimeout: min(5, settings.timeout), totalTimeout: settings.timeout)
        for name in settings.headers.keys.sorted() { request.headers.append((name, settings.headers[name]!)) }
        var failure = ""
        for attempt in 0...Self.backoff.count {
            var retryable = true
            switch client.sendAndWait(request) {
            case .success(let r) where (200..<300).contains(r.status):
                exported.increment(by: spans.count)
                return true
            case .success(let r):
                failure = "HTTP \(r.status)"
                retryable = r.status == 408 || r.status == 429 || (500..<600).contains(r.status)
            case .failure(let e):
                failure = e.description
                retryable = e.isRetryable
            }
            guard retryable, attempt < Self.backoff.count else { break }
            let pause = Self.backoff[attempt]
            // A stop that comes meanwhile bounds the retries by its deadline.
            let limit = min(deadline, state.withLock { $0.stopping ? $0.deadline : .infinity })
            if Self.clock() + pause >= limit { break }
            if stopped.wait(timeout: .now() + .milliseconds(Int(pause * 1000))) == .success {
                stopped.signal()   // stays signalled for the rest of the stop
                if Self.clock() + 0.1 >= state.withLock({ $0.deadline }) { break }
            }
        }
        droppedFailed.increment(by: spans.count)
        let now = Self.clock()
        let logIt = lastFailureLog.withLock { last -> Bool in
            guard now - last >= 60 else { return false }
            last = now
            return true
        }
        if logIt {
            log.warn("trace export failed: spans dropped", ["endpoint": Self.shown(settings.endpoint), "spans": spans.count,
                                                            "error": failure])
        }
        return false
    }

    /// The endpoint as a log shows it: scheme, host, port and path, never userinfo or a query.
    static func shown(_ url: String) -> String {
        var u = url
        if let q = u.firstIndex(where: { $0 == "?" || $0 == "#" }) { u = String(u[..<q]) }
        if let scheme = u.range(of: "://") {
            let rest = u[scheme.upperBound...]
            let authorityEnd = rest.firstIndex(of: "/") ?? rest.endIndex
            if let at = rest[..<authorityEnd].lastIndex(of: "@") {
                u = String(u[..<scheme.upperBound]) + String(rest[rest.index(after: at)...])
            }
        }
        return u
    }
}

extension Metrics.Counter {
    public func increment(by n: Int) { count.add(n, ordering: .relaxed) }
}
