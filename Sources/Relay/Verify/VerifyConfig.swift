import Crypto
import Foundation

/// A named signature scheme (`verify: { preset: "github" }`): HMAC settings that a source's `verify` block may
/// override key by key. The engine knows the web's common ones (`VerifyPreset.builtin`); a provider's own preset is
/// registered by its adapter (`AdapterRegistry.verifyPresets`).
public struct VerifyPreset: Sendable {
    public let name: String
    public let make: @Sendable () -> (HMACVerifier, HMACVerifier.SecretEncoding)

    public init(_ name: String, make: @escaping @Sendable () -> (HMACVerifier, HMACVerifier.SecretEncoding)) {
        self.name = name
        self.make = make
    }

    public static let builtin: [VerifyPreset] = [
        VerifyPreset("standard-webhooks") {
            // Svix sends the same scheme under svix-* names.
            var v = HMACVerifier(scheme: "standard-webhooks")
            v.headers = ["webhook-signature", "svix-signature"]
            v.separator = " "
            v.prefix = "v1,"
            v.encoding = .base64
            v.template = [.id, .literal(Array(".".utf8)), .timestamp, .literal(Array(".".utf8)), .body]
            v.timestampHeaders = ["webhook-timestamp", "svix-timestamp"]
            v.idHeaders = ["webhook-id", "svix-id"]
            v.defaultIdempotency = .header(["webhook-id", "svix-id"])
            return (v, .whsec)
        },
        VerifyPreset("stripe") {
            var v = HMACVerifier(scheme: "stripe")
            v.headers = ["Stripe-Signature"]
            v.keyed = HMACVerifier.KeyedFormat()
            v.template = [.timestamp, .literal(Array(".".utf8)), .body]
            v.defaultIdempotency = .field("$.id")
            return (v, .utf8)
        },
        VerifyPreset("github") {
            var v = HMACVerifier(scheme: "github")
            v.headers = ["X-Hub-Signature-256"]
            v.prefix = "sha256="
            v.idHeaders = ["X-GitHub-Delivery"]
            v.defaultIdempotency = .header(["X-GitHub-Delivery"])
            return (v, .utf8)
        },
        VerifyPreset("shopify") {
            var v = HMACVerifier(scheme: "shopify")
            v.headers = ["X-Shopify-Hmac-SHA256"]
            v.encoding = .base64
            v.idHeaders = ["X-Shopify-Webhook-Id"]
            v.defaultIdempotency = .header(["X-Shopify-Webhook-Id", "X-Shopify-Event-Id"])
            return (v, .utf8)
        },
        VerifyPreset("slack") {
            var v = HMACVerifier(scheme: "slack")
            v.headers = ["X-Slack-Signature"]
            v.prefix = "v0="
            v.template = [.literal(Array("v0:".utf8)), .timestamp, .literal(Array(":".utf8)), .body]
            v.timestampHeaders = ["X-Slack-Request-Timestamp"]
            v.defaultIdempotency = .field("$.event_id")
            return (v, .utf8)
        },
    ]
}

extension ConfigReader {
    static let hmacKeys = ["algorithm", "encoding", "header", "prefix", "separator", "keyed", "signedContent",
                           "timestampHeader", "idHeader", "tolerance", "secrets", "secretEncoding"]

    /// Reads a source's `verify` block. Exactly one scheme: `preset`, `hmac`, `basic`, `bearer`, `token`,
    /// `apiKey` or `none: true`.
    public func verifier(_ value: JSONValue?, _ path: String, publicBaseURL: String?,
                         presets: [VerifyPreset] = VerifyPreset.builtin) -> (any Verifier)? {
        guard let value else {
            problem(path, "is required: say how this source's webhooks are verified (a preset, hmac, basic, bearer, token, apiKey), or `verify: { none: true }` to accept unsigned webhooks")
            return nil
        }
        let schemes = ["preset", "hmac", "basic", "bearer", "token", "apiKey", "none"]
        guard let o = object(value, path, keys: schemes + Self.hmacKeys) else { return nil }
        let chosen = schemes.filter { o[$0] != nil }
        guard chosen.count == 1, let scheme = chosen.first else {
            problem(path, chosen.isEmpty ? "needs one of: \(schemes.joined(separator: ", "))"
                    : "has several schemes (\(chosen.joined(separator: ", "))): choose one")
            return nil
        }
        if scheme != "preset" {
            for key in Self.hmacKeys where o[key] != nil {
                problem(Self.join(path, key), "belongs inside `hmac` or beside `preset`")
            }
        }
        switch scheme {
        case "preset":
            guard let name = string(o, "preset", path) else { return nil }
            guard let preset = presets.first(where: { $0.name == name }) else {
                problem(Self.join(path, "preset"), "unknown preset \(shown(o["preset"], name)) (known: \(presets.map(\.name).joined(separator: ", ")))")
                return nil
            }
            let (base, secretEncoding) = preset.make()
            return hmac(o, path, base: base, secretEncoding: secretEncoding, publicBaseURL: publicBaseURL)
        case "hmac":
            let p = Self.join(path, "hmac")
            guard let h = object(o["hmac"], p, keys: Self.hmacKeys) else { return nil }
            if h["header"] == nil { problem(Self.join(p, "header"), "is required") }
            return hmac(h, p, base: HMACVerifier(scheme: "hmac"), secretEncoding: .utf8, publicBaseURL: publicBaseURL)
        case "basic":
            let p = Self.join(path, "basic")
            guard let b = object(o["basic"], p, keys: ["username", "password", "passwords"]) else { return nil }
            let user = string(b, "username", p, required: true) ?? ""
            var passwords = secrets(b, "passwords", p, required: false)
            if b["password"] != nil || passwords.isEmpty { passwords += secrets(b, "password", p) }
            let accepted = passwords.map { ByteEncoding.base64(Array("\(user):\($0.value)".utf8)) }
            return StaticCredentialVerifier(scheme: "basic", header: "Authorization", prefix: "Basic ", accepted: accepted)
        case "bearer":
            let p = Self.join(path, "bearer")
            guard let b = object(o["bearer"], p, keys: ["tokens"]) else { return nil }
            let tokens = secrets(b, "tokens", p)
            return StaticCredentialVerifier(scheme: "bearer", header: "Authorization", prefix: "Bearer ",
                                            accepted: tokens.map(\.value))
        case "token", "apiKey":
            let p = Self.join(path, scheme)
            guard let t = object(o[scheme], p, keys: ["header", "scheme", "tokens"]) else { return nil }
            let header = string(t, "header", p, required: scheme == "apiKey") ?? "Authorization"
            let prefix = string(t, "scheme", p).map { $0 + " " } ?? ""
            let tokens = secrets(t, "tokens", p)
            return StaticCredentialVerifier(scheme: scheme, header: header, prefix: prefix, accepted: tokens.map(\.value))
        default:
            guard o["none"] == .bool(true) else {
                problem(Self.join(path, "none"), "must be true to accept unsigned webhooks")
                return nil
            }
            return NoVerifier()
        }
    }

    private func hmac(_ o: [String: JSONValue], _ path: String, base: HMACVerifier,
                      secretEncoding defaultSecretEncoding: HMACVerifier.SecretEncoding,
                      publicBaseURL: String?) -> HMACVerifier {
        var v = base
        v.publicBaseURL = publicBaseURL
        if let a = choice(o, "algorithm", path, DigestAlgorithm.allCases.map(\.rawValue)) { v.algorithm = DigestAlgorithm(rawValue: a)! }
        if let e = choice(o, "encoding", path, HMACVerifier.SignatureEncoding.allCases.map(\.rawValue)) {
            v.encoding = HMACVerifier.SignatureEncoding(rawValue: e)!
        }
        if let h = strings(o, "header", path) { v.headers = h }
        if let p = string(o, "prefix", path) { v.prefix = p }
        if let s = string(o, "separator", path) {
            if s.count == 1 { v.separator = s.first } else { problem(Self.join(path, "separator"), "must be one character") }
        }
        if let k = o["keyed"] {
            let kp = Self.join(path, "keyed")
            if let ko = object(k, kp, keys: ["signature", "timestamp", "separator"]) {
                var f = HMACVerifier.KeyedFormat()
                if let s = string(ko, "signature", kp) { f.signatureKey = s }
                if let t = string(ko, "timestamp", kp) { f.timestampKey = t }
                if let s = string(ko, "separator", kp) {
                    if s.count == 1, let c = s.first { f.separator = c } else { problem(Self.join(kp, "separator"), "must be one character") }
                }
                v.keyed = f
            }
        }
        if let t = string(o, "signedContent", path) {
            switch TemplatePart.parse(t) {
            case .success(let parts): v.template = parts
            case .failure(let bad):
                problem(Self.join(path, "signedContent"), "unknown variable \(bad.name) (known: {body}, {timestamp}, {id}, {uri}, {path})")
            }
        }
        if let t = strings(o, "timestampHeader", path) { v.timestampHeaders = t }
        if let i = strings(o, "idHeader", path) { v.idHeaders = i }
        if let t = duration(o, "tolerance", path) { v.tolerance = t }
        if v.template.contains(.id) && v.idHeaders.isEmpty {
            problem(Self.join(path, "signedContent"), "uses {id} but no idHeader is set")
        }
        if v.template.contains(.timestamp) && v.timestampHeaders.isEmpty && v.keyed == nil {
            problem(Self.join(path, "signedContent"), "uses {timestamp} but no timestampHeader is set")
        }
        var secretEncoding = defaultSecretEncoding
        if let e = choice(o, "secretEncoding", path, HMACVerifier.SecretEncoding.allCases.map(\.rawValue)) {
            secretEncoding = HMACVerifier.SecretEncoding(rawValue: e)!
        }
        let list = secrets(o, "secrets", path)
        for (i, s) in list.enumerated() {
            if let key = HMACVerifier.key(from: s.value, encoding: secretEncoding) {
                v.keys.append(HMACKey(v.algorithm, key: key))
            } else {
                problem(Self.join(Self.join(path, "secrets"), i), "\(s.reference) is not valid \(secretEncoding.rawValue)\(secretEncoding == .whsec ? " (whsec_ followed by base64)" : "")")
            }
        }
        return v
    }

    /// Reads a source's `idempotency`: `{ header: "X-Id" }`, `{ field: "$.id" }`, or `"body-hash"`.
    public func idempotency(_ value: JSONValue?, _ path: String) -> IdempotencyRule? {
        guard let value else { return nil }
        if case .string(let s) = value {
            if s == "body-hash" { return .bodyHash }
            problem(path, "expected \"body-hash\", { header: \"...\" } or { field: \"$.path\" }")
            return nil
        }
        guard let o = object(value, path, keys: ["header", "field"]) else { return nil }
        if let h = strings(o, "header", path) { return .header(h) }
        if let f = jsonPath(o, "field", path) { return .field(f) }
        if o["field"] == nil || o["field"]!.isNull { problem(path, "needs header or field") }
        return nil
    }
}
