import Crypto
import Foundation

/// `tracing:` in the configuration. Without it nothing is exported, but trace context is still taken from inbound
/// webhooks (or started) and sent on every delivery attempt.
public struct TracingSettings: Sendable, Equatable {
    /// Where spans are exported (OTLP/HTTP, protobuf); nil: nowhere.
    public var otlp: OTLPSettings?
    /// The share of new traces (webhooks that came without a `traceparent`) that are sampled: exported and sent
    /// with the sampled flag. A received trace keeps its sender's decision.
    public var sampleRatio: Double = 1

    public init(otlp: OTLPSettings? = nil, sampleRatio: Double = 1) {
        self.otlp = otlp
        self.sampleRatio = sampleRatio
    }
}

/// `tracing.otlp`: an OTLP/HTTP traces endpoint.
public struct OTLPSettings: Sendable, Equatable {
    public static let defaultEndpoint = "http://127.0.0.1:4318/v1/traces"
    public var endpoint: String = OTLPSettings.defaultEndpoint
    /// Sent with every export (credentials of a hosted collector: `${env:...}`); never logged.
    public var headers: [String: String] = [:]
    /// The resource's `service.name`.
    public var serviceName: String = "relay"
    /// Seconds one export request may take.
    public var timeout: Double = 10

    public init(endpoint: String = OTLPSettings.defaultEndpoint, headers: [String: String] = [:],
                serviceName: String = "relay", timeout: Double = 10) {
        self.endpoint = endpoint
        self.headers = headers
        self.serviceName = serviceName
        self.timeout = timeout
    }
}

/// Makes trace context and ids, decides sampling, and hands finished spans to the exporter (when there is one).
/// Thread-safe; one per service, shared by ingest and the dispatcher.
public final class Tracer: Sendable {
    public let exporter: SpanExporter?
    /// `sampleRatio` as a threshold on a trace id's lower 63 bits (OpenTelemetry's TraceIdRatioBased).
    private let threshold: UInt64

    /// Propagation only: ids are made and sent, nothing is exported.
    public static let disabled = Tracer(sampleRatio: 0, exporter: nil)

    public init(sampleRatio: Double, exporter: SpanExporter?) {
        self.exporter = exporter
        let ratio = min(1, max(0, sampleRatio))
        threshold = exporter == nil ? 0 : ratio >= 1 ? UInt64.max : UInt64(ratio * Double(UInt64(1) << 63))
    }

    /// Whether spans of `context` are exported.
    public func records(_ context: TraceContext) -> Bool { exporter != nil && context.sampled }

    /// Whether anything is exported at all.
    public var exporting: Bool { exporter != nil }

    /// A new span id (random, never 0).
    public func spanID() -> UInt64 { RandomPool.shared.nonZero() }

    /// A new trace, sampled by `sampleRatio` (never sampled without an exporter). Its `spanID` is the root span's.
    public func newTrace(spanID: UInt64? = nil) -> TraceContext {
        let id = TraceID.random()
        let sampled = threshold == UInt64.max || (id.low >> 1) < threshold
        return TraceContext(traceID: id, spanID: spanID ?? self.spanID(), flags: sampled ? 1 : 0)
    }

    /// The ingest span of a webhook: its context (the span id is the new ingest span's; deliveries are its
    /// children), and its parent: the `traceparent`'s parent id, or 0 when the header was absent or invalid and a
    /// new trace was started.
    public func ingest(_ headers: HTTPHeaders) -> (context: TraceContext, parent: UInt64) {
        let parents = headers.values(of: "traceparent")
        let span = spanID()
        if parents.count == 1, let p = Traceparent.parse(parents[0]) {
            let states = headers.values(of: "tracestate")
            let state: String? = states.isEmpty ? nil : states.joined(separator: ",")
            return (TraceContext(traceID: p.traceID, spanID: span, flags: p.flags, state: Traceparent.state(state)), p.parentID)
        }
        return (newTrace(spanID: span), 0)
    }

    /// Queues a finished span for export when its trace is sampled and there is an exporter.
    public func record(_ span: Span) {
        guard let exporter, span.flags & 0x01 != 0 else { return }
        exporter.enqueue(span)
    }
}
