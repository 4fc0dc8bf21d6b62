import Foundation
import Relay

/// Stand-in for Capillary's `PUT /api_gateway/rewards/core/v1/management/transactions` (`relay simulate capillary`,
/// port 9105).
///
/// - `PUT` on a path ending `/rewards/core/v1/management/transactions`; other paths 404, other methods 405;
/// - auth, the form only: `Authorization: Basic <credentials>` or a non-empty `X-CAP-API-OAUTH-TOKEN`, else 401;
/// - a JSON body with a non-empty `transactions` array; each item an object with a numeric `transactionId` and a
///   non-empty `fulfillmentDetails.status` (and `transactionCustomFields`, when present, an object);
/// - the status names are the organisation's: any non-empty name is accepted unless the environment variable
///   `RELAY_SIM_CAPILLARY_STATUSES` (a comma-separated list) names the allowed ones (compared exactly);
/// - errors: 400 (401 for auth) `{"status":{"success":false,"code":...,"message":"..."}}`;
/// - success: 200 `{"status":{"success":true,"code":200,"message":"..."},"transactions":[...the items...]}`.
public struct CapillarySimulator: SinkResponder {
    public static let statusesVariable = "RELAY_SIM_CAPILLARY_STATUSES"
    static let pathSuffix = "/rewards/core/v1/management/transactions"

    /// The organisation's status names; nil: any non-empty name.
    public let allowedStatuses: [String]?

    /// Allowed statuses from `RELAY_SIM_CAPILLARY_STATUSES`.
    public init() {
        self.init(allowedStatuses: Self.statuses(from: ProcessInfo.processInfo.environment[Self.statusesVariable]))
    }

    public init(allowedStatuses: [String]?) {
        self.allowedStatuses = allowedStatuses
    }

    /// A comma-separated list of names, trimmed; nil when unset or empty.
    public static func statuses(from text: String?) -> [String]? {
        guard let text else { return nil }
        let names = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return names.isEmpty ? nil : names
    }

    static func error(_ status: Int, _ code: Int, _ message: String) -> HTTPResponse {
        CapillaryEnvelope.answer(status, success: false, code: code, message)
    }

    public func answer(_ request: HTTPRequest) -> HTTPResponse {
        guard request.path.hasSuffix(Self.pathSuffix) else {
            return Self.error(404, 404, "No API at \(request.method) \(request.path) (PUT /api_gateway\(Self.pathSuffix))")
        }
        guard request.method == "PUT" else {
            return Self.error(405, 405, "Method \(request.method) not allowed: use PUT").adding(headers: [("Allow", "PUT")])
        }
        let basic: Bool = {
            guard let auth = request.headers["Authorization"] else { return false }
            let parts = auth.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
            return parts.count == 2 && parts[0].lowercased() == "basic" && !parts[1].trimmingCharacters(in: .whitespaces).isEmpty
        }()
        let token = !(request.headers["X-CAP-API-OAUTH-TOKEN"] ?? "").trimmingCharacters(in: .whitespaces).isEmpty
        guard basic || token else {
            return Self.error(401, 401, "Unauthorized: send Authorization: Basic <till id:password> or an X-CAP-API-OAUTH-TOKEN header")
        }
        guard Wire.mediaType(request) == "application/json" else {
            return Self.error(400, 400, "Content-Type must be application/json")
        }
        guard let body = Wire.json(request), let o = body.objectValue else {
            return Self.error(400, 400, "Request body must be a JSON object")
        }
        guard let items = o["transactions"]?.arrayValue, !items.isEmpty else {
            return Self.error(400, 400, "transactions must be a non-empty array")
        }
        for (i, item) in items.enumerated() {
            let at = "transactions[\(i)]"
            guard let t = item.objectValue else { return Self.error(400, 400, "\(at) must be an object") }
            guard let id = t["transactionId"], Self.isWholeNumber(id) else {
                return Self.error(400, 400, "\(at).transactionId must be a numeric reward transaction id, found \(t["transactionId"]?.jsonString() ?? "nothing")")
            }
            guard let status = t["fulfillmentDetails"]?["status"]?.stringValue,
                  !status.trimmingCharacters(in: .whitespaces).isEmpty else {
                return Self.error(400, 400, "\(at).fulfillmentDetails.status is required (a fulfilment status name)")
            }
            if let allowed = allowedStatuses, !allowed.contains(status) {
                return Self.error(400, 400, "\(at).fulfillmentDetails.status \"\(status)\" is not a fulfilment status of this organisation (allowed: \(allowed.joined(separator: ", ")))")
            }
            if let f = t["transactionCustomFields"], f.objectValue == nil {
                return Self.error(400, 400, "\(at).transactionCustomFields must be an object of field name -> value")
            }
        }
        return CapillaryEnvelope.answer(200, success: true, code: 200,
                                        "\(items.count) transaction\(items.count == 1 ? "" : "s") updated",
                                        extra: ["transactions": .array(items)])
    }

    static func isWholeNumber(_ v: JSONValue) -> Bool {
        switch v {
        case .number(let n): return n >= 0 && n == n.rounded() && n.isFinite
        case .integer(let digits): return !digits.hasPrefix("-")
        default: return false
        }
    }
}
