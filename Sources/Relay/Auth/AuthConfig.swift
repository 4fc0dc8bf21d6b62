import Crypto
import Foundation

/// The auth schemes the engine itself knows: credentials anyone may use (Basic, Bearer, Token, an API key, OAuth2
/// client credentials) and Standard Webhooks signing. A provider's own scheme is registered by its adapter
/// (`AdapterRegistry.auth`).
public enum BuiltinAuth {
    public static let factories: [any OutboundAuthFactory] = [
        BasicAuthFactory(), BearerAuthFactory(), TokenAuthFactory(), APIKeyAuthFactory(), OAuth2Factory(),
        StandardWebhooksSigningFactory(),
    ]
}

extension ConfigReader {
    /// A destination's `auth` block: one scheme (`{ bearer: "${env:TOKEN}" }`) or several applied in order
    /// (`{ bearer: ..., standardWebhooks: { ... } }`). Nil when absent (or after reporting problems).
    public func outboundAuth(_ value: JSONValue?, _ path: String,
                             factories: [any OutboundAuthFactory] = BuiltinAuth.factories) -> (any OutboundAuth)? {
        guard let value, !value.isNull else { return nil }
        let names = factories.map(\.name)
        guard let o = object(value, path, keys: names) else { return nil }
        if o.isEmpty {
            problem(path, "names no scheme (one of: \(names.joined(separator: ", ")))")
            return nil
        }
        var parts: [any OutboundAuth] = []
        for f in factories {   // in the factories' order: static credentials first, signatures last
            guard let v = o[f.name] else { continue }
            if let a = f.make(v, path: Self.join(path, f.name), reader: self) { parts.append(a) }
        }
        guard parts.count == o.count else { return nil }
        return parts.count == 1 ? parts[0] : CombinedAuth(parts)
    }
}

extension ConfigReader {
    /// Mutual TLS: `tls: { certificate: "/run/secrets/client.pem", key: "/run/secrets/client.key",
    /// keyPassword: "${env:KEY_PASSWORD}" }` (PEM files, checked readable now).
    public func clientTLS(_ value: JSONValue?, _ path: String) -> ClientTLS? {
        guard let value, !value.isNull else { return nil }
        guard let o = object(value, path, keys: ["certificate", "key", "keyPassword"]) else { return nil }
        let cert = string(o, "certificate", path, required: true)
        let key = string(o, "key", path, required: true)
        var password: String?
        if o["keyPassword"] != nil { password = secret(o["keyPassword"], Self.join(path, "keyPassword"))?.value }
        var ok = true
        for (k, file) in [("certificate", cert), ("key", key)] {
            guard let file else { ok = false; continue }
            if !FileManager.default.isReadableFile(atPath: file) {
                problem(Self.join(path, k), "cannot read \(file)")
                ok = false
            }
        }
        guard ok, let cert, let key else { return nil }
        // What the handshake will need, checked now: the key opens (an encrypted key without its password would
        // otherwise fail every delivery), it matches the certificate, and the certificate is valid today.
        do {
            _ = try checkClientCertificate(certificatePEM: Array(FileManager.default.contents(atPath: cert) ?? Data()),
                                           keyPEM: String(decoding: FileManager.default.contents(atPath: key) ?? Data(), as: UTF8.self),
                                           password: password, now: Int64(Date().timeIntervalSince1970))
        } catch {
            let at: String
            switch error.part {
            case .certificate: at = "certificate"
            case .key: at = "key"
            case .keyPassword: at = o["keyPassword"] == nil ? "key" : "keyPassword"
            }
            problem(Self.join(path, at), error.description)
            return nil
        }
        return ClientTLS(certificatePath: cert, keyPath: key, keyPassword: password)
    }
}
