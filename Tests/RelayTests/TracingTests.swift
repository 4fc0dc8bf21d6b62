import Adapters
import Foundation
@testable import Relay
import Simulator
import Testing

/// Tracing: W3C `traceparent` read as the specification says, the protobuf encoder against bytes worked out by
/// hand, the `tracing:` configuration's problems, the trace context kept apart from what destinations receive, and
/// an in-process relay that propagates trace context and exports its spans (the interop suite decodes them with
/// PyPI's opentelemetry-proto: Tests/interop/test_tracing.py).
@Suite("Tracing")
struct TracingTests {
    static let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    // MARK: traceparent

    @Test("a valid traceparent: ids and flags; written back the same")
    func parsesValid() throws {
        let p = try #require(Traceparent.parse(Self.valid))
        #expect(p.traceID == TraceID(high: 0x4bf92f3577b34da6, low: 0xa3ce929d0e0e4736))
        #expect(p.traceID.description == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(p.parentID == 0x00f067aa0ba902b7)
        #expect(p.flags == 1)
        #expect(TraceContext(traceID: p.traceID, spanID: p.parentID, flags: p.flags).traceparent == Self.valid)
        #expect(Traceparent.parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")?.flags == 0)
        // Unknown flags are read, and not propagated: only `sampled` is kept.
        let other = try #require(Traceparent.parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09"))
        #expect(other.flags == 9)
        #expect(TraceContext(traceID: other.traceID, spanID: 1, flags: other.flags).traceparent.hasSuffix("-01"))
        // Spaces or tabs around the value are not part of it.
        #expect(Traceparent.parse(" \t" + Self.valid + " ") != nil)
    }

    @Test("invalid: version ff, non-hex or uppercase, all-zero ids, wrong lengths, misplaced dashes", arguments: [
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",      // version ff is invalid
        "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",      // version not hex
        "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",      // version uppercase
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",      // trace id uppercase
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",      // parent id uppercase
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",      // flags uppercase
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",      // all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",      // all-zero parent id
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",       // trace id of 31
        "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",     // trace id of 33
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",       // parent id of 15
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b77-01",     // parent id of 17
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",       // flags of 1
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",     // flags of 3
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",     // version 00 has nothing after the flags
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",      // not a dash
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",         // no version
        "", "00", "00-",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what", // a future version: a dash or the end after the flags
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",       // a future version still has 55 characters
        "cc-00000000000000000000000000000000-00f067aa0ba902b7-01-x",    // ... and the same rules for the ids
    ])
    func rejectsInvalid(_ header: String) {
        #expect(Traceparent.parse(header) == nil, "\(header)")
    }

    @Test("a future version: its first four fields, whatever follows a dash after the flags")
    func futureVersions() throws {
        for header in ["01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                       "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like",
                       "fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-"] {
            let p = try #require(Traceparent.parse(header), "\(header)")
            #expect(p.traceID.description == "4bf92f3577b34da6a3ce929d0e0e4736")
            #expect(p.parentID == 0x00f067aa0ba902b7)
            // Sent on as version 00.
            #expect(TraceContext(traceID: p.traceID, spanID: p.parentID, flags: p.flags).traceparent.hasPrefix("00-4bf92f"))
        }
    }

    @Test("tracestate: kept verbatim up to 512 characters, only beside a valid traceparent; several headers joined")
    func tracestate() throws {
        let tracer = Tracer.disabled
        let state = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
        var (context, parent) = tracer.ingest(HTTPHeaders([("traceparent", Self.valid), ("tracestate", state)]))
        #expect(context.traceID.description == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(parent == 0x00f067aa0ba902b7)
        #expect(context.spanID != parent && context.spanID != 0)
        #expect(context.state == state)
        #expect(context.sampled)
        (context, _) = tracer.ingest(HTTPHeaders([("TraceParent", Self.valid), ("tracestate", "a=1"), ("Tracestate", "b=2")]))
        #expect(context.state == "a=1,b=2")
        let long = "k=" + String(repeating: "v", count: 510)
        #expect(tracer.ingest(HTTPHeaders([("traceparent", Self.valid), ("tracestate", long)])).context.state == long)
        #expect(tracer.ingest(HTTPHeaders([("traceparent", Self.valid), ("tracestate", long + "v")])).context.state == nil)
        // No (valid) traceparent: a new trace, and its tracestate is not the sender's.
        (context, parent) = tracer.ingest(HTTPHeaders([("traceparent", "00-xyz"), ("tracestate", state)]))
        #expect(parent == 0)
        #expect(context.state == nil)
        #expect(context.traceID.description != "4bf92f3577b34da6a3ce929d0e0e4736")
        // Two traceparent headers: which one is meant is unknown, so neither.
        let twice = tracer.ingest(HTTPHeaders([("traceparent", Self.valid), ("traceparent", Self.valid)]))
        #expect(twice.parent == 0)
    }

    @Test("new traces: random valid ids; not sampled without an exporter; sampleRatio decides with one")
    func newTraces() throws {
        let a = Tracer.disabled.newTrace(), b = Tracer.disabled.newTrace()
        #expect(a.traceID != b.traceID && a.traceID.isValid && a.spanID != 0)
        #expect(!a.sampled && !b.sampled)
        let metrics = Metrics()
        let exporter = try SpanExporter(settings: OTLPSettings(endpoint: "http://127.0.0.1:9/v1/traces"), client: .init(),
                                        log: Logger(level: .error), metrics: metrics)
        defer { exporter.shutdown(timeout: 0) }
        #expect((0..<50).allSatisfy { _ in Tracer(sampleRatio: 1, exporter: exporter).newTrace().sampled })
        #expect((0..<50).allSatisfy { _ in !Tracer(sampleRatio: 0, exporter: exporter).newTrace().sampled })
        let half = Tracer(sampleRatio: 0.5, exporter: exporter)
        let sampled = (0..<2000).filter { _ in half.newTrace().sampled }.count
        #expect(sampled > 800 && sampled < 1200, "\(sampled) of 2000")
        // A received decision is kept, whatever the ratio.
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        #expect(!Tracer(sampleRatio: 1, exporter: exporter).ingest(HTTPHeaders([("traceparent", unsampled)])).context.sampled)
        #expect(Tracer(sampleRatio: 0, exporter: exporter).ingest(HTTPHeaders([("traceparent", Self.valid)])).context.sampled)
    }

    // MARK: protobuf

    @Test("varints, tags, fixed and length-delimited fields, byte for byte")
    func protobufPrimitives() {
        func varint(_ v: UInt64) -> [UInt8] { var w = ProtobufWriter(); w.varint(v); return w.bytes }
        #expect(varint(0) == [0x00])
        #expect(varint(1) == [0x01])
        #expect(varint(127) == [0x7f])
        #expect(varint(128) == [0x80, 0x01])
        #expect(varint(300) == [0xac, 0x02])                 // 300 = 0b10_0101100
        #expect(varint(UInt64.max) == Array(repeating: 0xff, count: 9) + [0x01])

        var w = ProtobufWriter()
        w.uint(1, 150)                                       // the encoding guide's example: 08 96 01
        #expect(w.bytes == [0x08, 0x96, 0x01])
        w = ProtobufWriter()
        w.string(2, "testing")                               // 12 07 74 65 73 74 69 6e 67
        #expect(w.bytes == [0x12, 0x07] + Array("testing".utf8))
        w = ProtobufWriter()
        w.message(3) { $0.uint(1, 150) }                     // 1a 03 08 96 01
        #expect(w.bytes == [0x1a, 0x03, 0x08, 0x96, 0x01])
        w = ProtobufWriter()
        w.int(3, -1)                                         // two's complement: ten bytes
        #expect(w.bytes == [0x18] + Array(repeating: 0xff, count: 9) + [0x01])
        w = ProtobufWriter()
        w.fixed64(7, 0x0102030405060708)                     // field 7, wire type 1: 0x39; little-endian
        #expect(w.bytes == [0x39, 0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01])
        w = ProtobufWriter()
        w.fixed32(16, 0x301)                                 // field 16, wire type 5: (16 << 3) | 5 = 133 = 85 01
        #expect(w.bytes == [0x85, 0x01, 0x01, 0x03, 0x00, 0x00])
        w = ProtobufWriter()
        w.bool(2, true)
        w.bytes(4, [])
        #expect(w.bytes == [0x10, 0x01, 0x22, 0x00])
        w = ProtobufWriter()
        w.string(1, String(repeating: "a", count: 200))      // a length of two varint bytes: c8 01
        #expect(Array(w.bytes.prefix(3)) == [0x0a, 0xc8, 0x01] && w.bytes.count == 203)
    }

    @Test("an attribute and a span as OTLP encodes them, byte for byte")
    func otlpSpan() {
        var w = ProtobufWriter()
        OTLPTraces.keyValue(&w, 9, "a", .int(1))
        // KeyValue{key=1:"a", value=2:AnyValue{int_value=3:1}} as field 9: 4a 07 | 0a 01 61 | 12 02 18 01
        #expect(w.bytes == [0x4a, 0x07, 0x0a, 0x01, 0x61, 0x12, 0x02, 0x18, 0x01])
        w = ProtobufWriter()
        OTLPTraces.keyValue(&w, 1, "k", .string("v"))
        #expect(w.bytes == [0x0a, 0x08, 0x0a, 0x01, 0x6b, 0x12, 0x03, 0x0a, 0x01, 0x76])
        w = ProtobufWriter()
        OTLPTraces.keyValue(&w, 1, "b", .bool(true))
        #expect(w.bytes == [0x0a, 0x07, 0x0a, 0x01, 0x62, 0x12, 0x02, 0x10, 0x01])

        let span = Span(traceID: TraceID(high: 1, low: 2), spanID: 3, parentSpanID: 0, flags: 1, name: "x", kind: .server,
                        start: 5, end: 6)
        w = ProtobufWriter()
        OTLPTraces.encode(span, into: &w)
        let expected: [UInt8] =
            [0x0a, 0x10, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2]   // trace_id = 1: 16 bytes, big-endian
            + [0x12, 0x08, 0, 0, 0, 0, 0, 0, 0, 3]                         // span_id = 2; no parent_span_id (a root)
            + [0x2a, 0x01, 0x78]                                           // name = 5: "x"
            + [0x30, 0x02]                                                 // kind = 6: SERVER
            + [0x39, 5, 0, 0, 0, 0, 0, 0, 0]                               // start_time_unix_nano = 7 (fixed64)
            + [0x41, 6, 0, 0, 0, 0, 0, 0, 0]                               // end_time_unix_nano = 8 (fixed64)
            + [0x85, 0x01, 0x01, 0x01, 0x00, 0x00]                         // flags = 16: sampled | HAS_IS_REMOTE
        #expect(w.bytes == expected)

        var child = Span(traceID: TraceID(high: 1, low: 2), spanID: 4, parentSpanID: 3, flags: 1, parentIsRemote: true,
                         traceState: "a=b", name: "y", kind: .client, start: 7, end: 8)
        child.fail("no")
        w = ProtobufWriter()
        OTLPTraces.encode(child, into: &w)
        let childExpected: [UInt8] =
            [0x0a, 0x10, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2]
            + [0x12, 0x08, 0, 0, 0, 0, 0, 0, 0, 4]
            + [0x1a, 0x03, 0x61, 0x3d, 0x62]                               // trace_state = 3: "a=b"
            + [0x22, 0x08, 0, 0, 0, 0, 0, 0, 0, 3]                         // parent_span_id = 4
            + [0x2a, 0x01, 0x79]
            + [0x30, 0x03]                                                 // CLIENT
            + [0x39, 7, 0, 0, 0, 0, 0, 0, 0]
            + [0x41, 8, 0, 0, 0, 0, 0, 0, 0]
            + [0x7a, 0x06, 0x12, 0x02, 0x6e, 0x6f, 0x18, 0x02]             // status = 15: message = 2 "no", code = 3 ERROR
            + [0x85, 0x01, 0x01, 0x03, 0x00, 0x00]                         // sampled | HAS_IS_REMOTE | IS_REMOTE
        #expect(w.bytes == childExpected)

        // The request: resource_spans = 1 { resource = 1 { attributes }, scope_spans = 2 { scope = 1, spans = 2 } }.
        let request = OTLPTraces.exportRequest([span], serviceName: "svc", serviceVersion: "9")
        var resource = ProtobufWriter()
        OTLPTraces.keyValue(&resource, 1, "service.name", .string("svc"))
        OTLPTraces.keyValue(&resource, 1, "service.version", .string("9"))
        var scope = ProtobufWriter()
        scope.string(1, "relay")
        scope.string(2, "9")
        var scopeSpans = ProtobufWriter()
        scopeSpans.bytes(1, scope.bytes)
        scopeSpans.bytes(2, expected)
        var resourceSpans = ProtobufWriter()
        resourceSpans.bytes(1, resource.bytes)
        resourceSpans.bytes(2, scopeSpans.bytes)
        var outer = ProtobufWriter()
        outer.bytes(1, resourceSpans.bytes)
        #expect(request == outer.bytes)
        #expect(Array(request.prefix(2)) == [0x0a, UInt8(request.count - 2)])
    }

    // MARK: configuration

    static func parse(_ tracing: String, environment: [String: String] = [:]) throws -> RelayConfig {
        let text = """
            { store: { sqlite: "/tmp/relay-tracing-test.db" },
              sources: { s: { adapter: "generic", verify: { none: true } } },
              \(tracing) }
            """
        return try RelayConfig.parse(Data(text.utf8), registry: BuiltinAdapters.registry, environment: environment)
    }

    @Test("tracing: defaults, headers with ${env:...}, and every bad value at its key path")
    func configuration() throws {
        #expect(try Self.parse("").tracing == nil)
        let plain = try #require(try Self.parse("tracing: { otlp: {} }").tracing)
        #expect(plain.sampleRatio == 1)
        #expect(plain.otlp == OTLPSettings(endpoint: "http://127.0.0.1:4318/v1/traces", headers: [:], serviceName: "relay",
                                          timeout: 10))
        #expect(try Self.parse("tracing: { sampleRatio: 0.25 }").tracing == TracingSettings(otlp: nil, sampleRatio: 0.25))
        let full = try #require(try Self.parse("""
            tracing: { otlp: { endpoint: "https://collector.example:4318/v1/traces", serviceName: "relay-eu",
                               headers: { Authorization: "Bearer ${env:OTLP_TOKEN}", "X-Scope": "eu" }, timeout: "3s" },
                       sampleRatio: 0 }
            """, environment: ["OTLP_TOKEN": "tok"]).tracing)
        #expect(full.otlp?.headers == ["Authorization": "Bearer tok", "X-Scope": "eu"])
        #expect(full.otlp?.serviceName == "relay-eu" && full.otlp?.timeout == 3 && full.sampleRatio == 0)

        let error = try #require(throws: ConfigError.self) {
            try Self.parse("""
                tracing: { sampleRatio: 1.5, exporter: "jaeger",
                           otlp: { endpoint: "ftp://collector:4318", endpont: "x", serviceName: "",
                                   headers: { "Content-Type": "text/plain", Authorization: "${env:RELAY_TEST_NO_SUCH}",
                                              "bad name": "x", "X-N": 5 },
                                   timeout: "soon" } }
                """)
        }
        let expected: [(String, String)] = [
            ("tracing.sampleRatio", "a number from 0 to 1"),
            ("tracing.exporter", "unknown key"),
            ("tracing.otlp.endpont", "unknown key"),
            ("tracing.otlp.endpoint", "is not an absolute http:// or https:// URL"),
            ("tracing.otlp.serviceName", "must not be empty"),
            ("tracing.otlp.headers.Content-Type", "is set by the exporter"),
            ("tracing.otlp.headers.Authorization", "RELAY_TEST_NO_SUCH is not set"),
            ("tracing.otlp.headers[\"bad name\"]", "is not a header name"),
            ("tracing.otlp.headers.X-N", "expected a string"),
            ("tracing.otlp.timeout", "is not a duration"),
        ]
        for (path, message) in expected {
            #expect(error.problems.contains { $0.path == path && $0.message.contains(message) },
                    "\(path): \(message) in\n\(error)")
        }
        #expect(error.problems.count == expected.count, "\(error)")
        for bad in ["\"all\"", "-0.1", "true"] {
            let e = try #require(throws: ConfigError.self) { try Self.parse("tracing: { sampleRatio: \(bad) }") }
            #expect(e.problems.map(\.path) == ["tracing.sampleRatio"], "\(bad): \(e)")
        }
        let e = try #require(throws: ConfigError.self) { try Self.parse("tracing: { otlp: \"http://x\" }") }
        #expect(e.problems.map(\.path) == ["tracing.otlp"])
    }

    // MARK: the event's trace context

    static func tracedEvent(state: String? = "a=1") -> CanonicalEvent {
        CanonicalEvent(id: EventID.make(), source: "s", type: "t", subject: ["orderId": "A"], status: .shipped,
                       receivedAt: "2026-12-06T10:00:00.000Z", idempotencyKey: "k",
                       raw: RawPayload(contentType: "application/json", body: "{}"),
                       trace: TraceContext(traceID: TraceID(high: 0xab, low: 0xcd), spanID: 0xef, flags: 1, state: state))
    }

    @Test("the trace is in the stored JSON (as JSONEncoder writes it) and decodes back; destinations' JSON has none")
    func eventJSON() throws {
        let event = Self.tracedEvent()
        let stored = event.jsonText(includeRaw: false, includeTrace: true)
        #expect(stored.contains(#","trace":{"parent":"00-00000000000000ab00000000000000cd-00000000000000ef-01","state":"a=1"},"type":"#))
        #expect(!event.jsonText().contains("trace"))
        #expect(!event.jsonText(includeRaw: false).contains("trace"))
        var untraced = event
        untraced.trace = nil
        #expect(event.jsonText() == untraced.jsonText())
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        #expect(String(decoding: try encoder.encode(event), as: UTF8.self) == event.jsonText(includeTrace: true))
        let decoded = try JSONDecoder().decode(CanonicalEvent.self, from: Data(stored.utf8))
        #expect(decoded.trace == event.trace)
        let noState = Self.tracedEvent(state: nil)
        #expect(try JSONDecoder().decode(CanonicalEvent.self, from: Data(noState.jsonText(includeTrace: true).utf8)).trace == noState.trace)
    }

    @Test("server.address and port of a URL, without userinfo, path or query")
    func serverAddress() {
        func server(_ url: String) -> String? { AttemptSpan.server(of: url).map { "\($0.0) \($0.1)" } }
        #expect(server("https://user:pw@api.example.com/x?token=1") == "api.example.com 443")
        #expect(server("http://127.0.0.1:8080/hooks") == "127.0.0.1 8080")
        #expect(server("http://[::1]:9/a") == "::1 9")
        #expect(server("http://host?x=1") == "host 80")
        #expect(server("no url") == nil)
        #expect(SpanExporter.shown("https://u:p@c.example:4318/v1/traces?k=s") == "https://c.example:4318/v1/traces")
    }

    // MARK: in process

    static let sources = """
        "shop": { adapter: "generic", verify: { none: true }, type: "order.status_changed",
                  map: { subject: { orderId: "$.id" }, status: "$.state" } },
        """

    static func startSink(_ faults: [SinkFault] = []) throws -> Sink {
        let sink = Sink(options: SinkOptions(host: "127.0.0.1", port: 0, faults: faults, shutdownTimeout: 2))
        try sink.start()
        return sink
    }

    static func post(_ relay: RunningRelay, _ subject: String, headers: [(String, String)] = []) throws -> String {
        let body = #"{"id":"\#(subject)","state":"shipped","nonce":"\#(UUID().uuidString)"}"#
        return try expectAccepted(try relay.client.post("/v1/hooks/shop", json: body, headers: headers))
    }

    static func eventually(_ what: String, timeout: Double = 10, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while try !condition() {
            if Date() > deadline { throw TestFailure("timed out after \(timeout) s waiting for \(what)") }
            usleep(20_000)
        }
    }

    @Test("without tracing: traceparent carried through the store to every attempt, tracestate, User-Agent")
    func propagatesWithoutExport() throws {
        let sink = try Self.startSink([SinkFault(path: "/retry", times: 1, action: .status(503, body: .text("busy")))])
        defer { sink.stop() }
        let relay = try RunningRelay(sources: Self.sources, extra: """
            destinations: {
              "plain": { adapter: "generic", url: "\(sink.baseURL)/retry", retry: { schedule: ["50ms"], jitter: "none" } },
              "agent": { adapter: "generic", url: "\(sink.baseURL)/agent", headers: { "User-Agent": "acme-bridge/2" } },
            },
            routes: [ { from: "shop", to: ["plain", "agent"] } ],
            """)
        defer { relay.stop() }
        let eventID = try Self.post(relay, "O-1", headers: [("traceparent", Self.valid), ("tracestate", "rojo=1")])
        try Self.eventually("two attempts and one") { sink.requests(path: "/retry").count == 2 && sink.requests(path: "/agent").count == 1 }
        let stored = try #require(try relay.store.event(id: eventID)?.trace)
        #expect(stored.traceID.description == "4bf92f3577b34da6a3ce929d0e0e4736")
        #expect(stored.spanID != 0x00f067aa0ba902b7, "the stored parent is the ingest span, not the sender's")
        #expect(stored.state == "rojo=1" && stored.sampled)
        let attempts = sink.requests(path: "/retry") + sink.requests(path: "/agent")
        var spans: Set<String> = []
        for r in attempts {
            let header = try #require(r.headers["traceparent"])
            let p = try #require(Traceparent.parse(header), "\(header)")
            #expect(header.hasPrefix("00-4bf92f3577b34da6a3ce929d0e0e4736-") && header.hasSuffix("-01"))
            #expect(p.parentID != stored.spanID, "each request is a span of its own, a child of the ingest span")
            spans.insert(header)
            #expect(r.headers["tracestate"] == "rojo=1")
            #expect(!r.bodyText.contains("trace"), "the canonical body carries no trace context")
        }
        #expect(spans.count == 3)
        #expect(sink.requests(path: "/retry").allSatisfy { $0.headers["User-Agent"] == "relay/\(RelayVersion.current)" })
        #expect(sink.requests(path: "/agent").first?.headers.fields.filter { $0.name.lowercased() == "user-agent" }.map(\.value)
                == ["acme-bridge/2"])

        // Without a traceparent: a new trace, not sampled (nothing records it), still sent.
        let second = try Self.post(relay, "O-2")
        try Self.eventually("the second event's attempts") { sink.requests(path: "/agent").count == 2 }
        let own = try #require(try relay.store.event(id: second)?.trace)
        #expect(!own.sampled && own.traceID.description != stored.traceID.description)
        let header = try #require(sink.requests(path: "/agent").last?.headers["traceparent"])
        #expect(header.hasPrefix("00-\(own.traceID)-") && header.hasSuffix("-00"))
    }

    @Test("with tracing: spans exported over OTLP/HTTP protobuf (retried after a 503), counted in the metrics")
    func exports() throws {
        let sink = try Self.startSink()
        let collector = try Self.startSink([SinkFault(path: "/v1/traces", times: 1, action: .status(503, body: .text("later")))])
        defer { sink.stop(); collector.stop() }
        let relay = try RunningRelay(sources: Self.sources, extra: """
            tracing: { otlp: { endpoint: "\(collector.baseURL)/v1/traces", headers: { "X-Collector-Key": "${env:RELAY_TEST_OTLP_KEY}" },
                               serviceName: "relay-test" } },
            destinations: { "out": { adapter: "generic", url: "\(sink.baseURL)/out" } },
            routes: [ { from: "shop", to: ["out"] } ],
            """, environment: ["RELAY_TEST_OTLP_KEY": "k-123"])
        let eventID = try Self.post(relay, "O-1", headers: [("traceparent", Self.valid)])
        try Self.eventually("the delivery") { sink.requests(path: "/out").count == 1 }
        let metrics = relay.service.metrics
        try Self.eventually("two spans exported") { metrics.value("relay_trace_spans_exported_total") >= 2 }
        let exports = collector.requests(path: "/v1/traces")
        #expect(exports.count >= 2, "the first answered 503, then sent again")
        let last = try #require(exports.last)
        #expect(last.method == "POST" && last.headers["Content-Type"] == "application/x-protobuf")
        #expect(last.headers["X-Collector-Key"] == "k-123")
        #expect(last.headers["User-Agent"] == "relay/\(RelayVersion.current)")
        let body = exports.filter { $0.status == 200 }.flatMap(\.body)
        func contains(_ needle: [UInt8]) -> Bool {
            guard needle.count <= body.count else { return false }
            return (0...(body.count - needle.count)).contains { Array(body[$0..<($0 + needle.count)]) == needle }
        }
        let trace = TraceID(high: 0x4bf92f3577b34da6, low: 0xa3ce929d0e0e4736)
        #expect(contains(trace.bytes))
        #expect(contains(Array("relay-test".utf8)) && contains(Array("deliver out".utf8)))
        #expect(contains(Array(eventID.utf8)))
        let delivered = try #require(sink.requests(path: "/out").first?.headers["traceparent"])
        let attemptSpan = try #require(Traceparent.parse(delivered)).parentID
        #expect(contains(TraceHex.bigEndian(attemptSpan)), "the attempt span is the one the destination was told of")
        relay.stop()
        #expect(metrics.value("relay_trace_spans_dropped_total", ["reason": "queue_full"]) == 0)
        #expect(metrics.prometheusText().contains("relay_trace_spans_exported_total"))
    }

    @Test("exporter: a full queue drops and counts; a stop sends or counts everything queued")
    func exporterBounds() throws {
        let metrics = Metrics()
        let exporter = try SpanExporter(settings: OTLPSettings(endpoint: "http://127.0.0.1:9/v1/traces", timeout: 1),
                                        client: .init(), log: Logger(level: .error), metrics: metrics, interval: 60)
        let context = TraceContext(traceID: TraceID.random(), spanID: 1, flags: 1)
        let total = SpanExporter.maxQueue * 3
        for i in 0..<total {
            exporter.enqueue(Span(childOf: context, spanID: UInt64(i + 2), name: "s", kind: .internal, start: 1, end: 2))
        }
        #expect(metrics.value("relay_trace_spans_dropped_total", ["reason": "queue_full"]) > 0)
        exporter.shutdown(timeout: 0.5)
        let counted = metrics.value("relay_trace_spans_exported_total")
            + metrics.value("relay_trace_spans_dropped_total", ["reason": "queue_full"])
            + metrics.value("relay_trace_spans_dropped_total", ["reason": "export_failed"])
        #expect(counted == Double(total))
    }
}
