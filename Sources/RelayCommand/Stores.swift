import Foundation
import Relay
import RelayPostgres
import RelaySQLite

/// The stores the relay can run on, opened from `store:` in configuration.
enum Stores {
    static func open(_ settings: StoreSettings, log: Logger) throws -> any RelayStore {
        switch settings {
        case .sqlite(let o): return try SQLiteStore(options: o, log: log)
        case .postgres(let o): return try PostgresStore(options: o, log: log)
        }
    }

    /// What `relay check` finds wrong with the store settings that the configuration reader cannot see (a
    /// connection string libpq cannot read). Nothing of a secret is in a message.
    static func problems(_ settings: StoreSettings) -> [String] {
        switch settings {
        case .sqlite: return []
        case .postgres(let o):
            if o.url.value.isEmpty { return [] }   // already reported
            return PostgresURL.problem(o.url.value).map { ["store.postgres.url: libpq cannot read it: \($0)"] } ?? []
        }
    }
}
