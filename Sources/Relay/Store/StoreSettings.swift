import Foundation

/// Settings of the embedded SQLite store (`store: { sqlite: PATH, ... }`).
public struct SQLiteStoreOptions: Sendable, Equatable {
    public enum Sync: String, Sendable { case full, normal }
    public var path: String
    /// `full` (default): every commit is fsynced before anyone is answered. `normal`: survives a crash of the
    /// relay but not of the machine.
    public var synchronous: Sync = .full
    /// Most events written in one transaction.
    public var maxBatch: Int = 1024
    /// Under load (the previous batch held more than one event), how long the writer may wait for more events to
    /// join a batch: fewer, larger transactions and flushes for a little latency. 0 writes at once.
    public var commitDelay: Double = 0.0002
    /// Refuse new events (503) once the file would grow past this size.
    public var maxSizeBytes: Int64?

    public init(path: String) { self.path = path }
}

/// Settings of the PostgreSQL store (`store: { postgres: { url, pool, ... } }`), shared by any number of relays.
public struct PostgresStoreOptions: Sendable, Equatable {
    /// A libpq connection URI (`postgres://user:password@host:5432/db?sslmode=require`) or `key=value` string. It
    /// may hold a password: it is only ever shown with the password masked.
    public var url: Secret
    /// Connections for the admin API's queries; the writers, the dispatcher and the coordinator each hold one more.
    public var pool: Int = 2
    /// Writer connections: commits alternate between them, so that one batch is written while the previous one's
    /// commit is being flushed.
    public var writers: Int = 2
    /// Most events written in one transaction.
    public var maxBatch: Int = 512
    /// How long a claim holds a delivery (seconds). A relay renews its claims while attempts run; a relay that dies
    /// leaves them to run out, and then another relay takes them.
    public var lease: Double = 30
    /// How long a relay may go without a heartbeat before the others count it as gone (seconds).
    public var heartbeat: Double = 10
    /// Seconds allowed for connecting before a try counts as failed.
    public var connectTimeout: Int = 5

    public init(url: Secret) { self.url = url }

    /// Whether a connection string carries a password of its own (`postgres://user:PASSWORD@host/db`,
    /// `password=...` as a parameter or a `key=value` pair).
    public static func hasPassword(_ url: String) -> Bool {
        let lower = url.lowercased()
        if lower.contains("password=") { return true }
        guard let scheme = lower.range(of: "://") else { return false }
        let rest = url[scheme.upperBound...]
        guard let at = rest.firstIndex(of: "@") else { return false }
        let userinfo = rest[..<at]
        if userinfo.contains("/") { return false }
        return userinfo.contains(":")
    }
}

/// Which store the relay uses (`store:` in configuration).
public enum StoreSettings: Sendable, Equatable {
    case sqlite(SQLiteStoreOptions)
    case postgres(PostgresStoreOptions)

    /// The SQLite file, for a store that has one.
    public var sqlitePath: String? {
        if case .sqlite(let o) = self { return o.path }
        return nil
    }

    public var kind: String {
        switch self {
        case .sqlite: return "sqlite"
        case .postgres: return "postgres"
        }
    }
}
