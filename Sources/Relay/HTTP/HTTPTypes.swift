import Foundation

/// Header fields in arrival order; names compare case-insensitively.
///
/// Kept as the bytes that arrived: one buffer holds every name and value, and a field is a pair of ranges in it. A
/// server appends what its parser hands it without making a `String` per field (a webhook carries ten or so, and a
/// handler reads three or four); a lookup compares bytes, and only the value it finds becomes a `String`.
public struct HTTPHeaders: Sendable, Sequence {
    private var bytes: [UInt8] = []
    private var spans: [Field] = []

    /// One field: where its name and its value are in `bytes`.
    private struct Field: Sendable {
        var name: Int32
        var nameCount: Int32
        var value: Int32
        var valueCount: Int32
    }

    public init() {}
    public init(_ fields: [(String, String)]) { for f in fields { add(f.0, f.1) } }

    public var fields: [(name: String, value: String)] { spans.map { (name: text($0.name, $0.nameCount), value: text($0.value, $0.valueCount)) } }
    public var count: Int { spans.count }
    public var isEmpty: Bool { spans.isEmpty }

    public mutating func add(_ name: String, _ value: String) {
        reserveOnFirstUse()
        let n = Int32(bytes.count)
        bytes.append(contentsOf: name.utf8)
        let v = Int32(bytes.count)
        bytes.append(contentsOf: value.utf8)
        spans.append(Field(name: n, nameCount: v - n, value: v, valueCount: Int32(bytes.count) - v))
    }

    // A parser's pieces (http-parser may hand a name or a value in several calls): a new field, then more of its
    // name, then its value.
    mutating func beginField() {
        reserveOnFirstUse()
        let at = Int32(bytes.count)
        spans.append(Field(name: at, nameCount: 0, value: at, valueCount: 0))
    }

    mutating func appendName(_ piece: UnsafeRawBufferPointer) {
        guard !spans.isEmpty else { return }
        bytes.append(contentsOf: piece)
        spans[spans.count - 1].nameCount += Int32(piece.count)
        spans[spans.count - 1].value = Int32(bytes.count)
    }

    mutating func appendValue(_ piece: UnsafeRawBufferPointer) {
        guard !spans.isEmpty else { return }
        bytes.append(contentsOf: piece)
        spans[spans.count - 1].valueCount += Int32(piece.count)
    }

    private mutating func reserveOnFirstUse() {
        if spans.isEmpty && spans.capacity == 0 {
            spans.reserveCapacity(12)
            bytes.reserveCapacity(512)
        }
    }

    private func text(_ start: Int32, _ count: Int32) -> String {
        bytes.withUnsafeBufferPointer { String(decoding: UnsafeBufferPointer(rebasing: $0[Int(start)..<Int(start + count)]), as: UTF8.self) }
    }

    /// The index of the first field after `from` named `name`, case-insensitively.
    private func index(of name: String, from: Int = 0) -> Int? {
        var name = name
        return name.withUTF8 { wanted -> Int? in
            bytes.withUnsafeBufferPointer { all -> Int? in
                var i = from
                while i < spans.count {
                    let f = spans[i]
                    if Int(f.nameCount) == wanted.count,
                       HTTPHeaders.asciiEqualIgnoringCase(UnsafeBufferPointer(rebasing: all[Int(f.name)..<Int(f.name + f.nameCount)]), wanted) {
                        return i
                    }
                    i += 1
                }
                return nil
            }
        }
    }

    /// The first value of `name`, case-insensitively.
    public subscript(name: String) -> String? {
        guard let i = index(of: name) else { return nil }
        return text(spans[i].value, spans[i].valueCount)
    }

    /// Every value of `name`, in arrival order.
    public func values(of name: String) -> [String] {
        var out: [String] = []
        var from = 0
        while let i = index(of: name, from: from) {
            out.append(text(spans[i].value, spans[i].valueCount))
            from = i + 1
        }
        return out
    }

    /// ASCII case-insensitive equality (header names are ASCII tokens).
    static func sameName(_ a: String, _ b: String) -> Bool {
        var a = a, b = b
        return a.withUTF8 { x in b.withUTF8 { y in asciiEqualIgnoringCase(x, y) } }
    }

    /// Byte-wise equality where ASCII letters match either case, and every other byte only itself.
    static func asciiEqualIgnoringCase<A: Collection<UInt8>, B: Collection<UInt8>>(_ x: A, _ y: B) -> Bool {
        guard x.count == y.count else { return false }
        for (c, d) in zip(x, y) where c != d {
            if (c | 0x20) != (d | 0x20) { return false }
            if !((c | 0x20) >= 0x61 && (c | 0x20) <= 0x7a) { return false }
        }
        return true
    }

    /// The first present header among `names`.
    public func first(of names: [String]) -> (name: String, value: String)? {
        for n in names { if let v = self[n] { return (n, v) } }
        return nil
    }

    public func makeIterator() -> IndexingIterator<[(name: String, value: String)]> { fields.makeIterator() }
}

/// A request as the server hands it to the application: the body is complete.
public struct HTTPRequest: Sendable {
    public var method: String
    /// The path, percent-decoded by nothing: exactly as sent, without the query.
    public var path: String
    /// The raw query string (no leading `?`), empty when there is none.
    public var query: String
    public var headers: HTTPHeaders
    public var body: [UInt8]
    public var remoteAddress: String
    /// The target had a `?` with nothing after it (`/v1/hooks/x?`), which `target` gives back: a signature over
    /// the target as sent (`{path}`, `{uri}`) covers it.
    var emptyQueryMark = false
    /// The request target as sent: path plus `?query` when present.
    public var target: String { query.isEmpty && !emptyQueryMark ? path : path + "?" + query }

    /// The request of `target` as sent (path, then `?query` when present).
    public init(method: String, target: String, headers: HTTPHeaders, body: [UInt8], remoteAddress: String) {
        let q = target.utf8.firstIndex(of: UInt8(ascii: "?"))
        self.init(method: method, path: q.map { String(decoding: target.utf8[..<$0], as: UTF8.self) } ?? target,
                  query: q.map { String(decoding: target.utf8[target.utf8.index(after: $0)...], as: UTF8.self) } ?? "",
                  headers: headers, body: body, remoteAddress: remoteAddress)
        emptyQueryMark = q != nil && query.isEmpty
    }

    /// The path of a request target: what comes before any `?`.
    public static func path(of target: String) -> String {
        target.utf8.firstIndex(of: UInt8(ascii: "?")).map { String(decoding: target.utf8[..<$0], as: UTF8.self) } ?? target
    }

    public init(method: String, path: String, query: String = "", headers: HTTPHeaders = HTTPHeaders(),
                body: [UInt8] = [], remoteAddress: String = "") {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.remoteAddress = remoteAddress
    }
}

public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(String, String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// A JSON response from already-encoded JSON text.
    public static func json(_ status: Int, _ text: String, headers: [(String, String)] = []) -> HTTPResponse {
        HTTPResponse(status: status, headers: [("Content-Type", "application/json")] + headers, body: Array(text.utf8))
    }

    public func adding(headers extra: [(String, String)]) -> HTTPResponse {
        var r = self
        r.headers += extra
        return r
    }

    /// `{"error": message, ...extra}` with the given status.
    public static func error(_ status: Int, _ message: String, _ extra: [String: String] = [:]) -> HTTPResponse {
        var obj: [String: JSONValue] = ["error": .string(message)]
        for (k, v) in extra { obj[k] = .string(v) }
        return .json(status, JSONValue.object(obj).jsonString())
    }
}

extension HTTPResponse {
    /// Not an answer: the server closes the connection without sending anything (for fault injection).
    public static let dropConnection = HTTPResponse(status: 0)
    public var dropsConnection: Bool { status == 0 }
}

/// Answers one request exactly once, from any thread, now or later.
public protocol HTTPResponder: Sendable {
    func respond(_ response: HTTPResponse)
}

/// The application side of the server: called on a server thread once the whole body has arrived. It must not
/// block for long: answer at once, or hand the work off and answer through the responder when it is done.
public typealias HTTPHandler = @Sendable (HTTPRequest, any HTTPResponder) -> Void
