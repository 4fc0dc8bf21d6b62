import Crypto
import Foundation
import Synchronization

/// A status in the canonical vocabulary every provider's statuses are mapped to and from: one of the twelve
/// built-in statuses, or a name the configuration adds (`statuses: { packed: { fallback: "placed" } }`), which
/// falls back to a built-in one for destinations that do not map it (`StatusVocabulary`).
public struct CanonicalStatus: RawRepresentable, Hashable, Codable, Sendable, CustomStringConvertible, Comparable {
    public let rawValue: String

    /// A built-in status; nil for any other name (an added one is made with `init(named:)`).
    public init?(rawValue: String) {
        guard Self.builtinNames.contains(rawValue) else { return nil }
        self.rawValue = rawValue
    }

    /// Any status name, built-in or added by the configuration (`StatusVocabulary.status(named:)` checks it).
    public init(named name: String) { self.rawValue = name }

    public static let placed = CanonicalStatus(named: "placed")
    public static let invoiced = CanonicalStatus(named: "invoiced")
    public static let backordered = CanonicalStatus(named: "backordered")
    public static let sent = CanonicalStatus(named: "sent")
    public static let shipped = CanonicalStatus(named: "shipped")
    public static let delivered = CanonicalStatus(named: "delivered")
    public static let processed = CanonicalStatus(named: "processed")
    public static let cancelled = CanonicalStatus(named: "cancelled")
    public static let refunded = CanonicalStatus(named: "refunded")
    public static let expired = CanonicalStatus(named: "expired")
    public static let failed = CanonicalStatus(named: "failed")
    public static let pending = CanonicalStatus(named: "pending")

    /// The built-in statuses, in their documented order.
    public static let builtin: [CanonicalStatus] = [.placed, .invoiced, .backordered, .sent, .shipped, .delivered,
                                                   .processed, .cancelled, .refunded, .expired, .failed, .pending]
    static let builtinNames = Set(builtin.map(\.rawValue))

    public var isBuiltin: Bool { Self.builtinNames.contains(rawValue) }
    public var description: String { rawValue }
    public static func < (a: CanonicalStatus, b: CanonicalStatus) -> Bool { a.rawValue < b.rawValue }

    public init(from decoder: Decoder) throws {
        self.init(named: try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(rawValue)
    }
}

/// A provider's own status, kept beside the canonical one.
public struct ProviderStatus: Codable, Sendable, Equatable {
    public var code: String
    public var label: String?
    public init(code: String, label: String? = nil) {
        self.code = code
        self.label = label
    }
}

/// The request body as received, kept with the event so that nothing the sender said is lost. Its JSON form is
/// `{"contentType": ..., "body": "<the body as text>"}` (bodies are JSON or form text, so UTF-8).
public struct RawPayload: Codable, Sendable, Equatable {
    public var contentType: String
    /// The body's bytes exactly as received.
    public var bytes: [UInt8]
    public var body: String { String(decoding: bytes, as: UTF8.self) }

    public init(contentType: String, body: String) {
        self.contentType = contentType
        self.bytes = Array(body.utf8)
    }

    public init(contentType: String, bytes: [UInt8]) {
        self.contentType = contentType
        self.bytes = bytes
    }

    enum CodingKeys: String, CodingKey { case contentType, body }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        contentType = try c.decode(String.self, forKey: .contentType)
        bytes = Array(try c.decode(String.self, forKey: .body).utf8)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(body, forKey: .body)
        try c.encode(contentType, forKey: .contentType)
    }
}

/// The one shape every inbound webhook is normalised into and every outbound call is translated from.
/// Its JSON form is documented in docs/canonical-event.md.
public struct CanonicalEvent: Codable, Sendable, Equatable {
    /// Relay-assigned, time-sortable: `evt_` and a 26-character ULID.
    public var id: String
    /// The configured source that received it.
    public var source: String
    /// e.g. `redemption.status_changed`; `passthrough` for a generic source without mapping.
    public var type: String
    /// Identifiers of what the event is about (redemptionId, transactionId, orderId, vendorId...).
    public var subject: [String: String]
    public var status: CanonicalStatus?
    /// For a status the configuration added (`statuses:`): the built-in status it falls back to, for destinations
    /// that do not map it.
    public var statusFallback: CanonicalStatus?
    /// True when the provider sent a status that no map covers (kept in `providerStatus`, with no `status`).
    public var statusUnmapped: Bool?
    public var providerStatus: ProviderStatus?
    /// When the provider says it happened (RFC 3339), when known.
    public var occurredAt: String?
    /// When the relay received it (RFC 3339, milliseconds).
    public var receivedAt: String
    public var attributes: [String: JSONValue]
    /// The key the event is deduplicated on within its source.
    public var idempotencyKey: String
    public var raw: RawPayload?
    /// The trace the event belongs to (W3C Trace Context): the trace id, the ingest span (the parent of every
    /// delivery attempt's span), the flags and the `tracestate` received. Stored with the event and shown by the
    /// admin API; not part of what destinations receive (`jsonText(includeTrace:)`). Nil for events stored before.
    public var trace: TraceContext?

    public init(id: String, source: String, type: String, subject: [String: String] = [:],
                status: CanonicalStatus? = nil, providerStatus: ProviderStatus? = nil, occurredAt: String? = nil,
                receivedAt: String, attributes: [String: JSONValue] = [:], idempotencyKey: String,
                raw: RawPayload? = nil, statusFallback: CanonicalStatus? = nil, statusUnmapped: Bool? = nil,
                trace: TraceContext? = nil) {
        // What the stores keep in text columns and match on (the key, the subject, the type and statuses) never
        // holds a NUL: one from a payload (`\u0000`) becomes U+FFFD here, once, for every store and every reader
        // (`String.storable`). The attributes and the raw body are kept as JSON and bytes, which carry it as it is;
        // the id and the time of receipt are the relay's own.
        self.id = id
        self.trace = trace
        self.statusFallback = statusFallback.map { CanonicalStatus(named: $0.rawValue.storable) }
        self.statusUnmapped = statusUnmapped
        self.source = source.storable
        self.type = type.storable
        self.subject = subject.storable
        self.status = status.map { CanonicalStatus(named: $0.rawValue.storable) }
        self.providerStatus = providerStatus.map { ProviderStatus(code: $0.code.storable, label: $0.label?.storable) }
        self.occurredAt = occurredAt?.storable
        self.receivedAt = receivedAt
        self.attributes = attributes
        self.idempotencyKey = idempotencyKey.storable
        self.raw = raw
    }
}

extension CanonicalEvent {
    /// The statuses a destination's map is asked for, in order: the event's own, then the built-in one it falls
    /// back to.
    public var statusChain: [CanonicalStatus] {
        var out: [CanonicalStatus] = []
        if let status { out.append(status) }
        if let statusFallback, statusFallback != status { out.append(statusFallback) }
        return out
    }

    /// What the store's status column holds (the admin API's `status=` filter): the status, or `unmapped`.
    public var storedStatus: String? { status?.rawValue ?? (statusUnmapped == true ? "unmapped" : nil) }

    /// The built-in status this event stands for: its own when built-in, else its fallback.
    public var builtinStatus: CanonicalStatus? { status?.isBuiltin == true ? status : statusFallback }
}

/// Time-sortable identifiers: 48 bits of milliseconds and 80 random bits in Crockford base32 (a ULID).
/// Within one millisecond the random part is incremented, so ids made by one process sort in creation order.
public enum EventID {
    private static let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ".utf8)
    private struct State { var lastMillis: UInt64 = 0; var high: UInt16 = 0; var low: UInt64 = 0 }
    private static let state = Mutex(State())

    public static func make(prefix: String = "evt_", now: Date = Date()) -> String {
        let millis = UInt64(max(0, now.timeIntervalSince1970 * 1000))
        let (ms, high, low) = state.withLock { s -> (UInt64, UInt16, UInt64) in
            if millis > s.lastMillis {
                let r = SecureRandom.bytes(10)
                s.lastMillis = millis
                s.high = UInt16(r[0]) << 8 | UInt16(r[1])
                s.low = r[2...].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            } else {
                s.low &+= 1
                if s.low == 0 { s.high &+= 1 }
            }
            return (s.lastMillis, s.high, s.low)
        }
        // 128 bits: 48 time | 16 high | 64 low, written as 26 base32 digits (the first carries 3 bits), after the
        // prefix, straight into the string's storage.
        var prefix = prefix
        return prefix.withUTF8 { head in
            String(unsafeUninitializedCapacity: head.count + 26) { out in
                _ = out.initialize(fromContentsOf: head)
                alphabet.withUnsafeBufferPointer { alphabet in
                    var hi = ms << 16 | UInt64(high)     // upper 64 bits
                    var lo = low                          // lower 64 bits
                    for i in stride(from: head.count + 25, through: head.count, by: -1) {
                        out[i] = alphabet[Int(lo & 31)]
                        lo = (lo >> 5) | ((hi & 31) << 59)
                        hi >>= 5
                    }
                }
                return head.count + 26
            }
        }
    }
}

extension CanonicalEvent {
    /// Compact JSON with sorted keys, nil fields left out: the same text JSONEncoder writes for this type with
    /// `.sortedKeys`, made without it because this runs once per accepted webhook. `includeTrace`: with the trace
    /// context (the store's copy and the admin API); what destinations receive has none, so it is off by default.
    public func jsonText(includeRaw: Bool = true, includeTrace: Bool = false) -> String {
        String(decoding: jsonBytes(includeRaw: includeRaw, includeTrace: includeTrace), as: UTF8.self)
    }

    /// `jsonText` as UTF-8 bytes (what the stores write).
    public func jsonBytes(includeRaw: Bool = true, includeTrace: Bool = false) -> [UInt8] {
        var w = JSONWriter(capacity: 512 + (includeRaw ? (raw?.bytes.count ?? 0) * 5 / 4 : 0))
        w.raw("{\"attributes\":")
        w.value(.object(attributes))
        w.raw(",\"id\":")
        w.quoted(id)
        w.raw(",\"idempotencyKey\":")
        w.quoted(idempotencyKey)
        w.member(",\"occurredAt\":", occurredAt)
        if let providerStatus {
            w.raw(",\"providerStatus\":{\"code\":")
            w.quoted(providerStatus.code)
            w.member(",\"label\":", providerStatus.label)
            w.raw("}")
        }
        if includeRaw, let raw {
            w.raw(",\"raw\":{\"body\":")
            w.quoted(raw.body)
            w.raw(",\"contentType\":")
            w.quoted(raw.contentType)
            w.raw("}")
        }
        w.raw(",\"receivedAt\":")
        w.quoted(receivedAt)
        w.raw(",\"source\":")
        w.quoted(source)
        w.member(",\"status\":", status?.rawValue)
        w.member(",\"statusFallback\":", statusFallback?.rawValue)
        if statusUnmapped == true { w.raw(",\"statusUnmapped\":true") }
        w.raw(",\"subject\":{")
        for (i, k) in subject.keys.sorted().enumerated() {
            if i > 0 { w.raw(",") }
            w.quoted(k)
            w.raw(":")
            w.quoted(subject[k]!)
        }
        w.raw("}")
        if includeTrace, let trace {
            w.raw(",\"trace\":{\"parent\":")
            w.quoted(trace.traceparent)
            w.member(",\"state\":", trace.state)
            w.raw("}")
        }
        w.raw(",\"type\":")
        w.quoted(type)
        w.raw("}")
        return w.bytes
    }
}

extension CanonicalEvent {
    /// The event from its stored JSON (`jsonBytes`, without `raw`: the stores keep the body in a column of its own),
    /// read with the relay's own parser: the dispatcher reads one per delivery it claims, and `JSONDecoder` was about
    /// a third of the writer's work per delivery there. The same event as `JSONDecoder` would give (a test compares
    /// the two); JSON of any other shape (a missing field, a wrong type, a trace context that does not parse) goes to
    /// `JSONDecoder`, so that it fails, or reads, exactly as before.
    public static func fromStoredJSON(_ bytes: [UInt8]) throws -> CanonicalEvent {
        if case .object(let o)? = try? JSONParser.parse(bytes), let event = storedShape(o) { return event }
        return try JSONDecoder().decode(CanonicalEvent.self, from: Data(bytes))
    }

    /// The fields of `o` as the synthesized `Decodable` reads them (no `storable` mapping: a stored event is already
    /// mapped), or nil for anything it would not read the same way.
    static func storedShape(_ o: [String: JSONValue]) -> CanonicalEvent? {
        func optional(_ v: JSONValue?) -> String?? {   // nil: wrong type; .some(nil): absent or null
            switch v {
            case nil, .null?: return .some(nil)
            case .string(let s)?: return .some(s)
            default: return nil
            }
        }
        func strings(_ v: JSONValue?) -> [String: String]? {
            guard case .object(let m)? = v else { return nil }
            var out: [String: String] = [:]
            out.reserveCapacity(m.count)
            for (k, v) in m {
                guard case .string(let s) = v else { return nil }
                out[k] = s
            }
            return out
        }
        guard case .string(let id)? = o["id"], case .string(let source)? = o["source"], case .string(let type)? = o["type"],
              case .string(let receivedAt)? = o["receivedAt"], case .string(let key)? = o["idempotencyKey"],
              let subject = strings(o["subject"]), case .object(let attributes)? = o["attributes"],
              let status = optional(o["status"]), let fallback = optional(o["statusFallback"]),
              let occurredAt = optional(o["occurredAt"])
        else { return nil }
        var event = CanonicalEvent(id: id, source: source, type: type, receivedAt: receivedAt, idempotencyKey: key)
        // Set again as stored: the initializer maps them through `storable`, which `Decodable` does not.
        event.source = source
        event.type = type
        event.idempotencyKey = key
        event.subject = subject
        event.attributes = attributes
        event.status = status.map(CanonicalStatus.init(named:))
        event.statusFallback = fallback.map(CanonicalStatus.init(named:))
        event.occurredAt = occurredAt
        switch o["statusUnmapped"] {
        case nil, .null?: break
        case .bool(let b)?: event.statusUnmapped = b
        default: return nil
        }
        switch o["providerStatus"] {
        case nil, .null?: break
        case .object(let p)?:
            guard case .string(let code)? = p["code"], let label = optional(p["label"]) else { return nil }
            event.providerStatus = ProviderStatus(code: code, label: label)
        default: return nil
        }
        switch o["raw"] {
        case nil, .null?: break
        case .object(let r)?:
            guard case .string(let contentType)? = r["contentType"], case .string(let body)? = r["body"] else { return nil }
            event.raw = RawPayload(contentType: contentType, body: body)
        default: return nil
        }
        switch o["trace"] {
        case nil, .null?: break
        case .object(let t)?:
            guard case .string(let parent)? = t["parent"], let p = Traceparent.parse(parent),
                  let state = optional(t["state"]) else { return nil }
            event.trace = TraceContext(traceID: p.traceID, spanID: p.parentID, flags: p.flags, state: state)
        default: return nil
        }
        return event
    }
}
