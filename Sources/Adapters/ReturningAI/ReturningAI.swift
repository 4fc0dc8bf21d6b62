import Foundation
import Relay

/// `adapter: "returning-ai"` as a destination: moves a Returning.AI redemption transaction to a community-defined
/// status.
///
/// `PUT {baseURL}/v1/redemption-transactions/status`, JSON:
/// `{"refundCoins":true,"statusId":"695dcc370ab8622381f27918","transactionId":"ORD202507013831"}`
///
/// ```json5
/// "returning-ai": { adapter: "returning-ai",
///                   headers: { Authorization: "Bearer ${env:RAI_API_KEY}" },
///                   statusMap: { shipped: "695dcc370ab8622381f27918", refunded: "695dcc370ab8622381f27919" } }
/// ```
/// Status ids are per community: they come only from `statusMap` (canonical -> 24-hex id), never from code.
public struct ReturningAIDestination: DestinationAdapter {
    public static let defaultBaseURL = "https://integration.returning.ai/apis"
    public static let path = "/v1/redemption-transactions/status"

    public var basics: DestinationBasics
    public var transactionId: Template
    public var statusMap: StatusMap
    /// The body field carrying the status id: `statusId` (the documentation) or `statusID` (the seed's example).
    public var statusIdField: String
    /// Canonical statuses whose update also asks for the member's coins back (`refundCoins: true`).
    public var refundCoinsOn: Set<CanonicalStatus>

    public var url: String { basics.baseURL + Self.path }

    public func translate(_ event: CanonicalEvent, context: DeliveryContext) throws(TranslateError) -> OutboundRequest {
        let statusId = try statusMap.value(for: event)
        let scope = TemplateScope(event: event, context: context, values: ["mappedStatus": .string(statusId)])
        let transaction = try transactionId.renderIdentifier(scope, field: "transactionId",
                                                             hint: "Returning.AI needs the redemption transaction id")
        var body: [String: JSONValue] = ["transactionId": .string(transaction), statusIdField: .string(statusId)]
        if let given = event.attributes["refundCoins"], !given.isNull {
            switch given {
            case .bool(let b): body["refundCoins"] = .bool(b)
            case .string(let s) where s.lowercased() == "true": body["refundCoins"] = .bool(true)
            case .string(let s) where s.lowercased() == "false": body["refundCoins"] = .bool(false)
            default:
                throw TranslateError("attributes.refundCoins must be true or false, found \(given.jsonString())")
            }
        } else if event.statusChain.contains(where: refundCoinsOn.contains) {
            body["refundCoins"] = .bool(true)
        }
        return Wire.json("PUT", url, headers: try basics.renderedHeaders(scope), body: .object(body))
    }

    /// 2xx with `"status":"success"`: delivered; any other 2xx: terminal (the update was not confirmed).
    /// 400, 401, 403, 404, 409: terminal with the body's message; 408, 429, 5xx: retried; other statuses: terminal.
    public func classify(_ response: OutboundResponse) -> Classification {
        Self.classifyResponse(response)
    }

    public static func classifyResponse(_ response: OutboundResponse) -> Classification {
        let s = response.status
        let json = Wire.json(response)
        let status = json?["status"]?.scalarText
        let message = json?["message"]?.scalarText ?? json?["error"]?.scalarText
        if (200..<300).contains(s) {
            if status == "success" { return .delivered }
            if let status {
                return .terminal(reason: "HTTP \(s) with status \"\(status)\"" + (message.map { ": \($0)" } ?? ""))
            }
            return .terminal(reason: "HTTP \(s) without the documented \"status\":\"success\": "
                             + (json == nil ? (response.body.isEmpty ? "empty body" : "body is not JSON") : "body has no status"))
        }
        let detail = message.map { "HTTP \(s): \($0)" } ?? "HTTP \(s)"
        if s == 408 || s == 425 || s == 429 || (500..<600).contains(s) {
            return .retry(reason: detail, after: RetryPolicy.retryAfter(response.headers["Retry-After"]))
        }
        return .terminal(reason: detail)
    }

    /// Whether `s` is a 24-character hexadecimal id (a MongoDB ObjectId, as Returning.AI's status ids are).
    public static func isStatusId(_ s: String) -> Bool {
        s.utf8.count == 24 && s.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) || ($0 >= 0x41 && $0 <= 0x46) }
    }
}

public struct ReturningAIDestinationFactory: DestinationAdapterFactory {
    public init() {}
    public var name: String { "returning-ai" }
    public var destinationKeys: [String] {
        DestinationBasics.keys + ["transactionId", "statusMap", "statusIdField", "refundCoinsOn"]
    }

    public func makeDestination(name: String, config: [String: JSONValue], path: String,
                                reader r: ConfigReader) -> (any DestinationAdapter)? {
        let basics = DestinationBasics(r, config, path, defaultBaseURL: ReturningAIDestination.defaultBaseURL)
        let transactionId = r.template(config, "transactionId", path, default: "${subject.transactionId}")
        let statusMap = r.outboundStatusMap(config, "statusMap", path, required: true) { value in
            ReturningAIDestination.isStatusId(value) ? nil
                : "\"\(value)\" is not a Returning.AI status id: expected the community status's 24 hexadecimal characters (e.g. 695dcc370ab8622381f27918)"
        }
        var statusIdField = "statusId"
        if let f = r.string(config, "statusIdField", path) {
            if f.isEmpty || f == "transactionId" || f == "refundCoins" {
                r.problem(ConfigReader.join(path, "statusIdField"), "must name the status id field (\"statusId\", or \"statusID\" as the seed spells it)")
            } else {
                statusIdField = f
            }
        }
        var refundCoinsOn: Set<CanonicalStatus> = [.refunded]
        if config["refundCoinsOn"] != nil, let names = r.strings(config, "refundCoinsOn", path) {
            refundCoinsOn = []
            let p = ConfigReader.join(path, "refundCoinsOn")
            let isList = config["refundCoinsOn"]?.arrayValue != nil
            for (i, n) in names.enumerated() {
                if let s = r.canonicalStatus(n, isList ? ConfigReader.join(p, i) : p) { refundCoinsOn.insert(s) }
            }
        }
        guard let basics, let transactionId else { return nil }
        return ReturningAIDestination(basics: basics, transactionId: transactionId, statusMap: statusMap,
                                      statusIdField: statusIdField, refundCoinsOn: refundCoinsOn)
    }
}
