import Adapters
import Crypto
import Foundation
@testable import Relay
import Simulator
import Synchronization
import Testing

// MARK: - Helpers

/// Keys made by the openssl CLI once per run: RSA 2048 (PKCS#8), EC P-256 as SEC1 (with an `EC PARAMETERS` block
/// first, as `openssl ecparam -genkey` writes it) and as PKCS#8, and ones JWS must refuse.
struct TestKeys: Sendable {
    let dir: TempDir
    var rsa: String { dir.file("rsa.pem") }
    var rsaPublic: String { dir.file("rsa.pub.pem") }
    var ecSEC1: String { dir.file("ec-sec1.pem") }
    var ecPKCS8: String { dir.file("ec-pkcs8.pem") }
    var ecPublic: String { dir.file("ec.pub.pem") }
    var rsa1024: String { dir.file("rsa1024.pem") }
    var p384: String { dir.file("p384.pem") }

    static let shared: Result<TestKeys, TestFailure> = {
        do {
            let dir = try TempDir("relay-jws-keys")
            let k = TestKeys(dir: dir)
            try openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", k.rsa])
            try openssl(["pkey", "-in", k.rsa, "-pubout", "-out", k.rsaPublic])
            try openssl(["ecparam", "-name", "prime256v1", "-genkey", "-out", k.ecSEC1])
            try openssl(["pkcs8", "-topk8", "-nocrypt", "-in", k.ecSEC1, "-out", k.ecPKCS8])
            try openssl(["pkey", "-in", k.ecSEC1, "-pubout", "-out", k.ecPublic])
            try openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", k.rsa1024])
            try openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out", k.p384])
            return .success(k)
        } catch let e as TestFailure {
            return .failure(e)
        } catch {
            return .failure(TestFailure("\(error)"))
        }
    }()

    static func get() throws -> TestKeys { try shared.get() }

    /// Runs the openssl CLI; throws with its output when it fails.
    @discardableResult
    static func openssl(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["openssl"] + arguments
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let output = String(decoding: data, as: UTF8.self)
        return (p.terminationStatus, output)
    }
}

/// A server that answers with `responder`, but holds the answers to token requests (paths ending `/token`) until
/// `open()`: every delivery that wants a token meanwhile has to wait for the one request in flight.
final class GatedTokenServer: Sendable {
    final class Gate: Sendable {
        let state = Mutex<(open: Bool, held: [(HTTPRequest, any HTTPResponder)], requests: Int)>((false, [], 0))
    }
    let gate = Gate()
    let server: HTTPServer
    let responder: any SinkResponder

    init(_ responder: any SinkResponder) throws {
        var o = HTTPServerOptions()
        o.host = "127.0.0.1"
        o.port = 0
        o.threads = 2
        let gate = self.gate
        self.responder = responder
        server = HTTPServer(options: o) { request, reply in
            let held: Bool = gate.state.withLock { s in
                guard request.path.hasSuffix("/token") else { return false }
                s.requests += 1
                if s.open { return false }
                s.held.append((request, reply))
                return true
            }
            if !held { reply.respond(responder.answer(request)) }
        }
        try server.start()
    }

    var baseURL: String { "http://127.0.0.1:\(server.port)" }
    var tokenRequests: Int { gate.state.withLock { $0.requests } }

    func open() {
        let held = gate.state.withLock { s in
            s.open = true
            defer { s.held = [] }
            return s.held
        }
        for (request, reply) in held { reply.respond(responder.answer(request)) }
    }

    func stop() {
        open()
        server.shutdown(timeout: 2)
    }
}

extension SinkRequest {
    var bearer: String? {
        guard let a = headers["Authorization"], a.hasPrefix("Bearer ") else { return nil }
        return String(a.dropFirst(7))
    }
}

/// Sleeps until `seconds` after `start`.
private func sleepUntil(_ seconds: Double, after start: Date) {
    let wait = start.addingTimeInterval(seconds).timeIntervalSinceNow
    if wait > 0 { usleep(useconds_t(wait * 1e6)) }
}

// MARK: - Token auth over HTTP

@Suite("Token outbound auth (OAuth2, Capillary)")
struct TokenAuthTests {
    static let secret = "cs-" + ByteEncoding.hex(SecureRandom.bytes(12))
    static let env = ["OAUTH_SECRET": secret]

    static func oauth2Destination(_ api: String, tokenURL: String, extra: String = "", retry: String = "") -> String {
        """
        destinations: {
          "api": { adapter: "generic", url: "\(api)/orders", \(retry)
                   auth: { oauth2: { tokenURL: "\(tokenURL)", clientId: "relay", clientSecret: "${env:OAUTH_SECRET}" \(extra) } } },
        },
        routes: [ { from: "shop", to: ["api"] } ],
        """
    }

    @Test("a second 401 after the fresh token ends the attempt: one resend only, never a loop")
    func second401() throws {
        let endpoint = OAuth2TokenEndpoint(clients: ["relay": Self.secret])
        let tokens = try startStandIn(endpoint)
        let api = try DeliveryTests.startSink([SinkFault(path: "/orders", action: .status(401))])
        defer { tokens.stop(); api.stop() }
        let relay = try RunningRelay(sources: DeliveryTests.sources,
                                     extra: Self.oauth2Destination(api.baseURL, tokenURL: tokens.baseURL + "/token"),
                                     environment: Self.env)
        defer { relay.stop() }
        let id = try DeliveryTests.post(relay, "ORD-1", "shipped")
        let d = try DeliveryTests.waitForState(relay, id, "api", "dead")
        #expect(d.attempts == 1)
        #expect(api.requests(path: "/orders").count == 2, "the first send and one resend with a fresh token")
        #expect(tokens.requests(path: "/token").count == 2)
        let sent = api.requests(path: "/orders").map { $0.headers["Authorization"] ?? "" }
        #expect(sent.count == 2 && sent[0] != sent[1], "the resend carries the new token")
        #expect(try DeliveryTests.deliveryRow(relay.store, d.id).lastError == "HTTP 401")
    }

    @Test("100 deliveries queued at once to one oauth2 destination: exactly one token request, every delivery carries it")
    func singleFlight() throws {
        let endpoint = OAuth2TokenEndpoint(clients: ["relay": Self.secret])
        let api = try startStandIn(endpoint)
        defer { api.stop() }
        let tokens = try GatedTokenServer(endpoint)
        defer { tokens.stop() }
        let relay = try RunningRelay(sources: DeliveryTests.sources,
                                     extra: Self.oauth2Destination(api.baseURL, tokenURL: tokens.baseURL + "/token"),
                                     environment: Self.env)
        defer { relay.stop() }
        // The token answer is held until all 100 deliveries exist: they all want the token at once.
        let ids = try (0..<100).map { try DeliveryTests.post(relay, "ORD-\($0)", "shipped") }
        try DeliveryTests.eventually("the token request", timeout: 2) { tokens.tokenRequests >= 1 }
        usleep(100_000)
        tokens.open()
        for id in ids { try DeliveryTests.waitForState(relay, id, "api", "delivered") }
        #expect(tokens.tokenRequests == 1)
        #expect(endpoint.issuedTokens.count == 1)
        let requests = api.requests(path: "/orders")
        #expect(requests.count == 100)
        #expect(requests.allSatisfy { $0.status == 200 && $0.bearer == endpoint.issuedTokens.first })
        #expect(!relay.log.contains(Self.secret) && !relay.log.contains(endpoint.issuedTokens[0]))
    }

    @Test("expires_in 2 with refreshBefore 1s: refreshed before it expires (two token requests, no 401)")
    func refreshBeforeExpiry() throws {
        let endpoint = OAuth2TokenEndpoint(clients: ["relay": Self.secret], ttl: 2)
        let stand = try startStandIn(endpoint)
        defer { stand.stop() }
        let relay = try RunningRelay(sources: DeliveryTests.sources,
                                     extra: Self.oauth2Destination(stand.baseURL, tokenURL: stand.baseURL + "/token",
                                                                   extra: #", refreshBefore: "1s""#),
                                     environment: Self.env)
        defer { relay.stop() }
        let first = try DeliveryTests.post(relay, "ORD-1", "placed")
        try DeliveryTests.waitForState(relay, first, "api", "delivered")
        let t0 = try #require(stand.requests(path: "/token").first).receivedAt
        // 1.4 s: inside the refresh window (token 1 has 0.6 s left): sent with token 1 while token 2 is fetched.
        sleepUntil(1.4, after: t0)
        try DeliveryTests.waitForState(relay, try DeliveryTests.post(relay, "ORD-1", "shipped"), "api", "delivered")
        // 2.05 s: token 1 has expired; token 2 (fetched at ~1.4 s) is not due for a refresh until ~2.4 s.
        sleepUntil(2.05, after: t0)
        try DeliveryTests.waitForState(relay, try DeliveryTests.post(relay, "ORD-1", "delivered"), "api", "delivered")

        let tokenRequests = stand.requests(path: "/token")
        #expect(tokenRequests.count == 2)
        #expect(tokenRequests.count == 2 && DeliveryTests.seconds(tokenRequests[0], tokenRequests[1]) < 2,
                "the second token request came before the first token expired")
        let issued = endpoint.issuedTokens
        let calls = stand.requests(path: "/orders")
        #expect(calls.map(\.status) == [200, 200, 200], "no 401 seen")
        #expect(issued.count == 2 && calls.map(\.bearer) == [issued[0], issued[0], issued[1]])
        #expect(calls.count == 3 && calls[2].receivedAt.timeIntervalSince(t0) >= 2, "the last call came after token 1 expired")
    }

    @Test("401 once (revoked token): one new token request, the same delivery resent and delivered, one attempt")
    func refreshOn401() throws {
        let endpoint = OAuth2TokenEndpoint(clients: ["relay": Self.secret])
        let stand = try startStandIn(endpoint)
        defer { stand.stop() }
        let relay = try RunningRelay(sources: DeliveryTests.sources,
                                     extra: Self.oauth2Destination(stand.baseURL, tokenURL: stand.baseURL + "/token"),
                                     environment: Self.env)
        defer { relay.stop() }
        let first = try DeliveryTests.post(relay, "ORD-1", "placed")
        try DeliveryTests.waitForState(relay, first, "api", "delivered")
        endpoint.revokeAll()
        let second = try DeliveryTests.post(relay, "ORD-1", "shipped")
        let d = try DeliveryTests.waitForState(relay, second, "api", "delivered")

        let issued = endpoint.issuedTokens
        #expect(stand.requests(path: "/token").count == 2 && issued.count == 2)
        let calls = stand.requests(path: "/orders").filter { $0.headers["Idempotency-Key"] == d.id }
        #expect(calls.map(\.status) == [401, 200])
        #expect(calls.map(\.bearer) == issued.map { Optional($0) })
        #expect(Set(calls.map(\.bodyText)).count == 1, "the same request, resent")
        #expect(d.attempts == 1)
        let rows = try DeliveryTests.attempts(relay.store, d.id)
        #expect(rows.map(\.status) == [200])
        #expect(relay.log.contains("credentials refused: authorizing again"))
    }

    @Test("token endpoint 503: the delivery is retried, then delivered when it recovers")
    func tokenEndpointDown() throws {
        let endpoint = OAuth2TokenEndpoint(clients: ["relay": Self.secret])
        let stand = try startStandIn(endpoint, faults: [SinkFault(path: "/token", times: 2, action: .status(503))])
        defer { stand.stop() }
        let relay = try RunningRelay(sources: DeliveryTests.sources,
                                     extra: Self.oauth2Destination(stand.baseURL, tokenURL: stand.baseURL + "/token",
                                                                   retry: #"retry: { schedule: ["100ms", "100ms", "100ms"], jitter: "none" },"#),
                                     environment: Self.env)
        defer { relay.stop() }
        let id = try DeliveryTests.post(relay, "ORD-1", "shipped")
        let d = try DeliveryTests.waitForState(relay, id, "api", "delivered")
        #expect(d.attempts == 3)
        #expect(stand.requests(path: "/token").map(\.status) == [503, 503, 200])
        #expect(stand.requests(path: "/orders").map(\.status) == [200], "nothing reached the API without a token")
        let rows = try DeliveryTests.attempts(relay.store, d.id)
        #expect(rows.map(\.status) == [nil, nil, 200])
        for row in rows.prefix(2) {
            #expect(row.error?.contains("oauth2 auth: token endpoint \(stand.baseURL)/token answered HTTP 503") == true, "\(row)")
        }
    }

    @Test("invalid_client: retried on the schedule (a rotated secret is fixed in config), then dead with the endpoint's error; the secret nowhere")
    func invalidClient() throws {
        let endpoint = OAuth2TokenEndpoint(clients: ["relay": "the-right-secret"])
        let stand = try startStandIn(endpoint)
        defer { stand.stop() }
        for mode in ["basic", "body"] {
            let relay = try RunningRelay(sources: DeliveryTests.sources,
                                         extra: Self.oauth2Destination(stand.baseURL, tokenURL: stand.baseURL + "/token",
                                                                       extra: #", clientAuth: "\#(mode)""#,
                                                                       retry: #"retry: { schedule: ["100ms", "100ms"], jitter: "none" },"#),
                                         environment: Self.env)
            defer { relay.stop() }
            let id = try DeliveryTests.post(relay, "ORD-1", "shipped")
            let d = try DeliveryTests.waitForState(relay, id, "api", "dead")
            #expect(d.attempts == 3, "retried on the schedule: 100ms, 100ms")
            let row = try DeliveryTests.deliveryRow(relay.store, d.id)
            let reason = try #require(row.lastError)
            #expect(reason.contains("oauth2 auth: token endpoint \(stand.baseURL)/token answered HTTP 401: invalid_client (client authentication failed)"),
                    "\(reason)")
            #expect(!reason.contains(Self.secret))
            let rows = try DeliveryTests.attempts(relay.store, d.id)
            #expect(rows.allSatisfy { !($0.error ?? "").contains(Self.secret) })
            #expect(!relay.log.contains(Self.secret))
        }
        #expect(stand.requests(path: "/token").map(\.status) == Array(repeating: 401, count: 6))
        #expect(stand.requests(path: "/orders").isEmpty)
    }

    @Test("Capillary: token from the stand-in, fulfilment updates carry it; a revoked token is replaced once")
    func capillaryToken() throws {
        let cap = try startStandIn(CapillarySimulator(allowedStatuses: nil, credentials: ("cap-key-1", "cap-secret-77f1")))
        defer { cap.stop() }
        let simulator = try #require(cap.options.responder as? CapillarySimulator)
        let relay = try RunningRelay(sources: """
            "shop": { adapter: "generic", verify: { none: true }, type: "redemption.status_changed",
                      map: { subject: { transactionId: "$.tx", customerId: "$.member", rewardId: "$.reward" }, status: "$.state" },
                      statusMap: { "SHIPPED": "shipped", "DELIVERED": "delivered" } },
            """, extra: """
            destinations: {
              "capillary": { adapter: "capillary", baseURL: "\(cap.baseURL)",
                             statusMap: { shipped: "in-progress", delivered: "completed" },
                             auth: { capillaryToken: { url: "\(cap.baseURL)/v3/oauth/token/generate",
                                                       key: "${env:CAP_KEY}", secret: "${env:CAP_SECRET}" } } },
            },
            routes: [ { from: "shop", to: ["capillary"] } ],
            """, environment: ["CAP_KEY": "cap-key-1", "CAP_SECRET": "cap-secret-77f1"])
        defer { relay.stop() }
        func post(_ tx: Int, _ state: String) throws -> String {
            try expectAccepted(try relay.client.post("/v1/hooks/shop", json: """
                {"tx": \(tx), "member": 85076836, "reward": 177657, "state": "\(state)"}
                """))
        }
        for (tx, state) in [(1, "SHIPPED"), (2, "SHIPPED"), (1, "DELIVERED")] {
            try DeliveryTests.waitForState(relay, try post(tx, state), "capillary", "delivered")
        }
        let tokenPath = "/v3/oauth/token/generate"
        let tokenRequests = cap.requests(path: tokenPath)
        #expect(tokenRequests.count == 1)
        #expect(tokenRequests.first?.method == "POST" && tokenRequests.first?.headers["Content-Type"] == "application/json")
        #expect(try DeliveryTests.json(try #require(tokenRequests.first)) == .object(["key": .string("cap-key-1"), "secret": .string("cap-secret-77f1")]))
        let token = try #require(simulator.tokens.all.first)
        let updates = cap.requests(path: "/api_gateway/rewards/core/v1/management/transactions")
        #expect(updates.count == 3 && updates.allSatisfy { $0.status == 200 && $0.headers["X-CAP-API-OAUTH-TOKEN"] == token })

        simulator.tokens.revokeAll()
        let id = try post(3, "SHIPPED")
        let d = try DeliveryTests.waitForState(relay, id, "capillary", "delivered")
        #expect(d.attempts == 1)
        #expect(cap.requests(path: tokenPath).count == 2)
        let last = cap.requests(path: "/api_gateway/rewards/core/v1/management/transactions").suffix(2)
        #expect(last.map(\.status) == [401, 200])
        #expect(last.last?.headers["X-CAP-API-OAUTH-TOKEN"] != token)
        #expect(!relay.log.contains("cap-secret-77f1"))
    }

    @Test("configuration problems name the key path; inline secrets are refused; keys are checked when read")
    func configProblems() throws {
        let keys = try TestKeys.get()
        let notAKey = try keys.dir.write("not-a-key.pem", "hello\n")
        let ok = #"tokenURL: "https://auth.example/oauth/token", clientId: "relay""#
        let env = ["OAUTH_SECRET": "s", "CAP_KEY": "k", "CAP_SECRET": "s", "EC_PEM": (try? String(contentsOfFile: keys.ecSEC1, encoding: .utf8)) ?? ""]
        let p = "destinations.d.auth.oauth2"
        let cases: [(String, String)] = [
            (#"{ oauth2: { clientId: "relay", clientSecret: "${env:OAUTH_SECRET}" } }"#, "\(p).tokenURL: is required"),
            (#"{ oauth2: { tokenURL: "ftp://x/token", clientId: "relay", clientSecret: "${env:OAUTH_SECRET}" } }"#,
             #"\#(p).tokenURL: "ftp://x/token" is not an http:// or https:// URL"#),
            ("{ oauth2: { tokenURL: \"https://a.example/t\", clientSecret: \"${env:OAUTH_SECRET}\" } }", "\(p).clientId: is required"),
            ("{ oauth2: { \(ok), clientSecret: \"inline-s3cret\" } }", "\(p).clientSecret: secrets must be a reference"),
            ("{ oauth2: { \(ok) } }", "\(p).clientSecret: is required"),
            ("{ oauth2: { \(ok), clientSecret: \"${env:OAUTH_SECRET}\", clientAuth: \"jwt\" } }",
             #"\#(p).clientAuth: "jwt" is not one of: basic, body"#),
            ("{ oauth2: { \(ok), clientSecret: \"${env:OAUTH_SECRET}\", refreshBefore: \"soon\" } }", "\(p).refreshBefore:"),
            ("{ oauth2: { \(ok), clientSecret: \"${env:OAUTH_SECRET}\", tokenUrl: \"x\" } }", "\(p).tokenUrl: unknown key"),
            ("{ oauth2: { \(ok), assertion: { keyFile: \"\(keys.rsa)\", alg: \"HS256\" } } }",
             #"\#(p).assertion.alg: "HS256" is not one of: RS256, PS256, ES256"#),
            ("{ oauth2: { \(ok), assertion: { keyFile: \"\(keys.ecSEC1)\", alg: \"RS256\" } } }",
             "\(p).assertion.alg: RS256 needs an RSA key; the key is EC P-256"),
            ("{ oauth2: { \(ok), assertion: { keyFile: \"/nonexistent/client.pem\" } } }",
             "\(p).assertion.keyFile: cannot read /nonexistent/client.pem"),
            ("{ oauth2: { \(ok), assertion: { keyFile: \"\(notAKey)\" } } }", "\(p).assertion.keyFile: not a usable private key"),
            ("{ oauth2: { \(ok), assertion: { keyFile: \"\(keys.rsa1024)\" } } }", "\(p).assertion.keyFile: not a usable private key"),
            ("{ oauth2: { \(ok), assertion: { keyFile: \"\(keys.p384)\" } } }", "\(p).assertion.keyFile: not a usable private key"),
            ("{ oauth2: { \(ok), assertion: { alg: \"ES256\" } } }", "\(p).assertion: needs keyFile"),
            ("{ oauth2: { \(ok), assertion: { keyPem: \"-----BEGIN PRIVATE KEY-----\" } } }", "\(p).assertion.keyPem: secrets must be a reference"),
            ("{ oauth2: { \(ok), clientSecret: \"${env:OAUTH_SECRET}\", assertion: { keyPem: \"${env:EC_PEM}\" } } }",
             "\(p).clientSecret: not used with assertion"),
            (#"{ capillaryToken: { key: "${env:CAP_KEY}", secret: "${env:CAP_SECRET}" } }"#, "destinations.d.auth.capillaryToken.url: is required"),
            (#"{ capillaryToken: { url: "https://c.example/v3/oauth/token/generate", key: "${env:CAP_KEY}", secret: "${env:CAP_SECRET}", ttl: 5 } }"#,
             "destinations.d.auth.capillaryToken.ttl: unknown key"),
            (#"{ capillaryToken: { url: "c.example/v3/oauth/token/generate", key: "${env:CAP_KEY}", secret: "${env:CAP_SECRET}" } }"#,
             #"destinations.d.auth.capillaryToken.url: "c.example/v3/oauth/token/generate" is not an http:// or https:// URL"#),
            (#"{ capillaryToken: { url: "https://c.example/v3/oauth/token/generate", key: "k-inline", secret: "${env:CAP_SECRET}" } }"#,
             "destinations.d.auth.capillaryToken.key: secrets must be a reference"),
            (#"{ capillaryToken: { url: "https://c.example/v3/oauth/token/generate", key: "${env:CAP_KEY}", secret: "${env:NOPE}" } }"#,
             "destinations.d.auth.capillaryToken.secret: environment variable NOPE is not set"),
        ]
        for (block, want) in cases {
            let (auth, problems) = makeAuth(block, environment: env)
            #expect(auth == nil, "\(block)")
            #expect(problems.contains { $0.hasPrefix(want) }, "\(block): \(problems)")
            #expect(!problems.joined().contains("inline-s3cret") && !problems.joined().contains("k-inline"))
        }
        // Valid blocks: the key from a file or a reference, SEC1 or PKCS#8; alg from the key when absent.
        for block in ["{ oauth2: { \(ok), clientSecret: \"${env:OAUTH_SECRET}\", scope: [\"a\", \"b\"], audience: \"api\" } }",
                      "{ oauth2: { \(ok), assertion: { keyFile: \"\(keys.rsa)\", alg: \"PS256\", kid: \"k1\" } } }",
                      "{ oauth2: { \(ok), assertion: { keyFile: \"\(keys.ecPKCS8)\" } } }",
                      "{ oauth2: { \(ok), assertion: { keyPem: \"${env:EC_PEM}\", alg: \"ES256\" } } }",
                      #"{ capillaryToken: { url: "https://c.example/v3/oauth/token/generate", key: "${env:CAP_KEY}", secret: "${env:CAP_SECRET}", refreshBefore: "5m" } }"#] {
            let (auth, problems) = makeAuth(block, environment: env)
            #expect(problems.isEmpty && auth != nil, "\(block): \(problems)")
        }
    }

    @Test("the token request: Basic or body client authentication, scope and audience in the form")
    func tokenRequestShape() throws {
        let (a, problems) = makeAuth(#"{ oauth2: { tokenURL: "https://auth.example/oauth/token", clientId: "relay app", clientSecret: "${env:S}", scope: ["orders:write", "status"], audience: "https://api.example" } }"#,
                                     environment: ["S": "p@ss:w rd"])
        #expect(problems.isEmpty, "\(problems)")
        let basic = try #require(a as? OAuth2Auth).tokenRequest()
        #expect(basic.method == "POST" && basic.url == "https://auth.example/oauth/token")
        #expect(basic.headers.first { $0.0 == "Authorization" }?.1 == "Basic " + ByteEncoding.base64(Array("relay+app:p%40ss%3Aw+rd".utf8)))
        #expect(basic.headers.contains { $0 == ("Content-Type", "application/x-www-form-urlencoded") })
        #expect(String(decoding: basic.body, as: UTF8.self)
                == "grant_type=client_credentials&scope=orders%3Awrite+status&audience=https%3A%2F%2Fapi.example")
        let (b, _) = makeAuth(#"{ oauth2: { tokenURL: "https://auth.example/t", clientId: "relay", clientSecret: "${env:S}", clientAuth: "body" } }"#,
                              environment: ["S": "sec ret"])
        let body = try #require(b as? OAuth2Auth).tokenRequest()
        #expect(!body.headers.contains { $0.0 == "Authorization" })
        #expect(String(decoding: body.body, as: UTF8.self) == "grant_type=client_credentials&client_id=relay&client_secret=sec+ret")
    }

    @Test("private_key_jwt over HTTP: RS256, PS256 and ES256 assertions accepted by the stand-in; claims as RFC 7523 says")
    func privateKeyJWT() throws {
        let keys = try TestKeys.get()
        let client = try HTTPClient()
        defer { client.shutdown(timeout: 2) }
        for (file, publicFile, alg) in [(keys.rsa, keys.rsaPublic, "RS256"), (keys.rsa, keys.rsaPublic, "PS256"),
                                        (keys.ecSEC1, keys.ecPublic, "ES256"), (keys.ecPKCS8, keys.ecPublic, "ES256")] {
            let endpoint = OAuth2TokenEndpoint(assertionKey: try JWSVerifyingKey.load(path: publicFile))
            let stand = try startStandIn(endpoint)
            defer { stand.stop() }
            let (a, problems) = makeAuth("""
                { oauth2: { tokenURL: "\(stand.baseURL)/token", clientId: "relay-\(alg)", scope: "x",
                            assertion: { keyFile: "\(file)", alg: "\(alg)", kid: "key-1" } } }
                """)
            #expect(problems.isEmpty, "\(problems)")
            let auth = try #require(a)
            let before = Date().timeIntervalSince1970.rounded(.down)
            let signed = try authorized(auth, OutboundRequest(method: "PUT", url: stand.baseURL + "/orders"), client: client).get()
            #expect(signed.headers.first { $0.0 == "Authorization" }?.1 == "Bearer " + (endpoint.issuedTokens.first ?? "?"), "\(alg)")

            let request = try #require(stand.requests(path: "/token").first)
            #expect(request.status == 200, "\(alg): \(request)")
            let form = Dictionary(try #require(Ingest.parseForm(request.body)), uniquingKeysWith: { a, _ in a })
            #expect(form["grant_type"] == "client_credentials" && form["client_id"] == "relay-\(alg)" && form["scope"] == "x")
            #expect(form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            #expect(request.headers["Authorization"] == nil && form["client_secret"] == nil)
            let parts = try #require(form["client_assertion"]).split(separator: ".").map(String.init)
            #expect(parts.count == 3)
            let header = try JSONValue.parse(try #require(ByteEncoding.fromBase64URL(parts[0])))
            let claims = try JSONValue.parse(try #require(ByteEncoding.fromBase64URL(parts[1])))
            #expect(header == .object(["alg": .string(alg), "typ": .string("JWT"), "kid": .string("key-1")]))
            #expect(claims["iss"]?.stringValue == "relay-\(alg)" && claims["sub"]?.stringValue == "relay-\(alg)")
            #expect(claims["aud"]?.stringValue == stand.baseURL + "/token")
            let iat = try #require(claims["iat"]?.numberValue)
            #expect(iat >= before && iat <= before + 2 && claims["exp"]?.numberValue == iat + 60)
            #expect((claims["jti"]?.stringValue?.count ?? 0) >= 16)
            let signature = try #require(ByteEncoding.fromBase64URL(parts[2]))
            if alg == "ES256" { #expect(signature.count == 64) }

            // The stand-in refuses a replayed assertion and a tampered one.
            let replay = try Client(port: stand.port).post("/token", request.body, contentType: "application/x-www-form-urlencoded")
            #expect(replay.status == 401 && replay["error"] == "invalid_client" && replay["error_description"]?.contains("replay") == true)
        }
    }

    @Test("the stand-in: RFC 6749 errors, Basic challenge, the API refusing unknown, expired and revoked tokens")
    func standIn() throws {
        let endpoint = OAuth2TokenEndpoint(clients: ["relay": "sec ret"], ttl: 1)
        let stand = try startStandIn(endpoint)
        defer { stand.stop() }
        let c = Client(port: stand.port)
        func token(_ body: String, _ headers: [(String, String)] = []) throws -> Response {
            try c.post("/token", Array(body.utf8), headers: headers, contentType: "application/x-www-form-urlencoded")
        }
        let basic = [("Authorization", "Basic " + ByteEncoding.base64(Array("relay:sec+ret".utf8)))]
        let ok = try token("grant_type=client_credentials&scope=a", basic)
        #expect(ok.status == 200 && ok["token_type"] == "Bearer" && ok.json?["expires_in"] == .number(1) && ok["scope"] == "a")
        #expect(ok.header("Cache-Control") == "no-store")
        let issued = try #require(ok["access_token"])
        #expect(try token("grant_type=client_credentials&client_id=relay&client_secret=sec+ret").status == 200)
        let wrong = try token("grant_type=client_credentials", [("Authorization", "Basic " + ByteEncoding.base64(Array("relay:nope".utf8)))])
        #expect(wrong.status == 401 && wrong["error"] == "invalid_client" && wrong.header("WWW-Authenticate")?.hasPrefix("Basic") == true)
        #expect(try token("grant_type=password", basic)["error"] == "unsupported_grant_type")
        #expect(try token("scope=a", basic)["error"] == "invalid_request")
        #expect(try token("grant_type=client_credentials&client_id=relay&client_secret=sec+ret", basic)["error"] == "invalid_request")
        #expect(try token("grant_type=client_credentials")["error"] == "invalid_client")
        #expect(try c.post("/token", Array(#"{"grant_type":"client_credentials"}"#.utf8), headers: basic).status == 400)
        #expect(try c.get("/token").status == 405)
        #expect(try token("grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=a.b.c")["error_description"]?.contains("not enabled") == true)

        #expect(try c.request("PUT", "/orders", headers: [("Authorization", "Bearer " + issued)]).status == 200)
        let unknown = try c.request("PUT", "/orders", headers: [("Authorization", "Bearer sim_nope")])
        #expect(unknown.status == 401 && unknown["error"] == "invalid_token" && unknown.header("WWW-Authenticate")?.contains("invalid_token") == true)
        #expect(try c.request("PUT", "/orders").status == 401)
        #expect(endpoint.isValid(issued) && !endpoint.isValid(issued, at: Date().addingTimeInterval(1.5)), "expires after its ttl")
        endpoint.revokeAll()
        #expect(try c.request("PUT", "/orders", headers: [("Authorization", "Bearer " + issued)]).status == 401)
        #expect(endpoint.tokenRequests == 9)
    }
}

// MARK: - The token cache

@Suite("Token cache")
struct TokenCacheTests {
    /// A clock the test moves.
    final class Clock: Sendable {
        let now = Mutex(100.0)
        func advance(_ s: Double) { now.withLock { $0 += s } }
        var read: @Sendable () -> Double { { [self] in now.withLock { $0 } } }
    }

    /// A fetch the test completes by hand.
    final class PendingFetches: Sendable {
        let pending = Mutex<[@Sendable (Result<IssuedToken, AuthError>) -> Void]>([])
        var fetch: TokenCache.Fetch { { [self] complete in pending.withLock { $0.append(complete) } } }
        var count: Int { pending.withLock { $0.count } }
        func complete(_ result: Result<IssuedToken, AuthError>) {
            let all = pending.withLock { p in defer { p = [] }; return p }
            for c in all { c(result) }
        }
    }

    final class Answers: Sendable {
        let values = Mutex<[Result<String, AuthError>]>([])
        var waiter: TokenCache.Waiter { { [self] r in values.withLock { $0.append(r) } } }
        var all: [Result<String, AuthError>] { values.withLock { $0 } }
    }

    @Test("single flight: 100 concurrent callers, one fetch, all completed by it; an error reaches them all")
    func singleFlight() {
        let cache = TokenCache(refreshBefore: 60)
        let fetches = PendingFetches()
        let answers = Answers()
        DispatchQueue.concurrentPerform(iterations: 100) { _ in cache.token(fetch: fetches.fetch, done: answers.waiter) }
        #expect(fetches.count == 1 && cache.fetchCount == 1 && answers.all.isEmpty)
        fetches.complete(.success(IssuedToken(value: "t1", lifetime: 3600)))
        #expect(answers.all.count == 100 && answers.all.allSatisfy { (try? $0.get()) == "t1" })
        cache.token(fetch: fetches.fetch, done: answers.waiter)
        #expect(fetches.count == 0 && answers.all.count == 101, "cached")

        let failing = TokenCache(refreshBefore: 60)
        let failed = Answers()
        for _ in 0..<5 { failing.token(fetch: fetches.fetch, done: failed.waiter) }
        fetches.complete(.failure(AuthError("down", retryable: true)))
        #expect(failed.all.count == 5 && failed.all.allSatisfy { if case .failure(let e) = $0 { e.retryable } else { false } })
        failing.token(fetch: fetches.fetch, done: failed.waiter)
        #expect(fetches.count == 1, "a failure is not cached: the next caller fetches again")
    }

    @Test("refresh ahead: handed out at once while one background fetch replaces it; halfway for short lifetimes")
    func refresh() {
        let clock = Clock()
        let cache = TokenCache(refreshBefore: 10, clock: clock.read)
        let fetches = PendingFetches()
        let answers = Answers()
        cache.token(fetch: fetches.fetch, done: answers.waiter)
        fetches.complete(.success(IssuedToken(value: "t1", lifetime: 30)))
        clock.advance(21)   // 9 s left: inside the 10 s window
        cache.token(fetch: fetches.fetch, done: answers.waiter)
        cache.token(fetch: fetches.fetch, done: answers.waiter)
        #expect(fetches.count == 1 && answers.all.compactMap { try? $0.get() } == ["t1", "t1", "t1"])
        fetches.complete(.failure(AuthError("blip", retryable: true)))   // the old one still works
        cache.token(fetch: fetches.fetch, done: answers.waiter)
        #expect(fetches.count == 0, "a failed refresh is retried after a second at most")
        clock.advance(1)
        cache.token(fetch: fetches.fetch, done: answers.waiter)
        #expect(fetches.count == 1)
        fetches.complete(.success(IssuedToken(value: "t2", lifetime: 4)))   // shorter than refreshBefore
        clock.advance(1.9)
        cache.token(fetch: fetches.fetch, done: answers.waiter)
        #expect(fetches.count == 0)
        clock.advance(0.2)
        cache.token(fetch: fetches.fetch, done: answers.waiter)
        #expect(fetches.count == 1, "refreshed halfway through a lifetime shorter than refreshBefore")
        #expect(answers.all.compactMap { try? $0.get() }.suffix(2) == ["t2", "t2"])
        clock.advance(5)    // expired: callers wait for the fetch in flight
        cache.token(fetch: fetches.fetch, done: answers.waiter)
        #expect(fetches.count == 1 && answers.all.count == 7)
        fetches.complete(.success(IssuedToken(value: "t3", lifetime: 60)))
        #expect(answers.all.count == 8 && (try? answers.all.last?.get()) == "t3")
    }

    @Test("invalidate drops the token the refused request used, not a newer one")
    func invalidate() {
        let clock = Clock()
        let cache = TokenCache(refreshBefore: 60, clock: clock.read)
        let fetches = PendingFetches()
        let answers = Answers()
        cache.token(fetch: fetches.fetch, done: answers.waiter)
        fetches.complete(.success(IssuedToken(value: "t1", lifetime: 3600)))
        let sentWithT1 = clock.read() + 1
        clock.advance(2)
        #expect(cache.invalidate(sentAt: sentWithT1))
        cache.token(fetch: fetches.fetch, done: answers.waiter)
        #expect(fetches.count == 1, "dropped: the next caller fetches")
        clock.advance(1)
        fetches.complete(.success(IssuedToken(value: "t2", lifetime: 3600)))
        // A second 401 for a request sent with t1 (before t2 arrived) keeps t2.
        #expect(cache.invalidate(sentAt: sentWithT1 + 0.5))
        cache.token(fetch: fetches.fetch, done: answers.waiter)
        #expect(fetches.count == 0 && answers.all.compactMap { try? $0.get() } == ["t1", "t2", "t2"])
    }
}

// MARK: - JWS signatures against the openssl CLI

@Suite("JWS signing (RS256, PS256, ES256)")
struct JWSSigningTests {
    @Test("signatures verify with the openssl CLI, and openssl's verify here; PEM PKCS#8 and SEC1 EC keys")
    func crossCheck() throws {
        let keys = try TestKeys.get()
        let dir = try TempDir("relay-jws")
        defer { dir.remove() }
        let message = Array("eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJyZWxheSJ9".utf8)
        let messageFile = dir.file("message")
        try Data(message).write(to: URL(fileURLWithPath: messageFile))
        for (file, publicFile, alg) in [(keys.rsa, keys.rsaPublic, JWSAlgorithm.rs256), (keys.rsa, keys.rsaPublic, .ps256),
                                        (keys.ecSEC1, keys.ecPublic, .es256), (keys.ecPKCS8, keys.ecPublic, .es256)] {
            let key = try JWSSigningKey.load(path: file)
            #expect(key.kind == alg.keyKind)
            let signature = try key.sign(alg, message)
            let publicKey = try JWSVerifyingKey.load(path: publicFile)
            #expect(publicKey.verify(alg, signature: signature, message: message), "\(alg)")
            #expect(key.publicKey.verify(alg, signature: signature, message: message))
            #expect(!publicKey.verify(alg, signature: signature, message: message + [0x2e]))
            let der = alg == .es256 ? try ECDSASignature.derFromJOSE(signature) : signature
            if alg == .es256 {
                #expect(signature.count == 64)
                #expect(try ECDSASignature.joseFromDER(der) == signature)
            } else {
                #expect(signature.count == 256)
            }
            let sigFile = dir.file("sig-\(alg.rawValue)")
            try Data(der).write(to: URL(fileURLWithPath: sigFile))
            let pss = alg == .ps256 ? ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32", "-sigopt", "rsa_mgf1_md:sha256"] : []
            let verified = try TestKeys.openssl(["dgst", "-sha256", "-verify", publicFile] + pss + ["-signature", sigFile, messageFile])
            #expect(verified.status == 0 && verified.output.contains("Verified OK"), "\(alg): \(verified.output)")

            // And the other way round: openssl signs, the relay's verifier accepts (DER -> r||s for ES256).
            let theirs = dir.file("their-\(alg.rawValue)")
            let signedByOpenSSL = try TestKeys.openssl(["dgst", "-sha256", "-sign", file] + pss + ["-out", theirs, messageFile])
            #expect(signedByOpenSSL.status == 0, "\(signedByOpenSSL.output)")
            var theirSignature = Array(try Data(contentsOf: URL(fileURLWithPath: theirs)))
            if alg == .es256 { theirSignature = try ECDSASignature.joseFromDER(theirSignature) }
            #expect(publicKey.verify(alg, signature: theirSignature, message: message), "\(alg) signed by openssl")
        }
        // PS256 and ES256 are randomized; RS256 is deterministic. A key signs only with its own algorithms.
        let rsa = try JWSSigningKey.load(path: keys.rsa)
        #expect(try rsa.sign(.rs256, message) == (try rsa.sign(.rs256, message)))
        #expect(try rsa.sign(.ps256, message) != (try rsa.sign(.ps256, message)))
        #expect(throws: CryptoError.self) { try rsa.sign(.es256, message) }
        #expect(!rsa.publicKey.verify(.ps256, signature: try rsa.sign(.rs256, message), message: message))
    }

    @Test("keys JWS cannot use are refused with a reason")
    func refusedKeys() throws {
        let keys = try TestKeys.get()
        func reason(_ path: String) -> String {
            do { _ = try JWSSigningKey.load(path: path); return "loaded" } catch { return "\(error)" }
        }
        #expect(reason(keys.rsa1024).contains("1024 bits; JWS needs at least 2048"))
        #expect(reason(keys.p384).contains("ES256 needs P-256"))
        #expect(reason(keys.rsaPublic).contains("no private key PEM block"))
        #expect(reason("/nonexistent/k.pem").hasPrefix("BIO_new_file failed: /nonexistent/k.pem: cannot open file"))
        #expect(throws: CryptoError.self) { try ECDSASignature.derFromJOSE([1, 2, 3]) }
    }
}
