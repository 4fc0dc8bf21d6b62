import Foundation

/// Correlation: identifiers known to name the same subject, learned from inbound events that carry several of
/// them and from destinations' responses (a vendor's order id returned for a loyalty platform's transaction).
///
/// Identifiers are unique only within one partner (two vendors may both have an order 1001), so each link lives in
/// a *scope*: a source's events link and look up in the source's scope, a destination's answers link in the
/// destination's scope. Both default to their name, so a partner's source and destination of the same name share
/// one (`correlationScope` in either block sets it explicitly). Each identifier (`scope`, `key`, `value`) is stored
/// with the whole subject it belongs to, so one lookup per identifier completes a subject: a vendor's status naming
/// only `vendorOrderId=V-778` is delivered to the loyalty platform with the `transactionId` that was sent to that
/// vendor. Only keys listed as identifiers are linked (a `vendorId` names many orders and must never join them).
public enum Correlation {
    /// Subject keys that identify one subject unless `correlation.keys` says otherwise.
    public static let defaultKeys: Set<String> = ["redemptionId", "transactionId", "orderId", "vendorOrderId",
                                                  "redemptionCode", "voucherCode"]

    /// The subject completed with everything linked, in `scope`, to any of its identifiers. Its own values win.
    public static func enrich(_ db: Database, scope: String, subject: [String: String],
                              keys: Set<String>) throws -> [String: String] {
        guard !keys.isEmpty, !subject.isEmpty else { return subject }
        let s = try db.statement("SELECT subject FROM correlations WHERE scope = ? AND key = ? AND value = ?")
        var out = subject
        for (k, v) in subject.sorted(by: { $0.key < $1.key }) where keys.contains(k) {
            s.reset()
            try s.bind([scope, k, v])
            guard try s.step(), let json = s.text(0), let linked = try? JSONParser.parse(Array(json.utf8)).objectValue
            else { continue }
            for (lk, lv) in linked where out[lk] == nil {
                if let text = lv.stringValue { out[lk] = text }
            }
        }
        s.reset()
        return out
    }

    /// Records, in `scope`, that the identifiers of `subject` (with what is already linked to them) name one subject.
    public static func link(_ db: Database, scope: String, subject: [String: String], keys: Set<String>,
                            nowMillis: Int64) throws {
        guard !keys.isEmpty else { return }
        let merged = try enrich(db, scope: scope, subject: subject, keys: keys)
        let ids = merged.filter { keys.contains($0.key) }
        guard !ids.isEmpty, merged.count > 1 else { return }
        var json = ""
        JSONValue.object(merged.mapValues(JSONValue.string)).write(to: &json)
        let s = try db.statement("""
            INSERT INTO correlations (scope, key, value, subject, updated_at) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (scope, key, value) DO UPDATE SET subject = excluded.subject, updated_at = excluded.updated_at
            WHERE correlations.subject <> excluded.subject
            """)
        for (k, v) in ids.sorted(by: { $0.key < $1.key }) {
            s.reset()
            try s.bind(1, scope)
            try s.bind(2, k)
            try s.bind(3, v)
            try s.bind(4, json)
            try s.bind(5, nowMillis)
            try s.step()
        }
        s.reset()
    }
}
