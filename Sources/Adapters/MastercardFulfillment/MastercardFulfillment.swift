import Crypto
import Foundation
import Relay
import Simulator

/// `adapter: "mastercard-fulfillment"`: order status updates to Mastercard's Traditional Fulfillment Service,
/// several statuses for one vendor in one request.
///
/// ```json5
/// "mastercard-fulfillment": { adapter: "mastercard-fulfillment",
///     baseURL: "https://sandbox.api.mastercard.com/loyalty/rewards",   // the default
///     method: "POST",                                                  // GET, POST, PUT or PATCH
///     vendorId: "${subject.vendorId}",                                 // the default
///     statusMap: { shipped: "SHIPPED", backordered: "BACKORDERED" },   // required: the values are not public
///     item: { orderId: "${subject.orderId}", status: "${mappedStatus}" },
///     arrayKey: "OrderStatusArray",
///     batch: { maxItems: 50, wait: "1s" } }
/// ```
///
/// Sends `{method} {baseURL}/vendors/{vendorId}/orders/status` with `{"OrderStatusArray": [item, ...]}`: every
/// status queued for one vendor within `batch.wait` travels in one request (at most `batch.maxItems`).
public struct MastercardFulfillmentDestination: BatchingDestinationAdapter {
    public static let defaultBaseURL = "https://sandbox.api.mastercard.com/loyalty/rewards"
    public static let methods = ["GET", "POST", "PUT", "PATCH"]
    public static let defaultItem: JSONValue = .object([
        "orderId": .string("${subject.orderId}"),
        "status": .string("${mappedStatus}"),
        "trackingNumber": .string("${attributes.trackingNumber?}"),
        "carrier": .string("${attributes.carrier?}"),
        "shipDate": .string("${attributes.shippingDate?}"),
    ])

    public var basics: DestinationBasics
    public var method: String
    public var vendorId: Template
    public var statusMap: StatusMap
    public var item: JSONTemplate
    public var arrayKey: String
    public var batching: BatchOptions

    public func batchItem(_ event: CanonicalEvent, context: DeliveryContext) throws(TranslateError) -> BatchItem {
        let status = try statusMap.value(for: event)
        let scope = TemplateScope(event: event, context: context, values: ["mappedStatus": .string(status)])
        let vendor = try vendorId.renderIdentifier(scope, field: "vendorId")
        return BatchItem(key: vendor, item: try item.render(scope))
    }

    public func translate(batchKey key: String, items: [JSONValue]) throws(TranslateError) -> OutboundRequest {
        // Headers may name `${vendorId}` only: one request carries several events.
        let scope = TemplateScope(event: Self.noEvent, values: ["vendorId": .string(key)])
        let url = basics.baseURL + "/vendors/" + Template.escape(key, .url) + "/orders/status"
        return Wire.json(method, url, headers: try basics.renderedHeaders(scope),
                         body: .object([arrayKey: .array(items)]))
    }

    public func classify(_ response: OutboundResponse) -> Classification {
        MastercardErrors.classify(response, byStatus: Self.classifyByStatus)
    }

    /// A refusal whose every error names an item (`Source: "OrderStatusArray[2]"`) fails those items alone: the others
    /// were refused only for travelling with them, and are sent again (without the bad ones) on the retry schedule.
    public func classifyItems(_ response: OutboundResponse, count: Int) -> [Classification]? {
        guard !(200..<300).contains(response.status), let errors = MastercardErrors.parse(response.body),
              !errors.isEmpty, !errors.contains(where: { $0.recoverable == true }) else { return nil }
        var byItem: [Int: [MastercardError]] = [:]
        for e in errors {
            guard let i = Self.itemIndex(e.source, arrayKey: arrayKey), i < count else { return nil }
            byItem[i, default: []].append(e)
        }
        let refused = byItem.keys.sorted().map { "\(arrayKey)[\($0)]" }.joined(separator: ", ")
        return (0..<count).map { i in
            if let mine = byItem[i] {
                return .terminal(reason: "HTTP \(response.status): " + mine.map(\.summary).joined(separator: "; "))
            }
            return .retry(reason: "HTTP \(response.status): the batch was refused for \(refused), not for this item", after: nil)
        }
    }

    /// `OrderStatusArray[2]` (or `OrderStatusArray[2].status`) -> 2.
    static func itemIndex(_ source: String, arrayKey: String) -> Int? {
        guard source.hasPrefix(arrayKey + "["), let close = source.firstIndex(of: "]") else { return nil }
        return Int(source[source.index(source.startIndex, offsetBy: arrayKey.count + 1)..<close])
    }

    /// The scope of a batch's headers has no event of its own.
    static let noEvent = CanonicalEvent(id: "", source: "", type: "", receivedAt: "", idempotencyKey: "")
}

public struct MastercardFulfillmentDestinationFactory: DestinationAdapterFactory {
    public init() {}
    public var name: String { "mastercard-fulfillment" }
    public var destinationKeys: [String] {
        DestinationBasics.keys + ["method", "vendorId", "statusMap", "item", "arrayKey", "batch"]
    }

    public func makeDestination(name: String, config: [String: JSONValue], path: String,
                                reader r: ConfigReader) -> (any DestinationAdapter)? {
        let basics = DestinationBasics(r, config, path, defaultBaseURL: MastercardFulfillmentDestination.defaultBaseURL)
        if let basics {
            for (header, t) in basics.headers {
                for p in t.placeholders where p != "vendorId" && p != "vendorId?" {
                    r.problem(ConfigReader.join(ConfigReader.join(path, "headers"), header),
                              "\"${\(p)}\": a request carries several events, so headers may name only ${vendorId}")
                }
            }
        }
        var method = "POST"
        if let m = r.string(config, "method", path) {
            if MastercardFulfillmentDestination.methods.contains(m.uppercased()) {
                method = m.uppercased()
            } else {
                r.problem(ConfigReader.join(path, "method"),
                          "\"\(m)\" is not one of: \(MastercardFulfillmentDestination.methods.joined(separator: ", "))")
            }
        }
        let vendorId = r.template(config, "vendorId", path, default: "${subject.vendorId}",
                                                 nonEmpty: true)
        let statusMap = r.outboundStatusMap(config, "statusMap", path, required: true) { value in
            value.trimmingCharacters(in: .whitespaces).isEmpty ? "must not be empty" : nil
        }
        var item: JSONTemplate?
        let itemPath = ConfigReader.join(path, "item")
        if let v = config["item"], !v.isNull {
            if case .object(let o) = v, !o.isEmpty {
                item = r.jsonTemplate(v, itemPath)
            } else {
                r.problem(itemPath, "expected an object of item fields, e.g. { orderId: \"${subject.orderId}\", status: \"${mappedStatus}\" }")
            }
        } else {
            item = try? JSONTemplate(MastercardFulfillmentDestination.defaultItem)
        }
        var arrayKey = "OrderStatusArray"
        if let k = r.string(config, "arrayKey", path) {
            if k.isEmpty { r.problem(ConfigReader.join(path, "arrayKey"), "must not be empty") } else { arrayKey = k }
        }
        var maxItems = 50
        var wait = 1.0
        let batchPath = ConfigReader.join(path, "batch")
        if let b = r.object(config["batch"], batchPath, keys: ["maxItems", "wait"]) {
            if let n = r.int(b, "maxItems", batchPath, min: 1, max: 1000) { maxItems = n }
            if let d = r.duration(b, "wait", batchPath) { wait = d }
        }
        guard let basics, let vendorId, let item, !statusMap.outbound.isEmpty else { return nil }
        return MastercardFulfillmentDestination(basics: basics, method: method, vendorId: vendorId, statusMap: statusMap,
                                                item: item, arrayKey: arrayKey,
                                                batching: BatchOptions(maxItems: maxItems, wait: wait))
    }
}

/// `relay simulate mastercard-fulfillment`: `/vendors/{vendor_id}/orders/status` (under any prefix).
///
/// Checks, in order: the path (else 404); an `Authorization: OAuth ...` header (its form only, or with a
/// public key its signature and body hash: `MastercardStandInAuth`; else 401, Source `Gateway`); the method is
/// GET, POST, PUT or PATCH (Mastercard's page is contradictory; else 405); a JSON object body
/// (415/400) holding a non-empty `OrderStatusArray` whose items are objects with a non-empty `orderId` and
/// `status` (each problem one item of a 400 `Errors` envelope). Success: 200
/// `{"vendorId": ..., "OrderStatusArray": [{"orderId": ..., "status": ..., "result": "accepted"}]}`.
public struct MastercardFulfillmentSimulator: SinkResponder {
    /// How the `Authorization` header is checked.
    public let auth: MastercardStandInAuth

    /// Verifies signatures with the key `RELAY_SIM_MASTERCARD_PUBLIC_KEY` names; checks the header's form only
    /// when it is unset.
    public init() { auth = .fromEnvironment() }

    /// Verifies signatures with `publicKey`; nil: checks the header's form only.
    public init(publicKey: RSAPublicKey?) { auth = MastercardStandInAuth(publicKey: publicKey) }

    public init(auth: MastercardStandInAuth) { self.auth = auth }

    /// The `Errors` envelope (`MastercardErrors.faultEnvelope`) for the error answers of `--fault` rules.
    public func errorBody(status: Int, message: String) -> JSONValue? {
        MastercardErrors.faultEnvelope(status: status, message: message)
    }

    public func answer(_ request: HTTPRequest) -> HTTPResponse {
        guard let vendor = Self.vendor(request.path) else {
            return MastercardErrors.answer(404, [MastercardErrors.error(
                "Gateway", "RESOURCE_NOT_FOUND",
                "no resource at \(request.path) (expected .../vendors/{vendor_id}/orders/status)")])
        }
        if let refused = MastercardErrors.gate(request, methods: MastercardFulfillmentDestination.methods, auth: auth) { return refused }
        let body: [String: JSONValue]
        switch MastercardErrors.jsonBody(request) {
        case .object(let o): body = o
        case .refused(let answer): return answer
        }
        guard let list = body["OrderStatusArray"]?.arrayValue, !list.isEmpty else {
            return MastercardErrors.answer(400, [MastercardErrors.error(
                "OrderStatusArray", "MISSING_ORDER_STATUS_ARRAY", "OrderStatusArray must be a non-empty array")])
        }
        var errors: [MastercardError] = []
        var accepted: [JSONValue] = []
        for (i, entry) in list.enumerated() {
            let at = "OrderStatusArray[\(i)]"
            guard case .object(let o) = entry else {
                errors.append(MastercardErrors.error(at, "INVALID_ORDER_STATUS", "\(at) must be an object"))
                continue
            }
            func text(_ key: String) -> String? {
                guard let s = o[key]?.stringValue, !s.trimmingCharacters(in: .whitespaces).isEmpty else { return nil }
                return s
            }
            let orderId = text("orderId"), status = text("status")
            if orderId == nil {
                errors.append(MastercardErrors.error(at + ".orderId", "MISSING_ORDER_ID",
                                                     "\(at).orderId must be a non-empty string"))
            }
            if status == nil {
                errors.append(MastercardErrors.error(at + ".status", "MISSING_STATUS",
                                                     "\(at).status must be a non-empty string"))
            }
            if let orderId, let status {
                accepted.append(.object(["orderId": .string(orderId), "status": .string(status),
                                         "result": .string("accepted")]))
            }
        }
        if !errors.isEmpty { return MastercardErrors.answer(400, errors) }
        return Wire.answer(200, .object(["vendorId": .string(vendor), "OrderStatusArray": .array(accepted)]))
    }

    /// The vendor id of a `.../vendors/{vendor_id}/orders/status` path, percent-decoded.
    static func vendor(_ path: String) -> String? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count >= 5, parts[parts.count - 1] == "status", parts[parts.count - 2] == "orders",
              parts[parts.count - 4] == "vendors" else { return nil }
        let raw = String(parts[parts.count - 3])
        guard !raw.isEmpty, let decoded = raw.removingPercentEncoding, !decoded.isEmpty else { return nil }
        return decoded
    }
}
