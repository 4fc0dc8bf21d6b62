import Relay
import Foundation

/// Capillary's token flow: `POST {url}` with `{"key": ..., "secret": ...}` answers the token at `data.accessToken`
/// and its lifetime in `ttlSeconds` (at the top level or under `data`; 3600 when absent); the token goes out as
/// `X-CAP-API-OAUTH-TOKEN`. Cached like OAuth2's (`TokenCache`: one fetch for many deliveries, refreshed ahead of
/// expiry, dropped after a 401).
public struct CapillaryTokenAuth: OutboundAuth {
    public static let header = "X-CAP-API-OAUTH-TOKEN"
    public var scheme: String { "capillaryToken" }
    public let url: String
    public let key: Secret
    public let secret: Secret
    public let cache: TokenCache

    public init(url: String, key: Secret, secret: Secret, refreshBefore: Double = 60) {
        self.url = url
        self.key = key
        self.secret = secret
        cache = TokenCache(refreshBefore: refreshBefore)
    }

    public func authorize(_ request: OutboundRequest, context: AuthContext,
                          done: @escaping @Sendable (Result<OutboundRequest, AuthError>) -> Void) {
        cache.authorize(request, header: Self.header, fetch: { complete in fetch(context, complete) }, done: done)
    }

    public func invalidate(after response: OutboundResponse) -> Bool {
        cache.invalidate(sentAt: TokenCache.sentAt(response))
    }

    public var tokenFetches: Int { cache.fetchCount }
    public var fetchesTokens: Bool { true }

    public var redactions: [String] { [key.value, secret.value] + (cache.currentToken.map { [$0] } ?? []) }

    /// `POST url`, `{"key": ..., "secret": ...}`.
    public var tokenRequest: OutboundRequest {
        let body = JSONValue.object(["key": .string(key.value), "secret": .string(secret.value)]).jsonString()
        return OutboundRequest(method: "POST", url: url,
                               headers: [("Content-Type", "application/json"), ("Accept", "application/json")],
                               body: Array(body.utf8), connectTimeout: 5, totalTimeout: 15)
    }

    private func fetch(_ context: AuthContext, _ complete: @escaping @Sendable (Result<IssuedToken, AuthError>) -> Void) {
        TokenRequest.send(tokenRequest, client: context.client, redact: [key.value, secret.value],
                          describe: Self.describeError, parse: Self.parseToken, done: complete)
    }

    /// Capillary's envelope `{"status": {"success": false, "code": ..., "message": ...}}`, or `errors[0].message`,
    /// or `message`, else the start of the body.
    static func describeError(_ r: OutboundResponse) -> String {
        if let json = try? JSONValue.parse(r.body) {
            let message = json["status"]?["message"]?.stringValue ?? json["errors"]?.arrayValue?.first?["message"]?.stringValue
                ?? json["message"]?.stringValue
            if let message {
                let code = json["status"]?["code"]?.scalarText ?? json["errors"]?.arrayValue?.first?["code"]?.scalarText
                return TokenRequest.clip((code.map { "\($0): " } ?? "") + message)
            }
        }
        return TokenRequest.clip(String(decoding: r.body.prefix(300), as: UTF8.self))
    }

    /// `data.accessToken`; `ttlSeconds` or `data.ttlSeconds` (3600 when absent). A 2xx whose envelope says
    /// `status.success: false` is a refusal (retryable only when its code is a 5xx).
    static func parseToken(_ r: OutboundResponse) -> Result<IssuedToken, AuthError> {
        guard let json = try? JSONValue.parse(r.body), json.objectValue != nil else {
            return .failure(AuthError("HTTP \(r.status) but the answer is not a JSON object", retryable: true))
        }
        if json["status"]?["success"]?.boolValue == false {
            let code = json["status"]?["code"]?.numberValue.map { Int($0) } ?? 0
            return .failure(AuthError("refused: \(describeError(r))", retryable: TokenRequest.retryable(status: code)))
        }
        guard let token = json["data"]?["accessToken"]?.stringValue, !token.isEmpty else {
            return .failure(AuthError("HTTP \(r.status) but the answer has no data.accessToken", retryable: true))
        }
        let ttl = TokenRequest.seconds(json["ttlSeconds"]) ?? TokenRequest.seconds(json["data"]?["ttlSeconds"]) ?? 3600
        return .success(IssuedToken(value: token, lifetime: ttl))
    }
}

/// `auth: { capillaryToken: { url: "https://eu.api.capillarytech.com/v3/oauth/token/generate",
/// key: "${env:CAPILLARY_KEY}", secret: "${env:CAPILLARY_SECRET}", refreshBefore: "60s" } }`.
public struct CapillaryTokenFactory: OutboundAuthFactory {
    public init() {}
    public var name: String { "capillaryToken" }

    public func make(_ value: JSONValue, path: String, reader r: ConfigReader) -> (any OutboundAuth)? {
        let before = r.problems.count
        guard let o = r.object(value, path, keys: ["url", "key", "secret", "refreshBefore"]) else { return nil }
        let url = r.string(o, "url", path, required: true)
        if let url, !OAuth2Factory.isHTTPURL(url) {
            r.problem(ConfigReader.join(path, "url"),
                      "\(r.shown(o["url"], url)) is not an http:// or https:// URL (e.g. https://eu.api.capillarytech.com/v3/oauth/token/generate)")
        }
        let key = r.secret(o["key"], ConfigReader.join(path, "key"))
        let secret = r.secret(o["secret"], ConfigReader.join(path, "secret"))
        let refreshBefore = r.duration(o, "refreshBefore", path) ?? 60
        guard r.problems.count == before, let url, let key, let secret else { return nil }
        return CapillaryTokenAuth(url: url, key: key, secret: secret, refreshBefore: refreshBefore)
    }
}
