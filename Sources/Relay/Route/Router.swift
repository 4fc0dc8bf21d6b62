import Foundation

/// One test on a field of the canonical event, from a route's `when.match`.
public struct FieldPredicate: Sendable, Equatable {
    public enum Test: Sendable, Equatable {
        case equals(String)
        case oneOf([String])
        case exists(Bool)
        case prefix(String)
    }

    /// A path into the canonical event's JSON form: `type`, `status`, `source`, `subject.orderId`,
    /// `providerStatus.code`, `attributes.amount`, `attributes.items[0].sku`.
    public var field: String
    public var test: Test

    public init(field: String, test: Test) {
        self.field = field
        self.test = test
    }

    public func matches(_ event: JSONValue) -> Bool {
        let value = event.value(atPath: field).flatMap { $0.isNull ? nil : $0 }
        switch test {
        case .exists(let wanted): return (value != nil) == wanted
        case .equals(let s): return value?.scalarText == s
        case .oneOf(let list): return value?.scalarText.map { list.contains($0) } ?? false
        case .prefix(let p): return value?.scalarText?.hasPrefix(p) ?? false
        }
    }
}

/// A route's `when`: every condition given must hold (an absent condition holds).
public struct RouteCondition: Sendable, Equatable {
    public var types: [String]?
    public var statuses: [CanonicalStatus]?
    public var match: [FieldPredicate] = []

    public init(types: [String]? = nil, statuses: [CanonicalStatus]? = nil, match: [FieldPredicate] = []) {
        self.types = types
        self.statuses = statuses
        self.match = match
    }

    /// `tree` is the event's JSON form, made here the first time a field test needs it and kept for the next
    /// condition (no closure over the event: capturing it would copy it, a retain and a release for each field).
    public func matches(_ event: CanonicalEvent, tree: inout JSONValue?) -> Bool {
        if let types, !types.contains(event.type) { return false }
        if let statuses {
            // An added status also matches the built-in status it falls back to.
            guard event.statusChain.contains(where: statuses.contains) else { return false }
        }
        if match.isEmpty { return true }
        let json = tree ?? event.canonicalJSON()
        tree = json
        return match.allSatisfy { $0.matches(json) }
    }
}

/// The routing table: which destinations hear of an event.
public struct Router: Sendable {
    public var routes: [RouteSettings]

    public init(routes: [RouteSettings]) { self.routes = routes }

    /// The destinations of every route from the event's source whose condition holds, each once, in the order the
    /// routes name them.
    public func destinations(for event: CanonicalEvent) -> [String] {
        var out: [String] = []
        var tree: JSONValue?
        for route in routes where route.from == event.source {
            if route.when.matches(event, tree: &tree) {
                for d in route.to where !out.contains(d) { out.append(d) }
            }
        }
        return out
    }
}

extension CanonicalEvent {
    /// The event's JSON form as a tree (without the raw body), for route conditions.
    public func canonicalJSON() -> JSONValue {
        (try? JSONParser.parse(Array(jsonText(includeRaw: false).utf8))) ?? .null
    }

    /// The subject as one ordering key: its fields sorted by name, `name=value` joined with `&`.
    public var subjectKey: String {
        subject.keys.sorted().map { "\($0)=\(subject[$0]!)" }.joined(separator: "&")
    }
}

extension ConfigReader {
    /// Reads a route's `when`: `{ type: "..." | [...], status: "..." | [...], match: [{ field, equals | in | exists | prefix }] }`.
    public func routeCondition(_ value: JSONValue?, _ path: String) -> RouteCondition {
        var c = RouteCondition()
        guard let value, let o = object(value, path, keys: ["type", "status", "match"]) else { return c }
        c.types = strings(o, "type", path)
        if let names = strings(o, "status", path) {
            var statuses: [CanonicalStatus] = []
            for (i, n) in names.enumerated() {
                let p = o["status"]?.arrayValue == nil ? Self.join(path, "status") : Self.join(Self.join(path, "status"), i)
                if let s = canonicalStatus(n, p) { statuses.append(s) }
            }
            c.statuses = statuses
        }
        if let m = o["match"] {
            let mp = Self.join(path, "match")
            guard case .array(let items) = m else {
                problem(mp, "expected an array of { field, equals | in | exists | prefix }, found \(m.kindName)")
                return c
            }
            for (i, item) in items.enumerated() {
                let ip = Self.join(mp, i)
                guard let io = object(item, ip, keys: ["field", "equals", "in", "exists", "prefix"]) else { continue }
                guard let field = jsonPath(io, "field", ip, form: .field, required: true) else { continue }
                let tests = ["equals", "in", "exists", "prefix"].filter { io[$0] != nil }
                guard tests.count == 1 else {
                    problem(ip, tests.isEmpty ? "needs one of: equals, in, exists, prefix" : "has several tests (\(tests.joined(separator: ", "))): one per item")
                    continue
                }
                let test: FieldPredicate.Test
                switch tests[0] {
                case "equals":
                    guard let v = io["equals"]?.scalarText else {
                        problem(Self.join(ip, "equals"), "expected a string, number or boolean")
                        continue
                    }
                    test = .equals(v)
                case "in":
                    guard let list = io["in"]?.arrayValue?.compactMap(\.scalarText), !list.isEmpty else {
                        problem(Self.join(ip, "in"), "expected a non-empty array of values")
                        continue
                    }
                    test = .oneOf(list)
                case "exists":
                    guard let b = bool(io, "exists", ip) else { continue }
                    test = .exists(b)
                default:
                    guard let p = string(io, "prefix", ip) else { continue }
                    test = .prefix(p)
                }
                c.match.append(FieldPredicate(field: field, test: test))
            }
        }
        return c
    }
}
