import Relay
import Crypto
import Foundation

/// Mastercard's OAuth 1.0a with RSA-SHA256 and a body hash, computed as Mastercard's signer libraries compute it
/// (the reference: PyPI's `mastercard-oauth1-signer`, module `oauth1`):
///
/// 1. parameters `oauth_consumer_key`, `oauth_nonce` (16 random alphanumerics), `oauth_timestamp` (Unix seconds),
///    `oauth_signature_method` `RSA-SHA256`, `oauth_version` `1.0`, `oauth_body_hash` = base64(SHA-256(body)) (an
///    empty body hashes the empty string, GET included);
/// 2. base URI: scheme and authority lower-cased, `:80` (http) / `:443` (https) dropped, the raw path kept (`/`
///    when empty), no query, no fragment;
/// 3. parameter string: the query's parameters (decoded, then percent-encoded again when the query held any
///    `%XX`, else kept as written with `+` for a space), repeated keys kept, plus the oauth parameters (values as
///    they are), each `k=v`, sorted as whole `k=v` strings (byte order) and joined with `&`;
/// 4. base string `UPPER(method)&pct(baseURI)&pct(parameterString)` (RFC 3986 percent-encoding of UTF-8);
/// 5. RSASSA-PKCS1-v1_5 over SHA-256 of the base string, base64, percent-encoded;
/// 6. `Authorization: OAuth oauth_consumer_key="...",oauth_nonce="...",...,oauth_signature="..."`, in the
///    reference's order, values as they are except the signature.
public enum MastercardOAuth1 {
    /// base64(SHA-256("")): the body hash of a request without a body.
    public static let emptyBodyHash = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    public static let signatureMethod = "RSA-SHA256"

    /// base64(SHA-256(body)).
    public static func bodyHash(_ body: [UInt8]) -> String { ByteEncoding.base64(Digest.sha256(body)) }

    /// The parameters that are signed, in the order the reference writes them in the header.
    public static func oauthParameters(consumerKey: String, nonce: String, timestamp: Int64,
                                       body: [UInt8]) -> [(String, String)] {
        [("oauth_consumer_key", consumerKey), ("oauth_nonce", nonce), ("oauth_timestamp", String(timestamp)),
         ("oauth_signature_method", signatureMethod), ("oauth_version", "1.0"), ("oauth_body_hash", bodyHash(body))]
    }

    /// The `Authorization` header value for one request: a pure function of its inputs (RSASSA-PKCS1-v1_5 is
    /// deterministic), for tests and `relay sign`.
    public static func authorizationHeader(method: String, url: String, body: [UInt8], consumerKey: String,
                                           key: RSAPrivateKey, nonce: String,
                                           timestamp: Int64) throws(AuthError) -> String {
        var params = oauthParameters(consumerKey: consumerKey, nonce: nonce, timestamp: timestamp, body: body)
        guard let base = baseString(method: method, url: url, oauth: params) else {
            throw AuthError("cannot sign \(url): not an absolute http(s) URL", retryable: false)
        }
        let signature: [UInt8]
        do {
            signature = try key.signSHA256(Array(base.utf8))
        } catch {
            throw AuthError("RSA signing failed: \((error as? CryptoError)?.message ?? "\(error)")", retryable: false)
        }
        params.append(("oauth_signature", percentEncode(ByteEncoding.base64(signature))))
        return "OAuth " + params.map { "\($0.0)=\"\($0.1)\"" }.joined(separator: ",")
    }

    /// `UPPER(method)&pct(baseURI)&pct(parameterString)`; nil when `url` has no scheme and authority.
    public static func baseString(method: String, url: String, oauth: [(String, String)]) -> String? {
        guard let parts = URLParts(url), let uri = baseURI(parts) else { return nil }
        return method.uppercased() + "&" + percentEncode(uri) + "&"
            + percentEncode(parameterString(query: parts.query, oauth: oauth))
    }

    /// The base URI of `url` (nil when it has no scheme and authority).
    public static func baseURI(_ url: String) -> String? { URLParts(url).flatMap(baseURI) }

    static func baseURI(_ parts: URLParts) -> String? {
        guard !parts.scheme.isEmpty, !parts.authority.isEmpty else { return nil }
        var authority = parts.authority.lowercased()
        if parts.scheme == "http", authority.hasSuffix(":80") {
            authority.removeLast(3)
        } else if parts.scheme == "https", authority.hasSuffix(":443") {
            authority.removeLast(4)
        }
        return parts.scheme + "://" + authority + (parts.path.isEmpty ? "/" : parts.path)
    }

    /// The query's parameters with the oauth parameters, normalised and sorted as the reference does it
    /// (`oauth1.coreutils.normalize_params`).
    public static func parameterString(query: String, oauth: [(String, String)]) -> String {
        // Any %XX in the query: every decoded name and value is percent-encoded again; none: kept as written.
        let mustEncode = containsPercentEscape(query)
        var pairs: [String] = []
        for piece in query.split(separator: "&", omittingEmptySubsequences: true) {
            let name: Substring, value: Substring
            if let eq = piece.firstIndex(of: "=") {
                name = piece[..<eq]
                value = piece[piece.index(after: eq)...]
            } else {
                name = piece
                value = ""
            }
            let n = formDecode(name), v = formDecode(value)
            if mustEncode {
                pairs.append(percentEncode(n) + "=" + percentEncode(v))
            } else {
                pairs.append(n.replacingOccurrences(of: " ", with: "+") + "=" + v.replacingOccurrences(of: " ", with: "+"))
            }
        }
        pairs += oauth.map { $0.0 + "=" + $0.1 }
        let sorted = pairs.map { Array($0.utf8) }.sorted { $0.lexicographicallyPrecedes($1) }
        return sorted.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "&")
    }

    /// RFC 3986 percent-encoding of the UTF-8 bytes: all but `A-Z a-z 0-9 - . _ ~`, as `%XX` (upper-case hex).
    public static func percentEncode(_ s: String) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count)
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                 UInt8(ascii: "~"):
                out.append(b)
            default:
                out += [UInt8(ascii: "%"), hex[Int(b >> 4)], hex[Int(b & 0x0f)]]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes every valid `%XX` (others stay as written); the bytes are read as UTF-8, invalid sequences
    /// becoming U+FFFD (Python's `unquote`).
    public static func percentDecode(_ s: Substring) -> String {
        let bytes = Array(s.utf8)
        guard bytes.contains(UInt8(ascii: "%")) else { return String(s) }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%"), i + 2 < bytes.count,
               let hi = hexValue(bytes[i + 1]), let lo = hexValue(bytes[i + 2]) {
                out.append(hi << 4 | lo)
                i += 3
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A query name or value as `parse_qsl` reads it: `+` is a space, then percent-decoded.
    static func formDecode(_ s: Substring) -> String {
        percentDecode(Substring(s.replacingOccurrences(of: "+", with: " ")))
    }

    static func containsPercentEscape(_ s: String) -> Bool {
        let b = Array(s.utf8)
        guard b.count >= 3 else { return false }
        for i in 0..<(b.count - 2) where b[i] == UInt8(ascii: "%") {
            if hexValue(b[i + 1]) != nil && hexValue(b[i + 2]) != nil { return true }
        }
        return false
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// A URL split as Python's `urlsplit` splits it: scheme (lower-cased), authority, path, query; the fragment
    /// dropped. Nothing is decoded or normalised.
    struct URLParts {
        var scheme = ""
        var authority = ""
        var path = ""
        var query = ""

        init?(_ url: String) {
            var rest = Substring(url.trimmingCharacters(in: .whitespaces))
            if let colon = rest.firstIndex(of: ":"), colon != rest.startIndex,
               rest.first!.isASCII, rest.first!.isLetter,
               rest[..<colon].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "+-.".contains($0)) }) {
                scheme = rest[..<colon].lowercased()
                rest = rest[rest.index(after: colon)...]
            }
            if rest.hasPrefix("//") {
                rest = rest.dropFirst(2)
                let end = rest.firstIndex { "/?#".contains($0) } ?? rest.endIndex
                authority = String(rest[..<end])
                rest = rest[end...]
            }
            if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }
            if let q = rest.firstIndex(of: "?") {
                query = String(rest[rest.index(after: q)...])
                rest = rest[..<q]
            }
            path = String(rest)
            guard !scheme.isEmpty else { return nil }
        }
    }

    // MARK: Verifying (the stand-ins)

    /// The `k="v"` pairs of an `OAuth ...` header, in order; nil when it is not of that form.
    public static func parseHeader(_ header: String) -> [(String, String)]? {
        let text = header.trimmingCharacters(in: .whitespaces)
        guard text.count > 6, text.prefix(6).lowercased() == "oauth " else { return nil }
        var rest = Substring(text.dropFirst(6))
        var pairs: [(String, String)] = []
        while true {
            rest = rest.drop { $0 == " " || $0 == "\t" }
            guard let eq = rest.firstIndex(of: "=") else { return nil }
            let key = rest[..<eq].trimmingCharacters(in: .whitespaces)
            rest = rest[rest.index(after: eq)...].drop { $0 == " " || $0 == "\t" }
            guard !key.isEmpty, rest.first == "\"" else { return nil }
            rest = rest.dropFirst()
            guard let close = rest.firstIndex(of: "\"") else { return nil }
            pairs.append((key, String(rest[..<close])))
            rest = rest[rest.index(after: close)...].drop { $0 == " " || $0 == "\t" }
            if rest.isEmpty { break }
            guard rest.first == "," else { return nil }
            rest = rest.dropFirst()
        }
        return pairs
    }

    /// Checks a received request's OAuth 1.0a signature as Mastercard's gateway would: the header's form and
    /// parameters, the body hash against the body, then the RSA-SHA256 signature over the base string recomputed
    /// from `method`, `url` (as received: scheme, `Host`, path and query) and the header's parameters. nil when all
    /// pass, else which check failed.
    public static func verify(method: String, url: String, body: [UInt8], authorization: String,
                              publicKey: RSAPublicKey) -> String? {
        guard let pairs = parseHeader(authorization) else {
            return "the Authorization header is not an OAuth 1.0a header (OAuth k=\"v\",...)"
        }
        var values: [String: String] = [:]
        for (k, v) in pairs {
            if values[k] != nil { return "\(k) appears twice in the Authorization header" }
            values[k] = v
        }
        for k in ["oauth_consumer_key", "oauth_nonce", "oauth_timestamp", "oauth_signature_method",
                  "oauth_body_hash", "oauth_signature"] where (values[k] ?? "").isEmpty {
            return "\(k) is missing from the Authorization header"
        }
        if values["oauth_signature_method"] != signatureMethod {
            return "oauth_signature_method \(values["oauth_signature_method"]!) is not supported (expected \(signatureMethod))"
        }
        if let version = values["oauth_version"], version != "1.0" {
            return "oauth_version \(version) is not supported (expected 1.0)"
        }
        guard values["oauth_timestamp"]!.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            return "oauth_timestamp is not a number of seconds"
        }
        let expected = bodyHash(body)
        guard values["oauth_body_hash"] == expected else {
            return "oauth_body_hash does not match the body (the body received hashes to \(expected))"
        }
        guard let signature = ByteEncoding.fromBase64(percentDecode(Substring(values["oauth_signature"]!))) else {
            return "oauth_signature is not percent-encoded base64"
        }
        let signed = pairs.filter { $0.0 != "oauth_signature" && $0.0 != "realm" }
        guard let base = baseString(method: method, url: url, oauth: signed) else {
            return "cannot rebuild the signature base string for \(url)"
        }
        guard publicKey.verifySHA256(signature: signature, message: Array(base.utf8)) else {
            return "the signature does not verify with the consumer's public key"
        }
        return nil
    }
}

/// Signs every attempt: a fresh nonce and timestamp, the body hash of the request as sent.
public struct MastercardOAuth1Auth: OutboundAuth {
    public var redactions: [String] { [consumerKey.value] }
    public var scheme: String { "mastercard-oauth1" }
    let consumerKey: Secret
    let key: RSAPrivateKey
    let nonce: @Sendable () -> String

    public init(consumerKey: Secret, key: RSAPrivateKey,
                nonce: @escaping @Sendable () -> String = { SecureRandom.nonce(length: 16) }) {
        self.consumerKey = consumerKey
        self.key = key
        self.nonce = nonce
    }

    public func authorize(_ request: OutboundRequest, context: AuthContext,
                          done: @escaping @Sendable (Result<OutboundRequest, AuthError>) -> Void) {
        let timestamp = Int64(context.now.timeIntervalSince1970.rounded(.down))
        do {
            let header = try MastercardOAuth1.authorizationHeader(
                method: request.method, url: request.url, body: request.body, consumerKey: consumerKey.value,
                key: key, nonce: nonce(), timestamp: timestamp)
            var r = request
            r.setHeader("Authorization", header)
            done(.success(r))
        } catch {
            done(.failure(error))
        }
    }
}

/// Loading the signing key: a PKCS#12 archive (with its password and, optionally, the alias of its entry) or a
/// PEM private key. Reasons name the file, never a password.
public enum MastercardSigningKey {
    public struct Loaded: Sendable {
        public let key: RSAPrivateKey
        /// The key's certificate (PKCS#12 only).
        public let certificate: CertificateInfo?
    }

    /// Reads `path`: PEM when it holds a `-----BEGIN ` line, else PKCS#12. `passwordName` is how reasons name the
    /// password setting (`keyPassword ${env:MC_KEY_PASSWORD}`, `--password`).
    public static func load(file path: String, password: String?, alias: String?,
                            passwordName: String = "keyPassword") -> Result<Loaded, ProblemText> {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            return .failure(ProblemText("cannot read \(path): no such file"))
        }
        if isDirectory.boolValue { return .failure(ProblemText("cannot read \(path): it is a directory")) }
        guard FileManager.default.isReadableFile(atPath: path), let data = FileManager.default.contents(atPath: path) else {
            return .failure(ProblemText("cannot read \(path): permission denied"))
        }
        let bytes = [UInt8](data)
        if bytes.isEmpty { return .failure(ProblemText("\(path) is empty: it holds no private key")) }
        if looksLikePEM(bytes) {
            if alias != nil {
                return .failure(ProblemText("\(path) is a PEM file: keyAlias applies to PKCS#12 archives only"))
            }
            return load(pem: String(decoding: bytes, as: UTF8.self), password: password, what: path)
        }
        do throws(PKCS12Error) {
            let identity = try PKCS12Identity(pkcs12: bytes, password: password ?? "")
            if let alias, identity.certificate?.alias != alias {
                let has = identity.certificate?.alias.map { "its key's alias is \"\($0)\"" } ?? "its key has no alias"
                return .failure(ProblemText("\(path) holds no key with alias \"\(alias)\" (\(has))"))
            }
            return .success(Loaded(key: identity.key, certificate: identity.certificate))
        } catch {
            switch error.kind {
            case .notPKCS12:
                return .failure(ProblemText("\(path) is neither a PKCS#12 archive (.p12/.pfx) nor a PEM private key"))
            case .wrongPassword where password == nil:
                return .failure(ProblemText("\(path): the PKCS#12 archive is protected by a password: set \(passwordName)"))
            case .wrongPassword:
                return .failure(ProblemText("\(path): wrong PKCS#12 password (the archive does not open with \(passwordName))"))
            case .noPrivateKey:
                return .failure(ProblemText("\(path) holds no private key (a PKCS#12 archive of certificates only: "
                    + "export the key together with its certificate)"))
            case .undecryptable, .notRSA:
                return .failure(ProblemText("\(path): \(error.message)"))
            }
        }
    }

    /// A PEM private key (PKCS#8, PKCS#1, encrypted PKCS#8 with `password`). `what` names it in reasons.
    public static func load(pem: String, password: String?, what: String) -> Result<Loaded, ProblemText> {
        let labels = pem.split(whereSeparator: \.isNewline).compactMap { line -> String? in
            let t = line.trimmingCharacters(in: .whitespaces)
            guard t.hasPrefix("-----BEGIN "), t.hasSuffix("-----") else { return nil }
            return String(t.dropFirst(11).dropLast(5))
        }
        if labels.isEmpty { return .failure(ProblemText("\(what) is not a PEM private key")) }
        if !labels.contains(where: { $0.hasSuffix("PRIVATE KEY") }) {
            return .failure(ProblemText("\(what) holds no private key (it holds: \(labels.joined(separator: ", ")))"))
        }
        do {
            return .success(Loaded(key: try RSAPrivateKey(pem: pem, password: password), certificate: nil))
        } catch {
            return .failure(ProblemText("\(what): \((error as? CryptoError)?.message ?? "\(error)")"))
        }
    }

    /// Why `certificate` cannot sign at `now` (expired), or nil.
    public static func expiry(_ certificate: CertificateInfo?, now: Date) -> String? {
        guard let certificate, let notAfter = certificate.notAfter else { return nil }
        let end = Date(timeIntervalSince1970: TimeInterval(notAfter))
        guard end < now else { return nil }
        let subject = certificate.subject.isEmpty ? "" : " (\(certificate.subject))"
        return "the certificate\(subject) expired on \(end.formatted(.iso8601)): Mastercard refuses requests "
            + "signed with an expired key; create a new one in Mastercard Developers"
    }

    static func looksLikePEM(_ bytes: [UInt8]) -> Bool {
        let needle = Array("-----BEGIN ".utf8)
        guard bytes.count >= needle.count else { return false }
        for i in 0...(bytes.count - needle.count) where bytes[i] == needle[0] {
            if bytes[i..<(i + needle.count)].elementsEqual(needle) { return true }
        }
        return false
    }
}

/// A reason for a problem, safe to show (it names files and keys, never a secret).
public struct ProblemText: Error, Sendable, CustomStringConvertible, Equatable {
    public let text: String
    public init(_ text: String) { self.text = text }
    public var description: String { text }
}

/// `auth: { mastercardOAuth1: { consumerKey: "${env:MC_CONSUMER_KEY}", keyFile: "secrets/mc.p12",
/// keyPassword: "${env:MC_KEY_PASSWORD}", keyAlias: "keyalias" } }`, or `keyPem: "${file:secrets/mc-key.pem}"`
/// instead of `keyFile`. The key is loaded and checked now (readable, the password opens it, it holds an RSA
/// private key, its certificate has not expired), so `relay check` reports what is wrong at the key's path.
public struct MastercardOAuth1Factory: OutboundAuthFactory {
    let now: @Sendable () -> Date

    public init(now: @escaping @Sendable () -> Date = { Date() }) {
        self.now = now
    }

    public var name: String { "mastercardOAuth1" }

    public func make(_ value: JSONValue, path: String, reader r: ConfigReader) -> (any OutboundAuth)? {
        guard let o = r.object(value, path, keys: ["consumerKey", "keyFile", "keyPem", "keyPassword", "keyAlias"]) else {
            return nil
        }
        let consumerKeyPath = ConfigReader.join(path, "consumerKey")
        var consumerKey = r.secret(o["consumerKey"], consumerKeyPath)
        if let k = consumerKey, k.value.unicodeScalars.contains(where: { $0 == "\"" || $0 == "\\" || $0.value < 0x20 || $0.value == 0x7f }) {
            r.problem(consumerKeyPath, "\(k.reference) holds a quote, backslash or control character, which cannot go in an OAuth header")
            consumerKey = nil
        }
        var password: Secret?
        var passwordOK = true
        if o["keyPassword"] != nil {
            password = r.secret(o["keyPassword"], ConfigReader.join(path, "keyPassword"))
            passwordOK = password != nil
        }
        let alias = r.string(o, "keyAlias", path)
        let file = r.string(o, "keyFile", path)
        let hasPem = o["keyPem"] != nil && o["keyPem"]?.isNull == false
        let loaded: Result<MastercardSigningKey.Loaded, ProblemText>
        let keyPath: String
        switch (file, hasPem) {
        case (nil, false):
            if o["keyFile"] == nil || o["keyFile"]!.isNull {
                r.problem(path, "needs the signing key: keyFile (a PKCS#12 or PEM file) or keyPem (\"${file:...}\")")
            }
            return nil
        case (.some, true):
            r.problem(path, "give keyFile or keyPem, not both")
            return nil
        case (let file?, false):
            keyPath = ConfigReader.join(path, "keyFile")
            guard passwordOK else { return nil }
            loaded = MastercardSigningKey.load(file: file, password: password?.value, alias: alias,
                                               passwordName: password.map { "keyPassword \($0.reference)" } ?? "keyPassword")
        case (nil, true):
            keyPath = ConfigReader.join(path, "keyPem")
            guard let pem = r.secret(o["keyPem"], keyPath), passwordOK else { return nil }
            if alias != nil { r.problem(ConfigReader.join(path, "keyAlias"), "applies to keyFile (PKCS#12) only") }
            loaded = MastercardSigningKey.load(pem: pem.value, password: password?.value, what: pem.reference)
        }
        switch loaded {
        case .failure(let why):
            r.problem(keyPath, why.text)
            return nil
        case .success(let key):
            if let expired = MastercardSigningKey.expiry(key.certificate, now: now()) {
                r.problem(keyPath, "\(file ?? "the key"): \(expired)")
                return nil
            }
            if key.key.bits < 2048 {
                r.problem(keyPath, "\(file ?? "the key"): an RSA key of \(key.key.bits) bits; Mastercard signing keys are 2048 bits or more")
                return nil
            }
            guard let consumerKey else { return nil }
            return MastercardOAuth1Auth(consumerKey: consumerKey, key: key.key)
        }
    }
}
