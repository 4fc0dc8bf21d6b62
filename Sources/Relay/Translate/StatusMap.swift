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

    /// The provider's value for the event's status, else for the built-in status an added one falls back to
    /// (`statuses: { packed: { fallback: "placed" } }`); a skip naming both when neither is mapped.
    public func value(for event: CanonicalEvent) throws(TranslateError) -> String {
        for s in event.statusChain { if let v = outbound[s] { return v } }
        if let status = event.status, let fallback = event.statusFallback, fallback != status {
            throw .noMapping(status, detail: "nor its fallback \"\(fallback.rawValue)\"")
        }
        throw .noMapping(event.status)
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
            guard let status = canonicalStatus(k, kp) else { continue }
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
            if let name = value.stringValue {
                if let status = canonicalStatus(name, Self.join(p, code)) { out[code] = status }
            } else {
                problem(Self.join(p, code), "must be a canonical status (\(statuses.names))")
            }
        }
        return out
    }
}

/// The statuses a configuration knows: the built-in ones and those it adds under `statuses:`, each with the
/// built-in status it falls back to for destinations that do not map it.
public struct StatusVocabulary: Sendable, Equatable {
    /// Added status -> its built-in fallback.
    public private(set) var added: [CanonicalStatus: CanonicalStatus] = [:]

    public init(added: [CanonicalStatus: CanonicalStatus] = [:]) { self.added = added }

    /// `unmapped` marks events whose status no map covers (the admin API's `status=unmapped`): never a status name.
    public static let reservedNames: Set<String> = ["unmapped"]

    /// The status called `name` (exactly), built-in or added; nil when the vocabulary has no such name.
    public func status(named name: String) -> CanonicalStatus? {
        if let s = CanonicalStatus(rawValue: name) { return s }
        let s = CanonicalStatus(named: name)
        return added[s] == nil ? nil : s
    }

    public func fallback(of status: CanonicalStatus) -> CanonicalStatus? { added[status] }

    /// Every name, built-in first, for messages.
    public var names: String {
        (CanonicalStatus.builtin.map(\.rawValue) + added.keys.map(\.rawValue).sorted()).joined(separator: ", ")
    }

    /// Whether `name` may be added: lowercase letters, digits, `_` and `-`, starting with a letter.
    static func validName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, ("a"..."z").contains(first) else { return false }
        return name.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" || $0 == "-" }
    }
}

extension ConfigReader {
    /// The status `name` in this configuration's vocabulary, or nil after reporting it at `path`.
    public func canonicalStatus(_ name: String, _ path: String) -> CanonicalStatus? {
        if let s = statuses.status(named: name) { return s }
        problem(path, "\"\(name)\" is not a canonical status (\(statuses.names); add it under statuses: { \"\(name)\": { fallback: \"...\" } })")
        return nil
    }

    /// Reads `statuses: { packed: { fallback: "placed", description: "..." }, lost: "failed" }` into the
    /// vocabulary that every later status name is checked against.
    public func statusVocabulary(_ value: JSONValue?) {
        guard let entries = map(value, "statuses") else { return }
        var added: [CanonicalStatus: CanonicalStatus] = [:]
        for name in entries.keys.sorted() {
            let p = Self.join("statuses", name)
            if CanonicalStatus(rawValue: name) != nil {
                problem(p, "\"\(name)\" is a built-in status already")
                continue
            }
            if StatusVocabulary.reservedNames.contains(name) {
                problem(p, "\"\(name)\" is reserved (the admin API's status=unmapped lists events whose status no map covers)")
                continue
            }
            guard StatusVocabulary.validName(name) else {
                problem(p, "a status name is lowercase letters, digits, _ and - (starting with a letter)")
                continue
            }
            var fallbackName: String?
            var fallbackPath = p
            switch entries[name]! {
            case .string(let f): fallbackName = f
            case .object:
                if let o = object(entries[name], p, keys: ["fallback", "description"]) {
                    fallbackName = string(o, "fallback", p, required: true)
                    fallbackPath = Self.join(p, "fallback")
                    _ = string(o, "description", p)
                }
            case let other:
                problem(p, "expected { fallback: \"<built-in status>\" } or the fallback's name, found \(other.kindName)")
            }
            guard let fallbackName else { continue }
            guard let fallback = CanonicalStatus(rawValue: fallbackName) else {
                problem(fallbackPath, "\"\(fallbackName)\" is not a built-in status (\(CanonicalStatus.builtin.map(\.rawValue).joined(separator: ", "))): an added status falls back to one of them")
                continue
            }
            added[CanonicalStatus(named: name)] = fallback
        }
        statuses = StatusVocabulary(added: added)
    }
}
