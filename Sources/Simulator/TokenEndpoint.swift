import Crypto
import Foundation
import Relay
import Synchronization

/// Stand-in for an OAuth 2.0 authorization server's token endpoint (client credentials, RFC 6749 §4.4) and for an
/// API that accepts its tokens (`relay simulate oauth2`, port 9106).
///
/// - `POST /token` (any path ending `/token`), form-encoded, `grant_type=client_credentials`, the client
///   authenticated by exactly one of: `client_secret_basic` (`Authorization: Basic`, id and secret form-encoded),
///   `client_secret_post` (`client_id` and `client_secret` in the form), `private_key_jwt` (`client_assertion_type`
///   `urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and a `client_assertion` JWT signed RS256, PS256 or
///   ES256 with the key whose public half `RELAY_SIM_OAUTH2_JWKS_KEY` names: `iss` = `sub` = the client id, `aud`
///   the token endpoint's URL (or `RELAY_SIM_OAUTH2_AUDIENCE`), `exp` in the future, a `jti` never seen before).
///   Answers `{"access_token", "token_type": "Bearer", "expires_in", "scope"?}` with a fresh opaque token valid
///   for `RELAY_SIM_OAUTH2_TTL` seconds (default 3600); errors as RFC 6749 §5.2 `{"error", "error_description"}`:
///   400 `invalid_request` / `unsupported_grant_type`, 401 `invalid_client`.
/// - Clients: `RELAY_SIM_OAUTH2_CLIENTS` = `id:secret,id2:secret2`; unset, any client id with a non-empty secret.
/// - Any other path is the protected API: `Authorization: Bearer <a token issued here, not expired, not revoked>`
///   answers 200 `{"ok":true}`; otherwise 401 `{"error":"invalid_token"}` with `WWW-Authenticate: Bearer ...`.
///
/// Every request is recorded by the sink as usual (`/_sink/requests?path=/token` counts token requests).
public final class OAuth2TokenEndpoint: SinkResponder {
    public static let clientsVariable = "RELAY_SIM_OAUTH2_CLIENTS"
    public static let ttlVariable = "RELAY_SIM_OAUTH2_TTL"
    public static let jwksKeyVariable = "RELAY_SIM_OAUTH2_JWKS_KEY"
    public static let audienceVariable = "RELAY_SIM_OAUTH2_AUDIENCE"
    public static let assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    static let realm = "relay-simulator"

    /// Client id -> secret; nil: any id with a non-empty secret.
    public let clients: [String: String]?
    /// Seconds an issued token is valid (and its `expires_in`).
    public let ttl: Double
    /// Verifies `private_key_jwt` assertions; nil: that method is refused.
    public let assertionKey: JWSVerifyingKey?
    /// The `aud` an assertion must carry; nil: any URL whose path is the request's path.
    public let assertionAudience: String?
    /// A setting from the environment that could not be used: every token request answers 500 with it.
    let setupError: String?

    struct Issued {
        var clientID: String
        var expiresAt: Date
        var revoked = false
    }

    struct State {
        var tokens: [String: Issued] = [:]
        var order: [String] = []
        var tokenRequests = 0
        var seenJTIs: Set<String> = []
    }

    private let state = Mutex(State())

    public init(clients: [String: String]? = nil, ttl: Double = 3600, assertionKey: JWSVerifyingKey? = nil,
                assertionAudience: String? = nil) {
        self.clients = clients
        self.ttl = ttl
        self.assertionKey = assertionKey
        self.assertionAudience = assertionAudience
        setupError = nil
    }

    /// Settings from `RELAY_SIM_OAUTH2_CLIENTS`, `RELAY_SIM_OAUTH2_TTL`, `RELAY_SIM_OAUTH2_JWKS_KEY` and
    /// `RELAY_SIM_OAUTH2_AUDIENCE`.
    public convenience init() { self.init(environment: ProcessInfo.processInfo.environment) }

    public init(environment env: [String: String]) {
        var problems: [String] = []
        var clients: [String: String]?
        if let text = env[Self.clientsVariable], !text.trimmingCharacters(in: .whitespaces).isEmpty {
            var map: [String: String] = [:]
            for pair in text.split(separator: ",") {
                let parts = pair.split(separator: ":", maxSplits: 1)
                guard parts.count == 2 else { problems.append("\(Self.clientsVariable): expected id:secret pairs"); continue }
                map[parts[0].trimmingCharacters(in: .whitespaces)] = String(parts[1])
            }
            clients = map
        }
        var ttl = 3600.0
        if let text = env[Self.ttlVariable] {
            if let d = ConfigReader.parseDuration(text), d > 0 { ttl = d } else { problems.append("\(Self.ttlVariable) \"\(text)\" is not a duration") }
        }
        var key: JWSVerifyingKey?
        if let file = env[Self.jwksKeyVariable], !file.isEmpty {
            do { key = try JWSVerifyingKey.load(path: file) } catch { problems.append("\(Self.jwksKeyVariable): \(error)") }
        }
        self.clients = clients
        self.ttl = ttl
        assertionKey = key
        assertionAudience = env[Self.audienceVariable].flatMap { $0.isEmpty ? nil : $0 }
        setupError = problems.isEmpty ? nil : problems.joined(separator: "; ")
    }

    // MARK: Inspection (tests)

    /// POSTs to the token path so far.
    public var tokenRequests: Int { state.withLock { $0.tokenRequests } }

    /// Every token issued, oldest first.
    public var issuedTokens: [String] { state.withLock { $0.order } }

    /// Whether `token` was issued here and is neither expired nor revoked.
    public func isValid(_ token: String, at now: Date = Date()) -> Bool {
        state.withLock { s in s.tokens[token].map { !$0.revoked && now < $0.expiresAt } ?? false }
    }

    /// Revokes every token issued so far (the API refuses them with 401).
    public func revokeAll() {
        state.withLock { s in
            for k in s.tokens.keys { s.tokens[k]?.revoked = true }
        }
    }

    // MARK: Answers

    public func answer(_ request: HTTPRequest) -> HTTPResponse {
        if request.path.hasSuffix("/token") { return token(request) }
        return resource(request)
    }

    /// RFC 6749's `{"error", "error_description"}` for the error answers of `--fault` rules: `temporarily_unavailable`
    /// for 429, 503 and 504, `server_error` for other 5xx, `invalid_request` below.
    public func errorBody(status: Int, message: String) -> JSONValue? {
        let error = [429, 503, 504].contains(status) ? "temporarily_unavailable" : status >= 500 ? "server_error" : "invalid_request"
        return .object(["error": .string(error), "error_description": .string(message)])
    }

    static func oauthError(_ status: Int, _ error: String, _ description: String,
                           headers: [(String, String)] = []) -> HTTPResponse {
        let body = JSONValue.object(["error": .string(error), "error_description": .string(description)])
        return .json(status, body.jsonString(), headers: [("Cache-Control", "no-store")] + headers)
    }

    private func resource(_ request: HTTPRequest) -> HTTPResponse {
        let challenge = "Bearer realm=\"\(Self.realm)\""
        guard let auth = request.headers["Authorization"], auth.count > 7, auth.prefix(7).lowercased() == "bearer " else {
            return Self.oauthError(401, "invalid_token", "send Authorization: Bearer <access token>",
                                   headers: [("WWW-Authenticate", challenge)])
        }
        let token = auth.dropFirst(7).trimmingCharacters(in: .whitespaces)
        guard isValid(token) else {
            return Self.oauthError(401, "invalid_token", "the access token is unknown, expired or revoked",
                                   headers: [("WWW-Authenticate", challenge + ", error=\"invalid_token\"")])
        }
        return .json(200, #"{"ok":true}"#)
    }

    private func token(_ request: HTTPRequest) -> HTTPResponse {
        guard request.method == "POST" else {
            return Self.oauthError(405, "invalid_request", "use POST").adding(headers: [("Allow", "POST")])
        }
        state.withLock { $0.tokenRequests += 1 }
        if let setupError { return Self.oauthError(500, "server_error", setupError) }
        let mediaType = (request.headers["Content-Type"] ?? "").split(separator: ";").first?
            .trimmingCharacters(in: .whitespaces).lowercased() ?? ""
        guard mediaType == "application/x-www-form-urlencoded", let fields = Ingest.parseForm(request.body) else {
            return Self.oauthError(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
        }
        var form: [String: String] = [:]
        for (k, v) in fields {
            guard form[k] == nil else { return Self.oauthError(400, "invalid_request", "parameter \(k) is repeated") }
            form[k] = v
        }
        guard let grant = form["grant_type"] else { return Self.oauthError(400, "invalid_request", "grant_type is required") }
        guard grant == "client_credentials" else {
            return Self.oauthError(400, "unsupported_grant_type", "only client_credentials is supported")
        }
        let basic = request.headers["Authorization"].flatMap { $0.lowercased().hasPrefix("basic ") ? $0 : nil }
        let methods = [basic != nil, form["client_secret"] != nil, form["client_assertion"] != nil].filter { $0 }.count
        guard methods <= 1 else {
            return Self.oauthError(400, "invalid_request", "use exactly one client authentication method")
        }
        let clientID: String
        switch (basic, form["client_assertion"]) {
        case (let header?, _):
            let fail = Self.oauthError(401, "invalid_client", "client authentication failed",
                                       headers: [("WWW-Authenticate", "Basic realm=\"\(Self.realm)\"")])
            guard let decoded = ByteEncoding.fromBase64(String(header.dropFirst(6)).trimmingCharacters(in: .whitespaces)),
                  let pair = String(validating: decoded, as: UTF8.self), let colon = pair.firstIndex(of: ":"),
                  let id = Self.formDecode(pair[..<colon]), let secret = Self.formDecode(pair[pair.index(after: colon)...]),
                  authenticate(id, secret)
            else { return fail }
            if let given = form["client_id"], given != id { return fail }
            clientID = id
        case (nil, let assertion?):
            switch verifyAssertion(assertion, form: form, path: request.path) {
            case .success(let id): clientID = id
            case .failure(let e): return Self.oauthError(401, "invalid_client", e.reason)
            }
        case (nil, nil):
            guard let id = form["client_id"], let secret = form["client_secret"] else {
                return Self.oauthError(401, "invalid_client", "client authentication required (Basic, client_secret or client_assertion)",
                                       headers: [("WWW-Authenticate", "Basic realm=\"\(Self.realm)\"")])
            }
            guard authenticate(id, secret) else { return Self.oauthError(401, "invalid_client", "client authentication failed") }
            clientID = id
        }
        let token = "sim_" + ByteEncoding.base64URL(SecureRandom.bytes(24))
        state.withLock { s in
            s.tokens[token] = Issued(clientID: clientID, expiresAt: Date().addingTimeInterval(ttl))
            s.order.append(token)
        }
        var body: [String: JSONValue] = ["access_token": .string(token), "token_type": .string("Bearer"),
                                         "expires_in": .number(ttl.rounded(.up))]
        if let scope = form["scope"] { body["scope"] = .string(scope) }
        return .json(200, JSONValue.object(body).jsonString(), headers: [("Cache-Control", "no-store"), ("Pragma", "no-cache")])
    }

    private func authenticate(_ id: String, _ secret: String) -> Bool {
        guard !id.isEmpty, !secret.isEmpty else { return false }
        guard let clients else { return true }
        guard let expected = clients[id] else { return false }
        return ConstantTime.equals(Array(expected.utf8), Array(secret.utf8))
    }

    static func formDecode(_ s: Substring) -> String? { s.replacingOccurrences(of: "+", with: " ").removingPercentEncoding }

    /// RFC 7523 §3: the assertion's signature, `iss` = `sub` = the client, `aud`, `exp`, a fresh `jti`.
    private func verifyAssertion(_ jwt: String, form: [String: String], path: String) -> Result<String, AuthError> {
        func fail(_ reason: String) -> Result<String, AuthError> { .failure(AuthError(reason, retryable: false)) }
        guard form["client_assertion_type"] == Self.assertionType else {
            return fail("client_assertion_type must be \(Self.assertionType)")
        }
        guard let key = assertionKey else {
            return fail("private_key_jwt is not enabled here (set \(Self.jwksKeyVariable) to the client's public key)")
        }
        let parts = jwt.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerBytes = ByteEncoding.fromBase64URL(String(parts[0])),
              let claimBytes = ByteEncoding.fromBase64URL(String(parts[1])),
              let signature = ByteEncoding.fromBase64URL(String(parts[2])),
              let header = try? JSONValue.parse(headerBytes), let claims = try? JSONValue.parse(claimBytes)
        else { return fail("client_assertion is not a compact JWS") }
        guard let algName = header["alg"]?.stringValue, let alg = JWSAlgorithm(rawValue: algName) else {
            return fail("alg \(header["alg"]?.jsonString() ?? "(none)") is not RS256, PS256 or ES256")
        }
        let input = Array(jwt.utf8.prefix(parts[0].utf8.count + 1 + parts[1].utf8.count))
        guard key.verify(alg, signature: signature, message: input) else {
            return fail("the client_assertion signature does not verify (\(alg.rawValue))")
        }
        guard let iss = claims["iss"]?.stringValue, !iss.isEmpty, claims["sub"]?.stringValue == iss else {
            return fail("iss and sub must both be the client id")
        }
        if let given = form["client_id"], given != iss { return fail("client_id does not match the assertion's iss") }
        if let clients, clients[iss] == nil { return fail("unknown client \(iss)") }
        let audiences = claims["aud"]?.arrayValue?.compactMap(\.stringValue) ?? claims["aud"]?.stringValue.map { [$0] } ?? []
        let audienceOK = audiences.contains { aud in
            if let expected = assertionAudience { return aud == expected }
            return URLComponents(string: aud)?.path == path
        }
        guard audienceOK else { return fail("aud \(claims["aud"]?.jsonString() ?? "(none)") is not this token endpoint") }
        let now = Date().timeIntervalSince1970
        guard let exp = claims["exp"]?.numberValue, exp > now else { return fail("the assertion has expired (exp)") }
        if let iat = claims["iat"]?.numberValue, iat > now + 60 { return fail("iat is in the future") }
        guard let jti = claims["jti"]?.stringValue, !jti.isEmpty else { return fail("jti is required") }
        let fresh = state.withLock { $0.seenJTIs.insert(jti).inserted }
        guard fresh else { return fail("the assertion's jti was used before (replay)") }
        return .success(iss)
    }
}
