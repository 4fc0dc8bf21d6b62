import Crypto
import Foundation

/// A W3C Trace Context trace id: 16 bytes, never all zero.
public struct TraceID: Hashable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// A new random one (both halves from OpenSSL through `RandomPool`; neither is zero, so the id is valid).
    public static func random() -> TraceID {
        TraceID(high: RandomPool.shared.nonZero(), low: RandomPool.shared.nonZero())
    }

    public var isValid: Bool { high != 0 || low != 0 }
    /// The 16 bytes, big-endian (OTLP's `trace_id`).
    public var bytes: [UInt8] { TraceHex.bigEndian(high) + TraceHex.bigEndian(low) }
    /// 32 lowercase hex digits.
    public var description: String { TraceHex.string(high) + TraceHex.string(low) }
}

/// What an event carries through the store so that each delivery attempt continues its trace: the trace id, the
/// span that children hang under (for a stored event: the ingest span), the trace flags (only `sampled` is kept)
/// and the `tracestate` received with it (verbatim).
public struct TraceContext: Sendable, Equatable, Codable {
    public var traceID: TraceID
    /// The parent of the spans made under this context.
    public var spanID: UInt64
    /// The trace flags; of them only `sampled` (0x01) is defined by version 00 and kept.
    public var flags: UInt8
    /// The `tracestate` header as received, when valid and at most `TraceContext.maxStateLength` characters.
    public var state: String?

    public static let maxStateLength = 512

    public init(traceID: TraceID, spanID: UInt64, flags: UInt8, state: String? = nil) {
        self.traceID = traceID
        self.spanID = spanID
        self.flags = flags & 0x01
        self.state = state
    }

    /// Whether the trace's spans are recorded (exported).
    public var sampled: Bool { flags & 0x01 != 0 }

    /// `00-<trace id>-<span id>-<flags>`: the header a child of `spanID` is sent with.
    public var traceparent: String { Self.traceparent(traceID, spanID, flags) }

    /// The header value for a request whose span is `span` (a child of this context's span).
    public func traceparent(span: UInt64) -> String { Self.traceparent(traceID, span, flags) }

    static func traceparent(_ trace: TraceID, _ span: UInt64, _ flags: UInt8) -> String {
        var out = [UInt8](repeating: UInt8(ascii: "-"), count: 55)
        out[0] = UInt8(ascii: "0")
        out[1] = UInt8(ascii: "0")
        TraceHex.write(trace.high, into: &out, at: 3)
        TraceHex.write(trace.low, into: &out, at: 19)
        TraceHex.write(span, into: &out, at: 36)
        out[53] = TraceHex.digits[Int(flags >> 4)]
        out[54] = TraceHex.digits[Int(flags & 0x0f)]
        return String(decoding: out, as: UTF8.self)
    }

    // Stored inside the event's JSON as {"parent": "<traceparent>", "state": "..."} (docs/tracing.md).
    enum CodingKeys: String, CodingKey { case parent, state }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let parent = try c.decode(String.self, forKey: .parent)
        guard let p = Traceparent.parse(parent) else {
            throw DecodingError.dataCorruptedError(forKey: .parent, in: c, debugDescription: "not a traceparent")
        }
        self.init(traceID: p.traceID, spanID: p.parentID, flags: p.flags, state: try c.decodeIfPresent(String.self, forKey: .state))
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(traceparent, forKey: .parent)
        try c.encodeIfPresent(state, forKey: .state)
    }

    /// The same JSON as `encode(to:)` writes (keys sorted), appended to `out`.
    func writeJSON(to out: inout String) {
        out += "{\"parent\":\""
        out += traceparent
        out += "\""
        if let state {
            out += ",\"state\":"
            JSONValue.appendQuoted(state, to: &out)
        }
        out += "}"
    }
}

/// The `traceparent` header (W3C Trace Context, version 00) read as the specification says a receiver must.
public enum Traceparent {
    public struct Parsed: Sendable, Equatable {
        public var traceID: TraceID
        public var parentID: UInt64
        public var flags: UInt8
    }

    /// The header's fields, or nil when it is not valid (then a new trace is started):
    /// - `version-trace_id-parent_id-flags`, every field lowercase hex (`2`, `32`, `16`, `2` digits);
    /// - version `ff` is invalid; version `00` must be exactly 55 characters;
    /// - a higher version is read for the four fields it shares with `00`: at least 55 characters, and after the
    ///   flags either the end or a `-` (what follows is that version's own);
    /// - an all-zero trace id or parent id is invalid.
    /// Spaces and tabs around the value are not part of it.
    public static func parse(_ header: String) -> Parsed? {
        var header = header
        return header.withUTF8 { raw -> Parsed? in
            var start = 0, end = raw.count
            while start < end, raw[start] == 0x20 || raw[start] == 0x09 { start += 1 }
            while end > start, raw[end - 1] == 0x20 || raw[end - 1] == 0x09 { end -= 1 }
            let v = UnsafeBufferPointer(rebasing: raw[start..<end])
            guard v.count >= 55,
                  let version = TraceHex.value(v, 0, 2), version != 0xff,
                  v[2] == UInt8(ascii: "-"), v[35] == UInt8(ascii: "-"), v[52] == UInt8(ascii: "-"),
                  let high = TraceHex.value(v, 3, 16), let low = TraceHex.value(v, 19, 16),
                  let parent = TraceHex.value(v, 36, 16), let flags = TraceHex.value(v, 53, 2)
            else { return nil }
            if version == 0 {
                guard v.count == 55 else { return nil }
            } else if v.count > 55 {
                guard v[55] == UInt8(ascii: "-") else { return nil }
            }
            guard high != 0 || low != 0, parent != 0 else { return nil }
            return Parsed(traceID: TraceID(high: high, low: low), parentID: parent, flags: UInt8(flags))
        }
    }

    /// A `tracestate` value to keep and send on: at most `TraceContext.maxStateLength` characters of visible ASCII
    /// and spaces (a longer or stranger one is dropped, not cut); nil when empty.
    public static func state(_ header: String?) -> String? {
        guard let header else { return nil }
        let trimmed = header.trimmingCharacters(in: CharacterSet(charactersIn: " \t"))
        guard !trimmed.isEmpty, trimmed.utf8.count <= TraceContext.maxStateLength,
              trimmed.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7f }) else { return nil }
        return trimmed
    }
}

/// Lowercase hex for trace ids (written without Foundation's formatting: it runs per webhook).
enum TraceHex {
    static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    static func write(_ v: UInt64, into out: inout [UInt8], at offset: Int) {
        for i in 0..<16 { out[offset + i] = digits[Int((v >> UInt64(60 - 4 * i)) & 0x0f)] }
    }

    static func string(_ v: UInt64) -> String {
        var out = [UInt8](repeating: 0, count: 16)
        write(v, into: &out, at: 0)
        return String(decoding: out, as: UTF8.self)
    }

    static func bigEndian(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> UInt64(56 - 8 * $0)) } }

    /// `count` (at most 16) lowercase hex digits at `offset`; nil when any is not one.
    static func value(_ s: UnsafeBufferPointer<UInt8>, _ offset: Int, _ count: Int) -> UInt64? {
        var v: UInt64 = 0
        for i in offset..<(offset + count) {
            let c = s[i]
            let d: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
            default: return nil
            }
            v = v << 4 | UInt64(d)
        }
        return v
    }
}
