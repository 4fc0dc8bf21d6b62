import Crypto
import Foundation

/// What a sender adds to a request so that a source's `verify` accepts it: `relay send` signs test webhooks with
/// the source's own scheme, so nobody has to assemble an HMAC with openssl by hand.
extension Verifier {
    /// The headers, in order, that make a POST of `body` to `url` verify; nil when the scheme cannot be produced from the
    /// configuration alone. `given`: headers the sender sets itself; a message id among them (`webhook-id`,
    /// `X-GitHub-Delivery`) is the one signed and is not added again.
    public func senderHeaders(body: [UInt8], url: String, now: Date, given: [(String, String)] = []) -> [(String, String)]? {
        switch self {
        case is NoVerifier: return []
        case let v as StaticCredentialVerifier: return v.sign()
        case let v as HMACVerifier: return v.sign(body: body, url: url, now: now, given: given)
        default: return nil
        }
    }
}

extension StaticCredentialVerifier {
    func sign() -> [(String, String)]? {
        guard let first = accepted.first else { return nil }
        return [(header, prefix + String(decoding: first, as: UTF8.self))]
    }
}

extension HMACVerifier {
    func sign(body: [UInt8], url: String, now: Date, given: [(String, String)]) -> [(String, String)]? {
        guard let key = keys.first, let header = headers.first else { return nil }
        let timestamp = String(Int64(now.timeIntervalSince1970))
        let givenID = given.first { g in idHeaders.contains { $0.caseInsensitiveCompare(g.0) == .orderedSame } }?.1
        let messageID = givenID ?? "msg_" + ByteEncoding.hex(SecureRandom.bytes(12))
        // The request target: the path and query of the URL (after the first `://` only: a query may hold a URL).
        let afterScheme = url.range(of: "://").map { String(url[$0.upperBound...]) } ?? url
        let target = afterScheme.firstIndex(of: "/").map { String(afterScheme[$0...]) } ?? "/"
        let uri: String = {
            guard let base = publicBaseURL else { return url }
            return (base.hasSuffix("/") ? String(base.dropLast()) : base) + target
        }()
        var message: [UInt8] = []
        for part in template {
            switch part {
            case .literal(let bytes): message.append(contentsOf: bytes)
            case .body: message.append(contentsOf: body)
            case .timestamp: message.append(contentsOf: Array(timestamp.utf8))
            case .id: message.append(contentsOf: Array(messageID.utf8))
            case .path: message.append(contentsOf: Array(target.utf8))
            case .uri: message.append(contentsOf: Array(uri.utf8))
            }
        }
        let mac = key.authenticate(message)
        let signature: String
        switch encoding {
        case .hex: signature = ByteEncoding.hex(mac)
        case .base64: signature = ByteEncoding.base64(mac)
        case .base64url: signature = ByteEncoding.base64URL(mac)
        }
        var out: [(String, String)] = []
        if let keyed {
            out.append((header, "\(keyed.timestampKey)=\(timestamp)\(keyed.separator)\(keyed.signatureKey)=\(signature)"))
        } else {
            out.append((header, prefix + signature))
            if needsTimestamp, let t = timestampHeaders.first { out.append((t, timestamp)) }
        }
        if let id = idHeaders.first, givenID == nil { out.append((id, messageID)) }
        return out
    }
}
