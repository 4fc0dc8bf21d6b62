import Foundation
import Relay

/// `adapter: "punchh"` as a source: Punchh's outbound webhooks.
///
/// The envelope is `{content_id, timestamp, business_id, business_uuid, event_name, event_type, action, payload}`.
/// `content_id` is the idempotency key (Punchh delivers at least once); `timestamp` (epoch seconds or
/// milliseconds) becomes `occurredAt`. `event_name` `redemptions` is a `redemption.status_changed` event; any
/// other event name is stored as `punchh.<event_name>` with whatever of the default fields it carries.
///
/// ```json5
/// "punchh-acme": { adapter: "punchh",
///                  verify: { preset: "punchh", secrets: ["${env:PUNCHH_WEBHOOK_SECRET}"] },
///                  statusMap: { "honoured": "processed" },            // over the defaults, case-insensitive
///                  map: { subject: { redemptionCode: "$.payload.redemption_code.code" } },   // path overrides
///                  type: "redemption.status_changed" }                // the type of `redemptions` events
/// ```
///
/// A status with no mapping is not refused (Punchh does not retry a 4xx: the event would be lost): the event is
/// stored with `status` unset and the value in `providerStatus`.
public struct PunchhSource: SourceAdapter {
    /// The canonical type of `event_name: "redemptions"`.
    public var redemptionType: String
    /// Subject key -> JSON paths, the first present one wins.
    public var subject: [(key: String, paths: [String])]
    /// Attribute key -> JSON paths, the first present one wins.
    public var attributes: [(key: String, paths: [String])]
    /// Where the provider's status is, the first present one wins; empty: no status is read.
    public var statusPaths: [String]
    /// Where the time of the event is (epoch seconds, epoch milliseconds or RFC 3339 text).
    public var occurredAtPaths: [String]
    /// Provider status (lowercased) -> canonical status.
    public var statusMap: [String: CanonicalStatus]

    public static let defaultRedemptionType = "redemption.status_changed"

    public static let defaultSubject: [(key: String, paths: [String])] = [
        ("redemptionId", ["$.payload.redemption_id"]),
        // The name of the code's field inside `redemption_code` is not documented; a plain string
        // `redemption_code` is taken as the code itself.
        ("redemptionCode", ["$.payload.redemption_code.redemption_code", "$.payload.redemption_code"]),
        ("locationId", ["$.payload.location_id"]),
        ("businessId", ["$.business_uuid", "$.business_id"]),
    ]

    public static let defaultAttributes: [(key: String, paths: [String])] = [
        ("transactionNo", ["$.payload.redemption_code.transaction_no"]),
        ("processedAt", ["$.payload.redemption_code.processed_at"]),
        ("eventType", ["$.event_type"]),
        ("action", ["$.action"]),
        ("amount", ["$.payload.redemption_amount"]),
        ("userId", ["$.payload.user.id"]),
    ]

    public static let defaultStatusPaths = ["$.payload.redemption_status", "$.payload.redemption_code.status"]
    public static let defaultOccurredAtPaths = ["$.timestamp"]

    /// Punchh's redemption statuses and code categories, lowercased.
    public static let defaultStatusMap: [String: CanonicalStatus] = [
        "processed": .processed, "voided": .cancelled, "void": .cancelled, "cancelled": .cancelled,
        "expired": .expired, "invalid": .failed, "redeemable": .pending, "unassigned": .pending,
    ]

    public init(redemptionType: String = PunchhSource.defaultRedemptionType,
                subject: [(key: String, paths: [String])] = PunchhSource.defaultSubject,
                attributes: [(key: String, paths: [String])] = PunchhSource.defaultAttributes,
                statusPaths: [String] = PunchhSource.defaultStatusPaths,
                occurredAtPaths: [String] = PunchhSource.defaultOccurredAtPaths,
                statusMap: [String: CanonicalStatus] = PunchhSource.defaultStatusMap) {
        self.redemptionType = redemptionType
        self.subject = subject
        self.attributes = attributes
        self.statusPaths = statusPaths
        self.occurredAtPaths = occurredAtPaths
        self.statusMap = statusMap
    }

    public func normalize(_ webhook: InboundWebhook) throws(NormalizeError) -> NormalizedEvent {
        let body = webhook.payload.json
        guard case .object(let envelope) = body else {
            throw NormalizeError("not a Punchh webhook envelope: the body is not a JSON object")
        }
        guard let contentID = envelope["content_id"]?.scalarText, !contentID.isEmpty else {
            throw NormalizeError("not a Punchh webhook envelope: content_id is missing")
        }
        guard let eventName = envelope["event_name"]?.stringValue, !eventName.isEmpty else {
            throw NormalizeError("not a Punchh webhook envelope: event_name is missing")
        }
        var event = NormalizedEvent(type: eventName == "redemptions" ? redemptionType : "punchh." + eventName,
                                    idempotencyKey: contentID)
        func first(_ paths: [String], scalar: Bool) -> JSONValue? {
            for p in paths {
                guard let v = body.value(atPath: p), !v.isNull else { continue }
                if scalar && v.scalarText == nil { continue }
                return v
            }
            return nil
        }
        for (key, paths) in subject {
            if let v = first(paths, scalar: true)?.scalarText, !v.isEmpty { event.subject[key] = v }
        }
        for (key, paths) in attributes {
            guard var v = first(paths, scalar: false) else { continue }
            // `amount` is a number in the canonical event, whether Punchh sent 10 or "10.00".
            if key == "amount", case .string(let s) = v, let n = Double(s.trimmingCharacters(in: .whitespaces)),
               n.isFinite {
                v = .number(n)
            }
            event.attributes[key] = v
        }
        if let code = first(statusPaths, scalar: true)?.scalarText, !code.isEmpty {
            event.providerStatus = ProviderStatus(code: code)
            event.status = statusMap[code.lowercased()]
        }
        if let at = first(occurredAtPaths, scalar: true) { event.occurredAt = Self.occurredAt(at) }
        return event
    }

    /// Epoch seconds, or milliseconds when above 1e11 (a seconds value that large is the year 5138), as RFC 3339
    /// UTC; RFC 3339 text is normalised the same way. Anything else: nil.
    public static func occurredAt(_ v: JSONValue) -> String? {
        var seconds: Double?
        switch v {
        case .number, .integer: seconds = v.numberValue
        case .string(let s):
            let t = s.trimmingCharacters(in: .whitespaces)
            if let n = Double(t), t.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2E }) {
                seconds = n
            } else if let date = parseRFC3339(t) {
                return Timestamp.iso8601(date)
            }
        default: break
        }
        guard var s = seconds, s.isFinite, s > 0 else { return nil }
        if s > 1e11 { s /= 1000 }
        return Timestamp.iso8601(Date(timeIntervalSince1970: s))
    }

    static func parseRFC3339(_ text: String) -> Date? {
        let plain = ISO8601DateFormatter()
        if let d = plain.date(from: text) { return d }
        let fractional = ISO8601DateFormatter()
        fractional.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return fractional.date(from: text)
    }
}

public struct PunchhSourceFactory: SourceAdapterFactory {
    /// `verify: { preset: "punchh" }`: `Authorization: hmac <HMAC(URI + BODY)>`; digest, encoding and URI form are
    /// configurable.
    public static let verifyPreset = VerifyPreset("punchh") {
        var v = HMACVerifier(scheme: "punchh")
        v.headers = ["Authorization"]
        v.prefix = "hmac "
        v.template = [.uri, .body]
        v.defaultIdempotency = .field("$.content_id")
        return (v, .utf8)
    }

    public init() {}
    public var name: String { "punchh" }
    public var sourceKeys: [String] { ["map", "statusMap", "type"] }

    public func makeSource(name: String, config: [String: JSONValue], path: String, reader r: ConfigReader) -> (any SourceAdapter)? {
        var s = PunchhSource()
        if let t = r.string(config, "type", path) {
            if t.isEmpty { r.problem(ConfigReader.join(path, "type"), "must not be empty") } else { s.redemptionType = t }
        }
        let mapPath = ConfigReader.join(path, "map")
        if let m = r.object(config["map"], mapPath, keys: ["subject", "status", "attributes", "occurredAt"]) {
            s.subject = Self.fields(m["subject"], ConfigReader.join(mapPath, "subject"), over: s.subject, r)
            s.attributes = Self.fields(m["attributes"], ConfigReader.join(mapPath, "attributes"), over: s.attributes, r)
            if let v = m["status"] {
                s.statusPaths = Self.jsonPath(v, ConfigReader.join(mapPath, "status"), r).map { [$0] } ?? []
            }
            if let v = m["occurredAt"] {
                s.occurredAtPaths = Self.jsonPath(v, ConfigReader.join(mapPath, "occurredAt"), r).map { [$0] } ?? []
            }
        }
        // Configured entries over the defaults, compared case-insensitively; `null` removes a default.
        let given = r.inboundStatusMap(config, "statusMap", path)
        for (code, v) in config["statusMap"]?.objectValue ?? [:] where v.isNull {
            s.statusMap[code.lowercased()] = nil
        }
        for (code, status) in given { s.statusMap[code.lowercased()] = status }
        return s
    }

    /// `{ key: "$.path" }` over `defaults`: a path replaces the default's, `null` removes the field.
    static func fields(_ value: JSONValue?, _ p: String, over defaults: [(key: String, paths: [String])],
                       _ r: ConfigReader) -> [(key: String, paths: [String])] {
        guard let given = r.map(value, p) else { return defaults }
        var out = defaults
        for k in given.keys.sorted() {
            let v = given[k]!
            if v.isNull {
                out.removeAll { $0.key == k }
                continue
            }
            guard let path = jsonPath(v, ConfigReader.join(p, k), r) else { continue }
            if let i = out.firstIndex(where: { $0.key == k }) { out[i].paths = [path] } else { out.append((k, [path])) }
        }
        return out
    }

    /// A JSON path (`$.payload.x`), nil for `null` (the field is not read) or with a problem.
    static func jsonPath(_ v: JSONValue, _ p: String, _ r: ConfigReader) -> String? {
        if v.isNull { return nil }
        return r.jsonPath(v, p)
    }
}
