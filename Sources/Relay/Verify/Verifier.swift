import Crypto
import Foundation

/// What verification learned about a request it accepted.
public struct VerifiedRequest: Sendable {
    /// The message id the scheme carries (e.g. `webhook-id`), when it has one.
    public var messageID: String?
    public init(messageID: String? = nil) { self.messageID = messageID }
}

public enum VerifyOutcome: Sendable {
    case verified(VerifiedRequest)
    /// Refused, with a reason fit for the sender and the log (never a secret or an expected signature).
    case rejected(String)
}

/// Proves that a request came from the configured sender.
public protocol Verifier: Sendable {
    /// A short name for logs: `hmac`, `basic`, `token`, `none`, or the preset.
    var scheme: String { get }
    /// The idempotency rule this scheme implies (the preset's message-id header or event-id field), if any.
    var defaultIdempotency: IdempotencyRule? { get }
    func verify(_ request: HTTPRequest, now: Date) -> VerifyOutcome
}

/// Where an event's idempotency key comes from.
public enum IdempotencyRule: Sendable, Equatable {
    case header([String])
    case field(String)
    case bodyHash
}

/// Accepts every request: only when configured explicitly with `verify: { none: true }`.
public struct NoVerifier: Verifier {
    public var scheme: String { "none" }
    public var defaultIdempotency: IdempotencyRule? { nil }
    public func verify(_ request: HTTPRequest, now: Date) -> VerifyOutcome { .verified(VerifiedRequest()) }
}

/// A fixed credential in a header: `Authorization: Bearer X`, `Authorization: Basic base64(user:pass)`,
/// `X-API-Key: X`. Several accepted values allow rotation.
public struct StaticCredentialVerifier: Verifier {
    public let scheme: String
    public let header: String
    /// The part before the credential, e.g. `Bearer ` (compared without regard to case); empty for none.
    public let prefix: String
    let accepted: [[UInt8]]
    public var defaultIdempotency: IdempotencyRule? { nil }

    public init(scheme: String, header: String, prefix: String, accepted: [String]) {
        self.scheme = scheme
        self.header = header
        self.prefix = prefix
        self.accepted = accepted.map { Array($0.utf8) }
    }

    public func verify(_ request: HTTPRequest, now: Date) -> VerifyOutcome {
        guard let value = request.headers[header] else { return .rejected("missing \(header) header") }
        var presented = value.trimmedASCII
        if !prefix.isEmpty {
            guard presented.lowercased().hasPrefix(prefix.lowercased()) else {
                return .rejected("\(header) header is not of the form \"\(prefix.trimmingCharacters(in: .whitespaces)) ...\"")
            }
            presented = presented.dropFirst(prefix.count).drop(while: { $0 == " " })
        }
        let bytes = Array(presented.utf8)
        var match = false
        for a in accepted where ConstantTime.equals(a, bytes) { match = true }
        return match ? .verified(VerifiedRequest()) : .rejected("\(scheme) credentials do not match")
    }
}

/// One piece of a signed-content template such as `{id}.{timestamp}.{body}`.
public enum TemplatePart: Sendable, Equatable {
    case literal([UInt8]), body, timestamp, id, uri, path

    public struct UnknownVariable: Error { public let name: String }

    /// Parses a template; fails with the unknown variable's name.
    public static func parse(_ template: String) -> Result<[TemplatePart], UnknownVariable> {
        var parts: [TemplatePart] = []
        var literal = ""
        var rest = Substring(template)
        while let open = rest.firstIndex(of: "{") {
            literal += rest[..<open]
            guard let close = rest[open...].firstIndex(of: "}") else { return .failure(UnknownVariable(name: String(rest[open...]))) }
            let name = rest[rest.index(after: open)..<close]
            let part: TemplatePart
            switch name {
            case "body": part = .body
            case "timestamp": part = .timestamp
            case "id": part = .id
            case "uri": part = .uri
            case "path": part = .path
            default: return .failure(UnknownVariable(name: "{\(name)}"))
            }
            if !literal.isEmpty { parts.append(.literal(Array(literal.utf8))); literal = "" }
            parts.append(part)
            rest = rest[rest.index(after: close)...]
        }
        literal += rest
        if !literal.isEmpty { parts.append(.literal(Array(literal.utf8))) }
        return .success(parts)
    }
}

/// HMAC signatures, configurable enough to express every common provider scheme.
public struct HMACVerifier: Verifier {
    public enum SignatureEncoding: String, Sendable, CaseIterable { case hex, base64, base64url }
    public enum SecretEncoding: String, Sendable, CaseIterable { case utf8, base64, hex, whsec }

    /// `t=123,v1=abc,v1=def` (Stripe): signatures under one key, the timestamp under another.
    public struct KeyedFormat: Sendable, Equatable {
        public var signatureKey: String = "v1"
        public var timestampKey: String = "t"
        public var separator: Character = ","
        public init() {}
    }

    public var scheme: String
    public var algorithm: DigestAlgorithm = .sha256
    public var encoding: SignatureEncoding = .hex
    /// Signature header names; the first present is used.
    public var headers: [String] = []
    /// Text before each signature (`sha256=`, `v1,`, `hmac `), matched without regard to case.
    public var prefix: String = ""
    /// When set, the header holds several signatures separated by this (rotation): any one may match.
    public var separator: Character?
    public var keyed: KeyedFormat?
    public var template: [TemplatePart] = [.body]
    public var timestampHeaders: [String] = []
    public var idHeaders: [String] = []
    /// Largest accepted distance between the signed timestamp and now, both ways.
    public var tolerance: Double = 300
    /// The base of `{uri}`: e.g. `https://relay.example.com`; without it the Host header and
    /// X-Forwarded-Proto are used.
    public var publicBaseURL: String?
    /// HMAC keys (decoded from their encoding and prepared for `algorithm`): any may match, for rotation.
    public var keys: [HMACKey] = []
    public var defaultIdempotency: IdempotencyRule?

    public init(scheme: String) { self.scheme = scheme }

    var needsTimestamp: Bool { template.contains(.timestamp) || !timestampHeaders.isEmpty || keyed != nil }

    public func verify(_ request: HTTPRequest, now: Date) -> VerifyOutcome {
        guard let (headerName, headerValue) = request.headers.first(of: headers) else {
            return .rejected("missing signature header \(headers.joined(separator: " or "))")
        }
        // The candidate signatures (how many have the expected form, and those that decode), and a timestamp when
        // the header carries one.
        var found = 0
        var decoded: [[UInt8]] = []
        var headerTimestamp: Substring?
        if let keyed {
            var candidates: [Substring] = []
            for item in headerValue.split(separator: keyed.separator) {
                let kv = item.trimmedASCII
                guard let eq = kv.firstIndex(of: "=") else { continue }
                let k = kv[..<eq], v = kv[kv.index(after: eq)...]
                if k == keyed.signatureKey { candidates.append(v) }
                if k == keyed.timestampKey { headerTimestamp = v }
            }
            found = candidates.count
            decoded = candidates.compactMap { decode($0) }
        } else {
            (found, decoded) = plainSignatures(headerValue)
        }
        if found == 0 {
            return .rejected("\(headerName) header has no signature of the expected form\(prefix.isEmpty ? "" : " (\(prefix.trimmingCharacters(in: .whitespaces))...)")")
        }

        var timestamp: Substring?
        if needsTimestamp {
            if let headerTimestamp {
                timestamp = headerTimestamp
            } else if let (_, v) = request.headers.first(of: timestampHeaders) {
                timestamp = v.trimmedASCII
            }
            guard let ts = timestamp, let seconds = Self.unixTimestamp(ts) else {
                return .rejected(timestamp == nil ? "missing signature timestamp"
                                 : "signature timestamp is not a number of seconds (or milliseconds) since 1970")
            }
            let skew = now.timeIntervalSince1970 - seconds
            if !(abs(skew) <= tolerance) {
                return .rejected("signature timestamp outside tolerance: \(Int(clamping: Int64(skew.rounded())))s \(skew > 0 ? "old" : "in the future"), allowed \(Int(clamping: Int64(tolerance)))s")
            }
        }
        var messageID: String?
        if !idHeaders.isEmpty { messageID = request.headers.first(of: idHeaders)?.value }
        if template.contains(.id) && messageID == nil {
            return .rejected("missing message id header \(idHeaders.joined(separator: " or "))")
        }

        var message: [UInt8] = []
        if template != [.body] { message.reserveCapacity(request.body.count + 64) }
        for part in template where template != [.body] {
            switch part {
            case .literal(let bytes): message.append(contentsOf: bytes)
            case .body: message.append(contentsOf: request.body)
            case .timestamp: message.append(contentsOf: Array((timestamp ?? "").utf8))
            case .id: message.append(contentsOf: Array((messageID ?? "").utf8))
            case .path: message.append(contentsOf: Array(request.target.utf8))
            case .uri: message.append(contentsOf: Array(absoluteURI(request).utf8))
            }
        }
        if decoded.isEmpty { return .rejected("\(headerName) signature is not valid \(encoding.rawValue)") }
        let signed = template == [.body] ? request.body : message   // the common case, without a copy
        for key in keys {
            let mac = key.authenticate(signed)
            for candidate in decoded where ConstantTime.equals(mac, candidate) {
                return .verified(VerifiedRequest(messageID: messageID))
            }
        }
        return .rejected("signature does not match (\(headerName), \(algorithm.rawValue), \(keys.count) secret\(keys.count == 1 ? "" : "s") tried)")
    }

    /// Seconds since 1970 from plain decimal digits (an optional fraction): seconds, or milliseconds when the
    /// value is past 1e12. Anything else (signs, exponents, `inf`, `nan`, hex, more than 13 integer digits) is nil.
    static func unixTimestamp(_ text: Substring) -> Double? {
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let digits = UInt8(ascii: "0")...UInt8(ascii: "9")
        guard let whole = parts.first, (1...13).contains(whole.utf8.count), whole.utf8.allSatisfy(digits.contains),
              parts.count == 1 || (!parts[1].isEmpty && parts[1].utf8.count <= 9 && parts[1].utf8.allSatisfy(digits.contains)),
              let value = Double(text), value.isFinite else { return nil }
        return value > 1e12 ? value / 1000 : value
    }

    /// The signatures of a header without keys, read from its bytes where they are: the pieces (split at
    /// `separator`'s UTF-8 bytes, empty pieces left out) that have the form expected (leading spaces, then `prefix`
    /// in any case of its ASCII letters, then something), how many there are, and those that decode once trimmed
    /// of spaces and tabs. No `String` or `Substring` per step.
    private func plainSignatures(_ headerValue: String) -> (found: Int, decoded: [[UInt8]]) {
        var value = headerValue, prefix = self.prefix, split = separator.map { String($0) } ?? ""
        return value.withUTF8 { all in
            prefix.withUTF8 { wanted in
                split.withUTF8 { sep in
                    var found = 0
                    var decoded: [[UInt8]] = []
                    func piece(_ lo: Int, _ hi: Int) {
                        var i = lo
                        while i < hi, all[i] == 0x20 { i += 1 }
                        if !wanted.isEmpty {
                            guard hi - i > wanted.count,
                                  HTTPHeaders.asciiEqualIgnoringCase(UnsafeBufferPointer(rebasing: all[i..<i + wanted.count]), wanted)
                            else { return }
                            i += wanted.count
                        }
                        found += 1
                        var j = hi
                        while i < j, all[i] == 0x20 || all[i] == 0x09 { i += 1 }
                        while j > i, all[j - 1] == 0x20 || all[j - 1] == 0x09 { j -= 1 }
                        if let d = decode(UnsafeBufferPointer(rebasing: all[i..<j])) { decoded.append(d) }
                    }
                    if sep.isEmpty { piece(0, all.count); return (found, decoded) }
                    var start = 0, k = 0
                    while k + sep.count <= all.count {
                        if all[k] == sep[0] && (sep.count == 1 || all[k..<k + sep.count].elementsEqual(sep)) {
                            if k > start { piece(start, k) }
                            k += sep.count
                            start = k
                        } else {
                            k += 1
                        }
                    }
                    if all.count > start { piece(start, all.count) }
                    return (found, decoded)
                }
            }
        }
    }

    private func decode(_ bytes: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        if encoding == .hex { return ByteEncoding.fromHex(bytes) }
        return decode(Substring(String(decoding: bytes, as: UTF8.self)))
    }

    private func decode(_ s: Substring) -> [UInt8]? {
        let text = String(s.trimmedASCII)
        switch encoding {
        case .hex: return ByteEncoding.fromHex(text)
        case .base64: return ByteEncoding.fromBase64(text) ?? ByteEncoding.fromBase64URL(text)
        case .base64url: return ByteEncoding.fromBase64URL(text) ?? ByteEncoding.fromBase64(text)
        }
    }

    /// The full URL the sender posted to: configured base URL (or scheme and Host) plus the raw target.
    func absoluteURI(_ request: HTTPRequest) -> String {
        if let base = publicBaseURL {
            return (base.hasSuffix("/") ? String(base.dropLast()) : base) + request.target
        }
        let proto = request.headers["X-Forwarded-Proto"] ?? "http"
        let host = request.headers["X-Forwarded-Host"] ?? request.headers["Host"] ?? "localhost"
        return "\(proto)://\(host)\(request.target)"
    }

    /// Decodes a configured secret into HMAC key bytes.
    public static func key(from secret: String, encoding: SecretEncoding) -> [UInt8]? {
        switch encoding {
        case .utf8: return Array(secret.utf8)
        case .hex: return ByteEncoding.fromHex(secret)
        case .base64: return ByteEncoding.fromBase64(secret)
        case .whsec:
            let body = secret.hasPrefix("whsec_") ? String(secret.dropFirst(6)) : secret
            return ByteEncoding.fromBase64(body)
        }
    }
}
