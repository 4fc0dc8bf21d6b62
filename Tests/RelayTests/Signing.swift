import Crypto
import Foundation
import Testing

/// A configured secret: the text the relay reads from `${env:...}` and the HMAC key it stands for.
struct TestSecret: Sendable {
    let text: String
    let key: [UInt8]
}

/// One built-in verification preset, signed here independently of the relay's verifier: from each provider's
/// documented scheme, with the Crypto module's HMAC.
enum Preset: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case standardWebhooks = "standard-webhooks"
    case stripe, github, shopify, slack, punchh

    var testDescription: String { rawValue }

    /// Schemes that sign a timestamp (and so refuse stale requests).
    var hasTimestamp: Bool { self == .standardWebhooks || self == .stripe || self == .slack }

    /// Schemes whose signature header itself carries several signatures (rotation on the sender's side).
    var nativeMultiSignature: Bool { self == .standardWebhooks || self == .stripe }

    /// A new random secret in the form this preset configures it.
    func makeSecret() -> TestSecret {
        switch self {
        case .standardWebhooks:
            let key = SecureRandom.bytes(32)
            return TestSecret(text: "whsec_" + ByteEncoding.base64(key), key: key)
        default:
            let text = randomSecret("\(rawValue)_")
            return TestSecret(text: text, key: Array(text.utf8))
        }
    }

    /// What a sender signs and sends.
    struct Message: Sendable {
        var body: [UInt8]
        var timestamp: Int = Int(Date().timeIntervalSince1970)
        var id: String = "msg_" + ByteEncoding.hex(SecureRandom.bytes(6))
        /// The absolute URL posted to (Punchh signs it).
        var uri: String = ""
    }

    /// A JSON body carrying the event-id fields every preset may deduplicate on.
    static func body(_ n: Int = 1, extra: String = "") -> [UInt8] {
        let id = ByteEncoding.hex(SecureRandom.bytes(4))
        return Array("{\"id\":\"evt_\(id)\",\"event_id\":\"Ev\(id)\",\"content_id\":\"c\(id)\",\"n\":\(n)\(extra)}".utf8)
    }

    /// The idempotency key the relay should store for a message of this preset.
    func expectedKey(_ m: Message) -> String? {
        guard let json = try? JSONSerialization.jsonObject(with: Data(m.body)) as? [String: Any] else { return nil }
        switch self {
        case .standardWebhooks, .github, .shopify: return m.id
        case .stripe: return json["id"] as? String
        case .slack: return json["event_id"] as? String
        case .punchh: return json["content_id"] as? String
        }
    }

    /// The headers that sign `m`, one signature per key (several keys give a multi-signature header: natively for
    /// standard-webhooks and Stripe, with a configured `separator: ","` for the others).
    func headers(_ m: Message, keys: [[UInt8]], signedTimestamp: Int? = nil) -> [(String, String)] {
        let ts = String(signedTimestamp ?? m.timestamp)
        func mac(_ key: [UInt8], _ message: [UInt8]) -> [UInt8] { HMAC.authenticate(.sha256, key: key, message: message) }
        switch self {
        case .standardWebhooks:
            let content = Array("\(m.id).\(ts).".utf8) + m.body
            let sigs = keys.map { "v1," + ByteEncoding.base64(mac($0, content)) }
            return [("webhook-id", m.id), ("webhook-timestamp", String(m.timestamp)),
                    ("webhook-signature", sigs.joined(separator: " "))]
        case .stripe:
            let content = Array("\(ts).".utf8) + m.body
            let sigs = keys.map { "v1=" + ByteEncoding.hex(mac($0, content)) }
            return [("Stripe-Signature", (["t=\(m.timestamp)"] + sigs).joined(separator: ","))]
        case .github:
            let sigs = keys.map { "sha256=" + ByteEncoding.hex(mac($0, m.body)) }
            return [("X-Hub-Signature-256", sigs.joined(separator: ",")), ("X-GitHub-Delivery", m.id),
                    ("X-GitHub-Event", "push")]
        case .shopify:
            let sigs = keys.map { ByteEncoding.base64(mac($0, m.body)) }
            return [("X-Shopify-Hmac-SHA256", sigs.joined(separator: ",")), ("X-Shopify-Webhook-Id", m.id),
                    ("X-Shopify-Topic", "orders/create")]
        case .slack:
            let content = Array("v0:\(ts):".utf8) + m.body
            let sigs = keys.map { "v0=" + ByteEncoding.hex(mac($0, content)) }
            return [("X-Slack-Request-Timestamp", String(m.timestamp)), ("X-Slack-Signature", sigs.joined(separator: ","))]
        case .punchh:
            let content = Array(m.uri.utf8) + m.body
            let sigs = keys.map { "hmac " + ByteEncoding.hex(mac($0, content)) }
            return [("Authorization", sigs.joined(separator: ","))]
        }
    }
}
