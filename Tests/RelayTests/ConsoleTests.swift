import Adapters
import Foundation
@testable import Relay
import Simulator
import Testing

/// The web console's files on the admin listener (`/ui`), the endpoints it added to the admin API, and the token
/// rules around both, over real HTTP. The console in a browser: Tests/interop/test_console.py.
@Suite("Console")
struct ConsoleTests {
    static let token = AdminTests.token
    static let destinationToken = "dest-" + UUID().uuidString

    static func relay(_ sink: Sink) throws -> RunningRelay {
        try RunningRelay(sources: DeliveryTests.sources, extra: """
            admin: { listen: "127.0.0.1:0", token: "${env:ADMIN_TOKEN}" },
            destinations: {
              "vendor": { adapter: "generic", url: "\(sink.baseURL)/hook?key=${env:DEST_TOKEN}",
                          headers: { "X-Api-Key": "${env:DEST_TOKEN}", "X-Trace": "t-${env:DEST_TOKEN}" },
                          auth: { bearer: "${env:DEST_TOKEN}" },
                          retry: { schedule: ["50ms"], jitter: "none" }, circuitBreaker: { failures: 2, cooldown: "1h" } },
            },
            routes: [ { from: "shop", to: ["vendor"] } ],
            """, environment: ["ADMIN_TOKEN": token, "DEST_TOKEN": destinationToken])
    }

    static func request(_ relay: RunningRelay, _ method: String, _ target: String, token: String? = nil,
                        headers: [(String, String)] = []) throws -> Response {
        var h = headers
        if let token { h.append(("Authorization", "Bearer \(token)")) }
        return try Client(port: relay.service.adminPort!).request(method, target, headers: h, body: method == "POST" ? [] : nil)
    }

    @Test("every file: its path, Content-Type, a strict CSP, nosniff, no-cache with an ETag; no token needed")
    func files() throws {
        let sink = try DeliveryTests.startSink()
        defer { sink.stop() }
        let relay = try Self.relay(sink)
        defer { relay.stop() }
        let types = ["/ui": "text/html; charset=utf-8", "/ui/": "text/html; charset=utf-8",
                     "/ui/app.js": "text/javascript; charset=utf-8", "/ui/app.css": "text/css; charset=utf-8",
                     "/ui/icon.svg": "image/svg+xml"]
        for (path, type) in types.sorted(by: { $0.key < $1.key }) {
            let r = try Self.request(relay, "GET", path)
            #expect(r.status == 200, "\(path): \(r)")
            #expect(r.header("Content-Type") == type, "\(path)")
            #expect(r.header("Content-Security-Policy") == Console.contentSecurityPolicy)
            #expect(r.header("X-Content-Type-Options") == "nosniff")
            #expect(r.header("X-Frame-Options") == "DENY" && r.header("Referrer-Policy") == "no-referrer")
            #expect(r.header("Cache-Control") == "no-cache")
            let etag = try #require(r.header("ETag"))
            #expect(r.body == Console.assets[path]!.body)
            // Revalidation: the same ETag is 304 without a body; another one gets the file.
            let cached = try Self.request(relay, "GET", path, headers: [("If-None-Match", etag)])
            #expect(cached.status == 304 && cached.body.isEmpty && cached.header("ETag") == etag)
            #expect(try Self.request(relay, "GET", path, headers: [("If-None-Match", "W/\(etag)")]).status == 304)
            #expect(try Self.request(relay, "GET", path, headers: [("If-None-Match", "\"other\"")]).status == 200)
        }
        let policy = Console.contentSecurityPolicy
        for directive in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'",
                          "frame-ancestors 'none'", "base-uri 'none'", "form-action 'none'"] {
            #expect(policy.contains(directive))
        }
        #expect(!policy.contains("unsafe"))
        // HEAD: the headers and length, no body.
        let head = try Self.request(relay, "HEAD", "/ui/app.js")
        #expect(head.status == 200 && head.header("Content-Length") == "\(Console.assets["/ui/app.js"]!.body.count)")
        #expect(head.body.isEmpty)
    }

    @Test("the page has no inline script or style, and the script builds the page as text (no innerHTML)")
    func noInlineCode() {
        let page = ConsoleAssets.index
        #expect(page.contains(#"<script src="/ui/app.js" defer></script>"#))
        #expect(page.components(separatedBy: "<script").count == 2, "one script element, with src")
        #expect(!page.contains("<style") && !page.contains("style=") && !page.contains(" on"))
        let code = ConsoleScript.source
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
            #expect(!code.contains(sink), "\(sink) in app.js")
        }
        #expect(code.contains("textContent"))
        #expect(code.contains("sessionStorage") && !code.contains("localStorage"))
    }

    @Test("unknown /ui paths are 404 (with the same headers); other methods 405; /ui is not a prefix of /uix")
    func notFound() throws {
        let sink = try DeliveryTests.startSink()
        defer { sink.stop() }
        let relay = try Self.relay(sink)
        defer { relay.stop() }
        for path in ["/ui/nothing", "/ui/app.js/x", "/ui//app.js", "/ui/../v1/events", "/ui/app.js%00", "/ui/index.html"] {
            let r = try Self.request(relay, "GET", path)
            #expect(r.status == 404, "\(path): \(r)")
            #expect(r.header("X-Content-Type-Options") == "nosniff" && r.header("Content-Security-Policy") != nil)
            #expect(r.header("Content-Type") == "application/json")
        }
        let post = try Self.request(relay, "POST", "/ui/", token: Self.token)
        #expect(post.status == 405 && post.header("Allow") == "GET, HEAD")
        // Outside /ui the API's rules hold: a token first, then 404.
        #expect(try Self.request(relay, "GET", "/uix").status == 401)
        #expect(try Self.request(relay, "GET", "/uix", token: Self.token).status == 404)
    }

    @Test("the token: the console's files and the probes need none and reveal nothing; every API call needs it")
    func tokenRules() throws {
        let sink = try DeliveryTests.startSink()
        defer { sink.stop() }
        let relay = try Self.relay(sink)
        defer { relay.stop() }
        for path in ["/v1/events", "/v1/destinations", "/v1/deliveries?state=dead", "/v1/deliveries/dlv_x/request",
                     "/v1/routes", "/metrics", "/v1/events/evt_x"] {
            for token in [nil, "wrong"] {
                let r = try Self.request(relay, "GET", path, token: token)
                #expect(r.status == 401, "\(path) with \(token ?? "no token"): \(r)")
                #expect(r.header("WWW-Authenticate") == "Bearer" && r.header("X-Content-Type-Options") == "nosniff")
                #expect(r.json?.objectValue.map { Set($0.keys) } == ["error", "reason"])
            }
        }
        #expect(try Self.request(relay, "POST", "/v1/destinations/vendor/pause").status == 401)
        #expect(try Self.request(relay, "POST", "/v1/replay", token: "wrong").status == 401)
        // /healthz and /readyz answer anyone, and only with their status.
        for token in [nil, "wrong", Self.token] {
            let health = try Self.request(relay, "GET", "/healthz", token: token)
            #expect(health.status == 200 && health.json == .object(["status": .string("ok")]))
            let ready = try Self.request(relay, "GET", "/readyz", token: token)
            #expect(ready.status == 200 && ready.json == .object(["status": .string("ready")]))
        }
        #expect(try Self.request(relay, "POST", "/readyz").status == 405)
        #expect(try Self.request(relay, "GET", "/ui/").status == 200)
        // With the token: the API answers, and its answers are never cached nor sniffed.
        let events = try Self.request(relay, "GET", "/v1/events", token: Self.token)
        #expect(events.status == 200 && events.header("Cache-Control") == "no-store")
    }

    @Test("a browser page of another site cannot post to the admin API (Origin); the console's own origin can")
    func crossSite() throws {
        let sink = try DeliveryTests.startSink()
        defer { sink.stop() }
        let relay = try Self.relay(sink)
        defer { relay.stop() }
        let port = relay.service.adminPort!
        let foreign = try Self.request(relay, "POST", "/v1/destinations/vendor/pause", token: Self.token,
                                       headers: [("Origin", "http://evil.example")])
        #expect(foreign.status == 403)
        #expect(try relay.store.pausedDestinations().isEmpty)
        let own = try Self.request(relay, "POST", "/v1/destinations/vendor/pause", token: Self.token,
                                   headers: [("Origin", "http://127.0.0.1:\(port)")])
        #expect(own.status == 200)
        #expect(try relay.store.pausedDestinations() == ["vendor"])
        // Reads are not refused (a browser cannot read them across origins anyway: no CORS headers).
        #expect(try Self.request(relay, "GET", "/v1/events", token: Self.token, headers: [("Origin", "http://evil.example")]).status == 200)
    }

    @Test("GET /v1/destinations: adapter, auth scheme, pause, circuit, queue depth, oldest age and dead letters")
    func destinations() throws {
        let sink = try DeliveryTests.startSink([SinkFault(times: 100, action: .status(503))])
        defer { sink.stop() }
        let relay = try Self.relay(sink)
        defer { relay.stop() }
        let event = try DeliveryTests.post(relay, "ORD-1", "shipped")
        _ = try DeliveryTests.waitForState(relay, event, "vendor", "dead")
        #expect(try Self.request(relay, "POST", "/v1/destinations/vendor/pause", token: Self.token).status == 200)
        _ = try DeliveryTests.post(relay, "ORD-2", "shipped")
        let r = try Self.request(relay, "GET", "/v1/destinations", token: Self.token)
        #expect(r.status == 200)
        let d = try #require(r.json?["destinations"]?.arrayValue?.first)
        #expect(d["name"]?.stringValue == "vendor" && d["adapter"]?.stringValue == "generic" && d["auth"]?.stringValue == "bearer")
        #expect(d["paused"] == .bool(true))
        // Two failed attempts opened the breaker (it probes in an hour).
        try DeliveryTests.eventually("the breaker saved open") { try relay.store.circuits()["vendor"]?.state == .open }
        let open = try #require(try Self.request(relay, "GET", "/v1/destinations", token: Self.token).json?["destinations"]?.arrayValue?.first)
        #expect(open["circuit"]?["state"]?.stringValue == "open")
        #expect(open["circuit"]?["consecutiveFailures"]?.numberValue == 2)
        let reopens = try #require(open["circuit"]?["reopensAt"]?.stringValue)
        #expect(AdminAPI.rfc3339(reopens).map { $0.timeIntervalSinceNow > 3000 } == true)
        #expect(d["queue"]?["depth"]?.numberValue == 1 && d["queue"]?["dead"]?.numberValue == 1)
        #expect((d["queue"]?["oldestAgeSeconds"]?.numberValue ?? -1) >= 0)
        #expect(!r.text.contains(Self.destinationToken))
        #expect(try Self.request(relay, "POST", "/v1/destinations", token: Self.token).status == 405)
    }

    @Test("GET /v1/deliveries/{id}/request: the request as sent, its credentials masked wherever they appear")
    func outboundRequest() throws {
        let sink = try DeliveryTests.startSink([SinkFault(times: 100, action: .status(503))])
        defer { sink.stop() }
        let relay = try Self.relay(sink)
        defer { relay.stop() }
        let event = try DeliveryTests.post(relay, "ORD-1", "shipped")
        let delivery = try DeliveryTests.waitForState(relay, event, "vendor", "dead")
        // The stand-in really got the secret in each place.
        let sent = try #require(sink.requests(path: "/hook").first)
        #expect(sent.headers["Authorization"] == "Bearer \(Self.destinationToken)")
        #expect(sent.headers["X-Api-Key"] == Self.destinationToken && sent.query == "key=\(Self.destinationToken)")
        let r = try Self.request(relay, "GET", "/v1/deliveries/\(delivery.id)/request", token: Self.token)
        #expect(r.status == 200, "\(r)")
        #expect(!r.text.contains(Self.destinationToken), "\(r.text)")
        let request = try #require(r.json?["request"])
        #expect(request["method"]?.stringValue == "POST")
        #expect(request["url"]?.stringValue == "\(sink.baseURL)/hook?key=***")
        var headers: [String: String] = [:]
        for pair in request["headers"]?.arrayValue ?? [] {
            if let p = pair.arrayValue, p.count == 2 { headers[p[0].stringValue ?? ""] = p[1].stringValue }
        }
        #expect(headers["Authorization"] == "Bearer ***")
        #expect(headers["X-Api-Key"] == "***")
        #expect(headers["X-Trace"] == "t-***")
        #expect(headers["Idempotency-Key"] == delivery.id)
        #expect(request["body"]?.stringValue?.contains("ORD-1") == true)
        #expect(r.json?["deliveryId"]?.stringValue == delivery.id && r.json?["step"]?.numberValue == 0)
        #expect(try Self.request(relay, "GET", "/v1/deliveries/dlv_nothing/request", token: Self.token).status == 404)
        #expect(try Self.request(relay, "POST", "/v1/deliveries/\(delivery.id)/request", token: Self.token).status == 405)
    }

    @Test("RequestPreview.mask: credential headers keep their scheme word; known secrets go from everything else")
    func mask() {
        #expect(RequestPreview.mask("Authorization", "Bearer abc", force: false, redactions: []) == "Bearer ***")
        #expect(RequestPreview.mask("authorization", "abcdef", force: false, redactions: []) == "***")
        #expect(RequestPreview.mask("X-Signature", "v1,xyz", force: false, redactions: []) == "***")
        #expect(RequestPreview.mask("Idempotency-Key", "dlv_1", force: false, redactions: []) == "dlv_1")
        #expect(RequestPreview.mask("X-Custom", "OAuth sig", force: true, redactions: []) == "OAuth ***")
        #expect(RequestPreview.mask("X-Note", "a-s3cret-b", force: false, redactions: ["s3cret", "ab"]) == "a-***-b")
        let preview = RequestPreview(OutboundRequest(method: "PUT", url: "https://x.example/p?k=s3cret", headers: [("X-A", "1")],
                                                     body: Array(#"{"k":"s3cret"}"#.utf8)), redactions: ["s3cret"], note: "n")
        #expect(preview.text == "PUT https://x.example/p?k=***\nX-A: 1\n(n)\n\n{\"k\":\"***\"}")
    }
}
