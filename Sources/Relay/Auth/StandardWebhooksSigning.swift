import Crypto
import Foundation

/// Signs every outbound request the Standard Webhooks way (https://www.standardwebhooks.com), so that a receiver
/// using any Standard Webhooks library (PyPI `standardwebhooks`, `svix`...) can verify it:
///
///     webhook-id: msg_dlv_...                      (the same on every attempt of one delivery)
///     webhook-timestamp: 1735689600                (Unix seconds, at each attempt)
///     webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")> [v1,<...> ...]
///
/// One `v1,` entry per configured secret, space-separated, so that a receiver holding either the new or the old
/// secret accepts the request while a secret is rotated. Each secret is `whsec_<base64 key>`; the HMAC key is the
/// decoded bytes, prepared once (`HMACKey`).
public struct StandardWebhooksSigning: OutboundAuth {
    public var scheme: String { "standard-webhooks" }
    let keys: [HMACKey]

    /// `keys`: the decoded HMAC keys, in the order their signatures are listed.
    public init(keys: [[UInt8]]) {
        precondition(!keys.isEmpty, "Standard Webhooks signing needs at least one key")
        self.keys = keys.map { HMACKey(.sha256, key: $0) }
    }

    /// The `webhook-id` of a request: its `Idempotency-Key` (one per delivery, the same on every retry) or else the
    /// delivery id, prefixed `msg_` unless it already starts so.
    public static func messageID(_ request: OutboundRequest, deliveryID: String) -> String {
        let key = request.headers.first { $0.0.caseInsensitiveCompare("Idempotency-Key") == .orderedSame }?.1
        let base = key.flatMap { $0.isEmpty ? nil : $0 } ?? deliveryID
        return base.hasPrefix("msg_") ? base : "msg_" + base
    }

    /// The `webhook-signature` value for `id`, `timestamp` and `body`: one `v1,<base64>` per key.
    public func signature(id: String, timestamp: Int64, body: [UInt8]) -> String {
        let message = Array("\(id).\(timestamp).".utf8) + body
        return keys.map { "v1," + ByteEncoding.base64($0.authenticate(message)) }.joined(separator: " ")
    }

    public func authorize(_ request: OutboundRequest, context: AuthContext,
                          done: @escaping @Sendable (Result<OutboundRequest, AuthError>) -> Void) {
        var r = request
        let id = Self.messageID(request, deliveryID: context.deliveryID)
        let timestamp = Int64(context.now.timeIntervalSince1970.rounded(.down))
        r.setHeader("webhook-id", id)
        r.setHeader("webhook-timestamp", String(timestamp))
        r.setHeader("webhook-signature", signature(id: id, timestamp: timestamp, body: request.body))
        done(.success(r))
    }
}

/// `auth: { standardWebhooks: { secrets: ["${env:WHSEC_NEW}", "${env:WHSEC_OLD}"] } }` (one secret or a list;
/// each `whsec_` followed by the base64 of the key).
public struct StandardWebhooksSigningFactory: OutboundAuthFactory {
    public init() {}
    public var name: String { "standardWebhooks" }
    public var signsRequest: Bool { true }
    public func make(_ value: JSONValue, path: String, reader r: ConfigReader) -> (any OutboundAuth)? {
        let before = r.problems.count
        guard let o = r.object(value, path, keys: ["secrets"]) else { return nil }
        let p = ConfigReader.join(path, "secrets")
        // One reference or a list of them, each with its own key path ("...secrets[1]").
        var items: [(JSONValue?, String)] = []
        switch o["secrets"] {
        case .array(let a)?:
            if a.isEmpty { r.problem(p, "needs at least one secret") }
            items = a.enumerated().map { ($0.element, ConfigReader.join(p, $0.offset)) }
        case let v:
            items = [(v, p)]
        }
        var keys: [[UInt8]] = []
        for (v, itemPath) in items {
            guard let s = r.secret(v, itemPath) else { continue }
            guard let key = Self.key(s.value) else {
                // The reference only, never the value.
                r.problem(itemPath, "\(s.reference) is not a Standard Webhooks secret (whsec_ followed by the base64 of the key)")
                continue
            }
            keys.append(key)
        }
        guard r.problems.count == before, !keys.isEmpty else { return nil }
        return StandardWebhooksSigning(keys: keys)
    }

    /// The key bytes of `whsec_<base64>` (padding optional); nil for anything else.
    static func key(_ secret: String) -> [UInt8]? {
        guard secret.hasPrefix("whsec_"), let key = ByteEncoding.fromBase64(String(secret.dropFirst(6))),
              !key.isEmpty else { return nil }
        return key
    }
}
