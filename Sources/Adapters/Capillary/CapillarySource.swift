import Foundation
import Relay

/// `adapter: "capillary"` as a source: the call a Capillary vendor redemption's action makes to the relay. The
/// body is the action's `apiBody`, a template the brand writes (`${rewardTransactionId}`, `${fulfillmentStatus}`,
/// `${customfield_<Name>}`, `${mobile}`...), so every path is configurable. Defaults, for an apiBody such as
/// `{"rewardTransactionId": ${rewardTransactionId}, "customerId": ..., "rewardId": ..., "fulfillmentStatus":
/// "${fulfillmentStatus}", "mobile": "${mobile}", "customfield_Partner_Order_Id": "${customfield_Partner_Order_Id}"}`:
///
/// | canonical                      | from                                   |
/// |--------------------------------|----------------------------------------|
/// | subject.transactionId          | `$.rewardTransactionId` (required)     |
/// | subject.customerId             | `$.customerId`                         |
/// | subject.rewardId               | `$.rewardId`                           |
/// | status                         | `$.fulfillmentStatus` through statusMap |
/// | attributes.customFields.<Name> | every top-level `customfield_<Name>`   |
/// | attributes.mobile              | `$.mobile`                             |
///
/// ```json5
/// map: { subject: { rewardId: "$.reward.id" }, status: "$.state", attributes: { email: "$.email" } },
/// statusMap: { "In Progress": "shipped", "Completed": "delivered" },   // organisation status name -> canonical
/// type: "redemption.status_changed",   // or { statusChanged: "...", issued: "..." }
/// ```
/// With a status: `redemption.status_changed`; without one (absent, null or empty): `reward.issued`. A status
/// with no mapping is accepted with no canonical status, its name kept as `providerStatus`. Capillary's call carries
/// no event id, so the relay deduplicates on the body's hash (a retried call is a duplicate; a later call that
/// returns to an earlier status is not lost if the brand's apiBody carries anything that changes, such as a time),
/// unless the source's `idempotency` rule names a field.
public struct CapillarySource: SourceAdapter {
    public static let customFieldPrefix = "customfield_"

    /// Subject key -> JSON path; must hold `transactionId`.
    public var subject: [String: String]
    public var statusPath: String
    /// Organisation status name -> canonical (exact, then case-insensitive; then a canonical name itself).
    public var statusMap: [String: CanonicalStatus]
    /// The status names a value may be itself (case-insensitive), beside `statusMap`.
    public var statuses = StatusVocabulary()
    /// Attribute -> JSON path (these replace what the `customfield_` keys give).
    public var attributes: [String: String]
    public var occurredAtPath: String?
    public var statusChangedType: String
    public var issuedType: String

    public static let defaultSubject = ["transactionId": "$.rewardTransactionId", "customerId": "$.customerId",
                                        "rewardId": "$.rewardId"]

    public func normalize(_ webhook: InboundWebhook) throws(NormalizeError) -> NormalizedEvent {
        let body = webhook.payload.json
        guard body.objectValue != nil else { throw NormalizeError("expected a JSON object (the action's apiBody)") }
        func text(_ path: String) -> String? {
            guard let v = body.value(atPath: path) else { return nil }
            if let s = v.scalarText { return s }
            return v.isNull ? nil : v.jsonString()
        }
        let transactionPath = subject["transactionId"] ?? Self.defaultSubject["transactionId"]!
        guard let transaction = text(transactionPath), !transaction.isEmpty else {
            throw NormalizeError("the reward transaction id \(transactionPath) is missing")
        }
        var event = NormalizedEvent(type: issuedType)
        for (key, path) in subject {
            if let v = text(path), !v.isEmpty { event.subject[key] = v }
        }
        let code = text(statusPath).flatMap { $0.isEmpty ? nil : $0 }
        if let code {
            event.type = statusChangedType
            event.providerStatus = ProviderStatus(code: code)
            event.status = statusMap[code]
                ?? statusMap.first(where: { $0.key.lowercased() == code.lowercased() })?.value
                ?? statuses.status(named: code.lowercased())
        }
        if case .object(let o) = body {
            var fields: [String: JSONValue] = [:]
            for (k, v) in o where k.hasPrefix(Self.customFieldPrefix) && k.count > Self.customFieldPrefix.count {
                guard !v.isNull else { continue }
                fields[String(k.dropFirst(Self.customFieldPrefix.count))] = .string(v.scalarText ?? v.jsonString())
            }
            if !fields.isEmpty { event.attributes["customFields"] = .object(fields) }
        }
        for (key, path) in attributes {
            if let v = body.value(atPath: path), !v.isNull { event.attributes[key] = v }
        }
        if let occurredAtPath, let at = text(occurredAtPath), !at.isEmpty { event.occurredAt = at }
        return event
    }

    static func make(config: [String: JSONValue], path: String, reader r: ConfigReader) -> CapillarySource? {
        var s = CapillarySource(subject: defaultSubject, statusPath: "$.fulfillmentStatus", statusMap: [:],
                                attributes: ["mobile": "$.mobile"], occurredAtPath: nil,
                                statusChangedType: "redemption.status_changed", issuedType: "reward.issued")
        s.statuses = r.statuses
        let mapPath = ConfigReader.join(path, "map")
        var ok = true
        if let m = r.object(config["map"], mapPath, keys: ["subject", "status", "attributes", "occurredAt"]) {
            if let p = r.jsonPath(m, "status", mapPath) { s.statusPath = p }
            s.occurredAtPath = r.jsonPath(m, "occurredAt", mapPath)
            for (field, target) in [("subject", \CapillarySource.subject), ("attributes", \CapillarySource.attributes)] {
                let p = ConfigReader.join(mapPath, field)
                for (k, v) in r.map(m[field], p) ?? [:] {
                    let kp = ConfigReader.join(p, k)
                    switch v {
                    case .null:
                        if field == "subject" && k == "transactionId" {
                            r.problem(kp, "cannot be removed: the reward transaction id is required (a JSON path such as \"$.rewardTransactionId\")")
                            ok = false
                        } else {
                            s[keyPath: target][k] = nil
                        }
                    case .string(let text) where !text.isEmpty:
                        if let path = r.jsonPath(v, kp) { s[keyPath: target][k] = path } else { ok = false }
                    default:
                        r.problem(kp, "expected a JSON path such as \"$.rewardTransactionId\", found \(v.kindName)")
                        ok = false
                    }
                }
            }
        }
        s.statusMap = r.inboundStatusMap(config, "statusMap", path)
        if let t = config["type"], !t.isNull {
            let tp = ConfigReader.join(path, "type")
            if t.stringValue != nil {
                if let v = r.string(config, "type", path), !v.isEmpty { s.statusChangedType = v } else {
                    r.problem(tp, "must not be empty")
                }
            } else if let o = r.object(t, tp, keys: ["statusChanged", "issued"]) {
                for (key, kp) in [("statusChanged", \CapillarySource.statusChangedType), ("issued", \CapillarySource.issuedType)] {
                    if let v = r.string(o, key, tp) {
                        if v.isEmpty { r.problem(ConfigReader.join(tp, key), "must not be empty") } else { s[keyPath: kp] = v }
                    }
                }
            }
        }
        return ok ? s : nil
    }
}
