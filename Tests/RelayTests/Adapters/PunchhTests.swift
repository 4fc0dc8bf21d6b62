import Adapters
import Foundation
@testable import Relay
import Testing

/// The Punchh adapter: inbound webhooks -> canonical events, canonical events -> redemption code calls, Punchh's
/// answers -> delivery outcomes, configuration problems, the stand-in over HTTP, and all of it end to end.
@Suite("Punchh")
struct PunchhTests {
    // MARK: Helpers

    static func json5(_ text: String) throws -> [String: JSONValue] {
        try #require(try JSONValue.parse(Data(text.utf8), json5: true).objectValue)
    }

    static func source(_ config: String = "{ adapter: \"punchh\" }") throws -> PunchhSource {
        let r = ConfigReader(environment: [:])
        let made = PunchhSourceFactory().makeSource(name: "p", config: try json5(config), path: "sources.p", reader: r)
        #expect(r.problems.isEmpty, "\(r.problems)")
        return try #require(made as? PunchhSource)
    }

    static let env = ["PUNCHH_LOCATION_KEY": "lk_123"]

    static func destination(_ extra: String = "") throws -> PunchhDestination {
        let r = ConfigReader(environment: env)
        let config = try json5("""
            { adapter: "punchh", baseURL: "https://sandbox.punchh.com",
              headers: { Authorization: "Token token=\\"${env:PUNCHH_LOCATION_KEY}\\"" }, \(extra) }
            """)
        let made = PunchhDestinationFactory().makeDestination(name: "p", config: config, path: "destinations.p", reader: r)
        #expect(r.problems.isEmpty, "\(r.problems)")
        return try #require(made as? PunchhDestination)
    }

    static func normalize(_ source: PunchhSource, _ body: String) throws(NormalizeError) -> NormalizedEvent {
        let bytes = Array(body.utf8)
        let webhook = InboundWebhook(source: "p", request: HTTPRequest(method: "POST", path: "/v1/hooks/p", body: bytes),
                                     contentType: "application/json",
                                     payload: LazyPayload(kind: .json, validatedBytes: bytes), receivedAt: Date(),
                                     verified: VerifiedRequest())
        return try source.normalize(webhook)
    }

    static func event(_ status: CanonicalStatus?, subject: [String: String] = ["redemptionCode": "RC8H2K"],
                      attributes: [String: JSONValue] = [:]) -> CanonicalEvent {
        CanonicalEvent(id: "evt_01TEST", source: "vendor", type: "redemption.status_changed", subject: subject,
                       status: status, receivedAt: "2025-11-20T10:00:00.000Z", attributes: attributes,
                       idempotencyKey: "k1")
    }

    static let context = DeliveryContext(deliveryID: "dlv_1", destination: "p", attempt: 1)

    /// A redemptions webhook as Punchh sends it.
    static func redemption(contentID: String = "5f1c9d0e-8a2b-4c3d-9e4f-0a1b2c3d4e5f", code: String = "RC8H2K",
                           status: String = "processed", amount: String = "10.0",
                           timestamp: String = "1763632800") -> String {
        """
        {"content_id":"\(contentID)","timestamp":\(timestamp),"business_id":312,
         "business_uuid":"b6c8a8e2-1f4d-4e0a-9c1e-2d3f4a5b6c7d","event_name":"redemptions","event_type":"redemption",
         "action":"update",
         "payload":{"redemption_id":987654,"redemption_status":"\(status)","redemption_amount":\(amount),"location_id":4411,
           "redemption_code":{"redemption_code":"\(code)","status":"\(status)","processed_at":"2025-11-20T10:00:00Z",
                              "transaction_no":"TX-77"},
           "user":{"id":123456,"first_name":"Ada","email":"ada@example.com"}}}
        """
    }

    // MARK: Inbound

    struct InboundCase: Sendable, CustomTestStringConvertible {
        var name: String
        var config: String = "{ adapter: \"punchh\" }"
        var body: String
        var expected: NormalizedEvent
        var testDescription: String { name }
    }

    static let inboundCases: [InboundCase] = [
        InboundCase(name: "full redemptions webhook, seconds timestamp", body: redemption(), expected: NormalizedEvent(
            type: "redemption.status_changed",
            subject: ["redemptionId": "987654", "redemptionCode": "RC8H2K", "locationId": "4411",
                      "businessId": "b6c8a8e2-1f4d-4e0a-9c1e-2d3f4a5b6c7d"],
            status: .processed, providerStatus: ProviderStatus(code: "processed"),
            occurredAt: "2025-11-20T10:00:00.000Z",
            attributes: ["transactionNo": .string("TX-77"), "processedAt": .string("2025-11-20T10:00:00Z"),
                         "eventType": .string("redemption"), "action": .string("update"), "amount": .number(10),
                         "userId": .number(123456)],
            idempotencyKey: "5f1c9d0e-8a2b-4c3d-9e4f-0a1b2c3d4e5f")),
        InboundCase(name: "milliseconds timestamp, business_id only, status from redemption_code, amount as text",
                    body: """
                        {"content_id":"c-ms","timestamp":1763632800123,"business_id":312,"event_name":"redemptions",
                         "event_type":"redemption","action":"create",
                         "payload":{"redemption_id":"R-2","redemption_amount":"7.50",
                                    "redemption_code":{"redemption_code":"VOIDME","status":"Voided"}}}
                        """,
                    expected: NormalizedEvent(
                        type: "redemption.status_changed",
                        subject: ["redemptionId": "R-2", "redemptionCode": "VOIDME", "businessId": "312"],
                        status: .cancelled, providerStatus: ProviderStatus(code: "Voided"),
                        occurredAt: "2025-11-20T10:00:00.123Z",
                        attributes: ["eventType": .string("redemption"), "action": .string("create"),
                                     "amount": .number(7.5)],
                        idempotencyKey: "c-ms")),
        InboundCase(name: "a status with no mapping is accepted: status nil, providerStatus kept",
                    body: redemption(contentID: "c-odd", status: "honoured", timestamp: "\"1763632800\""),
                    expected: NormalizedEvent(
                        type: "redemption.status_changed",
                        subject: ["redemptionId": "987654", "redemptionCode": "RC8H2K", "locationId": "4411",
                                  "businessId": "b6c8a8e2-1f4d-4e0a-9c1e-2d3f4a5b6c7d"],
                        status: nil, providerStatus: ProviderStatus(code: "honoured"),
                        occurredAt: "2025-11-20T10:00:00.000Z",
                        attributes: ["transactionNo": .string("TX-77"), "processedAt": .string("2025-11-20T10:00:00Z"),
                                     "eventType": .string("redemption"), "action": .string("update"),
                                     "amount": .number(10), "userId": .number(123456)],
                        idempotencyKey: "c-odd")),
        InboundCase(name: "statusMap override (case-insensitive, null removes a default), path overrides, type",
                    config: """
                        { adapter: "punchh", type: "punchh.redemption",
                          statusMap: { "HONOURED": "processed", "processed": "delivered", "redeemable": null },
                          map: { subject: { redemptionCode: "$.payload.redemption_code.transaction_no", locationId: null },
                                 attributes: { email: "$.payload.user.email", userId: null, processedAt: null,
                                               transactionNo: null, eventType: null, action: null } } }
                        """,
                    body: redemption(contentID: "c-map", status: "Honoured"),
                    expected: NormalizedEvent(
                        type: "punchh.redemption",
                        subject: ["redemptionId": "987654", "redemptionCode": "TX-77",
                                  "businessId": "b6c8a8e2-1f4d-4e0a-9c1e-2d3f4a5b6c7d"],
                        status: .processed, providerStatus: ProviderStatus(code: "Honoured"),
                        occurredAt: "2025-11-20T10:00:00.000Z",
                        attributes: ["amount": .number(10), "email": .string("ada@example.com")],
                        idempotencyKey: "c-map")),
        InboundCase(name: "the override maps, and a removed default no longer does",
                    config: "{ adapter: \"punchh\", statusMap: { \"redeemable\": null, \"processed\": \"delivered\" } }",
                    body: """
                        {"content_id":"c-r","timestamp":1763632800,"event_name":"redemptions",
                         "payload":{"redemption_status":"redeemable","redemption_code":"PLAIN1"}}
                        """,
                    expected: NormalizedEvent(type: "redemption.status_changed", subject: ["redemptionCode": "PLAIN1"],
                                              status: nil, providerStatus: ProviderStatus(code: "redeemable"),
                                              occurredAt: "2025-11-20T10:00:00.000Z", idempotencyKey: "c-r")),
        InboundCase(name: "another event_name: punchh.<event_name>, stored with what it has, nothing guessed",
                    body: """
                        {"content_id":"c-guest","timestamp":1763632800,"business_uuid":"b-1","event_name":"guests",
                         "event_type":"signup","action":"create","payload":{"user":{"id":55},"location_id":9}}
                        """,
                    expected: NormalizedEvent(
                        type: "punchh.guests", subject: ["businessId": "b-1", "locationId": "9"],
                        occurredAt: "2025-11-20T10:00:00.000Z",
                        attributes: ["eventType": .string("signup"), "action": .string("create"), "userId": .number(55)],
                        idempotencyKey: "c-guest")),
    ]

    @Test("inbound webhooks -> normalized events", arguments: inboundCases)
    func inbound(_ c: InboundCase) throws {
        let got = try Self.normalize(try Self.source(c.config), c.body)
        #expect(got.type == c.expected.type)
        #expect(got.subject == c.expected.subject)
        #expect(got.status == c.expected.status)
        #expect(got.providerStatus == c.expected.providerStatus)
        #expect(got.occurredAt == c.expected.occurredAt)
        #expect(got.attributes == c.expected.attributes)
        #expect(got.idempotencyKey == c.expected.idempotencyKey)
    }

    @Test("a body that is not a Punchh envelope is 422 with the reason", arguments: [
        (#"{"id":"evt_1","state":"processed"}"#, "content_id is missing"),
        (#"{"content_id":"","event_name":"redemptions"}"#, "content_id is missing"),
        (#"{"content_id":"c1","payload":{}}"#, "event_name is missing"),
        (#"{"content_id":"c1","event_name":7}"#, "event_name is missing"),
        (#"[{"content_id":"c1","event_name":"redemptions"}]"#, "not a JSON object"),
    ])
    func notAnEnvelope(_ body: String, _ reason: String) throws {
        let error = try #require(throws: NormalizeError.self) { try Self.normalize(try Self.source(), body) }
        #expect(error.status == 422)
        #expect(error.reason.contains("not a Punchh webhook envelope") && error.reason.contains(reason), "\(error)")
    }

    @Test("timestamps: epoch seconds, milliseconds (above 1e11), numeric text, RFC 3339; junk is left out")
    func timestamps() {
        #expect(PunchhSource.occurredAt(.number(1763632800)) == "2025-11-20T10:00:00.000Z")
        #expect(PunchhSource.occurredAt(.number(1763632800123)) == "2025-11-20T10:00:00.123Z")
        #expect(PunchhSource.occurredAt(.number(99_999_999_999)) == "5138-11-16T09:46:39.000Z")
        #expect(PunchhSource.occurredAt(.string("1763632800")) == "2025-11-20T10:00:00.000Z")
        #expect(PunchhSource.occurredAt(.string("2025-11-20T11:00:00+01:00")) == "2025-11-20T10:00:00.000Z")
        #expect(PunchhSource.occurredAt(.string("2025-11-20T10:00:00.250Z")) == "2025-11-20T10:00:00.250Z")
        #expect(PunchhSource.occurredAt(.string("yesterday")) == nil)
        #expect(PunchhSource.occurredAt(.number(-5)) == nil)
        #expect(PunchhSource.occurredAt(.bool(true)) == nil)
    }

    // MARK: Outbound

    struct OutboundCase: Sendable, CustomTestStringConvertible {
        var name: String
        var config: String = ""
        var event: CanonicalEvent
        var url: String
        var body: String
        var testDescription: String { name }
    }

    static let headers = ["Content-Type: application/x-www-form-urlencoded", "Accept: application/json",
                          "Authorization: Token token=\"lk_123\""]

    static let outboundCases: [OutboundCase] = [
        OutboundCase(name: "processed -> process", event: event(.processed),
                     url: "https://sandbox.punchh.com/api/v1/redemption_codes/RC8H2K", body: "process=true"),
        OutboundCase(name: "processed with an amount -> process and amount",
                     event: event(.processed, attributes: ["amount": .number(10)]),
                     url: "https://sandbox.punchh.com/api/v1/redemption_codes/RC8H2K", body: "process=true&amount=10"),
        OutboundCase(name: "a fractional amount", event: event(.processed, attributes: ["amount": .number(7.5)]),
                     url: "https://sandbox.punchh.com/api/v1/redemption_codes/RC8H2K", body: "process=true&amount=7.5"),
        OutboundCase(name: "cancelled -> void (no amount even when there is one)",
                     event: event(.cancelled, attributes: ["amount": .number(10)]),
                     url: "https://sandbox.punchh.com/api/v1/redemption_codes/RC8H2K", body: "void=true"),
        OutboundCase(name: "a code with characters that need percent-encoding",
                     event: event(.processed, subject: ["redemptionCode": "AB C/1+é?#"]),
                     url: "https://sandbox.punchh.com/api/v1/redemption_codes/AB%20C%2F1%2B%C3%A9%3F%23",
                     body: "process=true"),
        OutboundCase(name: "custom code and amount templates, statusMap override",
                     config: """
                         code: "${subject.redemptionId}", amount: "${attributes.total?}",
                         statusMap: { shipped: "process", processed: null }
                         """,
                     event: event(.shipped, subject: ["redemptionId": "987654", "redemptionCode": "RC8H2K"],
                                  attributes: ["total": .string("12.25"), "amount": .number(10)]),
                     url: "https://sandbox.punchh.com/api/v1/redemption_codes/987654", body: "process=true&amount=12.25"),
        OutboundCase(name: "amount: null sends no amount", config: "amount: null",
                     event: event(.processed, attributes: ["amount": .number(10)]),
                     url: "https://sandbox.punchh.com/api/v1/redemption_codes/RC8H2K", body: "process=true"),
    ]

    @Test("canonical events -> the exact PUT", arguments: outboundCases)
    func outbound(_ c: OutboundCase) throws {
        let d = try Self.destination(c.config)
        let request = try d.translate(c.event, context: Self.context)
        #expect(request.method == "PUT")
        #expect(request.url == c.url)
        #expect(request.headers.map { "\($0.0): \($0.1)" } == Self.headers)
        #expect(String(decoding: request.body, as: UTF8.self) == c.body)
    }

    @Test("what cannot be sent: unmapped statuses are skipped, a missing or empty code or a bad amount is terminal")
    func untranslatable() throws {
        let d = try Self.destination()
        func failure(_ e: CanonicalEvent, _ dest: PunchhDestination? = nil) throws -> TranslateError {
            try #require(throws: TranslateError.self) { try (dest ?? d).translate(e, context: Self.context) }
        }
        for status in [CanonicalStatus.shipped, .pending, .expired, nil] {
            let e = try failure(Self.event(status))
            #expect(e.kind == .skip, "\(String(describing: status))")
            #expect(e.reason.hasPrefix("no mapping"), "\(e)")
        }
        let noCode = try failure(Self.event(.processed, subject: ["redemptionId": "1"]))
        #expect(noCode.kind == .retry && noCode.reason.contains("subject.redemptionCode"), "\(noCode)")
        let empty = try failure(Self.event(.processed, subject: ["redemptionCode": ""]))
        #expect(empty.kind == .terminal && empty.reason.contains("redemption code is empty"), "\(empty)")
        let badAmount = try failure(Self.event(.processed, attributes: ["amount": .string("ten")]))
        #expect(badAmount.kind == .terminal && badAmount.reason.contains("amount \"ten\""), "\(badAmount)")
        // Removing a default leaves that status unmapped.
        let noVoid = try Self.destination("statusMap: { cancelled: null }")
        #expect(try failure(Self.event(.cancelled), noVoid).kind == .skip)
    }

    // MARK: Responses

    struct OutcomeCase: Sendable, CustomTestStringConvertible {
        var name: String
        var status: CanonicalStatus = .processed
        var http: Int
        var body: String
        var headers: [(String, String)] = []
        var expected: Classification
        var testDescription: String { name }
    }

    static let outcomeCases: [OutcomeCase] = [
        OutcomeCase(name: "process: processed", http: 200,
                    body: #"{"status":"Redemption code RC8H2K has been processed","category":"processed","redemption_amount":10.0}"#,
                    expected: .delivered),
        OutcomeCase(name: "process: invalid", http: 200,
                    body: #"{"status":"Redemption code not found","category":"invalid","redemption_amount":0.0}"#,
                    expected: .terminal(reason: "redemption code RC8H2K is invalid: Redemption code not found")),
        OutcomeCase(name: "process: expired", http: 200,
                    body: #"{"status":"Redemption code has expired","category":"expired","redemption_amount":0.0}"#,
                    expected: .terminal(reason: "redemption code RC8H2K is expired: Redemption code has expired")),
        OutcomeCase(name: "process: still redeemable", http: 200,
                    body: #"{"status":"Redemption code is valid","category":"redeemable","redemption_amount":5.0}"#,
                    expected: .terminal(reason: "redemption code RC8H2K not processed: category redeemable: Redemption code is valid")),
        OutcomeCase(name: "process: unassigned", http: 200, body: #"{"status":"Not assigned","category":"Unassigned"}"#,
                    expected: .terminal(reason: "redemption code RC8H2K not processed: category unassigned: Not assigned")),
        OutcomeCase(name: "void: ok", status: .cancelled, http: 200,
                    body: #"{"status":"Redemption code has been voided","category":"unassigned","redemption_amount":0.0}"#,
                    expected: .delivered),
        OutcomeCase(name: "void: of a processed code", status: .cancelled, http: 200,
                    body: #"{"status":"Voided","category":"processed"}"#, expected: .delivered),
        OutcomeCase(name: "void: invalid", status: .cancelled, http: 200,
                    body: #"{"status":"Redemption code not found","category":"invalid"}"#,
                    expected: .terminal(reason: "redemption code RC8H2K is invalid: Redemption code not found")),
        OutcomeCase(name: "2xx without a category", http: 200, body: "{}", expected: .delivered),
        OutcomeCase(name: "2xx with no body", http: 204, body: "", expected: .delivered),
        OutcomeCase(name: "500", http: 500, body: "<html>Internal Server Error</html>",
                    expected: .retry(reason: "HTTP 500", after: nil)),
        OutcomeCase(name: "503 with Retry-After and an error", http: 503, body: #"{"error":"maintenance"}"#,
                    headers: [("Retry-After", "7")], expected: .retry(reason: "HTTP 503: maintenance", after: 7)),
        OutcomeCase(name: "429", http: 429, body: "", expected: .retry(reason: "HTTP 429", after: nil)),
        OutcomeCase(name: "401", http: 401, body: #"{"error":"You need to sign in or sign up before continuing."}"#,
                    expected: .terminal(reason: "HTTP 401: You need to sign in or sign up before continuing.")),
        OutcomeCase(name: "404", http: 404, body: "", expected: .terminal(reason: "HTTP 404")),
        OutcomeCase(name: "422 with errors", http: 422, body: #"{"errors":{"amount":["is not a number"]}}"#,
                    expected: .terminal(reason: #"HTTP 422: {"amount":["is not a number"]}"#)),
    ]

    @Test("Punchh's answers -> delivery outcomes", arguments: outcomeCases)
    func outcome(_ c: OutcomeCase) throws {
        let d = try Self.destination()
        let response = OutboundResponse(status: c.http, headers: HTTPHeaders(c.headers), body: Array(c.body.utf8))
        let got = d.outcome(response, event: Self.event(c.status), context: Self.context)
        #expect(got.classification == c.expected)
    }

    @Test("responses rules are read before the adapter's own reading")
    func responseRules() throws {
        let d = try Self.destination("""
            responses: [ { status: 200, body: { "$.category": "redeemable" }, result: "delivered" } ]
            """)
        let redeemable = OutboundResponse(status: 200, body: Array(#"{"status":"ok","category":"redeemable"}"#.utf8))
        #expect(d.outcome(redeemable, event: Self.event(.processed), context: Self.context).classification == .delivered)
        let invalid = OutboundResponse(status: 200, body: Array(#"{"status":"gone","category":"invalid"}"#.utf8))
        #expect(d.outcome(invalid, event: Self.event(.processed), context: Self.context).classification
                == .terminal(reason: "redemption code RC8H2K is invalid: gone"))
    }

    // MARK: Configuration

    static func destinationProblems(_ text: String, env: [String: String] = [:]) throws -> [String] {
        let r = ConfigReader(environment: env)
        _ = PunchhDestinationFactory().makeDestination(name: "p", config: try json5(text), path: "destinations.p", reader: r)
        return r.problems.map(\.description)
    }

    static func sourceProblems(_ text: String) throws -> [String] {
        let r = ConfigReader(environment: [:])
        _ = PunchhSourceFactory().makeSource(name: "p", config: try json5(text), path: "sources.p", reader: r)
        return r.problems.map(\.description)
    }

    @Test("configuration problems name their key path")
    func configErrors() throws {
        func expectProblem(_ problems: [String], _ prefix: String, _ fragment: String,
                           sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(problems.contains { $0.hasPrefix(prefix + ": ") && $0.contains(fragment) },
                    "expected \(prefix): …\(fragment)… in \(problems)", sourceLocation: sourceLocation)
        }
        expectProblem(try Self.destinationProblems("{ adapter: \"punchh\" }"), "destinations.p.baseURL", "is required")
        expectProblem(try Self.destinationProblems("{ baseURL: \"sandbox.punchh.com\" }"), "destinations.p.baseURL",
                      "http:// or https://")
        let bad = try Self.destinationProblems("""
            { baseURL: "https://sandbox.punchh.com", code: 12, amount: "${nope.x}",
              statusMap: { processed: "redeem", shipd: "process" },
              headers: { Authorization: "Token token=\\"${env:PUNCHH_LOCATION_KEY}\\"" },
              responses: [ { status: 200, result: "maybe" } ] }
            """)
        expectProblem(bad, "destinations.p.code", "expected a string")
        expectProblem(bad, "destinations.p.amount", "unknown placeholder")
        expectProblem(bad, "destinations.p.statusMap.processed", "use \"process\" or \"void\"")
        expectProblem(bad, "destinations.p.statusMap.shipd", "not a canonical status")
        expectProblem(bad, "destinations.p.headers.Authorization", "PUNCHH_LOCATION_KEY is not set")
        expectProblem(bad, "destinations.p.responses[0].result", "is not one of")
        expectProblem(try Self.destinationProblems("{ baseURL: \"https://x.punchh.com\", code: \"\" }"),
                      "destinations.p.code", "must not be empty")
        expectProblem(try Self.destinationProblems("{ baseURL: \"https://x.punchh.com\", code: null }"),
                      "destinations.p.code", "is required")
        expectProblem(try Self.destinationProblems("""
            { baseURL: "https://x.punchh.com", statusMap: { processed: null, cancelled: null } }
            """), "destinations.p.statusMap", "maps no status")

        let src = try Self.sourceProblems("""
            { type: 5, statusMap: { "weird": "nope" },
              map: { subject: { redemptionCode: "payload.code" }, attributes: { x: 3 }, status: "status", bogus: "$.x" } }
            """)
        expectProblem(src, "sources.p.type", "expected a string")
        expectProblem(src, "sources.p.statusMap.weird", "is not a canonical status")
        expectProblem(src, "sources.p.map.subject.redemptionCode", "expected a JSON path")
        expectProblem(src, "sources.p.map.attributes.x", "expected a JSON path")
        expectProblem(src, "sources.p.map.status", "expected a JSON path")
        expectProblem(src, "sources.p.map.bogus", "unknown key")

        // Through the whole configuration: unknown keys of the punchh blocks are named too.
        let error = try #require(throws: ConfigError.self) {
            try RelayConfig.parse(Data("""
                { server: { listen: "127.0.0.1:0" }, store: { sqlite: "/tmp/never-opened.db" },
                  sources: { "p": { adapter: "punchh", verify: { none: true }, frobnicate: 1 } },
                  destinations: { "d": { adapter: "punchh", baseURL: "https://x.punchh.com", processUrl: "x" } } }
                """.utf8), registry: BuiltinAdapters.registry, environment: [:])
        }
        let paths = error.problems.map(\.path)
        #expect(paths.contains("sources.p.frobnicate") && paths.contains("destinations.d.processUrl"), "\(error)")
    }

    // MARK: The stand-in

    static let token = [("Authorization", "Token token=\"lk_123\"")]

    static func put(_ c: Client, _ code: String, _ form: String? = nil, headers: [(String, String)] = token,
                    prefix: String = "") throws -> Response {
        var h = headers
        if form != nil { h.append(("Content-Type", "application/x-www-form-urlencoded")) }
        return try c.request("PUT", "\(prefix)/api/v1/redemption_codes/\(code)", headers: h, body: form.map { Array($0.utf8) })
    }

    static func expectCode(_ r: Response, _ category: String, amount: Double? = nil, text: String? = nil,
                           sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.status == 200, "\(r)", sourceLocation: sourceLocation)
        #expect(r["category"] == category, "\(r)", sourceLocation: sourceLocation)
        #expect(r["status"]?.isEmpty == false, "\(r)", sourceLocation: sourceLocation)
        if let text { #expect(r["status"] == text, "\(r)", sourceLocation: sourceLocation) }
        if let amount { #expect(r.json?["redemption_amount"]?.numberValue == amount, "\(r)", sourceLocation: sourceLocation) }
    }

    @Test("stand-in: process, process again, void, expired and unknown codes, status without params")
    func standInStates() throws {
        let sink = try startStandIn(PunchhSimulator())
        defer { sink.stop() }
        let c = Client(port: sink.port)
        Self.expectCode(try Self.put(c, "RC1"), "redeemable", amount: 0, text: "Redemption code RC1 is valid and can be honoured")
        Self.expectCode(try Self.put(c, "RC1", "process=true&amount=10"), "processed", amount: 10,
                        text: "Redemption code RC1 has been processed")
        Self.expectCode(try Self.put(c, "RC1", "process=true"), "processed", amount: 10)
        Self.expectCode(try Self.put(c, "RC1"), "processed")
        Self.expectCode(try Self.put(c, "RC1", "void=true"), "unassigned", text: "Redemption code RC1 has been voided")
        Self.expectCode(try Self.put(c, "RC1", "process=true"), "unassigned")
        Self.expectCode(try Self.put(c, "RC2", "void=true"), "unassigned")
        // Any prefix before /api/v1; percent-encoded codes decoded.
        Self.expectCode(try Self.put(c, "AB%20C", "process=true", prefix: "/pos"), "processed",
                        text: "Redemption code AB C has been processed")
        Self.expectCode(try Self.put(c, "expired-7", "process=true"), "expired")
        Self.expectCode(try Self.put(c, "EXPIRED-8", "void=true"), "expired")
        Self.expectCode(try Self.put(c, "invalid-1", "process=true"), "invalid", amount: 0)
        Self.expectCode(try Self.put(c, "unknown-2", "void=true"), "invalid")
        // The newer POS form of the header.
        Self.expectCode(try Self.put(c, "RC3", "process=true", headers: [("Authorization", "Token token=lk_1, btoken=bk_2")]),
                        "processed")
    }

    @Test("stand-in: wrong auth form is 401, a JSON body 400, bad params 422, other methods and paths refused")
    func standInRefusals() throws {
        let sink = try startStandIn(PunchhSimulator())
        defer { sink.stop() }
        let c = Client(port: sink.port)
        for auth in [nil, "Bearer lk_123", "Token lk_123", "Token token=\"\"", "token token=\"lk\"",
                     "Token token=\"lk\", btoken=", "Token token=\"lk\", key=\"x\"", "Token token=\"l\"k\""] {
            let r = try Self.put(c, "RC1", "process=true", headers: auth.map { [("Authorization", $0)] } ?? [])
            #expect(r.status == 401, "\(auth ?? "none"): \(r)")
            #expect(r["error"]?.contains("Token token=") == true, "\(r)")
        }
        let json = try c.request("PUT", "/api/v1/redemption_codes/RC1",
                                 headers: Self.token + [("Content-Type", "application/json")],
                                 body: Array(#"{"process":true}"#.utf8))
        #expect(json.status == 400 && json["error"]?.contains("application/x-www-form-urlencoded") == true, "\(json)")
        let amount = try Self.put(c, "RC1", "process=true&amount=ten")
        #expect(amount.status == 422 && amount["error"]?.contains("amount") == true, "\(amount)")
        let both = try Self.put(c, "RC1", "process=true&void=true")
        #expect(both.status == 422, "\(both)")
        let get = try c.request("GET", "/api/v1/redemption_codes/RC1", headers: Self.token)
        #expect(get.status == 405 && get.header("Allow") == "PUT", "\(get)")
        #expect(try c.request("PUT", "/api/v2/other", headers: Self.token).status == 404)
        // None of the refused requests changed the code.
        Self.expectCode(try Self.put(c, "RC1"), "redeemable")
    }

    // MARK: End to end

    @Test("end to end: a signed Punchh webhook in, the process call at the stand-in out, the duplicate answered 200")
    func endToEnd() throws {
        let standIn = try startStandIn(PunchhSimulator())
        defer { standIn.stop() }
        let secret = Preset.punchh.makeSecret()
        let relay = try RunningRelay(sources: """
            "punchh": { adapter: "punchh", publicURL: "https://relay.example.com",
                        verify: { preset: "punchh", secrets: ["${env:PUNCHH_WEBHOOK_SECRET}"] } },
            """, extra: """
            destinations: {
              "punchh-pos": { adapter: "punchh", baseURL: "\(standIn.baseURL)/pos",
                              headers: { Authorization: "Token token=\\"${env:PUNCHH_LOCATION_KEY}\\"" },
                              retry: { schedule: ["100ms"], jitter: "none" } },
            },
            routes: [ { from: "punchh", when: { type: "redemption.status_changed" }, to: ["punchh-pos"] } ],
            """, environment: ["PUNCHH_WEBHOOK_SECRET": secret.text, "PUNCHH_LOCATION_KEY": "lk_e2e"])
        defer { relay.stop() }

        func send(_ body: String) throws -> Response {
            var m = Preset.Message(body: Array(body.utf8))
            m.uri = "https://relay.example.com/v1/hooks/punchh"
            return try relay.client.post("/v1/hooks/punchh", m.body, headers: Preset.punchh.headers(m, keys: [secret.key]))
        }

        let contentID = UUID().uuidString.lowercased()
        let body = Self.redemption(contentID: contentID, code: "RC E2E", timestamp: "1763632800123")
        let eventID = try expectAccepted(try send(body))
        let stored = try #require(try relay.store.event(id: eventID))
        #expect(stored.type == "redemption.status_changed")
        #expect(stored.idempotencyKey == contentID)
        #expect(stored.status == .processed)
        #expect(stored.subject["redemptionCode"] == "RC E2E")
        #expect(stored.occurredAt == "2025-11-20T10:00:00.123Z")
        #expect(stored.attributes["amount"] == .number(10))

        let delivery = try DeliveryTests.waitForState(relay, eventID, "punchh-pos", "delivered")
        let got = standIn.requests(path: "/pos/api/v1/redemption_codes/RC%20E2E")
        try #require(got.count == 1, "\(standIn.requests().map(\.target))")
        let r = got[0]
        #expect(r.method == "PUT")
        #expect(r.bodyText == "process=true&amount=10")
        #expect(r.headers["Content-Type"] == "application/x-www-form-urlencoded")
        #expect(r.headers["Authorization"] == "Token token=\"lk_e2e\"")
        #expect(r.headers["Idempotency-Key"] == delivery.id)
        #expect(r.status == 200)

        // Punchh delivers at least once: the same content_id again is 200 duplicate, and nothing is sent again.
        let again = try send(body)
        #expect(again.status == 200, "\(again)")
        #expect(again["eventId"] == eventID && again.json?["duplicate"] == .bool(true), "\(again)")

        // An expired code: Punchh answers 200 `expired`, which dead-letters the delivery with the reason.
        let expiredID = try expectAccepted(try send(Self.redemption(contentID: UUID().uuidString, code: "expired-1")))
        let dead = try DeliveryTests.waitForState(relay, expiredID, "punchh-pos", "dead")
        let row = try DeliveryTests.deliveryRow(relay.store, dead.id)
        #expect(row.lastError?.contains("redemption code expired-1 is expired") == true, "\(row)")

        // A status with no mapping is stored (202), and its delivery skipped rather than guessed.
        let oddID = try expectAccepted(try send(Self.redemption(contentID: UUID().uuidString, status: "honoured")))
        #expect(try relay.store.event(id: oddID)?.status == nil)
        try DeliveryTests.waitForState(relay, oddID, "punchh-pos", "skipped")

        // Not a Punchh envelope: 422, nothing stored.
        let bad = try send(#"{"hello":"world"}"#)
        #expect(bad.status == 422 && bad["reason"]?.contains("content_id") == true, "\(bad)")

        #expect(standIn.requests().count == 2, "\(standIn.requests().map(\.target))")
        #expect(try relay.store.eventCount() == 3)
    }
}
