import CSQLite
import Foundation

/// An SQLite failure: the result code, the extended code and SQLite's message, plus the SQL that failed.
public struct DatabaseError: Error, CustomStringConvertible, Sendable {
    public let code: Int32
    public let extendedCode: Int32
    public let message: String
    public let sql: String?

    /// The disk (or the configured size cap) is full.
    public var isFull: Bool { code == SQLITE_FULL }
    public var isBusy: Bool { code == SQLITE_BUSY || code == SQLITE_LOCKED }

    public var description: String {
        var d = "SQLite error \(extendedCode): \(message)"
        if let sql { d += " (in \(sql.prefix(80)))" }
        return d
    }
}

/// One SQLite connection. Not thread-safe: each owner keeps its own, confined to one thread at a time.
public final class Database {
    let handle: OpaquePointer
    public let path: String
    private var statements: [String: Statement] = [:]

    /// Process-wide settings, before the first connection: no memory statistics (nothing here reads them, and
    /// keeping them takes a global mutex around every one of SQLite's allocations).
    private static let configured: Void = { _ = relay_sqlite_config_memstatus(0) }()

    /// `vfs`: an SQLite VFS by name (nil: the default).
    public init(path: String, readOnly: Bool = false, vfs: String? = nil) throws {
        _ = Database.configured
        var db: OpaquePointer?
        let flags = (readOnly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)) | SQLITE_OPEN_NOMUTEX
        let rc = sqlite3_open_v2(path, &db, flags, vfs)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "cannot open"
            if let db { sqlite3_close_v2(db) }
            throw DatabaseError(code: rc, extendedCode: rc, message: "\(message): \(path)", sql: nil)
        }
        handle = db
        self.path = path
        sqlite3_extended_result_codes(db, 1)
        _ = relay_sqlite_busy_timeout(db, 5000)
    }

    deinit {
        statements.removeAll()
        sqlite3_close_v2(handle)
    }

    func error(_ rc: Int32, _ sql: String?) -> DatabaseError {
        DatabaseError(code: rc & 0xff, extendedCode: sqlite3_extended_errcode(handle),
                      message: String(cString: sqlite3_errmsg(handle)), sql: sql)
    }

    /// Runs one or more statements without results.
    public func execute(_ sql: String) throws {
        var err: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &err)
        if rc != SQLITE_OK {
            let message = err.map { String(cString: $0) } ?? String(cString: sqlite3_errmsg(handle))
            sqlite3_free(err)
            throw DatabaseError(code: rc & 0xff, extendedCode: sqlite3_extended_errcode(handle), message: message, sql: sql)
        }
    }

    /// A prepared statement, cached by its SQL text.
    public func statement(_ sql: String) throws -> Statement {
        if let s = statements[sql] {
            s.reset()
            return s
        }
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw error(rc, sql) }
        let s = Statement(stmt, db: self, sql: sql)
        statements[sql] = s
        return s
    }

    public var changes: Int { Int(sqlite3_changes(handle)) }
    public var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(handle) }

    /// First column of the first row as text, for PRAGMAs and small queries.
    public func scalarText(_ sql: String) throws -> String? {
        let s = try statement(sql)
        defer { s.reset() }
        return try s.step() ? s.text(0) : nil
    }
}

/// A prepared statement of one `Database`.
public final class Statement {
    let handle: OpaquePointer
    unowned let db: Database
    let sql: String

    init(_ handle: OpaquePointer, db: Database, sql: String) {
        self.handle = handle
        self.db = db
        self.sql = sql
    }

    deinit { sqlite3_finalize(handle) }

    public func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    public func bind(_ index: Int32, _ value: String?) throws {
        let rc: Int32
        if var value {
            // Through the string's own UTF-8 buffer (no C-string copy for native strings); SQLite copies it.
            rc = value.withUTF8 { buf -> Int32 in
                guard let base = buf.baseAddress, buf.count > 0 else {
                    return sqlite3_bind_text(handle, index, "", 0, relay_sqlite_transient())
                }
                return base.withMemoryRebound(to: CChar.self, capacity: buf.count) { p in
                    sqlite3_bind_text(handle, index, p, Int32(buf.count), relay_sqlite_transient())
                }
            }
        } else {
            rc = sqlite3_bind_null(handle, index)
        }
        if rc != SQLITE_OK { throw db.error(rc, sql) }
    }

    public func bind(_ index: Int32, _ value: Int64) throws {
        let rc = sqlite3_bind_int64(handle, index, value)
        if rc != SQLITE_OK { throw db.error(rc, sql) }
    }

    public func bind(_ index: Int32, blob: [UInt8]) throws {
        let rc = blob.withUnsafeBytes { buf in
            sqlite3_bind_blob(handle, index, buf.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(buf.count),
                              relay_sqlite_transient())
        }
        if rc != SQLITE_OK { throw db.error(rc, sql) }
    }

    /// Binds text that SQLite reads in place, without a copy (`SQLITE_STATIC`), or NULL for nil: `utf8` must stay
    /// valid until the statement is reset, so bind, step and `reset()` inside the closure that lent the pointer.
    public func bindInPlace(_ index: Int32, text utf8: UnsafeRawBufferPointer?) throws {
        guard let utf8 else {
            let rc = sqlite3_bind_null(handle, index)
            if rc != SQLITE_OK { throw db.error(rc, sql) }
            return
        }
        guard let base = utf8.baseAddress, utf8.count > 0 else {
            let rc = sqlite3_bind_text(handle, index, "", 0, relay_sqlite_transient())
            if rc != SQLITE_OK { throw db.error(rc, sql) }
            return
        }
        let rc = sqlite3_bind_text(handle, index, base.assumingMemoryBound(to: CChar.self), Int32(utf8.count), nil)
        if rc != SQLITE_OK { throw db.error(rc, sql) }
    }

    /// A blob read in place (`SQLITE_STATIC`), on the terms of `bindInPlace(_:text:)`.
    public func bindInPlace(_ index: Int32, blob: UnsafeRawBufferPointer) throws {
        let rc = sqlite3_bind_blob(handle, index, blob.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(blob.count), nil)
        if rc != SQLITE_OK { throw db.error(rc, sql) }
    }

    /// Binds in order from parameter 1.
    public func bind(_ values: [String?]) throws {
        for (i, v) in values.enumerated() { try bind(Int32(i + 1), v) }
    }

    /// Advances: true when a row is ready, false when done.
    @discardableResult
    public func step() throws -> Bool {
        let rc = sqlite3_step(handle)
        if rc == SQLITE_ROW { return true }
        if rc == SQLITE_DONE { return false }
        throw db.error(rc, sql)
    }

    public func text(_ column: Int32) -> String? {
        guard let p = sqlite3_column_text(handle, column) else { return nil }
        return String(cString: p)
    }

    public func int(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }

    public func blob(_ column: Int32) -> [UInt8] {
        let n = Int(sqlite3_column_bytes(handle, column))
        guard n > 0, let p = sqlite3_column_blob(handle, column) else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: n))
    }
}
