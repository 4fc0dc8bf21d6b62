import Foundation

/// A JSON value: the configuration tree, payload fields and the canonical event's free-form parts.
public enum JSONValue: Sendable, Equatable, Hashable {
    case null
    case bool(Bool)
    case number(Double)
    /// An integer too large for a Double to hold exactly (2^53 or more in magnitude), kept as its digits so that
    /// ids such as `9007199254740993` stay distinct.
    case integer(String)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public var stringValue: String? { if case .string(let s) = self { return s }; return nil }
    public var objectValue: [String: JSONValue]? { if case .object(let o) = self { return o }; return nil }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a }; return nil }
    public var boolValue: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var numberValue: Double? {
        switch self {
        case .number(let n): return n
        case .integer(let digits): return Double(digits)
        default: return nil
        }
    }
    public var isNull: Bool { if case .null = self { return true }; return false }

    /// A scalar rendered as text (numbers without a trailing `.0` when integral), nil for containers and null.
    public var scalarText: String? {
        switch self {
        case .string(let s): return s
        case .bool(let b): return b ? "true" : "false"
        case .number(let n):
            if n.rounded() == n, abs(n) <= 9_007_199_254_740_992 { return String(Int64(n)) }
            return String(n)
        case .integer(let digits): return digits
        default: return nil
        }
    }

    /// The name of this value's kind, for error messages.
    public var kindName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number, .integer: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }

    public subscript(key: String) -> JSONValue? { objectValue?[key] }

    /// Parses JSON text (JSON5 when `json5` is true: configuration files, through `JSON5`).
    public static func parse(_ data: Data, json5: Bool = false) throws -> JSONValue {
        if json5 { return try JSON5.parse(data) }
        return try JSONParser.parse(Array(data))
    }

    /// Parses JSON text from bytes (the ingest path: see `JSONParser`).
    public static func parse(_ bytes: [UInt8]) throws(JSONParseError) -> JSONValue { try JSONParser.parse(bytes) }

    /// Converts what JSONSerialization returns.
    public init(foundation value: Any) {
        switch value {
        case let s as String: self = .string(s)
        case let n as NSNumber:
            // Booleans come back as NSNumber of type char; JSON numbers never do.
            if String(cString: n.objCType) == "c" { self = .bool(n.boolValue) } else { self = .number(n.doubleValue) }
        case let a as [Any]: self = .array(a.map { JSONValue(foundation: $0) })
        case let o as [String: Any]:
            var out: [String: JSONValue] = [:]
            out.reserveCapacity(o.count)
            for (k, v) in o { out[k] = JSONValue(foundation: v) }
            self = .object(out)
        default: self = .null
        }
    }

    /// Compact JSON text with sorted keys (stable output for storage and tests).
    public func jsonData() -> Data { Data(jsonString().utf8) }

    public func jsonString() -> String {
        var out = ""
        write(to: &out)
        return out
    }

    /// Appends compact JSON text with sorted keys.
    public func write(to out: inout String) {
        var w = JSONWriter()
        w.value(self)
        out += w.string
    }

    /// Appends `s` as a JSON string literal. Escaping works on UTF-8 bytes (multi-byte sequences never contain a
    /// byte below 0x80, so they pass through whole): a body full of quotes costs one pass, not one append per
    /// character.
    public static func appendQuoted(_ s: String, to out: inout String) {
        var plain = true
        for u in s.utf8 where u < 0x20 || u == 0x22 || u == 0x5c { plain = false; break }
        if plain {
            out += "\""
            out += s
            out += "\""
        } else {
            var w = JSONWriter(capacity: s.utf8.count + s.utf8.count / 8 + 8)
            w.quoted(s)
            out += w.string
        }
    }

    /// Follows a simple JSON path: `$.a.b[0].c` (also `a.b`; `.get(0)` is `[0]`); nil where any step is missing.
    /// The syntax a configuration may use is checked by `JSONPath.validate`; this reads it without checking.
    public func value(atPath path: String) -> JSONValue? {
        var current: JSONValue = self
        var p = Substring(path)
        if p.hasPrefix("$") { p = p.dropFirst() }
        /// `[inner]`: an index into an array, else a key (quotes around it dropped).
        func bracket(_ inner: Substring) -> JSONValue? {
            if let i = Int(inner), case .array(let a) = current, i >= 0, i < a.count { return a[i] }
            return current[inner.trimmingCharacters(in: CharacterSet(charactersIn: "'\""))]
        }
        while !p.isEmpty {
            if p.hasPrefix(".") { p = p.dropFirst(); continue }
            if p.hasPrefix("[") {
                guard let close = p.firstIndex(of: "]") else { return nil }
                let inner = p[p.index(after: p.startIndex)..<close]
                p = p[p.index(after: close)...]
                guard let next = bracket(inner) else { return nil }
                current = next
                continue
            }
            let end = p.firstIndex(where: { $0 == "." || $0 == "[" }) ?? p.endIndex
            let name = p[..<end]
            if let index = JSONPath.getIndex(name) {
                guard let next = bracket(Substring(String(index))) else { return nil }
                current = next
            } else {
                guard let next = current[String(name)] else { return nil }
                current = next
            }
            p = p[end...]
        }
        return current
    }
}

extension JSONValue: Codable {
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null; return }
        if let b = try? c.decode(Bool.self) { self = .bool(b); return }
        if let s = try? c.decode(String.self) { self = .string(s); return }
        // Every JSON number decodes as a Double; only a number goes on to the exact readings below, so an array or
        // an object is not made to fail three more decodes first.
        if let n = try? c.decode(Double.self) {
            // Integers exactly: past 2^53 a Double loses digits, so such an integer comes back as `.integer`, as
            // `JSONParser` gave it. Stored events are read back through here (the stores' JSONDecoder): an id in an
            // attribute must not change between the 202 and the delivery.
            if let i = try? c.decode(Int64.self) {
                self = i.magnitude >= 9_007_199_254_740_992 ? .integer(String(i)) : .number(Double(i))
                return
            }
            if let u = try? c.decode(UInt64.self) { self = .integer(String(u)); return }
            if let d = try? c.decode(Decimal.self), let digits = Self.integerDigits(d) { self = .integer(digits); return }
            self = .number(n)
            return
        }
        if let a = try? c.decode([JSONValue].self) { self = .array(a); return }
        self = .object(try c.decode([String: JSONValue].self))
    }

    /// The digits of an integral `d` of 2^53 or more in magnitude and at most 38 digits (what a Decimal holds
    /// exactly, and what `JSONParser` keeps as `.integer`), else nil.
    static func integerDigits(_ d: Decimal) -> String? {
        let text = d.description
        let digits = text.hasPrefix("-") ? text.dropFirst() : Substring(text)
        guard !digits.isEmpty, digits.utf8.count <= JSONParser.maxIntegerDigits,
              digits.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
              d.magnitude >= Decimal(9_007_199_254_740_992) else { return nil }
        return text
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let n):
            if n.rounded() == n, abs(n) < 9.0e15 { try c.encode(Int64(n)) } else { try c.encode(n) }
        case .integer(let digits):
            if let i = Int64(digits) { try c.encode(i) } else if let u = UInt64(digits) { try c.encode(u) } else { try c.encode(Double(digits) ?? 0) }
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }
}

/// Compact JSON written as UTF-8 bytes into one buffer: what the stores keep of every event and what adapters send,
/// so it runs once or more per webhook (appending to a `String` piece by piece costs several times as much).
public struct JSONWriter {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 256) { bytes.reserveCapacity(capacity) }

    public var string: String { String(decoding: bytes, as: UTF8.self) }

    /// Text that is already JSON (punctuation, a key with its quotes).
    public mutating func raw(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    public mutating func raw(_ text: String) { bytes.append(contentsOf: text.utf8) }

    /// `prefix` (punctuation and a quoted key) and then `value` as a string literal, when there is a value.
    public mutating func member(_ prefix: StaticString, _ value: String?) {
        guard let value else { return }
        raw(prefix)
        quoted(value)
    }

    /// `s` as a JSON string literal: `"`, `\`, and control characters escaped; everything else as it is.
    public mutating func quoted(_ s: String) {
        var s = s
        s.withUTF8 { quoted(bytes: $0) }
    }

    public mutating func quoted(bytes text: UnsafeBufferPointer<UInt8>) {
        bytes.append(0x22)
        var run = 0   // start of the bytes not yet copied
        for (i, u) in text.enumerated() where u < 0x20 || u == 0x22 || u == 0x5c {
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: text[run..<i]))
            run = i + 1
            switch u {
            case 0x22: bytes.append(0x5c); bytes.append(0x22)
            case 0x5c: bytes.append(0x5c); bytes.append(0x5c)
            case 0x0a: bytes.append(0x5c); bytes.append(UInt8(ascii: "n"))
            case 0x0d: bytes.append(0x5c); bytes.append(UInt8(ascii: "r"))
            case 0x09: bytes.append(0x5c); bytes.append(UInt8(ascii: "t"))
            default:
                let hex: StaticString = "0123456789abcdef"
                bytes.append(0x5c); bytes.append(UInt8(ascii: "u")); bytes.append(UInt8(ascii: "0")); bytes.append(UInt8(ascii: "0"))
                bytes.append(hex.utf8Start[Int(u >> 4)]); bytes.append(hex.utf8Start[Int(u & 0xf)])
            }
        }
        bytes.append(contentsOf: UnsafeBufferPointer(rebasing: text[run...]))
        bytes.append(0x22)
    }

    /// A value, objects with sorted keys (the text `JSONValue.jsonString()` gives).
    public mutating func value(_ v: JSONValue) {
        switch v {
        case .null: raw("null")
        case .bool(let b): if b { raw("true") } else { raw("false") }
        case .number(let n):
            if n.rounded() == n, abs(n) < 9.0e15 { raw(String(Int64(n))) } else if n.isFinite { raw(String(n)) } else { raw("null") }
        case .integer(let digits): raw(digits)
        case .string(let s): quoted(s)
        case .array(let a):
            bytes.append(UInt8(ascii: "["))
            for (i, e) in a.enumerated() {
                if i > 0 { bytes.append(UInt8(ascii: ",")) }
                value(e)
            }
            bytes.append(UInt8(ascii: "]"))
        case .object(let o):
            bytes.append(UInt8(ascii: "{"))
            for (i, k) in o.keys.sorted().enumerated() {
                if i > 0 { bytes.append(UInt8(ascii: ",")) }
                quoted(k)
                bytes.append(UInt8(ascii: ":"))
                value(o[k]!)
            }
            bytes.append(UInt8(ascii: "}"))
        }
    }
}
