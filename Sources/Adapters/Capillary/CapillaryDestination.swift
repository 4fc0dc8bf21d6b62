import Foundation
import Relay

/// `adapter: "capillary"` as a destination: sets the fulfilment status of an issued reward.
///
/// `PUT {baseURL}/api_gateway/rewards/core/v1/management/transactions?skip_validation=true`, JSON:
/// `{"transactions":[{"customerId":85076836,"fulfillmentDetails":{"status":"Confirmed"},"rewardId":177657,
///   "transactionCustomFields":{"Partner_Order_Id":"V-1"},"transactionId":3482445}]}`
///
/// ```json5
/// "capillary": { adapter: "capillary", baseURL: "https://eu.api.capillarytech.com",
///                headers: { "X-CAP-API-OAUTH-TOKEN": "${env:CAPILLARY_TOKEN}" },
///                customFields: { Partner_Order_Id: "${subject.vendorOrderId?}" },
///                statusMap: { placed: "received", shipped: "in-progress", delivered: "completed", cancelled: "denied" } }
/// ```
/// The host is per organisation (`baseURL` is required) and so are the status names (`statusMap` is required).
public struct CapillaryDestination: DestinationAdapter {
    public static let path = "/api_gateway/rewards/core/v1/management/transactions"

    public var basics: DestinationBasics
    public var transactionId: Template
    public var customerId: Template
    public var rewardId: Template
    /// Transaction custom field name -> template, in name order.
    public var customFields: [(String, Template)]
    public var statusMap: StatusMap
    public var skipValidation: Bool

    public var url: String { basics.baseURL + Self.path + (skipValidation ? "?skip_validation=true" : "") }

    public func translate(_ event: CanonicalEvent, context: DeliveryContext) throws(TranslateError) -> OutboundRequest {
        let status = try statusMap.value(for: event)
        let scope = TemplateScope(event: event, context: context, values: ["mappedStatus": .string(status)])
        let transaction = try transactionId.renderIdentifier(scope, field: "transactionId",
                                                             hint: "Capillary needs the reward transaction id")
        var item: [String: JSONValue] = ["transactionId": Self.id(transaction),
                                         "fulfillmentDetails": .object(["status": .string(status)])]
        for (key, template) in [("customerId", customerId), ("rewardId", rewardId)] {
            let v = try template.render(scope)
            if !v.isEmpty { item[key] = Self.id(v) }
        }
        var fields: [String: JSONValue] = [:]
        for (name, template) in customFields {
            let v = try template.render(scope)
            if !v.isEmpty { fields[name] = .string(v) }
        }
        if !fields.isEmpty { item["transactionCustomFields"] = .object(fields) }
        return Wire.json("PUT", url, headers: try basics.renderedHeaders(scope),
                         body: .object(["transactions": .array([.object(item)])]))
    }

    /// An id as Capillary's examples write them: a JSON number when it is all digits (without a leading zero, which
    /// a number would lose), else a string.
    public static func id(_ text: String) -> JSONValue {
        let digits = !text.isEmpty && text.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
        guard digits, text == "0" || !text.hasPrefix("0") else { return .string(text) }
        return text.count <= 15 ? .number(Double(text)!) : .integer(text)
    }

    /// 2xx: delivered, unless the envelope says `status.success: false` (terminal, "code: message").
    /// Other statuses: 408, 425, 429, 5xx retried, the rest terminal; the envelope's "code: message" in the reason.
    public func classify(_ response: OutboundResponse) -> Classification { Self.classifyResponse(response) }

    public static func classifyResponse(_ response: OutboundResponse) -> Classification {
        let s = response.status
        let envelope = CapillaryEnvelope.read(Wire.json(response))
        if (200..<300).contains(s) {
            guard let envelope, !envelope.success else { return .delivered }
            return .terminal(reason: "HTTP \(s) with status.success false: "
                             + (CapillaryEnvelope.text(envelope.code, envelope.message) ?? "no code or message"))
        }
        let detail = envelope.flatMap { CapillaryEnvelope.text($0.code, $0.message) }.map { "HTTP \(s): \($0)" } ?? "HTTP \(s)"
        if s == 408 || s == 425 || s == 429 || (500..<600).contains(s) {
            return .retry(reason: detail, after: RetryPolicy.retryAfter(response.headers["Retry-After"]))
        }
        return .terminal(reason: detail)
    }

    static func make(config: [String: JSONValue], path: String, reader r: ConfigReader) -> CapillaryDestination? {
        let basics = DestinationBasics(r, config, path, defaultBaseURL: nil)
        func template(_ key: String, _ fallback: String) -> Template? { r.template(config, key, path, default: fallback) }
        let transactionId = template("transactionId", "${subject.transactionId}")
        let customerId = template("customerId", "${subject.customerId?}")
        let rewardId = template("rewardId", "${subject.rewardId?}")
        var customFields: [(String, Template)] = []
        let cp = ConfigReader.join(path, "customFields")
        if let fields = r.map(config["customFields"], cp) {
            for name in fields.keys.sorted() {
                if name.isEmpty { r.problem(cp, "a custom field needs a name"); continue }
                if let t = r.template(fields[name]!, ConfigReader.join(cp, name)) { customFields.append((name, t)) }
            }
        }
        let statusMap = r.outboundStatusMap(config, "statusMap", path, required: true) { value in
            value.trimmingCharacters(in: .whitespaces).isEmpty
                ? "must be one of the organisation's fulfilment status names (e.g. \"completed\"), not empty" : nil
        }
        let skipValidation = r.bool(config, "skipValidation", path) ?? true
        guard let basics, let transactionId, let customerId, let rewardId else { return nil }
        return CapillaryDestination(basics: basics, transactionId: transactionId, customerId: customerId,
                                    rewardId: rewardId, customFields: customFields, statusMap: statusMap,
                                    skipValidation: skipValidation)
    }
}
