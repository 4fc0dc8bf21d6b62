import Adapters
import Foundation
@testable import Relay
import Simulator
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `relay simulate PROVIDER --fault ...` over real HTTP: a fault behind a provider stand-in answers in that
/// provider's formats. `slow` holds exactly what the stand-in answers without it; the error answers of `status`,
/// `retryAfter` and `hang` carry the provider's error envelope, not the sink's `{"ok":false,...}`.
@Suite("stand-ins: faults in the provider's own format")
struct StandInFaultTests {
    struct Case: Sendable, CustomStringConvertible {
        var name: String
        var method: String
        /// Appended to a prefix (`/fast`, `/slow`, ...) that the fault rules match on.
        var path: String
        var headers: [(String, String)]
        var body: String?
        /// Whether `json` is this provider's error envelope for HTTP `status`.
        var isErrorEnvelope: @Sendable (_ json: JSONValue, _ status: Int) -> Bool
        var description: String { name }
    }

    static func mastercard(_ json: JSONValue, _ status: Int) -> Bool {
        guard let items = MastercardErrors.parse(json), items.count == 1 else { return false }
        let code = [503: "SERVICE_UNAVAILABLE", 504: "GATEWAY_TIMEOUT", 429: "RATE_LIMIT_EXCEEDED"][status]
        return items[0].source == "Gateway" && items[0].reasonCode == code && items[0].recoverable == true
            && !items[0].description.isEmpty
    }

    static let cases: [Case] = [
        Case(name: "capillary", method: "PUT", path: "/api_gateway/rewards/core/v1/management/transactions",
             headers: [("Authorization", "Basic dGlsbDpwYXNzd29yZA=="), ("Content-Type", "application/json")],
             body: #"{"transactions":[{"transactionId":3482445,"fulfillmentDetails":{"status":"in-progress"}}]}"#,
             isErrorEnvelope: { j, status in
                 j["status"]?["success"] == .bool(false) && j["status"]?["code"]?.numberValue == Double(status)
                     && !(j["status"]?["message"]?.stringValue ?? "").isEmpty && j.objectValue?.count == 1
             }),
        Case(name: "returning-ai", method: "PUT", path: "/v1/redemption-transactions/status",
             headers: [("Authorization", "Bearer rai-test"), ("Content-Type", "application/json")],
             body: #"{"transactionId":"ORD202507013831","statusId":"695dcc370ab8622381f27918"}"#,
             isErrorEnvelope: { j, _ in
                 j["status"]?.stringValue == "error" && !(j["message"]?.stringValue ?? "").isEmpty && j.objectValue?.count == 2
             }),
        Case(name: "punchh", method: "PUT", path: "/api/v1/redemption_codes/RC8H2K",
             headers: [("Authorization", #"Token token="dev-location-key""#)], body: nil,
             isErrorEnvelope: { j, _ in !(j["error"]?.stringValue ?? "").isEmpty && j.objectValue?.count == 1 }),
        Case(name: "mastercard-digital-redemptions", method: "PUT", path: "/redemptions",
             headers: [("Authorization", #"OAuth oauth_consumer_key="dev-key""#), ("Content-Type", "application/json")],
             body: #"{"redemptionId":"R-1001","statusCode":"S"}"#, isErrorEnvelope: mastercard),
        Case(name: "mastercard-fulfillment", method: "POST", path: "/vendors/124/orders/status",
             headers: [("Authorization", #"OAuth oauth_consumer_key="dev-key""#), ("Content-Type", "application/json")],
             body: #"{"OrderStatusArray":[{"orderId":"O-1","status":"SHIPPED"}]}"#, isErrorEnvelope: mastercard),
        Case(name: "oauth2", method: "GET", path: "/api/orders", headers: [], body: nil,
             isErrorEnvelope: { j, _ in
                 j["error"]?.stringValue == "temporarily_unavailable" && !(j["error_description"]?.stringValue ?? "").isEmpty
             }),
    ]

    /// `relay simulate NAME` on a free port with a rule per path prefix: /slow, /hang, /busy, /limit.
    static func start(_ name: String) throws -> (SinkTestProcess, UInt16) {
        let p = try SinkTestProcess(["simulate", name, "--listen", "127.0.0.1:0",
                                     "--fault", "slow:0.3,path=/slow/", "--fault", "hang:0.3,path=/hang/",
                                     "--fault", "status:503,path=/busy/", "--fault", "retryAfter:2,path=/limit/"])
        let listening = try p.waitForLog("sink listening")
        let port = try #require(listening["port"]?.numberValue.map { UInt16($0) }, "\(listening.jsonString())")
        return (p, port)
    }

    static func call(_ port: UInt16, _ c: Case, _ prefix: String) throws -> SinkTestWire.Reply {
        try SinkTestWire.request(port, c.method, prefix + c.path, headers: c.headers, body: c.body.map { Array($0.utf8) })
    }

    @Test("slow delays, then answers exactly what the stand-in answers; hang, status and retryAfter answer in its error envelope",
          arguments: cases)
    func providerFormats(_ c: Case) throws {
        let (p, port) = try Self.start(c.name)
        defer { p.killIfRunning() }

        // slow: the very answer the stand-in gives without the rule, only later.
        let normal = try Self.call(port, c, "/fast")
        var start = Date()
        let slow = try Self.call(port, c, "/slow")
        let waited = Date().timeIntervalSince(start)
        #expect(waited >= 0.28, "\(c.name): slow answered after \(waited) s")
        #expect(slow.status == normal.status && slow.body == normal.body, "\(c.name): slow \(slow.status) \(slow.text) vs \(normal.status) \(normal.text)")
        #expect(slow.header("Content-Type") == normal.header("Content-Type"))
        #expect(slow.header("X-Sink-Fault") == "slow" && normal.header("X-Sink-Fault") == nil)
        let normalJSON = try? normal.json()
        #expect(normalJSON != nil && normalJSON?["ok"] == nil, "\(c.name): the stand-in's answer, not the sink's: \(normal.text)")

        // hang: held, then a 504 in the provider's envelope.
        start = Date()
        let hung = try Self.call(port, c, "/hang")
        #expect(Date().timeIntervalSince(start) >= 0.28)
        #expect(hung.status == 504 && hung.header("X-Sink-Fault") == "hang")
        let hungJSON = try hung.json()
        #expect(c.isErrorEnvelope(hungJSON, 504), "\(c.name): hang answered \(hung.text)")
        #expect(hungJSON["ok"] == nil && hung.header("Content-Type")?.hasPrefix("application/json") == true)

        let busy = try Self.call(port, c, "/busy")
        let busyJSON = try busy.json()
        #expect(busy.status == 503 && c.isErrorEnvelope(busyJSON, 503), "\(c.name): status:503 answered \(busy.text)")

        let limited = try Self.call(port, c, "/limit")
        let limitedJSON = try limited.json()
        #expect(limited.status == 429 && limited.header("Retry-After") == "2")
        #expect(c.isErrorEnvelope(limitedJSON, 429), "\(c.name): retryAfter answered \(limited.text)")

        // The relay's own reading of those answers: retried (Mastercard's Recoverable "true", Capillary's 5xx).
        let response = OutboundResponse(status: 503, body: busy.body)
        if c.name.hasPrefix("mastercard") {
            guard case .retry = MastercardErrors.classify(response, byStatus: { _ in .terminal(reason: "by status") }) else {
                Issue.record("\(c.name): a 503 fault answer would not be retried: \(busy.text)")
                return
            }
        } else if c.name == "capillary" {
            guard case .retry = CapillaryDestination.classifyResponse(response) else {
                Issue.record("capillary: a 503 fault answer would not be retried: \(busy.text)")
                return
            }
        }
        p.signal(SIGTERM)
        #expect(try p.waitForExit() == 0)
    }

    @Test("the plain sink keeps its own fault bodies")
    func sinkBodies() throws {
        let (p, port) = try Self.start("sink")
        defer { p.killIfRunning() }
        let busy = try SinkTestWire.request(port, "POST", "/busy/x", body: [])
        let busyJSON = try busy.json()
        #expect(busy.status == 503 && busyJSON["ok"] == .bool(false) && busyJSON["error"] == .string("injected fault"))
        let slow = try SinkTestWire.request(port, "POST", "/slow/x", body: [])
        #expect(slow.status == 200 && slow.text == #"{"ok":true}"#)
        let hung = try SinkTestWire.request(port, "POST", "/hang/x", body: [])
        let hungJSON = try hung.json()
        #expect(hung.status == 504 && hungJSON["error"] == .string("hung"))
    }
}
