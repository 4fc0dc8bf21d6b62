import Foundation

/// An outbound request fit to show a person (`relay translate`, the admin API's `GET /v1/deliveries/{id}/request`
/// and so the console): credential headers keep their scheme word and show `***`, and every credential value the
/// destination's auth knows (`OutboundAuth.redactions`) is blanked out of the URL, the other headers and the body.
public struct RequestPreview: Sendable {
    public var method: String
    public var url: String
    public var headers: [(name: String, value: String)]
    public var body: String
    /// Why the credentials are not shown applied (a token scheme adds them when the request is sent).
    public var note: String?

    /// `request` masked: headers named in `credentialHeaders` (lowercased: those the auth added) are always
    /// masked, and so are those whose name says they carry a credential (`mask`).
    public init(_ request: OutboundRequest, credentialHeaders: Set<String> = [], redactions: [String] = [], note: String? = nil) {
        method = request.method
        url = Self.redact(request.url, redactions)
        headers = request.headers.map { (k, v) in
            (k, Self.mask(k, v, force: credentialHeaders.contains(k.lowercased()), redactions: redactions))
        }
        body = Self.redact(String(decoding: request.body, as: UTF8.self), redactions)
        self.note = note
    }

    /// A header value fit to show: a credential becomes its scheme word and `***`; other values lose any of the
    /// `redactions` (values under 4 characters are left alone).
    public static func mask(_ name: String, _ value: String, force: Bool, redactions: [String]) -> String {
        let n = name.lowercased()
        let credential = force || ["authorization", "proxy-authorization", "cookie"].contains(n)
            || (n != "idempotency-key" && ["token", "secret", "password", "key", "signature", "auth", "session"].contains { n.contains($0) })
        if credential {
            let words = value.split(separator: " ", maxSplits: 1)
            if words.count == 2, ["basic", "bearer", "token", "oauth", "hmac", "digest"].contains(words[0].lowercased()) {
                return "\(words[0]) ***"
            }
            return "***"
        }
        return redact(value, redactions)
    }

    static func redact(_ text: String, _ redactions: [String]) -> String {
        var shown = text
        for s in redactions where s.count >= 4 { shown = shown.replacingOccurrences(of: s, with: "***") }
        return shown
    }

    /// `METHOD URL`, one `Name: value` line per header, the note in parentheses, then a blank line and the body.
    public var text: String {
        var out = "\(method) \(url)\n"
        for (k, v) in headers { out += "\(k): \(v)\n" }
        if let note { out += "(\(note))\n" }
        if !body.isEmpty { out += "\n" + body }
        return out
    }

    /// `{"method", "url", "headers": [[name, value]...], "body", "note"?}`.
    public var json: JSONValue {
        var o: [String: JSONValue] = [
            "method": .string(method), "url": .string(url), "body": .string(body),
            "headers": .array(headers.map { .array([.string($0.name), .string($0.value)]) }),
        ]
        if let note { o["note"] = .string(note) }
        return .object(o)
    }
}
