import Foundation
import Relay

/// `adapter: "generic"`: any JSON or form webhook. Without `map` it is recorded as a pass-through event (the body
/// kept whole, nothing interpreted). With `map`, fields are taken by JSON path:
///
/// ```json5
/// map: { type: "$.event", subject: { orderId: "$.order.id" }, status: "$.order.state",
///        occurredAt: "$.order.updated_at", attributes: { trackingNumber: "$.order.tracking" } },
/// statusMap: { "SHIPPED": "shipped", "BACKORDER": "backordered" },
/// type: "order.status_changed"   // the event type when map.type is absent
/// ```
public struct GenericSource: SourceAdapter {
    public var type: String
    public var typePath: String?
    public var subject: [String: String]
    public var statusPath: String?
    public var statusMap: [String: CanonicalStatus]
    /// A provider value that is itself a status name (case-insensitive) needs no entry in `statusMap`.
    public var statuses = StatusVocabulary()
    public var occurredAtPath: String?
    public var attributes: [String: String]

    /// Whether any field is read from the body (a pass-through source never parses it).
    var readsBody: Bool {
        typePath != nil || statusPath != nil || occurredAtPath != nil || !subject.isEmpty || !attributes.isEmpty
    }

    public func normalize(_ webhook: InboundWebhook) throws(NormalizeError) -> NormalizedEvent {
        var event = NormalizedEvent(type: type)
        guard readsBody else { return event }
        let body = webhook.payload.json
        if let typePath, let t = body.value(atPath: typePath)?.scalarText { event.type = t }
        for (key, path) in subject {
            if let v = body.value(atPath: path)?.scalarText { event.subject[key] = v }
        }
        if let statusPath {
            guard let code = body.value(atPath: statusPath)?.scalarText else {
                throw NormalizeError("status field \(statusPath) is missing")
            }
            event.providerStatus = ProviderStatus(code: code)
            // A value with no mapping is kept as the provider's status only: accepted and stored (a sender that does
            // not retry a 4xx would lose it), never guessed; destinations that need a status skip it.
            event.status = statusMap[code] ?? statuses.status(named: code.lowercased())
        }
        if let occurredAtPath, let at = body.value(atPath: occurredAtPath)?.scalarText { event.occurredAt = at }
        for (key, path) in attributes {
            if let v = body.value(atPath: path) { event.attributes[key] = v }
        }
        return event
    }
}

public struct GenericSourceFactory: SourceAdapterFactory {
    public init() {}
    public var name: String { "generic" }
    public var sourceKeys: [String] { ["map", "statusMap", "type"] }

    public func makeSource(name: String, config: [String: JSONValue], path: String, reader r: ConfigReader) -> (any SourceAdapter)? {
        var s = GenericSource(type: r.string(config, "type", path) ?? "passthrough", typePath: nil, subject: [:],
                              statusPath: nil, statusMap: [:], occurredAtPath: nil, attributes: [:])
        s.statuses = r.statuses
        let mapPath = ConfigReader.join(path, "map")
        if let m = r.object(config["map"], mapPath, keys: ["type", "subject", "status", "occurredAt", "attributes"]) {
            s.typePath = r.jsonPath(m, "type", mapPath)
            s.statusPath = r.jsonPath(m, "status", mapPath)
            s.occurredAtPath = r.jsonPath(m, "occurredAt", mapPath)
            for (field, target) in [("subject", \GenericSource.subject), ("attributes", \GenericSource.attributes)] {
                let p = ConfigReader.join(mapPath, field)
                for (k, v) in r.map(m[field], p) ?? [:] {
                    if let path = r.jsonPath(v, ConfigReader.join(p, k)) { s[keyPath: target][k] = path }
                }
            }
        }
        let smPath = ConfigReader.join(path, "statusMap")
        for (code, v) in r.map(config["statusMap"], smPath) ?? [:] {
            if let name = v.stringValue {
                if let status = r.canonicalStatus(name, ConfigReader.join(smPath, code)) { s.statusMap[code] = status }
            } else {
                r.problem(ConfigReader.join(smPath, code), "must be a canonical status (\(r.statuses.names))")
            }
        }
        if !s.statusMap.isEmpty && s.statusPath == nil {
            r.problem(smPath, "needs map.status: the JSON path of the provider's status")
        }
        return s
    }
}
