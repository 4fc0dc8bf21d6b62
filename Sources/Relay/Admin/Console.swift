import Crypto
import Foundation

/// The web console on the admin listener (`/ui`): static HTML, CSS and JavaScript compiled into the binary
/// (`ConsoleAssets.swift`, `ConsoleScript.swift`), no build step and nothing fetched from elsewhere. The page loads
/// without the admin token (it holds nothing but code); the script asks for the token when the API answers 401, keeps
/// it in the tab's `sessionStorage` and sends it as `Authorization: Bearer` on every API call, so the API's own token
/// rules are the console's. Everything it shows comes from the admin JSON API and `/metrics`, and is put into the
/// page as text (`textContent`), never as HTML.
///
/// Every answer carries a strict Content-Security-Policy (scripts, styles and images from the listener itself only,
/// no inline script or style, no framing, no form posts), `X-Content-Type-Options: nosniff`, no referrer, and
/// `Cache-Control: no-cache` with an `ETag` (the browser revalidates, and a binary with other assets answers 200).
enum Console {
    struct Asset: Sendable {
        let contentType: String
        let body: [UInt8]
        let etag: String

        init(_ contentType: String, _ text: String) {
            self.contentType = contentType
            body = Array(text.utf8)
            etag = "\"" + String(ByteEncoding.hex(Digest.sha256(body)).prefix(20)) + "\""
        }
    }

    /// The path prefix the console is served under.
    static let root = "/ui"

    static let assets: [String: Asset] = {
        let index = Asset("text/html; charset=utf-8", ConsoleAssets.index)
        return [
            "/ui": index,
            "/ui/": index,
            "/ui/app.js": Asset("text/javascript; charset=utf-8", ConsoleScript.source),
            "/ui/app.css": Asset("text/css; charset=utf-8", ConsoleAssets.style),
            "/ui/icon.svg": Asset("image/svg+xml", ConsoleAssets.icon),
        ]
    }()

    static let contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        + "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    /// On every console answer, found or not.
    static let headers: [(String, String)] = [
        ("Content-Security-Policy", contentSecurityPolicy),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
        ("Cross-Origin-Opener-Policy", "same-origin"),
        ("Cross-Origin-Resource-Policy", "same-origin"),
    ]

    /// Whether `path` is the console's (`/ui` or below it), whatever the method.
    static func owns(_ path: String) -> Bool { path == root || path.hasPrefix(root + "/") }

    /// The answer to a request for one of the console's paths (`owns(path)`): the asset (GET, HEAD), 304 when
    /// `If-None-Match` names its ETag, 405 for another method, 404 for a path that is no asset.
    static func answer(_ request: HTTPRequest) -> HTTPResponse {
        guard let asset = assets[request.path] else {
            return HTTPResponse.error(404, "not found", ["reason": "no such page in the console; it starts at /ui/"])
                .adding(headers: headers + [("Cache-Control", "no-store")])
        }
        guard request.method == "GET" || request.method == "HEAD" else {
            return HTTPResponse.error(405, "method not allowed").adding(headers: headers + [("Allow", "GET, HEAD")])
        }
        let cache = [("ETag", asset.etag), ("Cache-Control", "no-cache")]
        if let given = request.headers["If-None-Match"], matches(given, asset.etag) {
            return HTTPResponse(status: 304, headers: headers + cache)
        }
        return HTTPResponse(status: 200, headers: [("Content-Type", asset.contentType)] + headers + cache,
                            body: asset.body)   // for HEAD, libmicrohttpd sends the length and not the body
    }

    /// `If-None-Match`: `*`, or a list of (possibly weak) entity tags.
    static func matches(_ header: String, _ etag: String) -> Bool {
        header.split(separator: ",").contains { part in
            let t = part.trimmingCharacters(in: .whitespaces)
            return t == "*" || t == etag || t == "W/" + etag
        }
    }
}
