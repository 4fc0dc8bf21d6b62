import Crypto
import Foundation

/// OAuth 2.0 client credentials (RFC 6749 §4.4): a token from the destination's token endpoint, sent as
/// `Authorization: Bearer <token>`, cached per destination in a `TokenCache` (one fetch for many concurrent
/// deliveries, refreshed `refreshBefore` ahead of expiry, dropped after a 401).
///
/// Client authentication: `client_secret_basic` (`Authorization: Basic base64(urlencode(id):urlencode(secret))`),
/// `client_secret_post` (`client_id` and `client_secret` in the form), or `private_key_jwt` (RFC 7523: a JWT signed
/// with the client's key, RS256/PS256/ES256, in `client_assertion`).
public struct OAuth2Auth: OutboundAuth {
    public enum ClientAuthentication: Sendable {
        case basic(Secret)
        case body(Secret)
        case privateKeyJWT(Assertion)
    }

    /// How the `private_key_jwt` assertion is made.
    public struct Assertion: Sendable {
        public var key: JWSSigningKey
        public var algorithm: JWSAlgorithm
        public var keyID: String?
        /// The JWT's `aud`: the token endpoint's URL unless configured.
        public var audience: String
        /// Seconds the assertion is valid (`exp - iat`).
        public var lifetime: Double = 60

        public init(key: JWSSigningKey, algorithm: JWSAlgorithm, keyID: String? = nil, audience: String) {
            self.key = key
            self.algorithm = algorithm
            self.keyID = keyID
            self.audience = audience
        }
    }

    public var scheme: String { "oauth2" }
    public let tokenURL: String
    public let clientID: String
    public let clientAuthentication: ClientAuthentication
    public let scope: String?
    public let audience: String?
    public let cache: TokenCache

    public init(tokenURL: String, clientID: String, clientAuthentication: ClientAuthentication, scope: String? = nil,
                audience: String? = nil, refreshBefore: Double = 60) {
        self.tokenURL = tokenURL
        self.clientID = clientID
        self.clientAuthentication = clientAuthentication
        self.scope = scope
        self.audience = audience
        cache = TokenCache(refreshBefore: refreshBefore)
    }

    public func authorize(_ request: OutboundRequest, context: AuthContext,
                          done: @escaping @Sendable (Result<OutboundRequest, AuthError>) -> Void) {
        cache.authorize(request, header: "Authorization", prefix: "Bearer ", fetch: { complete in fetch(context, complete) }, done: done)
    }

    public func invalidate(after response: OutboundResponse) -> Bool {
        cache.invalidate(sentAt: TokenCache.sentAt(response))
    }

    public var tokenFetches: Int { cache.fetchCount }
    public var fetchesTokens: Bool { true }

    public var redactions: [String] {
        var out = cache.currentToken.map { [$0] } ?? []
        switch clientAuthentication {
        case .basic(let secret), .body(let secret):
            out += [secret.value, ByteEncoding.base64(Array("\(clientID):\(secret.value)".utf8))]
        default: break
        }
        return out
    }

    /// The token request: `POST tokenURL`, form `grant_type=client_credentials` (+ `scope`, `audience`) and the
    /// client's authentication.
    public func tokenRequest(now: Date = Date()) throws -> OutboundRequest {
        var fields = [("grant_type", "client_credentials")]
        if let scope { fields.append(("scope", scope)) }
        if let audience { fields.append(("audience", audience)) }
        var headers = [("Content-Type", "application/x-www-form-urlencoded"), ("Accept", "application/json")]
        switch clientAuthentication {
        case .basic(let secret):
            let pair = Self.formEscape(clientID) + ":" + Self.formEscape(secret.value)
            headers.append(("Authorization", "Basic " + ByteEncoding.base64(Array(pair.utf8))))
        case .body(let secret):
            fields += [("client_id", clientID), ("client_secret", secret.value)]
        case .privateKeyJWT(let assertion):
            fields += [("client_id", clientID),
                       ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                       ("client_assertion", try Self.clientAssertion(assertion, clientID: clientID, now: now))]
        }
        let body = fields.map { Self.formEscape($0.0) + "=" + Self.formEscape($0.1) }.joined(separator: "&")
        return OutboundRequest(method: "POST", url: tokenURL, headers: headers, body: Array(body.utf8),
                               connectTimeout: 5, totalTimeout: 15)
    }

    /// The `private_key_jwt` client assertion: header `{alg, typ: "JWT", kid?}`, claims `iss` = `sub` = the client
    /// id, `aud`, a random `jti`, `iat`, `exp` = `iat` + 60 s; signed with the client's key (compact JWS).
    public static func clientAssertion(_ a: Assertion, clientID: String, now: Date) throws -> String {
        var header: [String: JSONValue] = ["alg": .string(a.algorithm.rawValue), "typ": .string("JWT")]
        if let kid = a.keyID { header["kid"] = .string(kid) }
        let iat = now.timeIntervalSince1970.rounded(.down)
        let claims: [String: JSONValue] = [
            "iss": .string(clientID), "sub": .string(clientID), "aud": .string(a.audience),
            "jti": .string(ByteEncoding.base64URL(SecureRandom.bytes(18))),
            "iat": .number(iat), "exp": .number(iat + a.lifetime),
        ]
        let input = ByteEncoding.base64URL(Array(JSONValue.object(header).jsonString().utf8)) + "."
            + ByteEncoding.base64URL(Array(JSONValue.object(claims).jsonString().utf8))
        let signature = try a.key.sign(a.algorithm, Array(input.utf8))
        return input + "." + ByteEncoding.base64URL(signature)
    }

    static func formEscape(_ s: String) -> String { Template.escape(s, .form) }

    private func fetch(_ context: AuthContext, _ complete: @escaping @Sendable (Result<IssuedToken, AuthError>) -> Void) {
        let request: OutboundRequest
        do {
            request = try tokenRequest(now: context.now)
        } catch {
            return complete(.failure(AuthError("cannot sign the client assertion: \(error)", retryable: false)))
        }
        var redact: [String] = []
        switch clientAuthentication {
        case .basic(let s), .body(let s): redact = [s.value, Self.formEscape(s.value)]
        case .privateKeyJWT: break
        }
        TokenRequest.send(request, client: context.client, redact: redact, describe: Self.describeError,
                          parse: Self.parseToken, done: complete)
    }

    /// RFC 6749 §5.2: `error` and `error_description`, else the start of the body.
    static func describeError(_ r: OutboundResponse) -> String {
        if let json = try? JSONValue.parse(r.body), let error = json["error"]?.stringValue {
            let description = json["error_description"]?.stringValue.map { " (\(TokenRequest.clip($0)))" } ?? ""
            return TokenRequest.clip(error, 100) + description
        }
        return TokenRequest.clip(String(decoding: r.body.prefix(300), as: UTF8.self))
    }

    /// RFC 6749 §5.1: `access_token`, `token_type` (Bearer), `expires_in` (3600 when absent).
    static func parseToken(_ r: OutboundResponse) -> Result<IssuedToken, AuthError> {
        guard let json = try? JSONValue.parse(r.body), json.objectValue != nil else {
            return .failure(AuthError("HTTP \(r.status) but the answer is not a JSON object", retryable: true))
        }
        guard let token = json["access_token"]?.stringValue, !token.isEmpty else {
            return .failure(AuthError("HTTP \(r.status) but the answer has no access_token", retryable: true))
        }
        if let type = json["token_type"]?.stringValue, type.lowercased() != "bearer" {
            return .failure(AuthError("token_type \"\(TokenRequest.clip(type, 40))\" is not Bearer", retryable: false))
        }
        return .success(IssuedToken(value: token, lifetime: TokenRequest.seconds(json["expires_in"]) ?? 3600))
    }
}

/// `auth: { oauth2: { tokenURL: "https://auth.example/oauth/token", clientId: "relay",
/// clientSecret: "${env:CLIENT_SECRET}", clientAuth: "basic" | "body", scope: "a b" | ["a", "b"], audience: "...",
/// refreshBefore: "60s", assertion: { keyFile: "/run/secrets/client.pem" | keyPem: "${file:...}",
/// keyPassword: "${env:...}", alg: "RS256" | "PS256" | "ES256", kid: "...", audience: "..." } } }`.
public struct OAuth2Factory: OutboundAuthFactory {
    public init() {}
    public var name: String { "oauth2" }

    public func make(_ value: JSONValue, path: String, reader r: ConfigReader) -> (any OutboundAuth)? {
        let keys = ["tokenURL", "clientId", "clientSecret", "clientAuth", "scope", "audience", "refreshBefore", "assertion"]
        let before = r.problems.count
        guard let o = r.object(value, path, keys: keys) else { return nil }
        let tokenURL = r.string(o, "tokenURL", path, required: true)
        if let url = tokenURL, !Self.isHTTPURL(url) {
            r.problem(ConfigReader.join(path, "tokenURL"), "\(r.shown(o["tokenURL"], url)) is not an http:// or https:// URL")
        }
        let clientID = r.string(o, "clientId", path, required: true)
        if let id = clientID, id.isEmpty { r.problem(ConfigReader.join(path, "clientId"), "must not be empty") }
        let scope = r.strings(o, "scope", path).map { $0.joined(separator: " ") }
        let audience = r.string(o, "audience", path)
        let refreshBefore = r.duration(o, "refreshBefore", path) ?? 60
        var authentication: OAuth2Auth.ClientAuthentication?
        if let a = o["assertion"], !a.isNull {
            for k in ["clientSecret", "clientAuth"] where o[k] != nil {
                r.problem(ConfigReader.join(path, k), "not used with assertion (private_key_jwt authenticates the client)")
            }
            if let assertion = Self.assertion(a, ConfigReader.join(path, "assertion"), reader: r, tokenURL: tokenURL ?? "") {
                authentication = .privateKeyJWT(assertion)
            }
        } else {
            let mode = r.choice(o, "clientAuth", path, ["basic", "body"]) ?? "basic"
            if let secret = r.secret(o["clientSecret"], ConfigReader.join(path, "clientSecret")) {
                authentication = mode == "body" ? .body(secret) : .basic(secret)
            }
        }
        guard r.problems.count == before, let tokenURL, let clientID, let authentication else { return nil }
        return OAuth2Auth(tokenURL: tokenURL, clientID: clientID, clientAuthentication: authentication, scope: scope,
                          audience: audience, refreshBefore: refreshBefore)
    }

    public static func isHTTPURL(_ s: String) -> Bool {
        guard let c = URLComponents(string: s), let scheme = c.scheme?.lowercased(), let host = c.host else { return false }
        return (scheme == "http" || scheme == "https") && !host.isEmpty
    }

    /// The `assertion` block; the key is loaded now, so `relay check` reports an unreadable or unsuitable key.
    static func assertion(_ value: JSONValue, _ path: String, reader r: ConfigReader, tokenURL: String) -> OAuth2Auth.Assertion? {
        let before = r.problems.count
        guard let o = r.object(value, path, keys: ["keyFile", "keyPem", "keyPassword", "alg", "kid", "audience"]) else { return nil }
        let algorithmName = r.choice(o, "alg", path, JWSAlgorithm.allCases.map(\.rawValue))
        let kid = r.string(o, "kid", path)
        let audience = r.string(o, "audience", path)
        var password: String?
        if o["keyPassword"] != nil { password = r.secret(o["keyPassword"], ConfigReader.join(path, "keyPassword"))?.value }
        var key: JWSSigningKey?
        switch (o["keyFile"], o["keyPem"]) {
        case (nil, nil):
            r.problem(path, "needs keyFile (a PEM private key file) or keyPem (a ${env:...} or ${file:...} reference)")
        case (.some, .some):
            r.problem(ConfigReader.join(path, "keyPem"), "give keyFile or keyPem, not both")
        case (.some, nil):
            if let file = r.string(o, "keyFile", path) {
                let p = ConfigReader.join(path, "keyFile")
                if !FileManager.default.isReadableFile(atPath: file) {
                    r.problem(p, "cannot read \(file)")
                } else {
                    do { key = try JWSSigningKey.load(path: file, password: password) } catch {
                        r.problem(p, "not a usable private key: \(error)")
                    }
                }
            }
        case (nil, .some):
            let p = ConfigReader.join(path, "keyPem")
            if let pem = r.secret(o["keyPem"], p) {
                do { key = try JWSSigningKey(pem: pem.value, password: password) } catch {
                    r.problem(p, "\(pem.reference) is not a usable private key: \((error as? CryptoError)?.message ?? "unreadable")")
                }
            }
        }
        guard r.problems.count == before, let key else { return nil }
        let algorithm = algorithmName.flatMap(JWSAlgorithm.init(rawValue:)) ?? key.kind.defaultAlgorithm
        guard key.supports(algorithm) else {
            r.problem(ConfigReader.join(path, "alg"), "\(algorithm.rawValue) needs an \(algorithm.keyKind.rawValue) key; the key is \(key.kind.rawValue)")
            return nil
        }
        return OAuth2Auth.Assertion(key: key, algorithm: algorithm, keyID: kid, audience: audience ?? tokenURL)
    }
}
