import Foundation

/// A text with `${...}` placeholders over a canonical event, used for destination URLs, headers and bodies:
///
/// - `${id}`, `${source}`, `${type}`, `${status}`, `${occurredAt}`, `${receivedAt}`, `${idempotencyKey}`
/// - `${subject.orderId}`, `${attributes.trackingNumber}` (nested: `${attributes.address.city}`),
///   `${providerStatus.code}`, `${providerStatus.label}`
/// - `${raw.order.id}`: a field of the body as the provider sent it (JSON bodies)
/// - `${delivery.id}`, `${delivery.attempt}`, `${delivery.destination}`
/// - any other name (`${mappedStatus}`, `${voucher}`): a value the adapter supplies, such as the destination's
///   mapped status or a value an earlier step extracted from its response (`contextKeys`); `${context.voucher}`
///   says the same explicitly.
///
/// A placeholder ending in `?` (`${attributes.carrier?}`) is optional: empty text, or `null` where it stands for a
/// whole JSON value. A missing required value fails the translation with a reason naming it.
public struct Template: Sendable, Equatable, CustomStringConvertible {
    enum Part: Sendable, Equatable {
        case literal(String)
        case field(path: [String], optional: Bool, text: String)
    }

    public enum Escaping: Sendable {
        /// Values inserted as they are (headers, plain text).
        case none
        /// JSON string content: quotes, backslashes and control characters escaped (no surrounding quotes added).
        case json
        /// A URL path segment or query value: everything but RFC 3986 unreserved characters percent-encoded.
        case url
        /// `application/x-www-form-urlencoded` value.
        case form
    }

    public let text: String
    /// The template as configured, before `${env:...}` / `${file:...}` were resolved: what messages show, so that
    /// no secret reaches a log line or a stored error.
    public let shown: String
    let parts: [Part]

    public var description: String { shown }

    /// Parses `text`; throws a description of the first malformed placeholder. `shown`: the text as written in
    /// the configuration (with its secret references unresolved), for messages.
    public init(_ text: String, shown: String? = nil) throws(TemplateError) {
        self.text = text
        self.shown = shown ?? text
        var parts: [Part] = []
        var rest = Substring(text)
        while let start = rest.range(of: "${") {
            if start.lowerBound > rest.startIndex { parts.append(.literal(String(rest[..<start.lowerBound]))) }
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else {
                throw TemplateError("unterminated placeholder in \"\(shown ?? text)\"")
            }
            var inner = rest[start.upperBound..<end].trimmingCharacters(in: .whitespaces)
            let optional = inner.hasSuffix("?")
            if optional { inner.removeLast() }
            let path = inner.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
            guard !inner.isEmpty, path.allSatisfy({ !$0.isEmpty }) else {
                throw TemplateError("empty or malformed placeholder \"${\(inner)}\" in \"\(shown ?? text)\"")
            }
            if let root = path.first, Template.knownRoots.contains(root) == false, path.count > 1,
               root != "context", root != "raw" {
                throw TemplateError("unknown placeholder \"${\(inner)}\" (fields: \(Template.knownRoots.sorted().joined(separator: ", ")), context, raw)")
            }
            if ["env", "file"].contains(where: { inner.hasPrefix($0 + ":") }) {
                throw TemplateError("\"${\(inner)}\" could not be resolved")
            }
            if let reason = Template.shapeProblem(path) {
                throw TemplateError("malformed placeholder \"${\(inner)}\" in \"\(shown ?? text)\": \(reason)")
            }
            parts.append(.field(path: path, optional: optional, text: inner))
            rest = rest[rest.index(after: end)...]
        }
        if !rest.isEmpty { parts.append(.literal(String(rest))) }
        self.parts = parts
    }

    /// Why a placeholder's path can never name a value (nil when it can): a character no name holds, a field of
    /// the event given sub-fields it does not have, a subject without its key.
    static func shapeProblem(_ path: [String]) -> String? {
        for part in path {
            if part.contains("$") || part.contains("{") { return "placeholders cannot be nested" }
            if part.contains(where: { $0.isWhitespace }) { return "a name cannot hold spaces" }
            if part.contains("?") { return "only the end of a placeholder may be ? (optional)" }
            if part.contains("[") || part.contains("]") { return "an index is written .0 (${raw.items.0.sku}), not [0]" }
        }
        let root = path[0], rest = path.dropFirst()
        switch root {
        case "id", "source", "type", "status", "occurredAt", "receivedAt", "idempotencyKey":
            return rest.isEmpty ? nil : "\(root) is text, without fields"
        case "subject":
            return rest.count == 1 ? nil : rest.isEmpty ? "name the subject key: ${subject.orderId}"
                : "a subject key is text, without fields"
        case "providerStatus":
            return rest.count == 1 && ["code", "label"].contains(rest.first!) ? nil : "providerStatus has code and label"
        case "delivery":
            return rest.count == 1 && ["id", "attempt", "destination"].contains(rest.first!) ? nil
                : "delivery has id, attempt and destination"
        case "context":
            return rest.isEmpty ? "name the value: ${context.voucher}" : nil
        default:
            return nil
        }
    }

    static let knownRoots: Set<String> = ["id", "source", "type", "status", "occurredAt", "receivedAt", "idempotencyKey",
                                          "subject", "attributes", "providerStatus", "delivery"]

    /// Whether `root` (the first part of a placeholder) names a field of the event or delivery rather than a value
    /// an adapter supplies.
    public static func isEventField(_ root: String) -> Bool { knownRoots.contains(root) || root == "raw" }

    /// The placeholders, as written (without `${` `}`).
    public var placeholders: [String] {
        parts.compactMap { if case .field(_, _, let t) = $0 { return t }; return nil }
    }

    /// Whether the template is one placeholder and nothing else (in a JSON body it stands for a whole value).
    public var isSinglePlaceholder: Bool {
        if parts.count == 1, case .field = parts[0] { return true }
        return false
    }

    /// The text with every placeholder replaced, escaped for where it goes.
    public func render(_ scope: TemplateScope, escaping: Escaping = .none) throws(TranslateError) -> String {
        var out = ""
        for part in parts {
            switch part {
            case .literal(let s): out += s
            case .field(let path, let optional, let text):
                guard let v = scope.lookup(path), !v.isNull else {
                    if optional { continue }
                    throw missing(path, text)
                }
                out += Template.escape(Template.text(of: v), escaping)
            }
        }
        return out
    }

    /// The text of a template naming an identifier the provider requires: empty text is a terminal failure that
    /// names `field` and the template (`the redemptionId is empty ("${subject.redemptionId}" gave no text)`).
    public func renderIdentifier(_ scope: TemplateScope, field: String, escaping: Escaping = .none,
                                 hint: String = "") throws(TranslateError) -> String {
        let v = try render(scope, escaping: escaping)
        guard !v.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw TranslateError("\(field) is empty (\"\(shown)\" gave no text)\(hint.isEmpty ? "" : ": " + hint)")
        }
        return v
    }

    /// For a JSON body: a template that is one placeholder gives the value itself (a number stays a number);
    /// anything else gives a string.
    public func value(_ scope: TemplateScope) throws(TranslateError) -> JSONValue {
        if parts.count == 1, case .field(let path, let optional, let text) = parts[0] {
            if let v = scope.lookup(path), !v.isNull { return v }
            if optional { return .null }
            throw missing(path, text)
        }
        return .string(try render(scope))
    }

    /// A required value is missing. A subject identifier may still come (correlation links it when the answer that
    /// names it is recorded): retried. Anything else will never appear in this event: terminal.
    func missing(_ path: [String], _ placeholder: String) -> TranslateError {
        TranslateError("the event has no \(placeholder) (needed by \"\(shown)\")", kind: path.first == "subject" ? .retry : .terminal)
    }

    static func text(of v: JSONValue) -> String {
        switch v {
        case .string(let s): return s
        case .object, .array: return v.jsonString()
        default: return v.scalarText ?? ""
        }
    }

    static let unreserved: Set<UInt8> = Set(Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~".utf8))

    public static func escape(_ s: String, _ escaping: Escaping) -> String {
        switch escaping {
        case .none: return s
        case .json:
            var out = ""
            JSONValue.appendQuoted(s, to: &out)
            return String(out.dropFirst().dropLast())
        case .url, .form:
            // A value of only dots would be a path segment `.` or `..` that clients resolve: encoded, it stays a name.
            if escaping == .url, !s.isEmpty, s.utf8.allSatisfy({ $0 == UInt8(ascii: ".") }) {
                return String(repeating: "%2E", count: s.utf8.count)
            }
            var out = ""
            for b in s.utf8 {
                if unreserved.contains(b) {
                    out.unicodeScalars.append(UnicodeScalar(b))
                } else if escaping == .form && b == UInt8(ascii: " ") {
                    out += "+"
                } else {
                    out += "%" + String(b >> 4, radix: 16, uppercase: true) + String(b & 15, radix: 16, uppercase: true)
                }
            }
            return out
        }
    }
}

public struct TemplateError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// What a template's placeholders are looked up in: the event, the delivery, and values the adapter adds.
public struct TemplateScope: Sendable {
    public var event: CanonicalEvent
    public var context: DeliveryContext?
    /// Names the adapter supplies (`mappedStatus`) and values of earlier steps, looked up by bare name.
    public var values: [String: JSONValue]

    public init(event: CanonicalEvent, context: DeliveryContext? = nil, values: [String: JSONValue] = [:]) {
        self.event = event
        self.context = context
        self.values = values
        if let context {
            for (k, v) in context.values where self.values[k] == nil { self.values[k] = .string(v) }
        }
    }

    public func lookup(_ path: [String]) -> JSONValue? {
        guard let root = path.first else { return nil }
        let rest = path.dropFirst()
        func dig(_ v: JSONValue?, _ keys: ArraySlice<String>) -> JSONValue? {
            var cur = v
            for k in keys {
                switch cur {
                case .object(let o): cur = o[k]
                case .array(let a): cur = Int(k).flatMap { $0 >= 0 && $0 < a.count ? a[$0] : nil }
                default: return nil
                }
            }
            return cur
        }
        func scalar(_ s: String?) -> JSONValue? { rest.isEmpty ? s.map(JSONValue.string) : nil }
        switch root {
        case "id": return scalar(event.id)
        case "source": return scalar(event.source)
        case "type": return scalar(event.type)
        case "status": return scalar(event.status?.rawValue)
        case "occurredAt": return scalar(event.occurredAt)
        case "receivedAt": return scalar(event.receivedAt)
        case "idempotencyKey": return scalar(event.idempotencyKey)
        case "subject":
            guard rest.count == 1 else { return nil }
            return event.subject[rest.first!].map(JSONValue.string)
        case "attributes":
            return dig(.object(event.attributes), rest)
        case "providerStatus":
            guard let ps = event.providerStatus, rest.count == 1 else { return nil }
            switch rest.first! {
            case "code": return .string(ps.code)
            case "label": return ps.label.map(JSONValue.string)
            default: return nil
            }
        case "raw":
            guard let raw = event.raw, let v = try? JSONParser.parse(raw.bytes) else { return nil }
            return dig(v, rest)
        case "delivery":
            guard let context, rest.count == 1 else { return nil }
            switch rest.first! {
            case "id": return .string(context.deliveryID)
            case "attempt": return .number(Double(context.attempt))
            case "destination": return .string(context.destination)
            default: return nil
            }
        case "context":
            return dig(rest.first.flatMap { values[$0] }, rest.dropFirst())
        default:
            return dig(values[root], rest)
        }
    }
}

/// A JSON body template: strings in it are templates; a string that is one placeholder becomes that value.
public struct JSONTemplate: Sendable, Equatable {
    indirect enum Node: Sendable, Equatable {
        case literal(JSONValue)
        case text(Template)
        case object([(String, Node)])
        case array([Node])

        static func == (a: Node, b: Node) -> Bool {
            switch (a, b) {
            case (.literal(let x), .literal(let y)): return x == y
            case (.text(let x), .text(let y)): return x == y
            case (.array(let x), .array(let y)): return x == y
            case (.object(let x), .object(let y)): return x.elementsEqual(y, by: { $0.0 == $1.0 && $0.1 == $1.1 })
            default: return false
            }
        }
    }
    let root: Node

    /// `resolve` turns a configured string into the text to parse (secret references resolved); nil fails.
    public init(_ value: JSONValue, resolve: (String) -> String? = { $0 }) throws(TemplateError) {
        func build(_ v: JSONValue) throws(TemplateError) -> Node {
            switch v {
            case .string(let s):
                guard let r = resolve(s) else { throw TemplateError("cannot resolve \"\(s)\"") }
                return r.contains("${") ? .text(try Template(r, shown: s)) : .literal(.string(r))
            case .object(let o):
                var fields: [(String, Node)] = []
                for k in o.keys.sorted() { fields.append((k, try build(o[k]!))) }
                return .object(fields)
            case .array(let a):
                var items: [Node] = []
                for x in a { items.append(try build(x)) }
                return .array(items)
            default: return .literal(v)
            }
        }
        root = try build(value)
    }

    /// Every placeholder in the template's strings.
    public var placeholders: [String] {
        func walk(_ n: Node) -> [String] {
            switch n {
            case .literal: return []
            case .text(let t): return t.placeholders
            case .object(let fields): return fields.flatMap { walk($0.1) }
            case .array(let items): return items.flatMap(walk)
            }
        }
        return walk(root)
    }

    /// The value with every template filled in. Optional placeholders that come to `null` leave their object
    /// field out.
    public func render(_ scope: TemplateScope) throws(TranslateError) -> JSONValue {
        func fill(_ n: Node) throws(TranslateError) -> JSONValue {
            switch n {
            case .literal(let v): return v
            case .text(let t): return try t.value(scope)
            case .object(let fields):
                var o: [String: JSONValue] = [:]
                for (k, node) in fields {
                    let v = try fill(node)
                    if case .text(let t) = node, t.isSinglePlaceholder, v.isNull { continue }
                    o[k] = v
                }
                return .object(o)
            case .array(let items):
                var a: [JSONValue] = []
                for node in items { a.append(try fill(node)) }
                return .array(a)
            }
        }
        return try fill(root)
    }
}

extension ConfigReader {
    /// A template string under `key`: `${env:...}` and `${file:...}` are resolved now, other placeholders kept for
    /// each delivery. Problems name the key path.
    public func template(_ o: [String: JSONValue], _ key: String, _ path: String, required: Bool = false) -> Template? {
        let p = Self.join(path, key)
        guard let v = o[key], !v.isNull else {
            if required { problem(p, "is required") }
            return nil
        }
        return template(v, p)
    }

    /// The template under `key`, or `fallback` when the key is absent or null. With `nonEmpty`, a configured
    /// template that can only give empty text is a problem.
    public func template(_ o: [String: JSONValue], _ key: String, _ path: String, default fallback: String,
                         nonEmpty: Bool = false) -> Template? {
        guard let v = o[key], !v.isNull else { return try? Template(fallback) }
        let p = Self.join(path, key)
        guard let t = template(v, p) else { return nil }
        if nonEmpty && t.text.trimmingCharacters(in: .whitespaces).isEmpty {
            problem(p, "must not be empty (default \"\(fallback)\")")
            return nil
        }
        return t
    }

    /// `shown`: what messages call the template instead of its text (a pasted partner file's text must not reach a
    /// log: `<apiBody>`); default the text as written.
    public func template(_ v: JSONValue, _ p: String, shown: String? = nil) -> Template? {
        guard case .string(let s) = v else {
            problem(p, "expected a string, found \(v.kindName)")
            return nil
        }
        guard let resolved = substituteReferences(s, p) else { return nil }
        do {
            return try Template(resolved, shown: shown ?? s)
        } catch {
            problem(p, error.description)
            return nil
        }
    }

    /// A JSON body template (an object or array whose strings may hold placeholders), or nil with a problem.
    public func jsonTemplate(_ v: JSONValue, _ p: String) -> JSONTemplate? {
        var failed = false
        do {
            let t = try JSONTemplate(v) { text in
                guard let r = self.substituteReferences(text, p) else { failed = true; return text }
                return r
            }
            return failed ? nil : t
        } catch {
            problem(p, error.description)
            return nil
        }
    }

    /// Resolves `${env:...}` and `${file:...}` in `s`, leaving every other `${...}` as it is.
    public func substituteReferences(_ s: String, _ path: String) -> String? {
        guard s.contains("${env:") || s.contains("${file:") else { return s }
        var out = ""
        var rest = Substring(s)
        while let start = rest.range(of: "${") {
            out += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else {
                out += rest[start.lowerBound...]
                rest = rest[rest.endIndex...]
                break
            }
            let ref = String(rest[start.lowerBound...end])
            if ref.hasPrefix("${env:") || ref.hasPrefix("${file:") {
                guard let v = substitute(ref, path) else { return nil }
                out += v
            } else {
                out += ref
            }
            rest = rest[rest.index(after: end)...]
        }
        out += rest
        return out
    }
}
