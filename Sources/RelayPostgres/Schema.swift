import Foundation
import Crypto

/// The PostgreSQL schema, versioned in `relay_schema`. Every relay runs `migrate` at start (and after the database
/// comes back) under one advisory lock, so relays starting together apply each migration once, in order.
enum Schema {
    /// `pg_advisory_lock(lockSpace, key)`: the two-integer form, so that no other application's one-integer lock
    /// can collide with ours.
    static let lockSpace: Int32 = 0x52_4C_59   // "RLY"
    static let migrationLock: Int32 = 1

    /// The database clock in milliseconds: leases are measured by it, so relays on hosts whose clocks disagree
    /// still agree on when a lease ends.
    static let nowMillis = "(extract(epoch from clock_timestamp()) * 1000)::bigint"

    static let migrations: [String] = [
        // 1: events, the delivery queue, attempts, correlation, pauses, circuits, the relays sharing the database.
        """
        CREATE TABLE IF NOT EXISTS events (
            seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id              text NOT NULL UNIQUE,
            source          text NOT NULL,
            idempotency_key text NOT NULL,
            type            text NOT NULL,
            status          text,
            received_at     text NOT NULL,          -- RFC 3339, UTC, milliseconds (sorts as time)
            event           text NOT NULL,          -- the canonical event's JSON, without the raw body
            content_type    text,
            body            bytea,
            UNIQUE (source, idempotency_key)
        );
        CREATE TABLE IF NOT EXISTS deliveries (
            seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id              text NOT NULL UNIQUE,
            event_seq       bigint NOT NULL,
            event_id        text NOT NULL,
            destination     text NOT NULL,
            subject_key     text NOT NULL,
            state           text NOT NULL,          -- pending, in_flight, delivered, dead, skipped, superseded
            attempts        integer NOT NULL DEFAULT 0,
            step            integer NOT NULL DEFAULT 0,
            context         text,                   -- JSON: what earlier steps extracted
            next_attempt_at bigint NOT NULL,        -- ms since 1970 (the relay's clock)
            lease_until     bigint,                 -- while in_flight: ms since 1970 (the database's clock)
            claimed_by      text,                   -- the relay (relay_instances.id) holding the lease
            claim_token     bigint,                 -- fences the claim's finish
            last_status     integer,
            last_error      text,
            finished_at     bigint,
            created_at      bigint NOT NULL
        );
        -- What a claim scans: a destination's pending deliveries by due time.
        CREATE INDEX IF NOT EXISTS deliveries_queue ON deliveries (destination, next_attempt_at, seq) WHERE state = 'pending';
        -- Per-subject order: is an earlier delivery of this subject still open?
        CREATE INDEX IF NOT EXISTS deliveries_open ON deliveries (destination, subject_key, seq) WHERE state IN ('pending', 'in_flight');
        -- Lease sweeps.
        CREATE INDEX IF NOT EXISTS deliveries_leases ON deliveries (claimed_by, lease_until) WHERE state = 'in_flight';
        CREATE INDEX IF NOT EXISTS deliveries_event ON deliveries (event_seq);
        CREATE INDEX IF NOT EXISTS deliveries_dead ON deliveries (destination, seq) WHERE state = 'dead';
        CREATE TABLE IF NOT EXISTS attempts (
            delivery_id     text NOT NULL,
            n               integer NOT NULL,
            started_at      bigint NOT NULL,
            latency_ms      bigint NOT NULL,
            status          integer,
            error           text,
            response        text,
            PRIMARY KEY (delivery_id, n)
        );
        CREATE TABLE IF NOT EXISTS correlations (
            scope           text NOT NULL,
            key             text NOT NULL,
            value           text NOT NULL,
            subject         text NOT NULL,
            updated_at      bigint NOT NULL,
            PRIMARY KEY (scope, key, value)
        );
        CREATE TABLE IF NOT EXISTS paused_destinations (
            name            text PRIMARY KEY,
            since           bigint NOT NULL
        );
        CREATE TABLE IF NOT EXISTS circuits (
            destination     text PRIMARY KEY,
            state           text NOT NULL,
            failures        integer NOT NULL,
            reopens_at      bigint,
            updated_at      bigint NOT NULL
        );
        CREATE TABLE IF NOT EXISTS relay_instances (
            id              text PRIMARY KEY,
            host            text NOT NULL,
            pid             integer NOT NULL,
            started_at      bigint NOT NULL,
            seen_at         bigint NOT NULL        -- the database's clock
        );
        """,
    ]

    /// Brings the schema to the latest version. Runs on `c` holding the migration lock for the whole time.
    static func migrate(_ c: Connection) throws -> (from: Int, to: Int) {
        try c.query("SELECT pg_advisory_lock(\(lockSpace), \(migrationLock))")
        defer { _ = try? c.query("SELECT pg_advisory_unlock(\(lockSpace), \(migrationLock))") }
        try c.query("CREATE TABLE IF NOT EXISTS relay_schema (version integer NOT NULL)")
        let current = Int(try c.query("SELECT max(version) FROM relay_schema").first?.int(0) ?? 0)
        for (i, sql) in migrations.enumerated() where i + 1 > current {
            try c.transaction {
                try c.query(sql)
                try c.query("INSERT INTO relay_schema (version) VALUES ($1)", [String(i + 1)])
            }
        }
        return (current, migrations.count)
    }
}

/// PostgreSQL's text forms of arrays and byte strings, for parameters that carry a whole batch.
enum PGText {
    /// `{"a","b",NULL}`: every element quoted, `"` and `\` escaped.
    static func array(_ values: [String?]) -> String {
        var out = "{"
        out.reserveCapacity(values.count * 16)
        for (i, v) in values.enumerated() {
            if i > 0 { out += "," }
            guard let v else { out += "NULL"; continue }
            out += "\""
            for ch in v.unicodeScalars {
                if ch == "\"" || ch == "\\" { out.unicodeScalars.append("\\") }
                out.unicodeScalars.append(ch)
            }
            out += "\""
        }
        out += "}"
        return out
    }

    static func array(_ values: [Int64?]) -> String {
        "{" + values.map { $0.map(String.init) ?? "NULL" }.joined(separator: ",") + "}"
    }

    /// bytea's hex output (`\x0a1b...`) back to bytes.
    static func bytes(bytea text: String) throws -> [UInt8] {
        let hex = text.hasPrefix("\\x") ? String(text.dropFirst(2)) : text
        guard let bytes = ByteEncoding.fromHex(hex) else {
            throw PostgresError(message: "a bytea value that is not hex", sqlState: nil, connectionLost: false)
        }
        return bytes
    }
}
