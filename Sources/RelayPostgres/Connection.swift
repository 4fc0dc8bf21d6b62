import CPostgres
import Foundation
import Relay

/// A PostgreSQL failure: libpq's message, the SQLSTATE when the server sent one, and whether the connection is
/// gone (so the store reconnects rather than retrying on it).
public struct PostgresError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public let sqlState: String?
    public let connectionLost: Bool

    public var description: String { sqlState.map { "\(message) (SQLSTATE \($0))" } ?? message }
    /// Deadlock or serialization failure: the transaction may simply be run again.
    public var isRetryable: Bool { sqlState == "40P01" || sqlState == "40001" }
    public var isUniqueViolation: Bool { sqlState == "23505" }
}

/// One libpq connection. Not thread-safe: each is used by one thread at a time, confined to it or handed over
/// under a lock (the queue connection's `Mutex`, the admin pool's); hence `@unchecked Sendable`.
final class Connection: @unchecked Sendable {
    let handle: OpaquePointer
    /// Statements prepared on this connection, by name.
    private var prepared = Set<String>()

    /// Connects with `conninfo` (a URI or key=value string). Throws with libpq's message (which never holds the
    /// password).
    init(_ conninfo: String, connectTimeout: Int, applicationName: String) throws {
        let keys = ["dbname", "connect_timeout", "application_name", "keepalives", "keepalives_idle",
                    "keepalives_interval", "keepalives_count"]
        let values = [conninfo, String(connectTimeout), applicationName, "1", "10", "5", "3"]
        let conn: OpaquePointer? = withCStrings(keys) { k in
            withCStrings(values) { v in PQconnectdbParams(k, v, 1) }
        }
        guard let conn else { throw PostgresError(message: "out of memory", sqlState: nil, connectionLost: true) }
        handle = conn
        // libpq prints server notices (NOTICE from `IF NOT EXISTS`, the FATAL of a terminated session) on stderr by
        // default; the store reports what matters through its own errors and log instead.
        PQsetNoticeProcessor(conn, { _, _ in }, nil)
        guard PQstatus(conn) == CONNECTION_OK else {
            let message = Self.message(conn)
            throw PostgresError(message: message, sqlState: nil, connectionLost: true)
        }
    }

    deinit { PQfinish(handle) }

    static func message(_ conn: OpaquePointer) -> String {
        String(cString: PQerrorMessage(conn)).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    var isOK: Bool { PQstatus(handle) == CONNECTION_OK }

    /// Runs one command with text parameters (nil: NULL); the result's rows as text (nil: NULL).
    @discardableResult
    func query(_ sql: String, _ params: [String?] = [], name: String? = nil) throws -> Rows {
        let result: OpaquePointer?
        if let name {
            if !prepared.contains(name) {
                let r = PQprepare(handle, name, sql, Int32(params.count), nil)
                defer { PQclear(r) }
                try check(r, sql)
                prepared.insert(name)
            }
            result = withParams(params) { PQexecPrepared(handle, name, Int32(params.count), $0, nil, nil, 0) }
        } else if params.isEmpty {
            result = PQexec(handle, sql)
        } else {
            result = withParams(params) { PQexecParams(handle, sql, Int32(params.count), nil, $0, nil, nil, 0) }
        }
        defer { PQclear(result) }
        try check(result, sql)
        return Rows(result!)
    }

    /// Runs `body` in a transaction: committed when it returns, rolled back when it throws.
    func transaction<T>(_ body: () throws -> T) throws -> T {
        try query("BEGIN")
        do {
            let value = try body()
            try query("COMMIT")
            return value
        } catch {
            if isOK { _ = try? query("ROLLBACK") }
            throw error
        }
    }

    private func check(_ r: OpaquePointer?, _ sql: String) throws {
        let status = r.map(PQresultStatus) ?? PGRES_FATAL_ERROR
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else {
            let lost = PQstatus(handle) != CONNECTION_OK
            var message = r.flatMap { PQresultErrorMessage($0) }.map { String(cString: $0) } ?? ""
            if message.isEmpty { message = Self.message(handle) }
            let state = r.flatMap { PQresultErrorField($0, Int32(UInt8(ascii: "C"))) }.map { String(cString: $0) }
            if lost { prepared.removeAll() }
            throw PostgresError(message: message.trimmingCharacters(in: .whitespacesAndNewlines), sqlState: state,
                                connectionLost: lost || state?.hasPrefix("08") == true || state == "57P01")
        }
    }

    /// Notifications received (after `consumeInput`): their channels.
    func notifications() -> [String] {
        var out: [String] = []
        while let n = PQnotifies(handle) {
            out.append(String(cString: n.pointee.relname))
            PQfreemem(n)
        }
        return out
    }

    /// Reads what the server sent without blocking; false when the connection is gone.
    func consumeInput() -> Bool { PQconsumeInput(handle) == 1 }

    var socket: Int32 { PQsocket(handle) }
}

/// A result's rows, as text.
struct Rows {
    let rows: [[String?]]
    let affected: Int

    init(_ r: OpaquePointer) {
        let n = Int(PQntuples(r)), m = Int(PQnfields(r))
        var rows: [[String?]] = []
        rows.reserveCapacity(n)
        for i in 0..<n {
            var row: [String?] = []
            row.reserveCapacity(m)
            for j in 0..<m {
                if PQgetisnull(r, Int32(i), Int32(j)) == 1 {
                    row.append(nil)
                } else {
                    row.append(String(cString: PQgetvalue(r, Int32(i), Int32(j))))
                }
            }
            rows.append(row)
        }
        self.rows = rows
        affected = Int(String(cString: PQcmdTuples(r))) ?? 0
    }

    var count: Int { rows.count }
    subscript(i: Int) -> [String?] { rows[i] }
    var first: [String?]? { rows.first }
}

extension Array where Element == String? {
    func text(_ i: Int) -> String { self[i] ?? "" }
    func int(_ i: Int) -> Int64 { self[i].flatMap { Int64($0) } ?? 0 }
    func optionalInt(_ i: Int) -> Int64? { self[i].flatMap { Int64($0) } }
}

private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    let pointers = copies.map { UnsafePointer<CChar>($0) } + [nil]
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

private func withParams<R>(_ params: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    let copies = params.map { $0.map { strdup($0) } ?? nil }
    defer { copies.forEach { free($0) } }
    let pointers = copies.map { $0.map { UnsafePointer<CChar>($0) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress) }
}

/// Connection strings: checked and shown without their password.
public enum PostgresURL {
    /// Why libpq cannot read `conninfo` (nil: it can). Nothing of the string is in the message.
    public static func problem(_ conninfo: String) -> String? {
        var err: UnsafeMutablePointer<CChar>?
        guard let opts = PQconninfoParse(conninfo, &err) else {
            let message = err.map { String(cString: $0) }?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "cannot be parsed"
            if let err { PQfreemem(err) }
            return message
        }
        PQconninfoFree(opts)
        return nil
    }

    /// `user@host:port/dbname`, never the password; for logs.
    public static func display(_ conninfo: String) -> String {
        var err: UnsafeMutablePointer<CChar>?
        guard let opts = PQconninfoParse(conninfo, &err) else {
            if let err { PQfreemem(err) }
            return "(unparsable connection string)"
        }
        defer { PQconninfoFree(opts) }
        var values: [String: String] = [:]
        var p = opts
        while let k = p.pointee.keyword {
            if let v = p.pointee.val { values[String(cString: k)] = String(cString: v) }
            p += 1
        }
        let user = values["user"].map { $0 + "@" } ?? ""
        let host = values["host"] ?? values["hostaddr"] ?? "localhost"
        let port = values["port"].map { ":" + $0 } ?? ""
        return "postgres \(user)\(host)\(port)/\(values["dbname"] ?? "")"
    }
}
