import Foundation
import Relay

/// `adapter: "generic"` as a destination: sends the canonical event (or the body as received) to a URL.
///
/// ```json5
/// "vendor-hook": { adapter: "generic", url: "https://vendor.example.com/hooks/relay", method: "POST",
///                  headers: { Authorization: "Bearer ${env:VENDOR_TOKEN}" }, body: "canonical" }   // or "raw"
/// ```
/// Every attempt carries `Idempotency-Key: <delivery id>`. (URL and body templates arrive with the providers issue.)
public struct GenericDestination: DestinationAdapter {
    public enum Body: String, Sendable { case canonical, raw }
    public var url: String
    public var method: String
    public var headers: [(String, String)]
    public var body: Body

    public func translate(_ event: CanonicalEvent, context: DeliveryContext) throws(TranslateError) -> OutboundRequest {
        var headers = self.headers
        let bytes: [UInt8]
        switch body {
        case .canonical:
            bytes = Array(event.jsonText(includeRaw: true).utf8)
            headers.append(("Content-Type", "application/json"))
        case .raw:
            bytes = event.raw?.bytes ?? []
            headers.append(("Content-Type", event.raw?.contentType ?? "application/octet-stream"))
        }
        return OutboundRequest(method: method, url: url, headers: headers, body: bytes)
    }
}

public struct GenericDestinationFactory: DestinationAdapterFactory {
    public init() {}
    public var name: String { "generic" }
    public var destinationKeys: [String] { ["url", "method", "headers", "body"] }

    public func makeDestination(name: String, config: [String: JSONValue], path: String,
                                reader r: ConfigReader) -> (any DestinationAdapter)? {
        guard let url = r.string(config, "url", path, required: true) else { return nil }
        if !(url.hasPrefix("http://") || url.hasPrefix("https://")) {
            r.problem(ConfigReader.join(path, "url"), "must be an http:// or https:// URL")
        }
        var headers: [(String, String)] = []
        let hp = ConfigReader.join(path, "headers")
        for (k, _) in (r.map(config["headers"], hp) ?? [:]).sorted(by: { $0.key < $1.key }) {
            if let v = r.string(r.map(config["headers"], hp) ?? [:], k, hp) { headers.append((k, v)) }
        }
        let body = r.choice(config, "body", path, ["canonical", "raw"]).flatMap(GenericDestination.Body.init) ?? .canonical
        return GenericDestination(url: url, method: (r.string(config, "method", path) ?? "POST").uppercased(),
                                  headers: headers, body: body)
    }
}
