import Foundation

/// Header fields in arrival order; names compare case-insensitively.
public struct HTTPHeaders: Sendable, Sequence {
    public private(set) var fields: [(name: String, value: String)] = []

    public init() {}
    public init(_ fields: [(String, String)]) { self.fields = fields.map { (name: $0.0, value: $0.1) } }

    public mutating func add(_ name: String, _ value: String) { fields.append((name: name, value: value)) }

    /// The first value of `name`, case-insensitively.
    public subscript(name: String) -> String? {
        for f in fields where HTTPHeaders.sameName(f.name, name) { return f.value }
        return nil
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
        let q = target.firstIndex(of: "?")
        self.init(method: method, path: Self.path(of: target), query: q.map { String(target[target.index(after: $0)...]) } ?? "",
                  headers: headers, body: body, remoteAddress: remoteAddress)
        emptyQueryMark = q != nil && query.isEmpty
    }

    /// The path of a request target: what comes before any `?`.
    public static func path(of target: String) -> String {
        target.firstIndex(of: "?").map { String(target[..<$0]) } ?? target
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
