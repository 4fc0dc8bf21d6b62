import Foundation

/// Correlation: identifiers known to name the same subject, learned from inbound events that carry several of
/// them and from destinations' responses (a vendor's order id returned for a loyalty platform's transaction).
///
/// Each identifier (`key`, `value`) is stored with the whole subject it belongs to, so one lookup per identifier
/// completes a subject: a vendor's status naming only `vendorOrderId=V-778` is delivered to the loyalty platform
/// with the `transactionId` that was sent to the vendor. Only keys listed as identifiers are linked (a `vendorId`
/// names many orders and must never join them into one).
public enum Correlation {
    /// Subject keys that identify one subject unless `correlation.keys` says otherwise.
    public static let defaultKeys: Set<String> = ["redemptionId", "transactionId", "orderId", "vendorOrderId",
                                                  "redemptionCode", "voucherCode"]

    /// The subject completed with everything linked to any of its identifiers. The subject's own values win.
    public static func enrich(_ db: Database, subject: [String: String], keys: Set<String>) throws -> [String: String] {
        guard !keys.isEmpty, !subject.isEmpty else { return subject }
        let s = try db.statement("SELECT subject FROM correlations WHERE key = ? AND value = ?")
        var out = subject
        for (k, v) in subject.sorted(by: { $0.key < $1.key }) where keys.contains(k) {
            s.reset()
            try s.bind([k, v])
            guard try s.step(), let json = s.text(0), let linked = try? JSONParser.parse(Array(json.utf8)).objectValue
            else { continue }
            for (lk, lv) in linked where out[lk] == nil {
                if let text = lv.stringValue { out[lk] = text }
            }
        }
        s.reset()
        return out
    }

    /// Records that the identifiers of `subject` (with what is already linked to them) name one subject.
    public static func link(_ db: Database, subject: [String: String], keys: Set<String>, nowMillis: Int64) throws {
        guard !keys.isEmpty else { return }
        let merged = try enrich(db, subject: subject, keys: keys)
        let ids = merged.filter { keys.contains($0.key) }
        guard !ids.isEmpty, merged.count > 1 else { return }
        var json = ""
        JSONValue.object(merged.mapValues(JSONValue.string)).write(to: &json)
        let s = try db.statement("""
            INSERT INTO correlations (key, value, subject, updated_at) VALUES (?, ?, ?, ?)
            ON CONFLICT (key, value) DO UPDATE SET subject = excluded.subject, updated_at = excluded.updated_at
            WHERE correlations.subject <> excluded.subject
            """)
        for (k, v) in ids.sorted(by: { $0.key < $1.key }) {
            s.reset()
            try s.bind(1, k)
            try s.bind(2, v)
            try s.bind(3, json)
            try s.bind(4, nowMillis)
            try s.step()
        }
        s.reset()
    }
}
