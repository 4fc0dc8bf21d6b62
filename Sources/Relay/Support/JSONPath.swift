import Foundation

/// The JSON paths a configuration writes, and the one check they all go through (`ConfigReader.jsonPath`).
///
/// The syntax `JSONValue.value(atPath:)` follows: `$` (the whole value), then steps
/// - `.name`: a key (any characters but `.`, `[`, `]`, quotes, parentheses and spaces);
/// - `['key']` or `["key"]`: a key with any other characters (no quotes or `]` inside);
/// - `[0]` or `.get(0)` (Capillary's spelling): an index into an array.
///
/// Not supported, so refused rather than never matching: `..` (recursive descent), `*` (wildcards), filters
/// (`[?(...)]`), negative indexes, unquoted bracket keys (`[x]`), an empty step (`$.a.`, `$.a..b`).
public enum JSONPath {
    public enum Form: Sendable {
        /// A path into a body: starts with `$` (`$.order.id`).
        case body
        /// A path into the canonical event (route conditions): `subject.orderId`, `attributes.items[0].sku`; a
        /// leading `$.` is allowed.
        case field
        /// Where a destination's answer holds a value (`contextKeys`): `response.a.b` or `$.a.b` (the body),
        /// `response.headers.Name` (a header).
        case response
    }

    /// nil when `text` is a valid path of `form`, else why not, said of the path (`ends with '.'`).
    public static func validate(_ text: String, form: Form = .body) -> String? {
        if text.isEmpty { return "is empty" }
        if text.first!.isWhitespace || text.last!.isWhitespace { return "has spaces around it" }
        switch form {
        case .body:
            guard text.hasPrefix("$") else { return "does not start with $" }
            return steps(text.dropFirst(), leadingName: false)
        case .field:
            if text.hasPrefix("$") { return steps(text.dropFirst(), leadingName: false) }
            return steps(Substring(text), leadingName: true)
        case .response:
            if text.hasPrefix("$") { return steps(text.dropFirst(), leadingName: false) }
            if text.hasPrefix("response.headers.") {
                let name = text.dropFirst("response.headers.".count)
                if name.isEmpty { return "names no header after response.headers." }
                if !name.utf8.allSatisfy(isTokenByte) { return "names \"\(name)\", which is not a header name" }
                return nil
            }
            guard text.hasPrefix("response.") else { return "does not start with response. or $" }
            let rest = text.dropFirst("response.".count)
            if rest.isEmpty { return "names nothing after response." }
            return steps(rest, leadingName: true)
        }
    }

    /// The index a `get(N)` step names, or nil when `name` is not one.
    public static func getIndex(_ name: Substring) -> Int? {
        guard name.hasPrefix("get("), name.hasSuffix(")") else { return nil }
        let inner = name.dropFirst(4).dropLast()
        guard !inner.isEmpty, inner.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return Int(inner)
    }

    /// Checks the steps after `$` (or from the start, with `leadingName`).
    static func steps(_ path: Substring, leadingName: Bool) -> String? {
        var p = path
        var first = true
        while !p.isEmpty {
            let c = p.first!
            if c == "." {
                p = p.dropFirst()
                guard let next = p.first else { return "ends with '.'" }
                if next == "." { return "has '..' (recursive descent is not supported: name each step, $.a.b)" }
                if next == "[" { return "has '.[' (an index follows the name directly: $.a[0])" }
                if let reason = name(&p) { return reason }
            } else if c == "[" {
                guard let close = p.firstIndex(of: "]") else { return "has a '[' that is never closed" }
                let inner = p[p.index(after: p.startIndex)..<close]
                p = p[p.index(after: close)...]
                if inner.isEmpty { return "has '[]' (an index is [0], a key ['name'])" }
                if inner.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
                    if Int(inner) == nil { return "has an index too large, [\(inner)]" }
                } else if inner == "*" {
                    return "has [*] (wildcards are not supported: name one index, [0])"
                } else if inner.hasPrefix("?") || inner.hasPrefix("(") {
                    return "has a filter, [\(inner)] (filters are not supported)"
                } else if inner.hasPrefix("-") {
                    return "has a negative index, [\(inner)] (indexes count from 0)"
                } else if let q = inner.first, q == "'" || q == "\"" {
                    let body = inner.dropFirst()
                    let key = body.dropLast()
                    guard body.count >= 1, body.last == q, !key.contains(q),
                          !(key.first.map { $0 == "'" || $0 == "\"" } ?? false),
                          !(key.last.map { $0 == "'" || $0 == "\"" } ?? false) else {
                        return "has the key [\(inner)], not quoted properly (['name'] or [\"name\"], without that quote or ] inside)"
                    }
                } else {
                    return "has [\(inner)], which is neither an index ([0]) nor a quoted key (['\(inner)'])"
                }
            } else if first && leadingName {
                if let reason = name(&p) { return reason }
            } else if c == "]" {
                return "has a ']' without a '['"
            } else {
                return "needs '.' or '[' before '\(c)' (e.g. $.\(p.prefix(while: { $0 != "." && $0 != "[" })))"
            }
            first = false
        }
        return nil
    }

    /// Consumes a name step at the start of `p`; nil when it is a valid key or `get(N)`.
    private static func name(_ p: inout Substring) -> String? {
        let end = p.firstIndex(where: { $0 == "." || $0 == "[" }) ?? p.endIndex
        let n = p[..<end]
        p = p[end...]
        if n.isEmpty { return "has an empty step" }
        if n == "*" { return "has .* (wildcards are not supported)" }
        if n.hasPrefix("get(") {
            return getIndex(n) == nil ? "has \(n), which is not an index step (get(0), get(1), ...)" : nil
        }
        if n.contains(where: { $0.isWhitespace }) { return "has a space in the name \"\(n)\" (write ['\(n)'] for such a key)" }
        if n.contains("]") { return "has a ']' without a '['" }
        if n.contains(where: { "'\"()".contains($0) }) {
            return "has quotes or parentheses in the name \"\(n)\" (write [\"...\"] for such a key; the index step is get(N))"
        }
        return nil
    }

    /// RFC 9110 token characters (header names).
    private static func isTokenByte(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(c)
        }
    }
}

extension ConfigReader {
    /// A JSON path under `key` (see `JSONPath`), nil when absent, null or refused with a problem at its key path.
    public func jsonPath(_ o: [String: JSONValue], _ key: String, _ path: String, form: JSONPath.Form = .body,
                         required: Bool = false) -> String? {
        let p = Self.join(path, key)
        guard let v = o[key], !v.isNull else {
            if required { problem(p, "is required") }
            return nil
        }
        return jsonPath(v, p, form: form)
    }

    /// The JSON path `v` found at `p` (a map's value, a list's item, or an object's key as `.string`):
    /// `${env:...}` / `${file:...}` resolved, then checked; nil with a problem when it is not a string or not a
    /// path of `form`.
    public func jsonPath(_ v: JSONValue, _ p: String, form: JSONPath.Form = .body) -> String? {
        let expected: String
        switch form {
        case .body: expected = "expected a JSON path such as \"$.order.id\""
        case .field: expected = "expected a field of the event such as \"subject.orderId\" or \"attributes.items[0].sku\""
        case .response: expected = "expected a path into the response such as \"response.coupon.code\", \"$.order.id\" or \"response.headers.Location\""
        }
        guard case .string(let raw) = v else {
            problem(p, "\(expected), found \(v.kindName)")
            return nil
        }
        guard let s = substitute(raw, p) else { return nil }
        if let reason = JSONPath.validate(s, form: form) {
            problem(p, "\(expected): \(shown(v, s)) \(reason)")
            return nil
        }
        return s
    }
}
