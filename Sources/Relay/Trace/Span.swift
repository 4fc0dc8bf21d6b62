import Foundation

/// One finished span, as exported.
public struct Span: Sendable, Equatable {
    /// OTLP's `Span.SpanKind`.
    public enum Kind: UInt64, Sendable { case `internal` = 1, server = 2, client = 3 }
    /// OTLP's `Status.StatusCode`.
    public enum StatusCode: UInt64, Sendable { case unset = 0, ok = 1, error = 2 }

    public enum Value: Sendable, Equatable {
        case string(String)
        case int(Int64)
        case bool(Bool)
    }

    /// Another trace's span this one belongs to as well (a batched request carries several events).
    public struct Link: Sendable, Equatable {
        public var traceID: TraceID
        public var spanID: UInt64
        public var flags: UInt8
    }

    public var traceID: TraceID
    public var spanID: UInt64
    /// 0: a root span.
    public var parentSpanID: UInt64
    /// The trace flags the span was made under.
    public var flags: UInt8
    /// The parent span was made in another process (the ingest span of a traceparent received with the webhook).
    public var parentIsRemote: Bool
    public var traceState: String?
    public var name: String
    public var kind: Kind
    /// Unix time in nanoseconds.
    public var start: UInt64
    public var end: UInt64
    public var attributes: [(String, Value)]
    public var status: StatusCode = .unset
    public var statusMessage: String?
    public var links: [Link] = []

    public init(traceID: TraceID, spanID: UInt64, parentSpanID: UInt64, flags: UInt8, parentIsRemote: Bool = false,
                traceState: String? = nil, name: String, kind: Kind, start: UInt64, end: UInt64 = 0,
                attributes: [(String, Value)] = []) {
        self.traceID = traceID
        self.spanID = spanID
        self.parentSpanID = parentSpanID
        self.flags = flags
        self.parentIsRemote = parentIsRemote
        self.traceState = traceState
        self.name = name
        self.kind = kind
        self.start = start
        self.end = end
        self.attributes = attributes
    }

    /// A span made in this process as a child of `context`'s span.
    public init(childOf context: TraceContext, spanID: UInt64, name: String, kind: Kind, start: UInt64, end: UInt64 = 0,
                attributes: [(String, Value)] = []) {
        self.init(traceID: context.traceID, spanID: spanID, parentSpanID: context.spanID, flags: context.flags,
                  traceState: context.state, name: name, kind: kind, start: start, end: end, attributes: attributes)
    }

    /// Marks the span failed, with why.
    public mutating func fail(_ message: String) {
        status = .error
        statusMessage = message
    }

    public static func == (a: Span, b: Span) -> Bool {
        a.traceID == b.traceID && a.spanID == b.spanID && a.parentSpanID == b.parentSpanID && a.flags == b.flags
            && a.parentIsRemote == b.parentIsRemote && a.traceState == b.traceState && a.name == b.name && a.kind == b.kind
            && a.start == b.start && a.end == b.end && a.status == b.status && a.statusMessage == b.statusMessage
            && a.links == b.links && a.attributes.elementsEqual(b.attributes) { $0.0 == $1.0 && $0.1 == $1.1 }
    }

    /// Unix time now, in nanoseconds.
    public static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}

/// The OTLP/HTTP protobuf body of an export: `ExportTraceServiceRequest`
/// (opentelemetry-proto: collector/trace/v1/trace_service.proto, trace/v1/trace.proto, common/v1/common.proto,
/// resource/v1/resource.proto), with one resource (`service.name`, `service.version`) and one scope (`relay`).
public enum OTLPTraces {
    public static func exportRequest(_ spans: [Span], serviceName: String, serviceVersion: String = RelayVersion.current) -> [UInt8] {
        var w = ProtobufWriter()
        // ExportTraceServiceRequest.resource_spans = 1
        w.message(1) { rs in
            // ResourceSpans.resource = 1: Resource.attributes = 1
            rs.message(1) { r in
                keyValue(&r, 1, "service.name", .string(serviceName))
                keyValue(&r, 1, "service.version", .string(serviceVersion))
            }
            // ResourceSpans.scope_spans = 2
            rs.message(2) { ss in
                // ScopeSpans.scope = 1: InstrumentationScope.name = 1, version = 2
                ss.message(1) { scope in
                    scope.string(1, "relay")
                    scope.string(2, serviceVersion)
                }
                // ScopeSpans.spans = 2
                for span in spans { ss.message(2) { encode(span, into: &$0) } }
            }
        }
        return w.bytes
    }

    /// trace.v1.Span.
    static func encode(_ s: Span, into w: inout ProtobufWriter) {
        w.bytes(1, s.traceID.bytes)                          // trace_id
        w.bytes(2, TraceHex.bigEndian(s.spanID))             // span_id
        if let state = s.traceState { w.string(3, state) }   // trace_state
        if s.parentSpanID != 0 { w.bytes(4, TraceHex.bigEndian(s.parentSpanID)) }   // parent_span_id
        w.string(5, s.name)                                  // name
        w.uint(6, s.kind.rawValue)                           // kind
        w.fixed64(7, s.start)                                // start_time_unix_nano
        w.fixed64(8, s.end)                                  // end_time_unix_nano
        for (k, v) in s.attributes { keyValue(&w, 9, k, v) }  // attributes
        for link in s.links {                                // links = 13
            w.message(13) { l in
                l.bytes(1, link.traceID.bytes)
                l.bytes(2, TraceHex.bigEndian(link.spanID))
                l.fixed32(6, UInt32(link.flags) | 0x100)
            }
        }
        if s.status != .unset || s.statusMessage != nil {    // status = 15: message = 2, code = 3
            w.message(15) { st in
                if let m = s.statusMessage { st.string(2, m) }
                st.uint(3, s.status.rawValue)
            }
        }
        // flags = 16: the trace flags, and whether the parent is remote (SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE 0x100,
        // SPAN_FLAGS_CONTEXT_IS_REMOTE 0x200).
        w.fixed32(16, UInt32(s.flags) | 0x100 | (s.parentIsRemote ? 0x200 : 0))
    }

    /// common.v1.KeyValue as field `field`: key = 1, value = 2 (AnyValue: string_value = 1, bool_value = 2,
    /// int_value = 3).
    static func keyValue(_ w: inout ProtobufWriter, _ field: Int, _ key: String, _ value: Span.Value) {
        w.message(field) { kv in
            kv.string(1, key)
            kv.message(2) { v in
                switch value {
                case .string(let s): v.string(1, s)
                case .bool(let b): v.bool(2, b)
                case .int(let i): v.int(3, i)
                }
            }
        }
    }
}
