import Crypto
import Foundation

/// Credentials that are the same on every request: one header, set (replacing any header of that name).
public struct HeaderAuth: OutboundAuth {
    public let scheme: String
    let header: String
    let value: Secret
    /// The secrets inside the header value (a Basic password, a token), redacted on their own too.
    let parts: [String]

    public init(scheme: String, header: String, value: Secret, parts: [String] = []) {
        self.scheme = scheme
        self.header = header
        self.value = value
        self.parts = parts
    }

    public var redactions: [String] { [value.value] + parts }

    public func authorize(_ request: OutboundRequest, context: AuthContext,
                          done: @escaping @Sendable (Result<OutboundRequest, AuthError>) -> Void) {
        var r = request
        r.setHeader(header, value.value)
        done(.success(r))
    }
}

extension ConfigReader {
    /// A secret that goes into a header: refused (with the key path, never the value) when it holds a control
    /// character such as a line break, which no HTTP client would send.
    func headerSecret(_ value: JSONValue?, _ path: String) -> Secret? {
        guard let s = secret(value, path) else { return nil }
        if s.value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) {
            problem(path, "\(s.reference) holds a control character (a line break?): it cannot go into a header")
            return nil
        }
        return s
    }
}

/// `auth: { basic: { username: "till-1", password: "${env:PASSWORD}" } }` -> `Authorization: Basic base64(u:p)`.
public struct BasicAuthFactory: OutboundAuthFactory {
    public init() {}
    public var name: String { "basic" }
    public func make(_ value: JSONValue, path: String, reader r: ConfigReader) -> (any OutboundAuth)? {
        guard let o = r.object(value, path, keys: ["username", "password"]) else { return nil }
        let user = r.string(o, "username", path, required: true)
        guard let password = r.headerSecret(o["password"], ConfigReader.join(path, "password")), let user else { return nil }
        if user.contains(":") { r.problem(ConfigReader.join(path, "username"), "must not contain ':' (Basic auth)") }
        let encoded = ByteEncoding.base64(Array("\(user):\(password.value)".utf8))
        return HeaderAuth(scheme: "basic", header: "Authorization",
                          value: Secret(value: "Basic " + encoded, reference: password.reference), parts: [encoded, password.value])
    }
}

/// `auth: { bearer: "${env:RAI_API_KEY}" }` -> `Authorization: Bearer <key>`.
public struct BearerAuthFactory: OutboundAuthFactory {
    public init() {}
    public var name: String { "bearer" }
    public func make(_ value: JSONValue, path: String, reader r: ConfigReader) -> (any OutboundAuth)? {
        guard let token = r.headerSecret(value, path) else { return nil }
        return HeaderAuth(scheme: "bearer", header: "Authorization",
                          value: Secret(value: "Bearer " + token.value, reference: token.reference), parts: [token.value])
    }
}

/// Punchh's location key: `auth: { token: { token: "${env:PUNCHH_LOCATION_KEY}" } }` ->
/// `Authorization: Token token="<key>"`; with `btoken` (the newer POS API) -> `Token token=<key>, btoken=<business key>`.
public struct TokenAuthFactory: OutboundAuthFactory {
    public init() {}
    public var name: String { "token" }
    public func make(_ value: JSONValue, path: String, reader r: ConfigReader) -> (any OutboundAuth)? {
        guard let o = r.object(value, path, keys: ["token", "btoken"]) else { return nil }
        guard let token = r.headerSecret(o["token"], ConfigReader.join(path, "token")) else { return nil }
        var header = "Token token=\"\(token.value)\""
        var btoken: String?
        if o["btoken"] != nil {
            guard let b = r.headerSecret(o["btoken"], ConfigReader.join(path, "btoken")) else { return nil }
            header = "Token token=\(token.value), btoken=\(b.value)"
            btoken = b.value
        }
        return HeaderAuth(scheme: "token", header: "Authorization", value: Secret(value: header, reference: token.reference),
                          parts: [token.value] + (btoken.map { [$0] } ?? []))
    }
}

/// Any API-key header: `auth: { apiKey: { header: "X-API-Key", value: "${env:KEY}", prefix: "" } }`.
public struct APIKeyAuthFactory: OutboundAuthFactory {
    public init() {}
    public var name: String { "apiKey" }
    public func make(_ value: JSONValue, path: String, reader r: ConfigReader) -> (any OutboundAuth)? {
        guard let o = r.object(value, path, keys: ["header", "value", "prefix"]) else { return nil }
        let header = r.string(o, "header", path, required: true)
        let prefix = r.string(o, "prefix", path) ?? ""
        guard let key = r.headerSecret(o["value"], ConfigReader.join(path, "value")), let header else { return nil }
        if header.isEmpty || header.contains(where: { $0 == ":" || $0 == " " || $0 == "\r" || $0 == "\n" }) {
            r.problem(ConfigReader.join(path, "header"), "must be a header name such as \"X-API-Key\"")
            return nil
        }
        return HeaderAuth(scheme: "apiKey", header: header, value: Secret(value: prefix + key.value, reference: key.reference),
                          parts: [key.value])
    }
}
