import Foundation

/// A JSON text that could not be parsed: what was wrong and at which byte.
public struct JSONParseError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public let offset: Int
    public var description: String { "\(message) at byte \(offset)" }
}

/// A strict RFC 8259 parser straight from UTF-8 bytes into `JSONValue`.
///
/// It exists for the ingest hot path: JSONSerialization parses quickly, but converting its `Any` tree into Swift
/// values costs five times the parse (dynamic casts), and a Decodable walk throws on every type probe. Its
/// behaviour is checked against JSONSerialization in the tests.
public struct JSONParser {
    /// Deeper nesting is refused (400). Whatever ingest accepts must be storable and read back: a stored event holds
    /// its body's values a few levels down (`attributes`, an adapter's own objects), and the stores read events back
    /// with Foundation's JSONDecoder, which refuses more than 512 levels. At 512 here, an event whose attribute kept
    /// a deep part of its body was acknowledged but could not be read again (by the admin API, nor by the
    /// dispatcher's claim). No webhook nests anywhere near 256 levels.
    public static let maxDepth = 256
    /// An integer of 2^53 or more in magnitude with at most this many digits keeps them (`.integer`); a longer one is
    /// a Double. 38 is what a Decimal holds exactly: the stores read events back through JSONDecoder, which gives
    /// such an integer back exactly (`JSONValue.init(from:)`) only up to there.
    public static let maxIntegerDigits = 38

    public static func parse(_ bytes: [UInt8]) throws(JSONParseError) -> JSONValue {
        try run(bytes, build: true)
    }

    /// Checks that `bytes` are one valid JSON text (the same rules as `parse`) without building anything: for
    /// bodies that are stored and relayed but not read.
    public static func validate(_ bytes: [UInt8]) throws(JSONParseError) {
        _ = try run(bytes, build: false)
    }

    private static func run(_ bytes: [UInt8], build: Bool) throws(JSONParseError) -> JSONValue {
        try bytes.withUnsafeBufferPointer { (buf: UnsafeBufferPointer<UInt8>) throws(JSONParseError) -> JSONValue in
            var p = JSONParser(buf, build: build)
            p.skipSpace()
            let v = try p.value(depth: 0)
            p.skipSpace()
            if p.i != buf.count { throw p.fail("unexpected text after the JSON value") }
            if !build && p.sawNonASCII && String(validating: buf, as: UTF8.self) == nil {
                // Outside strings only ASCII can pass the grammar, so this checks the strings' UTF-8.
                throw JSONParseError(message: "invalid UTF-8 in string", offset: 0)
            }
            return v
        }
    }

    private let b: UnsafeBufferPointer<UInt8>
    private var i = 0
    /// false: validate only; values come back as `.null` and strings are not decoded.
    private let build: Bool
    private var sawNonASCII = false

    private init(_ b: UnsafeBufferPointer<UInt8>, build: Bool) {
        self.b = b
        self.build = build
    }

    private func fail(_ message: String) -> JSONParseError { JSONParseError(message: message, offset: i) }

    private mutating func skipSpace() {
        while i < b.count {
            let c = b[i]
            if c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { i += 1 } else { return }
        }
    }

    private mutating func value(depth: Int) throws(JSONParseError) -> JSONValue {
        guard i < b.count else { throw fail("unexpected end of input") }
        switch b[i] {
        case UInt8(ascii: "{"): return try object(depth: depth + 1)
        case UInt8(ascii: "["): return try array(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            let start = i
            let n = try number()
            guard build else { return .null }
            // An integer beyond 2^53 loses digits in a Double: keep its text.
            if abs(n) >= 9_007_199_254_740_992, i - start - (b[start] == UInt8(ascii: "-") ? 1 : 0) <= Self.maxIntegerDigits,
               b[start..<i].allSatisfy({ $0 == UInt8(ascii: "-") || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) }) {
                return .integer(String(decoding: UnsafeBufferPointer(rebasing: b[start..<i]), as: UTF8.self))
            }
            return .number(n)
        default: throw fail("unexpected character")
        }
    }

    private mutating func literal(_ word: StaticString) throws(JSONParseError) {
        let n = word.utf8CodeUnitCount
        guard i + n <= b.count else { throw fail("unexpected end of input") }
        let w = word.utf8Start
        for k in 0..<n where b[i + k] != w[k] { throw fail("invalid literal") }
        i += n
    }

    private mutating func object(depth: Int) throws(JSONParseError) -> JSONValue {
        if depth > Self.maxDepth { throw fail("nested too deeply") }
        i += 1
        var out: [String: JSONValue] = [:]
        skipSpace()
        if i < b.count && b[i] == UInt8(ascii: "}") { i += 1; return .object(out) }
        while true {
            skipSpace()
            guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
            let key = try string()
            skipSpace()
            guard i < b.count, b[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
            i += 1
            skipSpace()
            let v = try value(depth: depth)
            if build { out[key] = v }
            skipSpace()
            guard i < b.count else { throw fail("unexpected end of input") }
            if b[i] == UInt8(ascii: ",") { i += 1; continue }
            if b[i] == UInt8(ascii: "}") { i += 1; return .object(out) }
            throw fail("expected ',' or '}'")
        }
    }

    private mutating func array(depth: Int) throws(JSONParseError) -> JSONValue {
        if depth > Self.maxDepth { throw fail("nested too deeply") }
        i += 1
        var out: [JSONValue] = []
        skipSpace()
        if i < b.count && b[i] == UInt8(ascii: "]") { i += 1; return .array(out) }
        while true {
            skipSpace()
            let v = try value(depth: depth)
            if build { out.append(v) }
            skipSpace()
            guard i < b.count else { throw fail("unexpected end of input") }
            if b[i] == UInt8(ascii: ",") { i += 1; continue }
            if b[i] == UInt8(ascii: "]") { i += 1; return .array(out) }
            throw fail("expected ',' or ']'")
        }
    }

    private mutating func string() throws(JSONParseError) -> String {
        i += 1   // opening quote
        let start = i
        // Fast path: no escapes. A local index and an OR of the bytes seen, so the loop keeps them in registers.
        var j = i
        var seen: UInt8 = 0
        let n = b.count
        if let base = b.baseAddress {
            // Eight bytes at a time while none is a quote, a backslash or a control character (SWAR: a byte of
            // `x` is zero where the `hasZero` bit of its lane is set; bytes >= 0x80 are noted, not stopped at).
            let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
            var wide: UInt64 = 0
            while j + 8 <= n {
                let w = UnsafeRawPointer(base + j).loadUnaligned(as: UInt64.self)
                let quote = w ^ (ones &* 0x22), backslash = w ^ (ones &* 0x5C)
                let special = (((quote &- ones) & ~quote) | ((backslash &- ones) & ~backslash) | ((w &- ones &* 0x20) & ~w)) & highs
                if special != 0 {
                    // The lowest flagged lane is the first special byte (a borrow can only flag lanes above a true
                    // one), so the bytes before it are plain and the byte-wise loop below is needed only for the
                    // last seven bytes of the text.
                    let k = special.trailingZeroBitCount >> 3
                    wide |= w & ((1 &<< (k << 3)) &- 1)
                    j += k
                    break
                }
                wide |= w
                j += 8
            }
            if wide & highs != 0 { seen = 0x80 }
        }
        while j < n {
            let c = b[j]
            if c == UInt8(ascii: "\"") || c == UInt8(ascii: "\\") || c < 0x20 { break }
            seen |= c
            j += 1
        }
        i = j
        if seen >= 0x80 { sawNonASCII = true }
        if i < n && b[i] == UInt8(ascii: "\"") {
            if !build {
                i += 1
                return ""
            }
            guard let s = String(validating: UnsafeBufferPointer(rebasing: b[start..<i]), as: UTF8.self) else {
                throw fail("invalid UTF-8 in string")
            }
            i += 1
            return s
        }
        if i < n && b[i] < 0x20 { throw fail("control character in string") }
        var bytes = Array(UnsafeBufferPointer(rebasing: b[start..<i]))
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "\"") {
                i += 1
                if !build { return "" }
                guard let s = String(validating: bytes, as: UTF8.self) else { throw fail("invalid UTF-8 in string") }
                return s
            }
            if c < 0x20 { throw fail("control character in string") }
            if c >= 0x80 { sawNonASCII = true }
            if c != UInt8(ascii: "\\") {
                bytes.append(c)
                i += 1
                continue
            }
            i += 1
            guard i < b.count else { break }
            let e = b[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""): bytes.append(0x22)
            case UInt8(ascii: "\\"): bytes.append(0x5C)
            case UInt8(ascii: "/"): bytes.append(0x2F)
            case UInt8(ascii: "b"): bytes.append(0x08)
            case UInt8(ascii: "f"): bytes.append(0x0C)
            case UInt8(ascii: "n"): bytes.append(0x0A)
            case UInt8(ascii: "r"): bytes.append(0x0D)
            case UInt8(ascii: "t"): bytes.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if scalar >= 0xD800 && scalar < 0xDC00 {
                    guard i + 1 < b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") else {
                        throw fail("unpaired surrogate in \\u escape")
                    }
                    i += 2
                    let low = try hex4()
                    guard low >= 0xDC00 && low < 0xE000 else { throw fail("unpaired surrogate in \\u escape") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if scalar >= 0xDC00 && scalar < 0xE000 {
                    throw fail("unpaired surrogate in \\u escape")
                }
                bytes.append(contentsOf: Array(String(Character(Unicode.Scalar(scalar)!)).utf8))
            default:
                throw fail("invalid escape")
            }
        }
        throw fail("unterminated string")
    }

    private mutating func hex4() throws(JSONParseError) -> UInt32 {
        guard i + 4 <= b.count else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = b[i]
            let d: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
            default: throw fail("invalid \\u escape")
            }
            v = v << 4 | UInt32(d)
            i += 1
        }
        return v
    }

    private mutating func number() throws(JSONParseError) -> Double {
        let start = i
        func digit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }
        if b[i] == UInt8(ascii: "-") { i += 1 }
        guard i < b.count, digit(b[i]) else { throw fail("invalid number") }
        if b[i] == UInt8(ascii: "0") {
            i += 1
        } else {
            while i < b.count && digit(b[i]) { i += 1 }
        }
        if i < b.count && b[i] == UInt8(ascii: ".") {
            i += 1
            guard i < b.count, digit(b[i]) else { throw fail("invalid number") }
            while i < b.count && digit(b[i]) { i += 1 }
        }
        let exponent = i < b.count && (b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E"))
        if exponent {
            i += 1
            if i < b.count && (b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-")) { i += 1 }
            guard i < b.count, digit(b[i]) else { throw fail("invalid number") }
            while i < b.count && digit(b[i]) { i += 1 }
        }
        if !build && !exponent && i - start < 300 { return 0 }   // grammar checked; no such number overflows a Double
        let text = String(decoding: UnsafeBufferPointer(rebasing: b[start..<i]), as: UTF8.self)
        guard let d = Double(text), d.isFinite else { throw fail("number out of range") }
        return d
    }
}

extension StringProtocol {
    /// Without leading and trailing ASCII spaces and tabs (RFC 9110's OWS), cut on the UTF-8 bytes: other Unicode
    /// spaces and a combining mark after a space stay. Foundation's `trimmingCharacters(in: .whitespaces)` goes
    /// through NSString and UTF-16: on the HTTP client it was about a sixth of the thread's time per delivery (perf,
    /// bench/deliveries).
    public var trimmedASCII: Substring {
        let s = Substring(self)
        func ows(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 }
        guard let first = s.utf8.firstIndex(where: { !ows($0) }), let last = s.utf8.lastIndex(where: { !ows($0) })
        else { return s[s.endIndex...] }
        return Substring(s.utf8[first...last])
    }
}
