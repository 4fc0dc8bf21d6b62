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
///
/// This type holds the rules; each store keeps the links (`correlations`: scope, key, value, subject) and calls these
/// with its own lookup of the subject stored under one identifier.
public enum Correlation {
    /// Subject keys that identify one subject unless `correlation.keys` says otherwise.
    public static let defaultKeys: Set<String> = ["redemptionId", "transactionId", "orderId", "vendorOrderId",
                                                  "redemptionCode", "voucherCode"]

    /// The subject completed with everything linked to any of its identifiers (`linked(key, value)`: the subject
    /// stored under that identifier, in the caller's scope). Its own values win.
    public static func enrich(_ subject: [String: String], keys: Set<String>,
                              linked: (String, String) throws -> [String: String]?) rethrows -> [String: String] {
        guard !keys.isEmpty, !subject.isEmpty else { return subject }
        var out = subject
        for (k, v) in subject.sorted(by: { $0.key < $1.key }) where keys.contains(k) {
            guard let found = try linked(k, v) else { continue }
            for (lk, lv) in found where out[lk] == nil { out[lk] = lv }
        }
        return out
    }

    /// What linking `subject` stores: the subject merged with what its identifiers are already linked to, and the
    /// identifiers to store it under (sorted by key). Nil when there is nothing to link (no identifier, or nothing
    /// but one value).
    public static func linkage(_ subject: [String: String], keys: Set<String>,
                               linked: (String, String) throws -> [String: String]?) rethrows
        -> (subject: [String: String], identifiers: [(key: String, value: String)])? {
        guard !keys.isEmpty else { return nil }
        let merged = try enrich(subject, keys: keys, linked: linked)
        let ids = merged.filter { keys.contains($0.key) }.sorted { $0.key < $1.key }.map { (key: $0.key, value: $0.value) }
        guard !ids.isEmpty, merged.count > 1 else { return nil }
        return (merged, ids)
    }

    /// A subject as stored: a JSON object of strings (keys sorted).
    public static func encode(_ subject: [String: String]) -> String {
        var json = ""
        JSONValue.object(subject.mapValues(JSONValue.string)).write(to: &json)
        return json
    }

    /// A stored subject; nil when the text is not a JSON object.
    public static func decode(_ json: String) -> [String: String]? {
        (try? JSONParser.parse(Array(json.utf8)).objectValue)?.compactMapValues(\.stringValue)
    }
}
