import Adapters
import Crypto
import Foundation
@testable import Relay
import Simulator
import Synchronization
import Testing

/// Reads a destination `auth` block with the given environment; returns the scheme and the problems.
func makeAuth(_ block: String, environment: [String: String] = [:]) -> (auth: (any OutboundAuth)?, problems: [String]) {
    let r = ConfigReader(environment: environment)
    let value = try? JSONValue.parse(Data(block.utf8), json5: true)
    let auth = r.outboundAuth(value, "destinations.d.auth", factories: BuiltinAdapters.registry.auth)
    return (auth, r.problems.map(\.description))
}

/// Authorizes `request` and waits for the result.
func authorized(_ auth: any OutboundAuth, _ request: OutboundRequest, client: HTTPClient? = nil) -> Result<OutboundRequest, AuthError> {
    let box = Mutex<Result<OutboundRequest, AuthError>?>(nil)
    let done = DispatchSemaphore(value: 0)
    auth.authorize(request, context: AuthContext(client: client, deliveryID: "dlv_1")) { result in
        box.withLock { $0 = result }
        done.signal()
    }
    done.wait()
    return box.withLock { $0! }
}

@Suite("Static outbound auth")
struct StaticAuthTests {
    static let env = ["USER_PW": "pw-8c1f", "TOKEN": "tok-77ab", "LOCATION_KEY": "lk-123", "BUSINESS_KEY": "bk-456",
                      "API_KEY": "key-9d2e"]
    static let request = OutboundRequest(method: "PUT", url: "https://p.example/x", headers: [("Authorization", "stale"), ("X-Keep", "1")])

    @Test("each scheme sets exactly its header, replacing one of the same name")
    func headers() throws {
        let cases: [(String, [(String, String)])] = [
            (#"{ basic: { username: "till-1", password: "${env:USER_PW}" } }"#,
             [("X-Keep", "1"), ("Authorization", "Basic " + ByteEncoding.base64(Array("till-1:pw-8c1f".utf8)))]),
            (#"{ bearer: "${env:TOKEN}" }"#, [("X-Keep", "1"), ("Authorization", "Bearer tok-77ab")]),
            (#"{ token: { token: "${env:LOCATION_KEY}" } }"#, [("X-Keep", "1"), ("Authorization", #"Token token="lk-123""#)]),
            (#"{ token: { token: "${env:LOCATION_KEY}", btoken: "${env:BUSINESS_KEY}" } }"#,
             [("X-Keep", "1"), ("Authorization", "Token token=lk-123, btoken=bk-456")]),
            (#"{ apiKey: { header: "X-API-Key", value: "${env:API_KEY}" } }"#,
             [("Authorization", "stale"), ("X-Keep", "1"), ("X-API-Key", "key-9d2e")]),
            (#"{ apiKey: { header: "authorization", value: "${env:API_KEY}", prefix: "ApiKey " } }"#,
             [("X-Keep", "1"), ("authorization", "ApiKey key-9d2e")]),
            (#"{ bearer: "${env:TOKEN}", apiKey: { header: "X-API-Key", value: "${env:API_KEY}" } }"#,
             [("X-Keep", "1"), ("Authorization", "Bearer tok-77ab"), ("X-API-Key", "key-9d2e")]),
        ]
        for (block, want) in cases {
            let (auth, problems) = makeAuth(block, environment: Self.env)
            #expect(problems.isEmpty, "\(block): \(problems)")
            let signed = try authorized(try #require(auth), Self.request).get()
            #expect(signed.headers.map { "\($0.0): \($0.1)" } == want.map { "\($0.0): \($0.1)" }, "\(block)")
            #expect(signed.url == Self.request.url && signed.body == Self.request.body)
        }
    }

    @Test("configuration problems name the key path; inline secrets are refused")
    func problems() {
        let cases: [(String, String)] = [
            (#"{ bearer: "tok-inline" }"#, "destinations.d.auth.bearer: secrets must be a reference"),
            (#"{ basic: { username: "u" } }"#, "destinations.d.auth.basic.password: is required"),
            (#"{ basic: { username: "a:b", password: "${env:USER_PW}" } }"#, "destinations.d.auth.basic.username: must not contain ':'"),
            (#"{ token: { token: "${env:NOPE}" } }"#, "destinations.d.auth.token.token: environment variable NOPE is not set"),
            (#"{ apiKey: { header: "X Bad", value: "${env:API_KEY}" } }"#, "destinations.d.auth.apiKey.header: must be a header name"),
            (#"{ kerberos: {} }"#, "destinations.d.auth.kerberos: unknown key"),
            (#"{}"#, "destinations.d.auth: names no scheme"),
        ]
        for (block, want) in cases {
            let (_, problems) = makeAuth(block, environment: Self.env)
            #expect(problems.contains { $0.hasPrefix(want) }, "\(block): \(problems)")
        }
    }

    @Test("a secret file's line ending (LF, CRLF, CR) is not part of the secret; a line break inside one is refused")
    func lineEnds() throws {
        let dir = try TempDir("relay-secret-files")
        defer { dir.remove() }
        for (name, text) in [("lf", "tok-1\n"), ("crlf", "tok-1\r\n"), ("cr", "tok-1\r"), ("none", "tok-1")] {
            let file = try dir.write(name, text)
            let (auth, problems) = makeAuth(#"{ bearer: "${file:\#(file)}" }"#)
            #expect(problems.isEmpty, "\(name): \(problems)")
            #expect(try authorized(try #require(auth), Self.request).get().headers.last?.1 == "Bearer tok-1", "\(name)")
        }
        let (_, problems) = makeAuth(#"{ bearer: "${env:TWO_LINES}" }"#, environment: ["TWO_LINES": "tok-1\r\nX-Evil: 1"])
        #expect(problems == ["destinations.d.auth.bearer: ${env:TWO_LINES} holds a control character (a line break?): it cannot go into a header"])
    }

    @Test("over HTTP: every attempt carries the credentials; a 401 with static credentials is not resent")
    func overHTTP() throws {
        let sink = try DeliveryTests.startSink([SinkFault(path: "/refuses", action: .status(401))])
        defer { sink.stop() }
        let relay = try RunningRelay(sources: DeliveryTests.sources, extra: """
            destinations: {
              "ok": { adapter: "generic", url: "\(sink.baseURL)/ok", auth: { token: { token: "${env:LOCATION_KEY}" } } },
              "refuses": { adapter: "generic", url: "\(sink.baseURL)/refuses", auth: { bearer: "${env:TOKEN}" } },
            },
            routes: [ { from: "shop", to: ["ok", "refuses"] } ],
            """, environment: Self.env)
        defer { relay.stop() }
        let id = try DeliveryTests.post(relay, "ORD-1", "shipped")
        try DeliveryTests.waitForState(relay, id, "ok", "delivered")
        let dead = try DeliveryTests.waitForState(relay, id, "refuses", "dead")
        #expect(sink.requests(path: "/ok").map { $0.headers["Authorization"] } == [#"Token token="lk-123""#])
        #expect(sink.requests(path: "/refuses").map { $0.headers["Authorization"] } == ["Bearer tok-77ab"])
        #expect(try DeliveryTests.deliveryRow(relay.store, dead.id).lastError == "HTTP 401")
        #expect(!relay.log.contains("tok-77ab") && !relay.log.contains("lk-123"))
    }

    @Test("a destination that echoes the credentials it refused: they are blanked out of the stored attempt and the log")
    func echoedCredentials() throws {
        let echo = try JSONValue.parse(Data(#"{"error":"invalid token","received":"Bearer tok-77ab","user":"till-1:pw-8c1f"}"#.utf8))
        let sink = try DeliveryTests.startSink([SinkFault(action: .json(status: 401, body: echo))])
        defer { sink.stop() }
        let relay = try RunningRelay(sources: DeliveryTests.sources, extra: """
            destinations: {
              "api": { adapter: "generic", url: "\(sink.baseURL)/api",
                       auth: { bearer: "${env:TOKEN}", basic: { username: "till-1", password: "${env:USER_PW}" } } },
            },
            routes: [ { from: "shop", to: ["api"] } ],
            """, environment: Self.env)
        defer { relay.stop() }
        let id = try DeliveryTests.post(relay, "ORD-1", "shipped")
        let d = try DeliveryTests.waitForState(relay, id, "api", "dead")
        let rows = try DeliveryTests.attempts(relay.store, d.id)
        let stored = try #require(rows.first?.response)
        #expect(stored == #"{"error":"invalid token","received":"***","user":"till-1:***"}"#)
        #expect(!relay.log.contains("tok-77ab") && !relay.log.contains("pw-8c1f"))
    }
}
