import Crypto
import Foundation
import Relay
import Simulator
import Synchronization

/// Stand-in for Capillary's `PUT /api_gateway/rewards/core/v1/management/transactions` (`relay simulate capillary`,
/// port 9105).
///
/// - `PUT` on a path ending `/rewards/core/v1/management/transactions`; other paths 404, other methods 405;
/// - `POST /v3/oauth/token/generate` (any path ending so), JSON `{"key": ..., "secret": ...}` (both non-empty; equal
///   to `RELAY_SIM_CAPILLARY_KEY` / `RELAY_SIM_CAPILLARY_SECRET` when those are set, else 401): answers
///   `{"status":{...},"data":{"accessToken":"...","ttlSeconds":N}}` (N from `RELAY_SIM_CAPILLARY_TTL`, default 3600);
/// - auth, the form only: `Authorization: Basic <credentials>` or a non-empty `X-CAP-API-OAUTH-TOKEN`, else 401;
///   once the stand-in has issued a token, an `X-CAP-API-OAUTH-TOKEN` must be one it issued and not yet expired;
/// - a JSON body with a non-empty `transactions` array; each item an object with a numeric `transactionId` and a
///   non-empty `fulfillmentDetails.status` (and `transactionCustomFields`, when present, an object);
/// - the status names are the organisation's: any non-empty name is accepted unless the environment variable
///   `RELAY_SIM_CAPILLARY_STATUSES` (a comma-separated list) names the allowed ones (compared exactly);
/// - errors: 400 (401 for auth) `{"status":{"success":false,"code":...,"message":"..."}}`; so are the error answers of
///   `--fault` rules (`status:503`, `retryAfter`, `hang`'s 504), with the HTTP status as the code;
/// - success: 200 `{"status":{"success":true,"code":200,"message":"..."},"transactions":[...the items...]}`.
public struct CapillarySimulator: SinkResponder {
    public static let statusesVariable = "RELAY_SIM_CAPILLARY_STATUSES"
    public static let keyVariable = "RELAY_SIM_CAPILLARY_KEY"
    public static let secretVariable = "RELAY_SIM_CAPILLARY_SECRET"
    public static let ttlVariable = "RELAY_SIM_CAPILLARY_TTL"
    static let pathSuffix = "/rewards/core/v1/management/transactions"
    static let tokenPathSuffix = "/v3/oauth/token/generate"

    /// The organisation's status names; nil: any non-empty name.
    public let allowedStatuses: [String]?
    /// The key and secret the token flow accepts; nil: any non-empty pair.
    public let credentials: (key: String, secret: String)?
    /// Seconds an issued token is valid (`ttlSeconds`).
    public let tokenTTL: Int
    /// The tokens issued so far.
    public let tokens = CapillaryIssuedTokens()

    /// Allowed statuses from `RELAY_SIM_CAPILLARY_STATUSES`; the token flow's credentials from
    /// `RELAY_SIM_CAPILLARY_KEY` and `RELAY_SIM_CAPILLARY_SECRET`, its lifetime from `RELAY_SIM_CAPILLARY_TTL`.
    public init() {
        let env = ProcessInfo.processInfo.environment
        var credentials: (String, String)?
        if let key = env[Self.keyVariable], let secret = env[Self.secretVariable], !key.isEmpty, !secret.isEmpty {
            credentials = (key, secret)
        }
        self.init(allowedStatuses: Self.statuses(from: env[Self.statusesVariable]), credentials: credentials,
                  tokenTTL: env[Self.ttlVariable].flatMap { Int($0) }.flatMap { $0 > 0 ? $0 : nil } ?? 3600)
    }

    public init(allowedStatuses: [String]?, credentials: (key: String, secret: String)? = nil, tokenTTL: Int = 3600) {
        self.allowedStatuses = allowedStatuses
        self.credentials = credentials
        self.tokenTTL = tokenTTL
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

    public func errorBody(status: Int, message: String) -> JSONValue? {
        CapillaryEnvelope.body(success: false, code: status, message)
    }

    public func answer(_ request: HTTPRequest) -> HTTPResponse {
        if request.path.hasSuffix(Self.tokenPathSuffix) { return generateToken(request) }
        if request.path.contains(Self.redemptionPathPart) { return vendorRedemption(request) }
        guard request.path.hasSuffix(Self.pathSuffix) else {
            return Self.error(404, 404, "No API at \(request.method) \(request.path) (PUT /api_gateway\(Self.pathSuffix))")
        }
        guard request.method == "PUT" else {
            return Self.error(405, 405, "Method \(request.method) not allowed: use PUT").adding(headers: [("Allow", "PUT")])
        }
        if let refusal = unauthorized(request) { return refusal }
        return updateTransactions(request)
    }

    static let redemptionPathPart = "/rewards/core/v1/vendor/redemption/"

    /// `POST .../vendor/redemption/create` (needs `brandId`, `vendorId`) and
    /// `PUT .../vendor/redemption/{id}/brand/{brandId}`: a vendor redemption's definition, checked as Capillary
    /// documents it (`name`, `actions[]` with `name`, `execOrder`, `apiType`, `apiUrl`; `apiHeaders` an object,
    /// `apiBody` a string, `contextKeys` an object of paths, `responseKeys` names of contextKeys).
    func vendorRedemption(_ request: HTTPRequest) -> HTTPResponse {
        let tail = request.path.components(separatedBy: Self.redemptionPathPart).last ?? ""
        let parts = tail.split(separator: "/").map(String.init)
        let create = parts == ["create"]
        let update = parts.count == 3 && parts[1] == "brand" && Int(parts[0]) != nil && Int(parts[2]) != nil
        guard create || update else {
            return Self.error(404, 404, "No API at \(request.method) \(request.path) (POST .../vendor/redemption/create, PUT .../vendor/redemption/{id}/brand/{brandId})")
        }
        let method = create ? "POST" : "PUT"
        guard request.method == method else {
            return Self.error(405, 405, "Method \(request.method) not allowed: use \(method)").adding(headers: [("Allow", method)])
        }
        if let refusal = unauthorized(request) { return refusal }
        guard Wire.mediaType(request) == "application/json", let body = Wire.json(request), var o = body.objectValue else {
            return Self.error(400, 400, "Request body must be a JSON object (Content-Type: application/json)")
        }
        if create {
            for key in ["brandId", "vendorId"] where o[key]?.scalarText?.isEmpty ?? true {
                return Self.error(400, 400, "\(key) is required")
            }
        }
        guard let name = o["name"]?.stringValue, !name.isEmpty else { return Self.error(400, 400, "name is required") }
        guard let actions = o["actions"]?.arrayValue, !actions.isEmpty else {
            return Self.error(400, 400, "actions must be a non-empty array")
        }
        var extracted = Set<String>()
        for (i, a) in actions.enumerated() {
            let at = "actions[\(i)]"
            guard let action = a.objectValue else { return Self.error(400, 400, "\(at) must be an object") }
            guard action["name"]?.stringValue?.isEmpty == false else { return Self.error(400, 400, "\(at).name is required") }
            guard let order = action["execOrder"], Self.isWholeNumber(order) else {
                return Self.error(400, 400, "\(at).execOrder must be a whole number")
            }
            guard let type = action["apiType"]?.stringValue, ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(type) else {
                return Self.error(400, 400, "\(at).apiType must be GET, POST, PUT, PATCH or DELETE")
            }
            guard let url = action["apiUrl"]?.stringValue, url.hasPrefix("http://") || url.hasPrefix("https://") else {
                return Self.error(400, 400, "\(at).apiUrl must be an http(s) URL")
            }
            if let h = action["apiHeaders"], h.objectValue?.values.allSatisfy({ $0.stringValue != nil }) != true {
                return Self.error(400, 400, "\(at).apiHeaders must be an object of header name -> text")
            }
            for key in ["apiBody", "apiBodyField"] where action[key] != nil && action[key]?.stringValue == nil {
                return Self.error(400, 400, "\(at).\(key) must be a string (the body template)")
            }
            if let c = action["contextKeys"] {
                guard let keys = c.objectValue, keys.values.allSatisfy({ $0.stringValue != nil }) else {
                    return Self.error(400, 400, "\(at).contextKeys must be an object of name -> response path")
                }
                extracted.formUnion(keys.keys)
            }
        }
        if let r = o["responseKeys"] {
            guard let keys = r.arrayValue?.compactMap(\.stringValue), keys.count == r.arrayValue?.count else {
                return Self.error(400, 400, "responseKeys must be an array of names")
            }
            if let missing = keys.first(where: { !extracted.contains($0) }) {
                return Self.error(400, 400, "responseKeys: \"\(missing)\" is not one of the actions' contextKeys")
            }
        }
        o["id"] = create ? .number(Double(40_000 + actions.count)) : .number(Double(parts[0])!)
        if update { o["brandId"] = .number(Double(parts[2])!) }
        return CapillaryEnvelope.answer(200, success: true, code: create ? 5010 : 5012,
                                        create ? "Vendor redemption created successfully" : "Vendor redemption updated successfully",
                                        extra: ["redemption": .object(o)])
    }

    /// Nil when the request carries Capillary's auth in a form it accepts; else the 401 to send.
    func unauthorized(_ request: HTTPRequest) -> HTTPResponse? {
        let basic: Bool = {
            guard let auth = request.headers["Authorization"] else { return false }
            let parts = auth.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
            return parts.count == 2 && parts[0].lowercased() == "basic" && !parts[1].trimmingCharacters(in: .whitespaces).isEmpty
        }()
        let tokenText = (request.headers["X-CAP-API-OAUTH-TOKEN"] ?? "").trimmingCharacters(in: .whitespaces)
        let token = !tokenText.isEmpty
        guard basic || token else {
            return Self.error(401, 401, "Unauthorized: send Authorization: Basic <till id:password> or an X-CAP-API-OAUTH-TOKEN header")
        }
        if !basic, tokens.issuedAny, !tokens.isValid(tokenText) {
            return Self.error(401, 401, "Unauthorized: the X-CAP-API-OAUTH-TOKEN is invalid or has expired")
        }
        return nil
    }

    func updateTransactions(_ request: HTTPRequest) -> HTTPResponse {
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

    /// `POST /v3/oauth/token/generate` with `{"key": ..., "secret": ...}`.
    func generateToken(_ request: HTTPRequest) -> HTTPResponse {
        guard request.method == "POST" else {
            return Self.error(405, 405, "Method \(request.method) not allowed: use POST").adding(headers: [("Allow", "POST")])
        }
        guard Wire.mediaType(request) == "application/json", let body = Wire.json(request), body.objectValue != nil else {
            return Self.error(400, 400, "Request body must be a JSON object {\"key\": ..., \"secret\": ...}")
        }
        guard let key = body["key"]?.stringValue, !key.isEmpty, let secret = body["secret"]?.stringValue, !secret.isEmpty else {
            return Self.error(400, 400, "key and secret are required")
        }
        if let credentials {
            guard ConstantTime.equals(Array(key.utf8), Array(credentials.key.utf8)),
                  ConstantTime.equals(Array(secret.utf8), Array(credentials.secret.utf8)) else {
                return Self.error(401, 401, "Invalid key or secret")
            }
        }
        let token = tokens.issue(ttl: tokenTTL)
        return CapillaryEnvelope.answer(200, success: true, code: 200, "Token generated",
                                        extra: ["data": .object(["accessToken": .string(token),
                                                                 "ttlSeconds": .number(Double(tokenTTL))])])
    }

    static func isWholeNumber(_ v: JSONValue) -> Bool {
        switch v {
        case .number(let n): return n >= 0 && n == n.rounded() && n.isFinite
        case .integer(let digits): return !digits.hasPrefix("-")
        default: return false
        }
    }
}

/// The tokens a Capillary stand-in issued, with their expiry.
public final class CapillaryIssuedTokens: Sendable {
    private let tokens = Mutex<[String: Date]>([:])

    public init() {}

    func issue(ttl: Int) -> String {
        let token = "cap_" + ByteEncoding.hex(SecureRandom.bytes(16))
        tokens.withLock { $0[token] = Date().addingTimeInterval(Double(ttl)) }
        return token
    }

    /// Every token issued so far, in no particular order.
    public var all: [String] { tokens.withLock { Array($0.keys) } }
    public var issuedAny: Bool { tokens.withLock { !$0.isEmpty } }

    public func isValid(_ token: String, at now: Date = Date()) -> Bool {
        tokens.withLock { $0[token].map { now < $0 } ?? false }
    }

    /// Expires every token issued so far (the next request carrying one is refused, as with a revoked token).
    public func revokeAll() {
        tokens.withLock { t in
            for k in t.keys { t[k] = .distantPast }
        }
    }
}
