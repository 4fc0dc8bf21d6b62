import Foundation

/// Why credentials could not be attached to a request. `retryable`: a token endpoint that is down or slow (the
/// delivery is retried on its schedule); not: a configuration that can never work (a key that cannot sign).
public struct AuthError: Error, Sendable, CustomStringConvertible, Equatable {
    public var reason: String
    public var retryable: Bool
    public init(_ reason: String, retryable: Bool) {
        self.reason = reason
        self.retryable = retryable
    }
    public var description: String { reason }
}

/// What an auth scheme may use while authorizing one request.
public struct AuthContext: Sendable {
    /// The relay's HTTP client, for token requests (OAuth2, Capillary's token flow).
    public var client: HTTPClient?
    public var deliveryID: String
    public var now: Date

    public init(client: HTTPClient?, deliveryID: String, now: Date = Date()) {
        self.client = client
        self.deliveryID = deliveryID
        self.now = now
    }
}

/// Attaches a destination's credentials to each outbound request: static headers (Basic, Bearer, Token, an API
/// key), a signature over the request (Mastercard's OAuth 1.0a RSA-SHA256, Standard Webhooks), or a token fetched
/// and cached (OAuth2 client credentials, Capillary's token flow).
///
/// `authorize` is called for every attempt (and every step of a multi-step delivery) with the request exactly as
/// it will be sent (method, URL, body), after translation. It calls `done` exactly once, on any thread: at once
/// when nothing has to be fetched, after a token request otherwise. Secrets never appear in `AuthError` reasons.
public protocol OutboundAuth: Sendable {
    /// A short name for logs and errors: `basic`, `bearer`, `mastercard-oauth1`, `oauth2`...
    var scheme: String { get }
    func authorize(_ request: OutboundRequest, context: AuthContext,
                   done: @escaping @Sendable (Result<OutboundRequest, AuthError>) -> Void)
    /// The destination refused the credentials (`response` is its 401): drop what is cached. True when fresh
    /// credentials may succeed; the dispatcher then authorizes and sends once more before counting the attempt
    /// as failed.
    func invalidate(after response: OutboundResponse) -> Bool
    /// Credential values (secrets, the current token) to blank out of anything stored or logged about an attempt:
    /// a destination that echoes the token it refused must not get it into the store.
    var redactions: [String] { get }
    /// Token requests made so far (token schemes; 0 for the others), for metrics.
    var tokenFetches: Int { get }
    /// True for a scheme that fetches tokens (OAuth2, a provider's token flow): `/metrics` then reports its
    /// `relay_token_fetches_total` even before the first fetch.
    var fetchesTokens: Bool { get }
}

extension OutboundAuth {
    public func invalidate(after response: OutboundResponse) -> Bool { false }
    public var redactions: [String] { [] }
    public var tokenFetches: Int { 0 }
    public var fetchesTokens: Bool { false }

    /// `text` with every credential value replaced by `***` (values under 4 characters are left alone).
    public func redact(_ text: String) -> String {
        var out = text
        for s in redactions where s.count >= 4 && out.contains(s) { out = out.replacingOccurrences(of: s, with: "***") }
        return out
    }
}

/// Several schemes applied in order (e.g. a Bearer token and a Standard Webhooks signature).
public struct CombinedAuth: OutboundAuth {
    public var parts: [any OutboundAuth]
    public init(_ parts: [any OutboundAuth]) { self.parts = parts }
    public var scheme: String { parts.map(\.scheme).joined(separator: "+") }

    public func authorize(_ request: OutboundRequest, context: AuthContext,
                          done: @escaping @Sendable (Result<OutboundRequest, AuthError>) -> Void) {
        Self.step(parts[...], request, context, done)
    }

    private static func step(_ rest: ArraySlice<any OutboundAuth>, _ r: OutboundRequest, _ context: AuthContext,
                             _ done: @escaping @Sendable (Result<OutboundRequest, AuthError>) -> Void) {
        guard let first = rest.first else { return done(.success(r)) }
        let tail = rest.dropFirst()
        first.authorize(r, context: context) { result in
            switch result {
            case .success(let next): step(tail, next, context, done)
            case .failure(let e): done(.failure(e))
            }
        }
    }

    public var redactions: [String] { parts.flatMap(\.redactions) }
    public var tokenFetches: Int { parts.reduce(0) { $0 + $1.tokenFetches } }
    public var fetchesTokens: Bool { parts.contains { $0.fetchesTokens } }

    public func invalidate(after response: OutboundResponse) -> Bool {
        // Every part is told (no short-circuit): two token schemes on one destination both drop their tokens.
        parts.map { $0.invalidate(after: response) }.contains(true)
    }
}

/// Builds an auth scheme from its block under a destination's `auth` (`auth: { <name>: { ... } }`).
public protocol OutboundAuthFactory: Sendable {
    /// The key under `auth`: `basic`, `bearer`, `token`, `apiKey`, `mastercardOAuth1`, `oauth2`...
    var name: String { get }
    /// `value`: the block under the key; `path`: its key path for problems (`destinations.x.auth.basic`).
    func make(_ value: JSONValue, path: String, reader: ConfigReader) -> (any OutboundAuth)?
    /// A scheme that signs the request as it will be sent (Standard Webhooks) runs after every scheme that adds
    /// credentials, whatever the order of the keys.
    var signsRequest: Bool { get }
}

extension OutboundAuthFactory {
    public var signsRequest: Bool { false }
}

extension OutboundRequest {
    /// Sets `name` to `value`, replacing any header of that name (case-insensitive).
    public mutating func setHeader(_ name: String, _ value: String) {
        headers.removeAll { $0.0.caseInsensitiveCompare(name) == .orderedSame }
        headers.append((name, value))
    }
}
