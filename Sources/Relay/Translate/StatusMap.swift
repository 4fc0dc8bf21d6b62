import Foundation

/// A two-way map between canonical statuses and one provider's status values.
///
/// Outbound, a canonical status with no value means the destination has nothing to say: the delivery is
/// skipped (`TranslateError.noMapping`), never guessed. Inbound, several provider values may map to one canonical
/// status; a provider value with no mapping is kept as `providerStatus` only.
public struct StatusMap: Sendable, Equatable {
    public var outbound: [CanonicalStatus: String]
    public var inbound: [String: CanonicalStatus]

    public init(outbound: [CanonicalStatus: String] = [:], inbound: [String: CanonicalStatus]? = nil) {
        self.outbound = outbound
        if let inbound {
            self.inbound = inbound
        } else {
            var i: [String: CanonicalStatus] = [:]
            for (c, v) in outbound.sorted(by: { $0.key.rawValue < $1.key.rawValue }) where i[v] == nil { i[v] = c }
            self.inbound = i
        }
    }

    public var isEmpty: Bool { outbound.isEmpty && inbound.isEmpty }

    /// The provider's value for `status`, or a skip naming what is missing.
    public func value(for status: CanonicalStatus?) throws(TranslateError) -> String {
        guard let status, let v = outbound[status] else { throw .noMapping(status) }
        return v
    }

    /// The canonical status of a provider value (exact match first, then case-insensitive).
    public func status(for value: String) -> CanonicalStatus? {
        if let s = inbound[value] { return s }
        let lower = value.lowercased()
        return inbound.first { $0.key.lowercased() == lower }?.value
    }
}

extension ConfigReader {
    /// An outbound map `{ shipped: "S", backordered: "B" }` (canonical -> provider value) under `key`, over
    /// `defaults`: a configured value replaces the default, `null` removes it. Values must satisfy `valid` when
    /// given (e.g. a 24-hex id).
    public func outboundStatusMap(_ o: [String: JSONValue], _ key: String, _ path: String,
                                  defaults: [CanonicalStatus: String] = [:], required: Bool = false,
                                  valid: ((String) -> String?)? = nil) -> StatusMap {
        let p = Self.join(path, key)
        var out = defaults
        guard let v = o[key], !v.isNull else {
            if required && defaults.isEmpty {
                problem(p, "is required: a map of canonical status -> this provider's value, e.g. { shipped: \"...\" }")
            }
            return StatusMap(outbound: out)
        }
        guard let fields = map(v, p) else { return StatusMap(outbound: out) }
        for k in fields.keys.sorted() {
            let kp = Self.join(p, k)
            guard let status = CanonicalStatus(rawValue: k) else {
                problem(kp, "\"\(k)\" is not a canonical status (\(CanonicalStatus.allCases.map(\.rawValue).joined(separator: ", ")))")
                continue
            }
            switch fields[k]! {
            case .null: out[status] = nil
            case .string(let s):
                if let valid, let why = valid(s) { problem(kp, why); continue }
                out[status] = s
            case .number(let n) where n == n.rounded() && abs(n) < 1e15:
                let text = String(Int64(n))
                if let valid, let why = valid(text) { problem(kp, why); continue }
                out[status] = text
            case let other:
                problem(kp, "expected the provider's status value as a string, found \(other.kindName)")
            }
        }
        if required && out.isEmpty { problem(p, "maps no status: nothing could ever be delivered") }
        return StatusMap(outbound: out)
    }

    /// An inbound map `{ "SHIPPED": "shipped" }` (provider value -> canonical) under `key`, over `defaults`.
    public func inboundStatusMap(_ o: [String: JSONValue], _ key: String, _ path: String,
                                 defaults: [String: CanonicalStatus] = [:]) -> [String: CanonicalStatus] {
        let p = Self.join(path, key)
        var out = defaults
        guard let v = o[key], !v.isNull, let fields = map(v, p) else { return out }
        for (code, value) in fields {
            if value.isNull { out[code] = nil; continue }
            if let name = value.stringValue, let status = CanonicalStatus(rawValue: name) {
                out[code] = status
            } else {
                problem(Self.join(p, code), "must be a canonical status (\(CanonicalStatus.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
        }
        return out
    }
}
