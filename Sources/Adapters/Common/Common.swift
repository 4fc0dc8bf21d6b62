import Foundation
import Relay

/// What every provider's destination block shares: where it is (`baseURL`) and static extra `headers` (values are
/// templates; secrets as `${env:...}` / `${file:...}`).
public struct DestinationBasics: Sendable {
    public var baseURL: String
    public var headers: [(String, Template)]

    /// Keys read here, for a factory's `destinationKeys`.
    public static let keys = ["baseURL", "headers"]

    /// Reads `baseURL` (default `defaultBaseURL`; required when that is nil) and `headers`.
    public init?(_ r: ConfigReader, _ config: [String: JSONValue], _ path: String, defaultBaseURL: String?) {
        let given = r.string(config, "baseURL", path, required: defaultBaseURL == nil)
        guard var base = given ?? defaultBaseURL else { return nil }
        if !(base.hasPrefix("http://") || base.hasPrefix("https://")) || URLComponents(string: base)?.host == nil {
            r.problem(ConfigReader.join(path, "baseURL"), "must be an http:// or https:// URL")
            return nil
        }
        while base.hasSuffix("/") { base.removeLast() }
        baseURL = base
        headers = []
        let hp = ConfigReader.join(path, "headers")
        if let h = r.map(config["headers"], hp) {
            for k in h.keys.sorted() {
                if let t = r.template(h[k]!, ConfigReader.join(hp, k)) { headers.append((k, t)) }
            }
        }
    }

    /// The static headers rendered for one event.
    public func renderedHeaders(_ scope: TemplateScope) throws(TranslateError) -> [(String, String)] {
        var out: [(String, String)] = []
        for (k, t) in headers { out.append((k, try t.render(scope))) }
        return out
    }
}

public enum Wire {
    /// A JSON request: body written compactly with sorted keys, `Content-Type: application/json`.
    public static func json(_ method: String, _ url: String, headers: [(String, String)], body: JSONValue) -> OutboundRequest {
        OutboundRequest(method: method, url: url,
                        headers: [("Content-Type", "application/json"), ("Accept", "application/json")] + headers,
                        body: Array(body.jsonString().utf8))
    }

    /// A form request (`application/x-www-form-urlencoded`), fields in the order given.
    public static func form(_ method: String, _ url: String, headers: [(String, String)], fields: [(String, String)]) -> OutboundRequest {
        OutboundRequest(method: method, url: url,
                        headers: [("Content-Type", "application/x-www-form-urlencoded"), ("Accept", "application/json")] + headers,
                        body: Array(formEncode(fields).utf8))
    }

    public static func formEncode(_ fields: [(String, String)]) -> String {
        fields.map { Template.escape($0.0, .form) + "=" + Template.escape($0.1, .form) }.joined(separator: "&")
    }

    /// A response body as JSON, if it is JSON.
    public static func json(_ response: OutboundResponse) -> JSONValue? {
        guard !response.body.isEmpty else { return nil }
        return try? JSONParser.parse(response.body)
    }

    /// A request body as JSON (stand-ins).
    public static func json(_ request: HTTPRequest) -> JSONValue? {
        guard !request.body.isEmpty else { return nil }
        return try? JSONParser.parse(request.body)
    }

    /// A request body as form fields (stand-ins); nil when it is not form encoding.
    public static func form(_ request: HTTPRequest) -> [(String, String)]? { Ingest.parseForm(request.body) }

    /// The media type of a request, lowercased, without parameters.
    public static func mediaType(_ request: HTTPRequest) -> String {
        (request.headers["Content-Type"] ?? "").split(separator: ";").first.map {
            $0.trimmingCharacters(in: .whitespaces).lowercased()
        } ?? ""
    }

    /// A JSON answer (stand-ins).
    public static func answer(_ status: Int, _ body: JSONValue, headers: [(String, String)] = []) -> HTTPResponse {
        HTTPResponse.json(status, body.jsonString(), headers: headers)
    }
}
