import Foundation

/// JSON5 (https://spec.json5.org) read straight from UTF-8 bytes into `JSONValue`, with errors a person can act
/// on: line and column, the offending line with a caret under the column, and duplicate keys refused with both
/// lines and the key path.
///
/// The whole grammar: `//` and `/* */` comments, trailing commas, unquoted keys (ECMAScript identifier names,
/// `\u` escapes included), single- or double-quoted strings, the escapes `\' \" \\ \/ \b \f \n \r \t \v \0`,
/// `\xHH`, `\uHHHH` (surrogate pairs), line continuations, hexadecimal numbers, a leading or trailing decimal
/// point, a leading `+`, and JSON5's extra whitespace (NBSP, BOM, U+2028/U+2029 and the other Unicode spaces).
///
/// Stricter than the specification in three places, on purpose (a configuration is data a person typed):
/// - `Infinity` and `NaN` are refused (no setting takes them; they would come out as `null` in JSON);
/// - an escape of a character that is not an escape (`"\d"`, `"C:\p"`) is refused instead of standing for the
///   character itself, which hides a typo or a backslash that should have been doubled;
/// - a key given twice in one object is an error (JSON5 would keep the last one silently).
///
/// Numbers come back as `.number(Double)` like Foundation's JSON5 decoder gave them (integers beyond 2^53 are
/// rounded to the nearest Double); a number too large for a Double is refused.
public enum JSON5 {
    /// Nesting deeper than this is refused (a configuration is never stored as an event: the ingest parser's
    /// tighter `JSONParser.maxDepth` is about what the stores can read back).
    public static let maxDepth = 512

    /// Parses one JSON5 text. `showLines`: whether errors quote the line they are on (and the characters found
    /// there). Pass false for files whose content must never be echoed (a partner's pasted file may hold
    /// credentials): the error still gives line, column and what was expected.
    public static func parse(_ bytes: [UInt8], showLines: Bool = true) throws(JSON5Error) -> JSONValue {
        var reader = JSON5Reader(bytes, showLines: showLines)
        return try reader.document()
    }

    public static func parse(_ data: Data, showLines: Bool = true) throws(JSON5Error) -> JSONValue {
        try parse(Array(data), showLines: showLines)
    }

    public static func parse(_ text: String, showLines: Bool = true) throws(JSON5Error) -> JSONValue {
        try parse(Array(text.utf8), showLines: showLines)
    }
}

/// Why a JSON5 text could not be read, and where.
public struct JSON5Error: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case syntax
        /// `keyPath` names the key; `line`/`column` are where it is given again.
        case duplicateKey(key: String, firstLine: Int, firstColumn: Int)
    }

    public let kind: Kind
    /// 1-based line (lines end at LF, CRLF or CR).
    public let line: Int
    /// 1-based column, in characters.
    public let column: Int
    /// What is wrong, without the position: `expected ',' or '}' after an object member, found 'x'`.
    public let message: String
    /// Where in the tree: the key path of the value being read when the error struck (`destinations.capillary`;
    /// empty at the top level); for a duplicate key, the path of that key.
    public let keyPath: String
    /// The text of the line (nil when the text was parsed with `showLines: false`).
    public let lineText: String?

    public init(kind: Kind = .syntax, line: Int, column: Int, message: String, keyPath: String, lineText: String?) {
        self.kind = kind
        self.line = line
        self.column = column
        self.message = message
        self.keyPath = keyPath
        self.lineText = lineText
    }

    /// One line: `line 12, column 7: expected ...`; for a duplicate key the key path and both lines:
    /// `destinations.capillary: duplicate key "capillary" (first at line 4, again at line 19)`.
    public var summary: String {
        switch kind {
        case .syntax: return "line \(line), column \(column): \(message)"
        case .duplicateKey: return keyPath.isEmpty ? message : "\(keyPath): \(message)"
        }
    }

    /// The line and a caret under the column, e.g.
    /// ```
    ///   12 |     capillary: { adapter: "capillary" x
    ///      |                                       ^
    /// ```
    /// nil when the line is not shown.
    public var snippet: String? {
        guard let lineText else { return nil }
        return JSON5Error.snippet(lineText, line: line, column: column)
    }

    public var description: String { snippet.map { summary + "\n" + $0 } ?? summary }

    /// At most this many characters of a line are shown; a longer one is cut around the column.
    static let shownWidth = 120

    static func snippet(_ text: String, line: Int, column: Int) -> String {
        var chars = Array(text)
        var col = max(1, column)
        var lead = "", trail = ""
        if chars.count > shownWidth {
            let start = max(0, min(col - 1 - shownWidth / 2, chars.count - shownWidth))
            let end = min(chars.count, start + shownWidth)
            if start > 0 { lead = "..." }
            if end < chars.count { trail = "..." }
            chars = Array(chars[start..<end])
            col = col - start + lead.count
        }
        let number = String(line)
        let gutter = String(repeating: " ", count: number.count)
        // Tabs are copied into the caret line so that the caret lands under the column whatever the tab width.
        var pad = ""
        for c in (Array(lead) + chars).prefix(col - 1) { pad.append(c == "\t" ? "\t" : " ") }
        return "  \(number) | \(lead)\(String(chars))\(trail)\n  \(gutter) | \(pad)^"
    }
}

struct JSON5Reader {
    private enum PathPart { case key(String), index(Int) }

    private let b: [UInt8]
    private var i = 0
    private let showLines: Bool
    private var path: [PathPart] = []
    private var depth = 0

    init(_ bytes: [UInt8], showLines: Bool) {
        b = bytes
        self.showLines = showLines
    }

    mutating func document() throws(JSON5Error) -> JSONValue {
        if let bad = Self.firstInvalidUTF8(b) {
            i = bad
            throw fail("not UTF-8 text (the byte 0x\(String(b[bad], radix: 16, uppercase: true)) cannot start or continue a character)")
        }
        try skipSpace()
        if i >= b.count { throw fail("the file has no value (expected an object such as { sources: { ... } })") }
        let v = try value()
        try skipSpace()
        if i < b.count {
            throw fail("expected the end of the file after the top-level value, found \(found())")
        }
        return v
    }

    // MARK: Values

    private mutating func value() throws(JSON5Error) -> JSONValue {
        guard i < b.count else { throw failAtEnd("expected a value, found the end of the file") }
        switch b[i] {
        case UInt8(ascii: "{"): return try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""), UInt8(ascii: "'"): return .string(try string())
        case UInt8(ascii: "-"), UInt8(ascii: "+"), UInt8(ascii: "."), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return try number()
        default:
            let start = i
            if let word = identifierWord() {
                switch word {
                case "true": return .bool(true)
                case "false": return .bool(false)
                case "null": return .null
                case "Infinity", "NaN":
                    i = start
                    throw fail("\(word) is not allowed: settings take finite numbers")
                default:
                    i = start
                    throw fail("expected a value (an object, array, string, number, true, false or null), found \(found())\(showLines ? " (text needs quotes: \"...\")" : "")")
                }
            }
            throw fail("expected a value (an object, array, string, number, true, false or null), found \(found())")
        }
    }

    private mutating func enter() throws(JSON5Error) {
        depth += 1
        if depth > JSON5.maxDepth { throw fail("nested more than \(JSON5.maxDepth) levels deep") }
    }

    private mutating func object() throws(JSON5Error) -> JSONValue {
        let open = i
        try enter()
        i += 1
        var members: [String: JSONValue] = [:]
        var keyAt: [String: Int] = [:]
        while true {
            try skipSpace()
            guard i < b.count else { throw failAtEnd("expected a key or '}', found the end of the file\(unclosed("{", open))") }
            if b[i] == UInt8(ascii: "}") { i += 1; break }
            let keyStart = i
            let (key, quoted) = try memberName()
            if let first = keyAt[key] { throw duplicate(key, first: first, again: keyStart) }
            keyAt[key] = keyStart
            try skipSpace()
            guard i < b.count, b[i] == UInt8(ascii: ":") else {
                if i >= b.count { throw failAtEnd("expected ':' after a key, found the end of the file\(unclosed("{", open))") }
                let hint = !quoted && showLines ? " (a key with other characters than letters, digits, _ and $ needs quotes: \"...\")" : ""
                throw fail("expected ':' after \(showLines ? "the key \(Self.quoted(key))" : "a key"), found \(found())\(hint)")
            }
            i += 1
            try skipSpace()
            path.append(.key(key))
            members[key] = try value()
            path.removeLast()
            try skipSpace()
            guard i < b.count else { throw failAtEnd("expected ',' or '}' after an object member, found the end of the file\(unclosed("{", open))") }
            if b[i] == UInt8(ascii: ",") { i += 1; continue }
            if b[i] == UInt8(ascii: "}") { i += 1; break }
            throw fail("expected ',' or '}' after an object member, found \(found())")
        }
        depth -= 1
        return .object(members)
    }

    private mutating func array() throws(JSON5Error) -> JSONValue {
        let open = i
        try enter()
        i += 1
        var items: [JSONValue] = []
        while true {
            try skipSpace()
            guard i < b.count else { throw failAtEnd("expected a value or ']', found the end of the file\(unclosed("[", open))") }
            if b[i] == UInt8(ascii: "]") { i += 1; break }
            if b[i] == UInt8(ascii: ",") { throw fail("expected a value or ']', found ','") }
            path.append(.index(items.count))
            items.append(try value())
            path.removeLast()
            try skipSpace()
            guard i < b.count else { throw failAtEnd("expected ',' or ']' after an array item, found the end of the file\(unclosed("[", open))") }
            if b[i] == UInt8(ascii: ",") { i += 1; continue }
            if b[i] == UInt8(ascii: "]") { i += 1; break }
            throw fail("expected ',' or ']' after an array item, found \(found())")
        }
        depth -= 1
        return .array(items)
    }

    /// A key: a quoted string or an ECMAScript 5.1 IdentifierName. Returns the key and whether it was quoted.
    private mutating func memberName() throws(JSON5Error) -> (String, Bool) {
        let c = b[i]
        if c == UInt8(ascii: "\"") || c == UInt8(ascii: "'") { return (try string(), true) }
        var out = String.UnicodeScalarView()
        while i < b.count {
            let at = i
            var scalar: Unicode.Scalar
            if b[i] == UInt8(ascii: "\\") {
                guard i + 1 < b.count, b[i + 1] == UInt8(ascii: "u") else {
                    throw fail("a key can only hold \\u escapes (\\u0041); quote keys with other characters")
                }
                i += 2
                let code = try hex(4, escape: "\\u")
                guard let s = Unicode.Scalar(code) else {
                    i = at
                    throw fail("\\u\(String(code, radix: 16, uppercase: true)) is half of a surrogate pair: not allowed in a key")
                }
                scalar = s
            } else {
                let (s, n) = Self.scalar(b, at: i)
                scalar = s
                i += n
            }
            let ok = out.isEmpty ? Self.isIdentifierStart(scalar) : Self.isIdentifierPart(scalar)
            if !ok {
                i = at
                break
            }
            out.append(scalar)
        }
        if out.isEmpty {
            throw fail("expected a key (a name or a quoted string) or '}', found \(found())")
        }
        return (String(out), false)
    }

    /// The identifier at `i` (ASCII letters, digits, `_` and `$`, starting with a letter, `_` or `$`), consumed,
    /// or nil (nothing consumed).
    private mutating func identifierWord() -> String? {
        let start = i
        guard i < b.count, Self.isASCIIIdentifierStart(b[i]) else { return nil }
        while i < b.count, Self.isASCIIIdentifierStart(b[i]) || Self.isDigit(b[i]) { i += 1 }
        return String(decoding: b[start..<i], as: UTF8.self)
    }

    private mutating func string() throws(JSON5Error) -> String {
        let quote = b[i]
        let open = i
        i += 1
        let contentStart = i
        // Fast path: no escape.
        while i < b.count, b[i] != quote, b[i] != UInt8(ascii: "\\"), b[i] != 0x0A, b[i] != 0x0D { i += 1 }
        if i < b.count, b[i] == quote {
            i += 1
            return String(decoding: b[contentStart..<(i - 1)], as: UTF8.self)
        }
        var out = Array(b[contentStart..<i])
        while true {
            guard i < b.count else {
                i = open
                throw fail("this string is never closed (no \(quoteName(quote)) before the end of the file)")
            }
            let c = b[i]
            if c == quote { i += 1; break }
            if c == 0x0A || c == 0x0D {
                i = open
                throw fail("this string is not closed on its line (a line break in a string is written \\n, or \\ at the end of the line continues it)")
            }
            if c != UInt8(ascii: "\\") {
                out.append(c)
                i += 1
                continue
            }
            let escapeAt = i
            i += 1
            guard i < b.count else {
                i = open
                throw fail("this string is never closed (no \(quoteName(quote)) before the end of the file)")
            }
            let e = b[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "'"), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "v"): out.append(0x0B)
            case UInt8(ascii: "0"):
                if i < b.count, Self.isDigit(b[i]) {
                    i = escapeAt
                    throw fail("\\0 followed by a digit is an octal escape: not allowed (write \\x or \\u escapes)")
                }
                out.append(0)
            case UInt8(ascii: "1")...UInt8(ascii: "9"):
                i = escapeAt
                throw fail("\(showLines ? "\\\(Character(UnicodeScalar(e)))" : "a backslash and a digit") is an octal escape: not allowed (write \\x or \\u escapes)")
            case UInt8(ascii: "x"):
                appendUTF8(try hex(2, escape: "\\x"), to: &out)
            case UInt8(ascii: "u"):
                let unit = try hex(4, escape: "\\u")
                if (0xD800...0xDBFF).contains(unit) {
                    let lowAt = i
                    guard i + 1 < b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") else {
                        i = escapeAt
                        throw fail("\\u\(String(unit, radix: 16, uppercase: true)) is the first half of a surrogate pair, but no second half (\\uDC00-\\uDFFF) follows")
                    }
                    i += 2
                    let low = try hex(4, escape: "\\u")
                    guard (0xDC00...0xDFFF).contains(low) else {
                        i = lowAt
                        throw fail("expected the second half of a surrogate pair (\\uDC00-\\uDFFF) after \\u\(String(unit, radix: 16, uppercase: true))")
                    }
                    appendUTF8(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00), to: &out)
                } else if (0xDC00...0xDFFF).contains(unit) {
                    i = escapeAt
                    throw fail("\\u\(String(unit, radix: 16, uppercase: true)) is the second half of a surrogate pair, without a first half")
                } else {
                    appendUTF8(unit, to: &out)
                }
            case 0x0A: break  // line continuation
            case 0x0D: if i < b.count, b[i] == 0x0A { i += 1 }
            case 0xE2 where i + 1 < b.count && b[i] == 0x80 && (b[i + 1] == 0xA8 || b[i + 1] == 0xA9):
                i += 2  // continuation over U+2028 / U+2029
            default:
                i = escapeAt
                let shown = showLines ? "'\\\(String(Self.scalar(b, at: escapeAt + 1).0))' " : ""
                throw fail("unknown escape \(shown)(escapes are \\n \\t \\r \\b \\f \\v \\0 \\' \\\" \\\\ \\/ \\xHH \\uHHHH; a backslash itself is \\\\)")
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private func quoteName(_ q: UInt8) -> String { q == UInt8(ascii: "'") ? "closing '" : "closing \"" }

    /// `count` hex digits at `i`, consumed.
    private mutating func hex(_ count: Int, escape: String) throws(JSON5Error) -> UInt32 {
        var v: UInt32 = 0
        for k in 0..<count {
            guard i < b.count, let d = Self.hexDigit(b[i]) else {
                let what = k == 0 ? "" : " (found \(k))"
                throw fail("\(escape) needs \(count) hex digits\(what)")
            }
            v = v << 4 | UInt32(d)
            i += 1
        }
        return v
    }

    private func appendUTF8(_ code: UInt32, to out: inout [UInt8]) {
        guard let s = Unicode.Scalar(code) else { return }
        out.append(contentsOf: Array(String(s).utf8))
    }

    private mutating func number() throws(JSON5Error) -> JSONValue {
        let start = i
        var text = ""
        if b[i] == UInt8(ascii: "-") || b[i] == UInt8(ascii: "+") {
            if b[i] == UInt8(ascii: "-") { text = "-" }
            i += 1
        }
        if i < b.count, b[i] == UInt8(ascii: "I") || b[i] == UInt8(ascii: "N") {
            let wordAt = i
            if let word = identifierWord(), word == "Infinity" || word == "NaN" {
                i = start
                throw fail("\(String(decoding: b[start..<wordAt], as: UTF8.self))\(word) is not allowed: settings take finite numbers")
            }
            i = wordAt
            throw fail("expected a digit after the sign, found \(found())")
        }
        if i + 1 < b.count, b[i] == UInt8(ascii: "0"), b[i + 1] == UInt8(ascii: "x") || b[i + 1] == UInt8(ascii: "X") {
            i += 2
            let digits = i
            while i < b.count, Self.hexDigit(b[i]) != nil { i += 1 }
            if i == digits { throw fail("expected hex digits after 0x, found \(found())") }
            text += "0x" + String(decoding: b[digits..<i], as: UTF8.self)
        } else {
            let intStart = i
            while i < b.count, Self.isDigit(b[i]) { i += 1 }
            let intDigits = i - intStart
            if intDigits > 1, b[intStart] == UInt8(ascii: "0") {
                i = intStart
                throw fail("a number cannot start with 0 (leading zeros are not allowed; 0x starts a hexadecimal number)")
            }
            text += intDigits > 0 ? String(decoding: b[intStart..<(intStart + intDigits)], as: UTF8.self) : "0"
            var fracDigits = 0
            if i < b.count, b[i] == UInt8(ascii: ".") {
                i += 1
                let fracStart = i
                while i < b.count, Self.isDigit(b[i]) { i += 1 }
                fracDigits = i - fracStart
                if fracDigits > 0 { text += "." + String(decoding: b[fracStart..<i], as: UTF8.self) }
            }
            if intDigits == 0 && fracDigits == 0 { throw fail("expected a digit, found \(found())") }
            if i < b.count, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
                i += 1
                var exponent = "e"
                if i < b.count, b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") {
                    if b[i] == UInt8(ascii: "-") { exponent += "-" }
                    i += 1
                }
                let expStart = i
                while i < b.count, Self.isDigit(b[i]) { i += 1 }
                if i == expStart { throw fail("expected the exponent's digits, found \(found())") }
                text += exponent + String(decoding: b[expStart..<i], as: UTF8.self)
            }
        }
        if i < b.count, Self.isASCIIIdentifierStart(b[i]) || Self.isDigit(b[i])
            || (b[i] >= 0x80 && Self.isIdentifierStart(Self.scalar(b, at: i).0)) {
            throw fail("expected ',' or the end of the number, found \(found())\(showLines ? " (text needs quotes: \"...\")" : "")")
        }
        guard let n = Double(text), n.isFinite else {
            i = start
            throw fail("the number is too large for a 64-bit floating-point value")
        }
        return .number(n)
    }

    // MARK: Whitespace and comments

    private mutating func skipSpace() throws(JSON5Error) {
        while i < b.count {
            let c = b[i]
            switch c {
            case 0x20, 0x09, 0x0A, 0x0B, 0x0C, 0x0D:
                i += 1
            case UInt8(ascii: "/"):
                guard i + 1 < b.count else { return }
                if b[i + 1] == UInt8(ascii: "/") {
                    i += 2
                    while i < b.count, b[i] != 0x0A, b[i] != 0x0D, !isLineSeparator(i) { i += 1 }
                } else if b[i + 1] == UInt8(ascii: "*") {
                    let open = i
                    i += 2
                    while true {
                        guard i + 1 < b.count else {
                            i = open
                            throw fail("this /* comment is never closed (no */ before the end of the file)")
                        }
                        if b[i] == UInt8(ascii: "*") && b[i + 1] == UInt8(ascii: "/") { i += 2; break }
                        i += 1
                    }
                } else {
                    return
                }
            case 0x80...:
                let (s, n) = Self.scalar(b, at: i)
                guard Self.isSpace(s) else { return }
                i += n
            default:
                return
            }
        }
    }

    private func isLineSeparator(_ at: Int) -> Bool {
        at + 2 < b.count && b[at] == 0xE2 && b[at + 1] == 0x80 && (b[at + 2] == 0xA8 || b[at + 2] == 0xA9)
    }

    // MARK: Errors

    private func currentPath() -> String {
        var p = ""
        for part in path {
            switch part {
            case .key(let k): p = ConfigReader.join(p, k)
            case .index(let n): p = ConfigReader.join(p, n)
            }
        }
        return p
    }

    /// ` (the '{' at line 3, column 5 is never closed)`.
    private func unclosed(_ bracket: String, _ at: Int) -> String {
        let (line, column, _) = position(at)
        return " (the '\(bracket)' at line \(line), column \(column) is never closed)"
    }

    private func fail(_ message: String) -> JSON5Error { fail(message, at: i) }

    private func fail(_ message: String, at offset: Int) -> JSON5Error {
        let (line, column, text) = position(offset)
        return JSON5Error(line: line, column: column, message: message, keyPath: currentPath(),
                          lineText: showLines ? text : nil)
    }

    /// An error at the end of the file, placed just after its last character that is not whitespace (not on the
    /// empty line after a final line break).
    private func failAtEnd(_ message: String) -> JSON5Error {
        var at = b.count
        while at > 0, [0x20, 0x09, 0x0A, 0x0B, 0x0C, 0x0D].contains(b[at - 1]) { at -= 1 }
        return fail(message, at: at)
    }

    private func duplicate(_ key: String, first: Int, again: Int) -> JSON5Error {
        let (line, column, text) = position(again)
        let (firstLine, firstColumn, _) = position(first)
        let keyPath = ConfigReader.join(currentPath(), key)
        let at = firstLine == line ? "first at line \(firstLine), column \(firstColumn), again at column \(column)"
            : "first at line \(firstLine), again at line \(line)"
        return JSON5Error(kind: .duplicateKey(key: key, firstLine: firstLine, firstColumn: firstColumn),
                          line: line, column: column, message: "duplicate key \(Self.quoted(key)) (\(at))",
                          keyPath: keyPath, lineText: showLines ? text : nil)
    }

    /// What is at `i`, for a message: `'x'`, `'tru'`, `the end of the file`, `a line break`. Without `showLines`,
    /// only punctuation is quoted; letters, digits and other characters are named by their kind.
    private func found() -> String {
        guard i < b.count else { return "the end of the file" }
        let c = b[i]
        switch c {
        case 0x0A, 0x0D: return "the end of the line"
        case 0x09: return "a tab"
        case 0x00..<0x20, 0x7F: return "a control character (U+\(String(format: "%04X", Int(c))))"
        case UInt8(ascii: "0")...UInt8(ascii: "9"):
            return showLines ? "'\(Character(UnicodeScalar(c)))'" : "a digit"
        case _ where Self.isASCIIIdentifierStart(c):
            guard showLines else { return "a letter" }
            var end = i
            while end < b.count, end - i < 24, Self.isASCIIIdentifierStart(b[end]) || Self.isDigit(b[end]) { end += 1 }
            return "'\(String(decoding: b[i..<end], as: UTF8.self))'"
        case 0x80...:
            let (s, _) = Self.scalar(b, at: i)
            let code = "U+\(String(format: "%04X", Int(s.value)))"
            if !showLines { return "a non-ASCII character" }
            if s.properties.generalCategory == .format || s.properties.generalCategory == .control || s.properties.isWhitespace {
                return "an invisible character (\(code))"
            }
            return "'\(String(s))' (\(code))"
        default:
            return "'\(Character(UnicodeScalar(c)))'"
        }
    }

    /// Line, column (characters) and the line's text for a byte offset.
    private func position(_ offset: Int) -> (Int, Int, String) {
        var line = 1
        var lineStart = 0
        var k = 0
        let end = min(offset, b.count)
        while k < end {
            let c = b[k]
            if c == 0x0A {
                line += 1
                lineStart = k + 1
            } else if c == 0x0D {
                if k + 1 < b.count, b[k + 1] == 0x0A {
                    // CRLF: the LF ends the line (unless the offset is the LF itself).
                } else {
                    line += 1
                    lineStart = k + 1
                }
            }
            k += 1
        }
        // A byte order mark is not a column (and shows as nothing).
        if lineStart == 0, b.count >= 3, b[0] == 0xEF, b[1] == 0xBB, b[2] == 0xBF { lineStart = 3 }
        var lineEnd = lineStart
        while lineEnd < b.count, b[lineEnd] != 0x0A, b[lineEnd] != 0x0D { lineEnd += 1 }
        let column = String(decoding: b[lineStart..<max(lineStart, min(end, lineEnd))], as: UTF8.self).count + 1
        return (line, column, String(decoding: b[lineStart..<lineEnd], as: UTF8.self))
    }

    static func quoted(_ key: String) -> String {
        var out = ""
        JSONValue.appendQuoted(key, to: &out)
        return out
    }

    // MARK: Characters

    private static func isDigit(_ c: UInt8) -> Bool { c >= 0x30 && c <= 0x39 }

    private static func isASCIIIdentifierStart(_ c: UInt8) -> Bool {
        (c >= 0x61 && c <= 0x7A) || (c >= 0x41 && c <= 0x5A) || c == UInt8(ascii: "_") || c == UInt8(ascii: "$")
    }

    private static func hexDigit(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x61...0x66: return c - 0x61 + 10
        case 0x41...0x46: return c - 0x41 + 10
        default: return nil
        }
    }

    /// ECMAScript 5.1 IdentifierStart: a Unicode letter (Lu Ll Lt Lm Lo Nl), `$` or `_`.
    private static func isIdentifierStart(_ s: Unicode.Scalar) -> Bool {
        if s.isASCII { return isASCIIIdentifierStart(UInt8(s.value)) }
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter, .letterNumber: return true
        default: return false
        }
    }

    /// IdentifierPart: IdentifierStart, combining marks (Mn Mc), digits (Nd), connector punctuation (Pc), ZWNJ
    /// and ZWJ.
    private static func isIdentifierPart(_ s: Unicode.Scalar) -> Bool {
        if s.isASCII { return isASCIIIdentifierStart(UInt8(s.value)) || isDigit(UInt8(s.value)) }
        if isIdentifierStart(s) || s.value == 0x200C || s.value == 0x200D { return true }
        switch s.properties.generalCategory {
        case .nonspacingMark, .spacingMark, .decimalNumber, .connectorPunctuation: return true
        default: return false
        }
    }

    /// JSON5 WhiteSpace beyond ASCII: NBSP, BOM, line and paragraph separators and the Zs spaces.
    private static func isSpace(_ s: Unicode.Scalar) -> Bool {
        switch s.value {
        case 0xA0, 0xFEFF, 0x2028, 0x2029: return true
        default: return s.properties.generalCategory == .spaceSeparator
        }
    }

    /// The scalar at `at` (the text is valid UTF-8, checked first) and its length in bytes.
    private static func scalar(_ b: [UInt8], at: Int) -> (Unicode.Scalar, Int) {
        let c = b[at]
        if c < 0x80 { return (Unicode.Scalar(c), 1) }
        var n = 2
        var v = UInt32(c & 0x1F)
        if c >= 0xF0 { n = 4; v = UInt32(c & 0x07) } else if c >= 0xE0 { n = 3; v = UInt32(c & 0x0F) }
        for k in 1..<n { v = v << 6 | UInt32(b[at + k] & 0x3F) }
        return (Unicode.Scalar(v) ?? "\u{FFFD}", n)
    }

    /// The offset of the first byte that is not part of well-formed UTF-8 (overlong forms, surrogates and code
    /// points above U+10FFFF included), or nil.
    static func firstInvalidUTF8(_ b: [UInt8]) -> Int? {
        var k = 0
        while k < b.count {
            let c = b[k]
            if c < 0x80 { k += 1; continue }
            var n = 0
            var lo: UInt8 = 0x80, hi: UInt8 = 0xBF
            switch c {
            case 0xC2...0xDF: n = 1
            case 0xE0: n = 2; lo = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: n = 2
            case 0xED: n = 2; hi = 0x9F
            case 0xF0: n = 3; lo = 0x90
            case 0xF1...0xF3: n = 3
            case 0xF4: n = 3; hi = 0x8F
            default: return k
            }
            for j in 1...n {
                guard k + j < b.count else { return k }
                let d = b[k + j]
                let (l, h) = j == 1 ? (lo, hi) : (UInt8(0x80), UInt8(0xBF))
                if d < l || d > h { return k }
            }
            k += n + 1
        }
        return nil
    }
}

extension JSON5Error {
    /// As a configuration problem: a syntax error at the top (`line 12, column 7: ...` and the line with its
    /// caret), a duplicate key at its key path.
    public var problem: ConfigProblem {
        let text = snippet.map { message + "\n" + $0 } ?? message
        switch kind {
        case .syntax: return ConfigProblem(path: "", message: snippet.map { summary + "\n" + $0 } ?? summary)
        case .duplicateKey: return ConfigProblem(path: keyPath, message: text)
        }
    }
}
