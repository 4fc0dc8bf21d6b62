import Foundation

extension String {
    /// The text as every store keeps it: a NUL (U+0000) becomes U+FFFD. PostgreSQL's text refuses a NUL (and libpq
    /// takes its parameters as C strings, so a write that held one failed whole, again at every retry), and SQLite
    /// gives text back as C strings, cut at the first one. A JSON body may hold one (`\u0000`), and a destination's
    /// answer may; neither is then written or read differently by the two stores.
    public var storable: String {
        guard hasNUL else { return self }
        return String(String.UnicodeScalarView(unicodeScalars.lazy.map { $0 == "\u{0}" ? "\u{FFFD}" : $0 }))
    }

    /// Whether the text holds a NUL: one `memchr` over its UTF-8 (this runs for each text field of every event).
    var hasNUL: Bool {
        if let found = utf8.withContiguousStorageIfAvailable({ $0.count > 0 && memchr($0.baseAddress!, 0, $0.count) != nil }) { return found }
        return utf8.contains(0)
    }
}

extension Dictionary where Key == String, Value == String {
    /// Keys and values `storable` (two keys that then read the same keep the first).
    public var storable: [String: String] {
        guard keys.contains(where: \.hasNUL) || values.contains(where: \.hasNUL) else { return self }
        return Dictionary(map { ($0.key.storable, $0.value.storable) }, uniquingKeysWith: { a, _ in a })
    }
}
