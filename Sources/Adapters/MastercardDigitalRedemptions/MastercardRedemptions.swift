import Crypto
import Foundation
import Relay
import Simulator

/// `adapter: "mastercard-digital-redemptions"`: updates a redemption's status in Mastercard Digital Redemptions.
///
/// ```json5
/// "mastercard-dr": { adapter: "mastercard-digital-redemptions",
///                    baseURL: "https://sandbox.api.mastercard.com/loyalty",       // the default
///                    statusMap: { delivered: "S", sent: null },                  // over the default B/I/N/O/S map
///                    redemptionId: "${subject.redemptionId}",                    // the default
///                    backOrderDate: "${attributes.backOrderDate?}", backOrderDateFormat: "yyyy-MM-dd" }
/// ```
///
/// Sends `PUT {baseURL}/redemptions` with `{"redemptionId": "...", "statusCode": "S"}`, plus `backOrderDate` for
/// statusCode `B` (required then). Answers are read by Mastercard's `Errors` envelope (`Recoverable`).
public struct MastercardRedemptionsDestination: DestinationAdapter {
    public static let defaultBaseURL = "https://sandbox.api.mastercard.com/loyalty"
    /// Mastercard's status codes: B Back Order, I Invoice Received, N Order Sent, O Order Placed, S Shipping Date.
    public static let codes: [String: String] = ["B": "Back Order", "I": "Invoice Received", "N": "Order Sent",
                                                 "O": "Order Placed", "S": "Shipping Date"]
    public static let defaultStatusMap: [CanonicalStatus: String] = [.placed: "O", .invoiced: "I", .backordered: "B",
                                                                     .sent: "N", .shipped: "S"]

    public var basics: DestinationBasics
    public var statusMap: StatusMap
    public var redemptionId: Template
    public var backOrderDate: Template
    /// A `DateFormatter` pattern (en_US_POSIX, UTC).
    public var backOrderDateFormat: String

    public func translate(_ event: CanonicalEvent, context: DeliveryContext) throws(TranslateError) -> OutboundRequest {
        let code = try statusMap.value(for: event)
        let scope = TemplateScope(event: event, context: context, values: ["mappedStatus": .string(code)])
        let id = try redemptionId.renderIdentifier(scope, field: "redemptionId")
        var body: [String: JSONValue] = ["redemptionId": .string(id), "statusCode": .string(code)]
        if code == "B" { body["backOrderDate"] = .string(try date(scope)) }
        return Wire.json("PUT", basics.baseURL + "/redemptions", headers: try basics.renderedHeaders(scope),
                         body: .object(body))
    }

    /// The back-order date in `backOrderDateFormat`, or a terminal error saying why there is none.
    func date(_ scope: TemplateScope) throws(TranslateError) -> String {
        let required = "backOrderDate is required for statusCode B"
        let text: String
        do {
            text = try backOrderDate.render(scope).trimmingCharacters(in: .whitespaces)
        } catch {
            throw TranslateError("\(required): \(error.reason)")
        }
        guard !text.isEmpty else {
            throw TranslateError("\(required): the event has none (\"\(backOrderDate.shown)\" gave no text)")
        }
        guard let (date, _) = MastercardDates.parse(text) else {
            throw TranslateError("\(required): \"\(text)\" is not a date (yyyy-MM-dd or an RFC 3339 date-time)")
        }
        return MastercardDates.format(date, backOrderDateFormat)
    }

    public func classify(_ response: OutboundResponse) -> Classification {
        MastercardErrors.classify(response, byStatus: Self.classifyByStatus)
    }
}

public struct MastercardRedemptionsDestinationFactory: DestinationAdapterFactory {
    public init() {}
    public var name: String { "mastercard-digital-redemptions" }
    public var destinationKeys: [String] {
        DestinationBasics.keys + ["statusMap", "redemptionId", "backOrderDate", "backOrderDateFormat"]
    }

    public func makeDestination(name: String, config: [String: JSONValue], path: String,
                                reader r: ConfigReader) -> (any DestinationAdapter)? {
        let basics = DestinationBasics(r, config, path, defaultBaseURL: MastercardRedemptionsDestination.defaultBaseURL)
        let codes = MastercardRedemptionsDestination.codes
        let configured = r.outboundStatusMap(config, "statusMap", path,
                                             defaults: MastercardRedemptionsDestination.defaultStatusMap)
        // Checked here rather than by `valid:`, which numbers (`shipped: 1`) would pass by.
        for (status, value) in configured.outbound.sorted(by: { $0.key.rawValue < $1.key.rawValue }) where codes[value] == nil {
            r.problem(ConfigReader.join(ConfigReader.join(path, "statusMap"), status.rawValue),
                      "\"\(value)\" is not a Mastercard status code (B, I, N, O, S)")
        }
        let statusMap = StatusMap(outbound: configured.outbound.filter { codes[$0.value] != nil })
        if configured.outbound.isEmpty {
            r.problem(ConfigReader.join(path, "statusMap"), "maps no status: nothing could ever be delivered")
        }
        let redemptionId = r.template(config, "redemptionId", path, default: "${subject.redemptionId}",
                                                     nonEmpty: true)
        let backOrderDate = r.template(config, "backOrderDate", path,
                                                      default: "${attributes.backOrderDate?}", nonEmpty: true)
        var format = "yyyy-MM-dd"
        if let f = r.string(config, "backOrderDateFormat", path) {
            if f.trimmingCharacters(in: .whitespaces).isEmpty
                || MastercardDates.format(Date(timeIntervalSince1970: 0), f).isEmpty {
                r.problem(ConfigReader.join(path, "backOrderDateFormat"),
                          "expected a date pattern such as \"yyyy-MM-dd\"")
            } else {
                format = f
            }
        }
        guard let basics, let redemptionId, let backOrderDate else { return nil }
        return MastercardRedemptionsDestination(basics: basics, statusMap: statusMap, redemptionId: redemptionId,
                                                backOrderDate: backOrderDate, backOrderDateFormat: format)
    }
}

/// `relay simulate mastercard-digital-redemptions`: `PUT .../redemptions` as Mastercard documents it.
///
/// Checks, in order: the path ends in `/redemptions` (else 404); an `Authorization: OAuth ...` header (its form
/// only, or with a public key its signature and body hash: `MastercardStandInAuth`; else 401, Source `Gateway`);
/// the method is PUT (else 405); a JSON object body (415/400); then the fields:
/// `redemptionId` a non-empty string, `statusCode` one of B, I, N, O, S, `backOrderDate` (`yyyy-MM-dd`) present
/// for B, each problem one item of a 400 `Errors` envelope. Success: 200 echoing `redemptionId` and `statusCode`
/// (Mastercard's real success body is not public).
public struct MastercardRedemptionsSimulator: SinkResponder {
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
        guard request.path.hasSuffix("/redemptions") else {
            return MastercardErrors.answer(404, [MastercardErrors.error(
                "Gateway", "RESOURCE_NOT_FOUND", "no resource at \(request.path) (expected PUT .../redemptions)")])
        }
        if let refused = MastercardErrors.gate(request, methods: ["PUT"], auth: auth) { return refused }
        let body: [String: JSONValue]
        switch MastercardErrors.jsonBody(request) {
        case .object(let o): body = o
        case .refused(let answer): return answer
        }
        var errors: [MastercardError] = []
        let id = body["redemptionId"]
        if id == nil || id!.isNull {
            errors.append(MastercardErrors.error("redemptionId", "MISSING_REDEMPTION_ID", "redemptionId is required"))
        } else if id!.stringValue?.trimmingCharacters(in: .whitespaces).isEmpty ?? true {
            errors.append(MastercardErrors.error("redemptionId", "INVALID_REDEMPTION_ID",
                                                 "redemptionId must be a non-empty string"))
        }
        let code = body["statusCode"]?.stringValue
        if body["statusCode"] == nil || body["statusCode"]!.isNull {
            errors.append(MastercardErrors.error("statusCode", "MISSING_STATUS_CODE", "statusCode is required"))
        } else if code == nil || MastercardRedemptionsDestination.codes[code!] == nil {
            errors.append(MastercardErrors.error("statusCode", "INVALID_STATUS_CODE",
                                                 "statusCode must be one of B, I, N, O, S (was \(body["statusCode"]!.jsonString()))"))
        }
        let date = body["backOrderDate"].flatMap { $0.isNull ? nil : $0 }
        if let date {
            if !(date.stringValue.map(MastercardErrors.isPlainDate) ?? false) {
                errors.append(MastercardErrors.error("backOrderDate", "INVALID_BACK_ORDER_DATE",
                                                     "backOrderDate must be a date written yyyy-MM-dd (was \(date.jsonString()))"))
            }
        } else if code == "B" {
            errors.append(MastercardErrors.error("backOrderDate", "MISSING_BACK_ORDER_DATE",
                                                 "backOrderDate is required when statusCode is B"))
        }
        if !errors.isEmpty { return MastercardErrors.answer(400, errors) }
        var echo: [String: JSONValue] = ["redemptionId": id!, "statusCode": .string(code!)]
        if let date { echo["backOrderDate"] = date }
        return Wire.answer(200, .object(echo))
    }
}
