import Foundation
import Relay

/// A fault rule of the sink (`relay simulate sink`): which requests it applies to and how they are answered.
///
/// As JSON (`POST /_sink/faults` takes a list of them):
///
///     {"path": "/hooks", "times": 2, "action": "status", "status": 503}
///
/// - `path`: optional, a prefix of the request path (plain string prefix; the query is not looked at).
/// - `times`: optional, apply to the next N matching requests, then expire; absent: always.
/// - `action`, with its own keys:
///   - `status`: answer `status` (default 503) with an optional `body` (a string is sent as text, anything else as
///     JSON) and `headers` (an object of strings).
///   - `retryAfter`: answer `status` (default 429) with `Retry-After: seconds` (default 1), or with an HTTP date
///     that many seconds ahead when `httpDate` is true; optional `body` and `headers`.
///   - `hang`: hold the answer for `seconds` (default 60; the client gives up first), then answer `status`
///     (default 504). No thread waits meanwhile.
///   - `slow`: answer normally after `seconds` (default 1): the sink's 200, or a provider stand-in's own answer.
///   - `reset`: close the connection without an answer.
///   - `json`: answer `status` (default 200) with the JSON `body` (required) and optional `headers`: provider
///     stand-ins that report business errors inside a 200.
///
/// Behind a provider stand-in (`relay simulate capillary`...), an error answer without a `body` of its own (`status`
/// 4xx/5xx, `retryAfter`, `hang`) is in that provider's error envelope (`SinkResponder.errorBody`).
public struct SinkFault: Sendable, Equatable {
    public enum Body: Sendable, Equatable {
        /// Sent as is, `text/plain` unless the rule's headers say otherwise.
        case text(String)
        /// Sent as compact JSON, `application/json` unless the rule's headers say otherwise.
        case json(JSONValue)
    }

    public enum Action: Sendable, Equatable {
        case status(Int, body: Body? = nil, headers: [String: String] = [:])
        case retryAfter(status: Int = 429, seconds: Double = 1, httpDate: Bool = false, body: Body? = nil,
                        headers: [String: String] = [:])
        case hang(seconds: Double = 60, status: Int = 504)
        case slow(seconds: Double = 1)
        case reset
        case json(status: Int = 200, body: JSONValue, headers: [String: String] = [:])

        /// The action's name as JSON and fault specs spell it.
        public var name: String {
            switch self {
            case .status: return "status"
            case .retryAfter: return "retryAfter"
            case .hang: return "hang"
            case .slow: return "slow"
            case .reset: return "reset"
            case .json: return "json"
            }
        }
    }

    /// A prefix of the request path; nil: every path.
    public var path: String?
    /// Apply to the next `times` matching requests, then expire; nil: always.
    public var times: Int?
    public var action: Action

    public init(path: String? = nil, times: Int? = nil, action: Action) {
        self.path = path
        self.times = times
        self.action = action
    }

    public func matches(path requestPath: String) -> Bool {
        guard let path else { return true }
        return requestPath.hasPrefix(path)
    }

    // MARK: JSON

    static let actionKeys: [String: Set<String>] = [
        "status": ["status", "body", "headers"],
        "retryAfter": ["status", "seconds", "httpDate", "body", "headers"],
        "hang": ["seconds", "status"],
        "slow": ["seconds"],
        "reset": [],
        "json": ["status", "body", "headers"],
    ]
    static let commonKeys: Set<String> = ["path", "times", "action"]

    /// Reads one rule; `at` names it in error messages (e.g. `faults[1]`).
    public init(json: JSONValue, at where_: String = "fault") throws(SinkError) {
        func problem(_ key: String?, _ message: String) -> SinkError {
            SinkError(message: "\(where_)\(key.map { ".\($0)" } ?? ""): \(message)")
        }
        guard let obj = json.objectValue else { throw problem(nil, "must be an object, not \(json.kindName)") }
        guard let actionName = obj["action"]?.stringValue else {
            throw problem("action", "is required: one of \(SinkFault.actionNames)")
        }
        guard let allowed = SinkFault.actionKeys[actionName] else {
            throw problem("action", "\"\(actionName)\" is not one of \(SinkFault.actionNames)")
        }
        for key in obj.keys.sorted() where !allowed.contains(key) && !SinkFault.commonKeys.contains(key) {
            let also = allowed.isEmpty ? "" : ", " + allowed.sorted().joined(separator: ", ")
            throw problem(key, "unknown for action \"\(actionName)\" (allowed: path, times\(also))")
        }

        if let p = obj["path"] {
            guard let s = p.stringValue, s.hasPrefix("/") else { throw problem("path", "must be a string starting with /") }
            path = s
        }
        if let t = obj["times"] {
            guard let n = t.numberValue, n.rounded() == n, n >= 1, n <= 1e12 else {
                throw problem("times", "must be a whole number of at least 1 (leave it out for always)")
            }
            times = Int(n)
        }

        func status(_ fallback: Int) throws(SinkError) -> Int {
            guard let v = obj["status"] else { return fallback }
            guard let n = v.numberValue, n.rounded() == n, n >= 100, n <= 599 else {
                throw problem("status", "must be a whole number from 100 to 599")
            }
            return Int(n)
        }
        func seconds(_ fallback: Double) throws(SinkError) -> Double {
            guard let v = obj["seconds"] else { return fallback }
            guard let n = v.numberValue, n.isFinite, n >= 0, n <= 86_400 else {
                throw problem("seconds", "must be a number of seconds from 0 to 86400")
            }
            return n
        }
        func headers() throws(SinkError) -> [String: String] {
            guard let v = obj["headers"] else { return [:] }
            guard let o = v.objectValue else { throw problem("headers", "must be an object of header names to strings") }
            var out: [String: String] = [:]
            for (name, value) in o {
                guard !name.isEmpty, name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: ":") }) else {
                    throw problem("headers", "\"\(name)\" is not a header name")
                }
                guard let text = value.scalarText, !text.utf8.contains(where: { $0 == 0x0d || $0 == 0x0a }) else {
                    throw problem("headers.\(name)", "must be a one-line string")
                }
                out[name] = text
            }
            return out
        }
        func body() -> Body? {
            guard let v = obj["body"] else { return nil }
            if let s = v.stringValue { return .text(s) }
            return .json(v)
        }

        switch actionName {
        case "status":
            action = .status(try status(503), body: body(), headers: try headers())
        case "retryAfter":
            var httpDate = false
            if let h = obj["httpDate"] {
                guard let b = h.boolValue else { throw problem("httpDate", "must be true or false") }
                httpDate = b
            }
            action = .retryAfter(status: try status(429), seconds: try seconds(1), httpDate: httpDate, body: body(),
                                 headers: try headers())
        case "hang":
            action = .hang(seconds: try seconds(60), status: try status(504))
        case "slow":
            action = .slow(seconds: try seconds(1))
        case "reset":
            action = .reset
        default: // "json"
            guard let b = obj["body"] else { throw problem("body", "is required for action \"json\"") }
            action = .json(status: try status(200), body: b, headers: try headers())
        }
    }

    /// Reads a JSON list of rules (a single object is taken as a list of one).
    public static func list(json: JSONValue, at where_: String = "faults") throws(SinkError) -> [SinkFault] {
        if json.objectValue != nil { return [try SinkFault(json: json, at: where_)] }
        guard let items = json.arrayValue else {
            throw SinkError(message: "\(where_): must be a list of fault rules, not \(json.kindName)")
        }
        var out: [SinkFault] = []
        for (i, item) in items.enumerated() { out.append(try SinkFault(json: item, at: "\(where_)[\(i)]")) }
        return out
    }

    /// The rule as JSON, every setting spelled out.
    public var json: JSONValue {
        var o: [String: JSONValue] = ["action": .string(action.name)]
        if let path { o["path"] = .string(path) }
        if let times { o["times"] = .number(Double(times)) }
        func put(_ body: Body?) {
            switch body {
            case .text(let s): o["body"] = .string(s)
            case .json(let v): o["body"] = v
            case nil: break
            }
        }
        func put(_ headers: [String: String]) {
            if !headers.isEmpty { o["headers"] = .object(headers.mapValues { .string($0) }) }
        }
        switch action {
        case .status(let status, let body, let headers):
            o["status"] = .number(Double(status))
            put(body)
            put(headers)
        case .retryAfter(let status, let seconds, let httpDate, let body, let headers):
            o["status"] = .number(Double(status))
            o["seconds"] = .number(seconds)
            o["httpDate"] = .bool(httpDate)
            put(body)
            put(headers)
        case .hang(let seconds, let status):
            o["seconds"] = .number(seconds)
            o["status"] = .number(Double(status))
        case .slow(let seconds):
            o["seconds"] = .number(seconds)
        case .reset:
            break
        case .json(let status, let body, let headers):
            o["status"] = .number(Double(status))
            o["body"] = body
            put(headers)
        }
        return .object(o)
    }

    static let actionNames = "status, retryAfter, hang, slow, reset, json"

    // MARK: Command-line specs

    /// Reads a `--fault` argument: a JSON rule (`{...}`) or list (`[...]`), or the short form
    /// `ACTION[:ARG][,KEY=VALUE]...`, where ARG is the status of `status` and `json` and the seconds of
    /// `retryAfter`, `hang` and `slow`; keys: `path`, `times`, `status`, `seconds`, `httpDate` (alone means true),
    /// `header=Name:value` (repeatable), and `body=...`, which must come last and takes the rest of the spec, commas
    /// included (JSON for `json`, text otherwise). Examples: `status:503,times=2`, `retryAfter:2,httpDate`,
    /// `hang:30,path=/slow`, `reset,times=1`, `json:200,body={"error":"card_declined"}`.
    public static func parse(spec: String) throws(SinkError) -> [SinkFault] {
        let trimmed = spec.trimmingCharacters(in: .whitespaces)
        if trimmed.hasPrefix("{") || trimmed.hasPrefix("[") {
            let value: JSONValue
            do { value = try JSONValue.parse(Array(trimmed.utf8)) } catch {
                throw SinkError(message: "--fault \(spec): not valid JSON (\(error))")
            }
            return try list(json: value, at: "--fault")
        }
        return [try SinkFault(json: try shortForm(trimmed), at: "--fault \(spec)")]
    }

    static func shortForm(_ spec: String) throws(SinkError) -> JSONValue {
        func problem(_ message: String) -> SinkError { SinkError(message: "--fault \(spec): \(message)") }
        func number(_ text: Substring, _ key: String) throws(SinkError) -> JSONValue {
            guard let n = Double(text), n.isFinite else { throw problem("\(key) \"\(text)\" is not a number") }
            return .number(n)
        }
        var rest = Substring(spec)
        let headEnd = rest.firstIndex(of: ",") ?? rest.endIndex
        let head = rest[..<headEnd]
        rest = headEnd < rest.endIndex ? rest[rest.index(after: headEnd)...] : ""
        let name: Substring
        var arg: Substring?
        if let colon = head.firstIndex(of: ":") {
            name = head[..<colon]
            arg = head[head.index(after: colon)...]
        } else {
            name = head
        }
        guard let actionName = SinkFault.actionKeys.keys.first(where: { $0.lowercased() == name.lowercased() }) else {
            throw problem("\"\(name)\" is not one of \(SinkFault.actionNames)")
        }
        var o: [String: JSONValue] = ["action": .string(actionName)]
        if let arg {
            switch actionName {
            case "status", "json": o["status"] = try number(arg, "status")
            case "retryAfter", "hang", "slow": o["seconds"] = try number(arg, "seconds")
            default: throw problem("\(actionName) takes no argument")
            }
        }
        var headers: [String: JSONValue] = [:]
        items: while !rest.isEmpty {
            let end = rest.firstIndex(of: ",") ?? rest.endIndex
            let item = rest[..<end]
            let eq = item.firstIndex(of: "=")
            let key = eq.map { item[..<$0] } ?? item
            if key == "body", let eq {
                // The rest of the spec, commas included.
                let text = String(rest[rest.index(after: eq)...])
                if actionName == "json" {
                    do { o["body"] = try JSONValue.parse(Array(text.utf8)) } catch {
                        throw problem("body is not valid JSON (\(error))")
                    }
                } else {
                    o["body"] = .string(text)
                }
                break items
            }
            rest = end < rest.endIndex ? rest[rest.index(after: end)...] : ""
            let value = eq.map { item[item.index(after: $0)...] }
            switch key {
            case "path":
                o["path"] = .string(String(value ?? ""))
            case "times", "status", "seconds":
                guard let value else { throw problem("\(key) needs a value (\(key)=N)") }
                o[String(key)] = try number(value, String(key))
            case "httpDate":
                switch value {
                case nil, "true": o["httpDate"] = .bool(true)
                case "false": o["httpDate"] = .bool(false)
                default: throw problem("httpDate is true or false")
                }
            case "header":
                guard let value, let colon = value.firstIndex(of: ":") else {
                    throw problem("header needs a value: header=Name:value")
                }
                headers[String(value[..<colon])] = .string(String(value[value.index(after: colon)...])
                    .trimmingCharacters(in: .whitespaces))
            default:
                throw problem("unknown key \"\(key)\" (keys: path, times, status, seconds, httpDate, header, body)")
            }
        }
        if !headers.isEmpty { o["headers"] = .object(headers) }
        return .object(o)
    }
}

/// A fault rule or a `relay simulate sink` argument that cannot be used: what is wrong, and where.
public struct SinkError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}
