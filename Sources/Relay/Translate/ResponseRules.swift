import Foundation

/// Response classification as data: the first rule whose status and body fields match decides; when none does,
/// the default reading (`classifyByStatus`) applies.
///
/// ```json5
/// responses: [
///   { status: 200, body: { "$.category": ["invalid", "expired"] }, result: "terminal", reason: "code is no longer valid" },
///   { status: "4xx", body: { "$.error.retryable": true }, result: "retry" },
///   { status: [200, 201], body: { "$.ok": false }, result: "terminal" },
/// ]
/// ```
public struct ResponseRule: Sendable, Equatable {
    public enum Result: String, Sendable { case delivered, retry, terminal }
    /// Status codes (exact) and classes (`4` for "4xx"); both empty: any status.
    public var statuses: Set<Int> = []
    public var classes: Set<Int> = []
    /// JSON path in the response body -> accepted values (compared as text; `null` matches a missing field).
    public var body: [(path: String, values: [JSONValue])] = []
    public var result: Result
    public var reason: String?

    public init(result: Result) { self.result = result }

    public static func == (a: ResponseRule, b: ResponseRule) -> Bool {
        a.statuses == b.statuses && a.classes == b.classes && a.result == b.result && a.reason == b.reason
            && a.body.elementsEqual(b.body, by: { $0.path == $1.path && $0.values == $1.values })
    }

    func matches(_ response: OutboundResponse, _ json: () -> JSONValue?) -> Bool {
        if !statuses.isEmpty || !classes.isEmpty {
            guard statuses.contains(response.status) || classes.contains(response.status / 100) else { return false }
        }
        for (path, values) in body {
            let found = json()?.value(atPath: path)
            let ok = values.contains { want in
                if want.isNull { return found == nil || found!.isNull }
                guard let found else { return false }
                return found == want || (found.scalarText != nil && found.scalarText == want.scalarText)
            }
            if !ok { return false }
        }
        return true
    }
}

public struct ResponseRules: Sendable, Equatable {
    public var rules: [ResponseRule]
    public init(_ rules: [ResponseRule] = []) { self.rules = rules }

    /// The first matching rule's verdict, or nil when no rule matches.
    public func classify(_ response: OutboundResponse) -> Classification? {
        guard !rules.isEmpty else { return nil }
        var parsed: JSONValue??
        let json = { () -> JSONValue? in
            if parsed == nil { parsed = .some(try? JSONParser.parse(response.body)) }
            return parsed!
        }
        for rule in rules where rule.matches(response, json) {
            let detail = rule.body.map { "\($0.path)=\(json()?.value(atPath: $0.path)?.scalarText ?? "null")" }
            let reason = rule.reason ?? (["HTTP \(response.status)"] + detail).joined(separator: " ")
            switch rule.result {
            case .delivered: return .delivered
            case .retry: return .retry(reason: reason, after: RetryPolicy.retryAfter(response.headers["Retry-After"]))
            case .terminal: return .terminal(reason: reason)
            }
        }
        return nil
    }
}

extension ConfigReader {
    /// Reads a `responses` list (see `ResponseRule`).
    public func responseRules(_ value: JSONValue?, _ path: String) -> ResponseRules {
        guard let value, !value.isNull else { return ResponseRules() }
        guard case .array(let list) = value else {
            problem(path, "expected a list of rules such as [{ status: 200, body: { \"$.ok\": false }, result: \"terminal\" }]")
            return ResponseRules()
        }
        var rules: [ResponseRule] = []
        for (i, item) in list.enumerated() {
            let p = Self.join(path, i)
            guard let o = object(item, p, keys: ["status", "body", "result", "reason"]) else { continue }
            guard let resultName = choice(o, "result", p, ["delivered", "retry", "terminal"]),
                  let result = ResponseRule.Result(rawValue: resultName) else {
                if o["result"] == nil { problem(Self.join(p, "result"), "is required (delivered, retry or terminal)") }
                continue
            }
            var rule = ResponseRule(result: result)
            rule.reason = string(o, "reason", p)
            if let s = o["status"] {
                let sp = Self.join(p, "status")
                let items: [JSONValue] = s.arrayValue ?? [s]
                for (j, x) in items.enumerated() {
                    let xp = s.arrayValue == nil ? sp : Self.join(sp, j)
                    if let n = x.numberValue, n == n.rounded(), n >= 100, n <= 599 {
                        rule.statuses.insert(Int(n))
                    } else if let t = x.stringValue, t.count == 3, t.lowercased().hasSuffix("xx"),
                              let c = Int(t.prefix(1)), (1...5).contains(c) {
                        rule.classes.insert(c)
                    } else if let t = x.stringValue, let n = Int(t), n >= 100, n <= 599 {
                        rule.statuses.insert(n)
                    } else {
                        problem(xp, "expected an HTTP status (200) or class (\"4xx\")")
                    }
                }
            }
            if let b = o["body"] {
                let bp = Self.join(p, "body")
                if let fields = b.objectValue {
                    for k in fields.keys.sorted() {
                        // Keys are JSON paths such as "$.status.success".
                        guard let path = jsonPath(.string(k), Self.join(bp, k)) else { continue }
                        let v = fields[k]!
                        rule.body.append((path, v.arrayValue ?? [v]))
                    }
                } else {
                    problem(bp, "expected an object of JSON path -> value (or list of values)")
                }
            }
            rules.append(rule)
        }
        return ResponseRules(rules)
    }
}
