// The outbound transport's public types: what a request to a destination is, what comes back, and how it fails.
// Nothing here touches libcurl; `HTTPClient` (HTTPClient.swift) does.

/// One HTTP request to a destination, exactly as the translator built it.
public struct OutboundRequest: Sendable {
    /// "PUT", "POST", "GET", ... (an HTTP token; sent as is).
    public var method: String
    /// An absolute `http://` or `https://` URL.
    public var url: String
    /// Sent in this order. `Content-Length` and `Transfer-Encoding` are the transport's (it frames the body) and
    /// are dropped here; an empty value is sent as an empty header.
    public var headers: [(String, String)]
    public var body: [UInt8]
    /// Seconds to establish the connection (TCP and TLS). Timeouts are rounded up to whole milliseconds;
    /// `.infinity` means no limit.
    public var connectTimeout: Double = 5
    /// Seconds for the whole exchange, from the moment the client's thread starts it (including waiting for a free
    /// connection when the connection limits are reached).
    public var totalTimeout: Double = 30
    /// Keep at most this much of the response body; the rest is read and discarded (not an error: `truncated`).
    public var maxResponseBytes: Int = 64 * 1024
    /// Mutual TLS: the client certificate and key presented to the destination.
    public var clientTLS: ClientTLS?

    public init(method: String, url: String, headers: [(String, String)] = [], body: [UInt8] = [],
                connectTimeout: Double = 5, totalTimeout: Double = 30, maxResponseBytes: Int = 64 * 1024) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.connectTimeout = connectTimeout
        self.totalTimeout = totalTimeout
        self.maxResponseBytes = maxResponseBytes
    }
}

/// A client certificate for mutual TLS: PEM files (the key may be encrypted with `keyPassword`).
public struct ClientTLS: Sendable, Equatable {
    public var certificatePath: String
    public var keyPath: String
    public var keyPassword: String?
    public init(certificatePath: String, keyPath: String, keyPassword: String? = nil) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        self.keyPassword = keyPassword
    }
}

/// What the destination answered. Any status is a response (a 3xx is not followed, a 5xx is not an error).
public struct OutboundResponse: Sendable {
    public var status: Int
    /// The final response's header fields (those of an interim 1xx response are not mixed in).
    public var headers: HTTPHeaders
    /// At most `maxResponseBytes` of the body.
    public var body: [UInt8]
    /// The body was longer than `maxResponseBytes`; `body` holds its beginning.
    public var truncated: Bool
    /// Seconds from `send` to the response, including any wait for the client's thread or a free connection.
    public var elapsed: Double
    /// Connections libcurl opened for this request: 0 when it reused a kept-alive one (for metrics and tests).
    public var newConnections: Int

    public init(status: Int, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = [], truncated: Bool = false,
                elapsed: Double = 0, newConnections: Int = 0) {
        self.status = status
        self.headers = headers
        self.body = body
        self.truncated = truncated
        self.elapsed = elapsed
        self.newConnections = newConnections
    }
}

/// Why a request got no response. `code` is libcurl's CURLcode (or CURLMcode for a failure of the multi handle);
/// `message` is libcurl's text for it plus its detail for this transfer. Never carries request headers or bodies.
public enum TransportError: Error, Sendable, CustomStringConvertible {
    /// Could not connect: refused, unreachable, DNS failure.
    case connect(code: Int32, message: String)
    /// The connect timeout or the total timeout passed.
    case timeout(code: Int32, message: String)
    /// TLS handshake or certificate verification failed.
    case tls(code: Int32, message: String)
    /// The connection broke or the server's reply could not be read: reset, send/receive errors, empty reply.
    case io(code: Int32, message: String)
    /// The request cannot be sent as it is: a bad URL, method or header. Retrying the same request will not help.
    case invalidRequest(String)
    /// The client was shut down before the request finished (or was sent after it).
    case closed

    /// Worth another attempt later: connect, timeout, io and closed are; an invalid request is not, and neither is
    /// a TLS failure that is about certificates or local TLS settings (only a broken handshake is).
    public var isRetryable: Bool {
        switch self {
        case .connect, .timeout, .io, .closed: return true
        case .invalidRequest: return false
        case .tls(let code, _): return TransportError.retryableTLSCodes.contains(code)
        }
    }

    /// CURLE_SSL_CONNECT_ERROR (35: the handshake failed, e.g. the connection dropped during it) and
    /// CURLE_SSL_SHUTDOWN_FAILED (80). Every other TLS code is about certificates (60 verification, 58 local
    /// certificate, 77 CA file, 82 CRL file, 83 issuer, 90 pinned key, 91 certificate status, 98 client
    /// certificate required) or the local TLS setup (53, 54, 59, 64, 66): the same again next time.
    static let retryableTLSCodes: Set<Int32> = [35, 80]

    /// A short name of the kind of failure (`error.type` of a span): connect, timeout, tls, io, invalid_request,
    /// closed.
    public var kindName: String {
        switch self {
        case .connect: return "connect"
        case .timeout: return "timeout"
        case .tls: return "tls"
        case .io: return "io"
        case .invalidRequest: return "invalid_request"
        case .closed: return "closed"
        }
    }

    public var description: String {
        switch self {
        case .connect(let code, let message): return "connect failed (curl \(code)): \(message)"
        case .timeout(let code, let message): return "timed out (curl \(code)): \(message)"
        case .tls(let code, let message): return "TLS failed (curl \(code)): \(message)"
        case .io(let code, let message): return "I/O failed (curl \(code)): \(message)"
        case .invalidRequest(let message): return "invalid request: \(message)"
        case .closed: return "the HTTP client was shut down"
        }
    }
}

/// Settings of one `HTTPClient` (one thread, one connection pool).
public struct HTTPClientOptions: Sendable {
    /// A PEM file of trusted CA certificates instead of the system's.
    public var caBundlePath: String?
    /// Verify the server's certificate chain and host name. Only turn off for local testing.
    public var verifyTLS: Bool = true
    /// Open connections to one host (scheme, host, port) at most; more requests wait for one to be free. 0: no limit.
    public var maxConnectionsPerHost: Int = 16
    /// Open connections in all at most; also the size of the keep-alive cache. 0: no limit.
    public var maxTotalConnections: Int = 256
    /// Sent as `User-Agent` by every request that has no `User-Agent` header of its own (a destination's
    /// configured headers); nil: none.
    public var userAgent: String? = RelayVersion.userAgent

    public init(caBundlePath: String? = nil, verifyTLS: Bool = true, maxConnectionsPerHost: Int = 16,
                maxTotalConnections: Int = 256) {
        self.caBundlePath = caBundlePath
        self.verifyTLS = verifyTLS
        self.maxConnectionsPerHost = maxConnectionsPerHost
        self.maxTotalConnections = maxTotalConnections
    }
}
