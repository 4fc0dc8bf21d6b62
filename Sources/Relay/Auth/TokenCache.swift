import Foundation
import Synchronization

/// A token as a token endpoint issued it: the value and its lifetime in seconds.
public struct IssuedToken: Sendable, Equatable {
    public var value: String
    public var lifetime: Double

    public init(value: String, lifetime: Double) {
        self.value = value
        self.lifetime = lifetime
    }
}

/// One destination's access token (OAuth2 client credentials, Capillary's token flow): cached until it is about to
/// expire, fetched by one request however many deliveries want it at once, refreshed ahead of expiry, dropped when
/// the destination refuses it.
///
/// - No token (or an expired one): the caller waits. The first waiter starts the fetch; everyone who asks before it
///   ends is queued behind it, and the one answer (token or error) completes them all (single flight).
/// - A token within `refreshBefore` of its expiry: it is still handed out at once, and one fetch starts in the
///   background; its token replaces the old one (a failed refresh keeps the old one and is tried again a second
///   later, at most, while the old one lasts). A token whose lifetime is not longer than `refreshBefore` is
///   refreshed halfway through it.
/// - `invalidate(sentAt:)`: a request sent at that time was refused with 401. The cached token is dropped unless
///   it was obtained after that request went out (then it is already a fresh one, and the resend uses it), so a
///   burst of 401s for one revoked token makes one new fetch, not one each.
///
/// Times are the monotonic clock of the transport (`OutboundResponse.elapsed` is measured on it).
public final class TokenCache: Sendable {
    /// Starts one fetch; calls its completion exactly once, on any thread.
    public typealias Fetch = @Sendable (@escaping @Sendable (Result<IssuedToken, AuthError>) -> Void) -> Void
    public typealias Waiter = @Sendable (Result<String, AuthError>) -> Void

    struct Cached {
        var value: String
        var obtainedAt: Double
        var refreshAt: Double
        var expiresAt: Double
    }

    struct State {
        var token: Cached?
        var fetching = false
        var waiters: [Waiter] = []
        var fetches = 0
        var invalidations = 0
    }

    public let refreshBefore: Double
    private let state = Mutex(State())
    private let clock: @Sendable () -> Double

    /// `clock`: monotonic seconds (default: the transport's clock).
    public init(refreshBefore: Double, clock: (@Sendable () -> Double)? = nil) {
        self.refreshBefore = max(0, refreshBefore)
        self.clock = clock ?? { transportNow() }
    }

    /// When a request that got `response` was sent, on the clock `invalidate(sentAt:)` uses.
    public static func sentAt(_ response: OutboundResponse) -> Double { transportNow() - response.elapsed }

    /// The token now cached, if any (for redaction).
    public var currentToken: String? { state.withLock { $0.token?.value } }

    /// Token fetches started so far (tests, metrics).
    public var fetchCount: Int { state.withLock { $0.fetches } }

    /// Hands `done` the cached token, or one fetched with `fetch` (once for everyone waiting).
    public func token(fetch: @escaping Fetch, done: @escaping Waiter) {
        enum Plan { case use(String), useAndRefresh(String), wait(start: Bool) }
        let now = clock()
        let plan: Plan = state.withLock { s in
            if let t = s.token {
                if now < t.expiresAt {
                    if now < t.refreshAt || s.fetching { return .use(t.value) }
                    s.fetching = true
                    s.fetches += 1
                    return .useAndRefresh(t.value)
                }
                s.token = nil
            }
            s.waiters.append(done)
            if s.fetching { return .wait(start: false) }
            s.fetching = true
            s.fetches += 1
            return .wait(start: true)
        }
        switch plan {
        case .use(let value):
            done(.success(value))
        case .useAndRefresh(let value):
            done(.success(value))
            fetch { [self] in complete($0) }
        case .wait(let start):
            if start { fetch { [self] in complete($0) } }
        }
    }

    /// `request` with the cached (or freshly fetched) token set as `header` (after `prefix`).
    public func authorize(_ request: OutboundRequest, header: String, prefix: String = "", fetch: @escaping Fetch,
                          done: @escaping @Sendable (Result<OutboundRequest, AuthError>) -> Void) {
        token(fetch: fetch) { result in
            switch result {
            case .success(let token):
                var r = request
                r.setHeader(header, prefix + token)
                done(.success(r))
            case .failure(let e):
                done(.failure(e))
            }
        }
    }

    /// A request sent at `sentAt` (on the transport's clock) was refused: drops the token unless it is newer than
    /// that request. Always true: a token fetched now (or already) may be accepted.
    @discardableResult
    public func invalidate(sentAt: Double) -> Bool {
        state.withLock { s in
            s.invalidations += 1
            if let t = s.token, t.obtainedAt <= sentAt { s.token = nil }
        }
        return true
    }

    /// Forgets the token (tests; a configuration reload).
    public func clear() {
        state.withLock { $0.token = nil }
    }

    private func complete(_ result: Result<IssuedToken, AuthError>) {
        let now = clock()
        let (waiters, answer): ([Waiter], Result<String, AuthError>) = state.withLock { s in
            s.fetching = false
            let waiters = s.waiters
            s.waiters = []
            switch result {
            case .success(let issued):
                let lifetime = max(0, issued.lifetime)
                let lead = lifetime > refreshBefore ? refreshBefore : lifetime / 2
                s.token = Cached(value: issued.value, obtainedAt: now, refreshAt: now + lifetime - lead, expiresAt: now + lifetime)
                return (waiters, .success(issued.value))
            case .failure(let error):
                if var t = s.token, now < t.expiresAt {
                    // A background refresh failed: the old token still works; try again soon.
                    t.refreshAt = min(t.expiresAt, now + 1)
                    s.token = t
                    return (waiters, .success(t.value))
                }
                return (waiters, .failure(error))
            }
        }
        for w in waiters { w(answer) }
    }
}

/// Sending a token request and reading its answer, shared by the token schemes.
public enum TokenRequest {
    /// Sends `request` with `client` and parses a 2xx answer with `parse`; every failure becomes an `AuthError`
    /// naming the endpoint (retryable: connection failures and timeouts, 5xx, 408, 429). Every string in `redact`
    /// (the credentials) is replaced by `***` in the reason, whatever the endpoint echoed.
    public static func send(_ request: OutboundRequest, client: HTTPClient?, redact: [String],
                     describe: @escaping @Sendable (OutboundResponse) -> String,
                     parse: @escaping @Sendable (OutboundResponse) -> Result<IssuedToken, AuthError>,
                     done: @escaping @Sendable (Result<IssuedToken, AuthError>) -> Void) {
        let endpoint = "token endpoint " + displayURL(request.url)
        guard let client else {
            return done(.failure(AuthError("\(endpoint): no HTTP client to reach it", retryable: false)))
        }
        client.send(request) { result in
            let outcome: Result<IssuedToken, AuthError>
            switch result {
            case .failure(let e):
                outcome = .failure(AuthError("\(endpoint) unreachable: \(e)", retryable: e.isRetryable))
            case .success(let r) where (200..<300).contains(r.status):
                outcome = parse(r).mapError { AuthError("\(endpoint): \($0.reason)", retryable: $0.retryable) }
            case .success(let r):
                let detail = describe(r)
                outcome = .failure(AuthError("\(endpoint) answered HTTP \(r.status)" + (detail.isEmpty ? "" : ": " + detail),
                                             retryable: retryable(status: r.status)))
            }
            // Every failure of the endpoint is retried on the destination's schedule (its circuit breaker pauses it):
            // an `invalid_client` after a secret was rotated is fixed in configuration, and the queue must survive
            // until then. Only a request that can never be made (a malformed URL) is terminal.
            done(outcome.mapError { e in
                let permanent: Bool
                if case .failure(let t) = result, !t.isRetryable { permanent = true } else { permanent = false }
                return AuthError(redacted(e.reason, redact), retryable: !permanent)
            })
        }
    }

    public static func retryable(status: Int) -> Bool { status >= 500 || status == 408 || status == 429 }

    /// The URL without userinfo and query (which might carry credentials).
    static func displayURL(_ url: String) -> String {
        guard var c = URLComponents(string: url) else { return url }
        c.user = nil
        c.password = nil
        c.query = nil
        c.fragment = nil
        return c.string ?? url
    }

    static func redacted(_ text: String, _ secrets: [String]) -> String {
        var out = text
        for s in secrets where s.count >= 4 { out = out.replacingOccurrences(of: s, with: "***") }
        return out
    }

    /// Text from an endpoint, cut to `limit` characters on one line.
    public static func clip(_ text: String, _ limit: Int = 300) -> String {
        let line = text.split(whereSeparator: \.isNewline).joined(separator: " ")
        return line.count > limit ? String(line.prefix(limit)) + "…" : line
    }

    /// A lifetime in seconds: a JSON number or a numeric string.
    public static func seconds(_ v: JSONValue?) -> Double? {
        guard let v else { return nil }
        if let n = v.numberValue, n.isFinite { return n }
        if let s = v.stringValue, let n = Double(s.trimmingCharacters(in: .whitespaces)), n.isFinite { return n }
        return nil
    }
}
