import Adapters
import Crypto
import Foundation
@testable import Relay
import Simulator
import Testing

/// Capillary: the fulfilment-status destination, the vendor-redemption source, the stand-in, and both ends of the
/// relay together with Returning.AI.
@Suite("Capillary")
struct CapillaryTests {
    static let statusMap = """
        statusMap: { placed: "received", sent: "in-progress", shipped: "in-progress", delivered: "completed",
                     cancelled: "denied", pending: "pending" }
        """
    static let base = #"baseURL: "https://eu.api.capillarytech.com", "# + statusMap
    static let environment = ["CAPILLARY_TOKEN": "cap-oauth-token-1"]
    static let fullSubject = ["transactionId": "3482445", "customerId": "85076836", "rewardId": "177657",
                              "vendorOrderId": "V-1"]

    // MARK: Helpers

    static func block(_ text: String) throws -> [String: JSONValue] {
        try #require(try JSONValue.parse(Data("{ \(text) }".utf8), json5: true).objectValue)
    }

    static func makeDestination(_ text: String, environment: [String: String] = environment)
        throws -> (CapillaryDestination?, [ConfigProblem]) {
        let reader = ConfigReader(environment: environment)
        let d = CapillaryDestinationFactory().makeDestination(name: "cap", config: try block(text),
                                                              path: "destinations.cap", reader: reader)
        return (d as? CapillaryDestination, reader.problems)
    }

    static func destination(_ text: String = base) throws -> CapillaryDestination {
        let (d, problems) = try makeDestination(text)
        #expect(problems.isEmpty, "\(problems)")
        return try #require(d)
    }

    static func makeSource(_ text: String) throws -> (CapillarySource?, [ConfigProblem]) {
        let reader = ConfigReader(environment: [:])
        let s = CapillarySourceFactory().makeSource(name: "capillary-acme", config: try block(text),
                                                    path: "sources.capillary-acme", reader: reader)
        return (s as? CapillarySource, reader.problems)
    }

    static func source(_ text: String = "") throws -> CapillarySource {
        let (s, problems) = try makeSource(text)
        #expect(problems.isEmpty, "\(problems)")
        return try #require(s)
    }

    static func normalize(_ s: CapillarySource, _ json: String) throws(NormalizeError) -> NormalizedEvent {
        let body = Array(json.utf8)
        let request = HTTPRequest(method: "POST", path: "/v1/hooks/capillary-acme",
                                  headers: HTTPHeaders([("Content-Type", "application/json")]), body: body)
        let webhook = InboundWebhook(source: "capillary-acme", request: request, contentType: "application/json",
                                     payload: LazyPayload(kind: .json, validatedBytes: body), receivedAt: Date(),
                                     verified: VerifiedRequest())
        return try s.normalize(webhook)
    }

    static func event(_ status: CanonicalStatus?, subject: [String: String] = fullSubject,
                      attributes: [String: JSONValue] = [:]) -> CanonicalEvent {
        CanonicalEvent(id: "evt_01JTEST0000000000000000000", source: "shop", type: "redemption.status_changed",
                       subject: subject, status: status, receivedAt: "2026-11-20T10:00:00.123Z",
                       attributes: attributes, idempotencyKey: "k1")
    }

    static func translate(_ d: CapillaryDestination, _ e: CanonicalEvent) throws(TranslateError) -> OutboundRequest {
        try d.translate(e, context: DeliveryContext(deliveryID: "dlv_1", destination: "cap", attempt: 1))
    }

    static func text(_ r: OutboundRequest) -> String { String(decoding: r.body, as: UTF8.self) }

    /// `{"transactions":[ITEM]}` with the item's fields in the order the relay writes them (sorted).
    static func one(_ item: String) -> String { #"{"transactions":[\#(item)]}"# }

    // MARK: Destination: requests

    @Test("every mapped status: the exact request; ids as numbers, custom fields, token header")
    func outboundTable() throws {
        let d = try Self.destination(Self.base + #"""
            , headers: { "X-CAP-API-OAUTH-TOKEN": "${env:CAPILLARY_TOKEN}" },
            customFields: { Partner_Order_Id: "${subject.vendorOrderId?}", Carrier: "${attributes.carrier?}" }
            """#)
        let rows: [(CanonicalStatus, String)] = [(.placed, "received"), (.sent, "in-progress"), (.shipped, "in-progress"),
                                                 (.delivered, "completed"), (.cancelled, "denied"), (.pending, "pending")]
        for (status, name) in rows {
            let r = try Self.translate(d, Self.event(status))
            #expect(r.method == "PUT")
            #expect(r.url == "https://eu.api.capillarytech.com/api_gateway/rewards/core/v1/management/transactions?skip_validation=true")
            #expect(r.headers.map { "\($0.0): \($0.1)" } == ["Content-Type: application/json", "Accept: application/json",
                                                           "X-CAP-API-OAUTH-TOKEN: cap-oauth-token-1"])
            #expect(Self.text(r) == Self.one(#"{"customerId":85076836,"fulfillmentDetails":{"status":"\#(name)"},"rewardId":177657,"transactionCustomFields":{"Partner_Order_Id":"V-1"},"transactionId":3482445}"#),
                    "\(status)")
        }
        // Two custom fields, sorted; a value with quotes is escaped.
        let carrier = try Self.translate(d, Self.event(.shipped, attributes: ["carrier": .string("UPS \"Ground\"")]))
        #expect(Self.text(carrier) == Self.one(#"{"customerId":85076836,"fulfillmentDetails":{"status":"in-progress"},"rewardId":177657,"transactionCustomFields":{"Carrier":"UPS \"Ground\"","Partner_Order_Id":"V-1"},"transactionId":3482445}"#))
        // Optional fields absent: no customerId, rewardId, transactionCustomFields.
        let bare = try Self.translate(d, Self.event(.delivered, subject: ["transactionId": "3482445"]))
        #expect(Self.text(bare) == Self.one(#"{"fulfillmentDetails":{"status":"completed"},"transactionId":3482445}"#))
        // Ids that are not all digits stay strings (a leading zero would be lost in a number); long ones keep every digit.
        let mixed = try Self.translate(d, Self.event(.placed, subject: ["transactionId": "TX-3482445", "customerId": "0085076836",
                                                                        "rewardId": "12345678901234567890"]))
        #expect(Self.text(mixed) == Self.one(#"{"customerId":"0085076836","fulfillmentDetails":{"status":"received"},"rewardId":12345678901234567890,"transactionId":"TX-3482445"}"#))
        // Unmapped statuses are skipped; so is an event without one.
        for status in [CanonicalStatus.invoiced, .backordered, .processed, .refunded, .expired, .failed] {
            #expect(throws: TranslateError.noMapping(status)) { try Self.translate(d, Self.event(status)) }
        }
        #expect(throws: TranslateError.noMapping(nil)) { try Self.translate(d, Self.event(nil)) }
    }

    @Test("templates, skipValidation: false, Basic auth header, missing required values")
    func templatesAndErrors() throws {
        let d = try Self.destination(#"""
            baseURL: "https://apac2.api.capillarytech.com/", skipValidation: false,
            headers: { Authorization: "Basic dGlsbDpwYXNz" },
            transactionId: "${attributes.capillary.transactionId}", customerId: "${subject.memberId}", rewardId: "177657",
            customFields: { Partner_Order_Id: "${subject.vendorOrderId}", Source: "relay ${source}" },
            statusMap: { shipped: "Shipped" }
            """#)
        let e = Self.event(.shipped, subject: ["memberId": "85076836", "vendorOrderId": "V-9"],
                           attributes: ["capillary": .object(["transactionId": .number(3482445)])])
        let r = try Self.translate(d, e)
        #expect(r.url == "https://apac2.api.capillarytech.com/api_gateway/rewards/core/v1/management/transactions")
        #expect(r.headers.last.map { "\($0.0): \($0.1)" } == "Authorization: Basic dGlsbDpwYXNz")
        #expect(Self.text(r) == Self.one(#"{"customerId":85076836,"fulfillmentDetails":{"status":"Shipped"},"rewardId":177657,"transactionCustomFields":{"Partner_Order_Id":"V-9","Source":"relay shop"},"transactionId":3482445}"#))

        // A required subject identifier with no value: retried (correlation may still supply it), naming it.
        let noOrder = try #require(throws: TranslateError.self) {
            try Self.translate(d, Self.event(.shipped, subject: ["memberId": "1"], attributes: e.attributes))
        }
        #expect(noOrder.kind == .retry && noOrder.reason.contains("subject.vendorOrderId"), "\(noOrder)")
        let noTransaction = try #require(throws: TranslateError.self) {
            try Self.translate(Self.destination(), Self.event(.shipped, subject: ["customerId": "1"]))
        }
        #expect(noTransaction.kind == .retry && noTransaction.reason.contains("subject.transactionId"), "\(noTransaction)")
        let empty = try #require(throws: TranslateError.self) {
            try Self.translate(Self.destination(), Self.event(.shipped, subject: ["transactionId": ""]))
        }
        #expect(empty.kind == .terminal && empty.reason.contains("transactionId is empty"), "\(empty)")
    }

    // MARK: Destination: responses

    @Test("response classes from Capillary's envelopes")
    func classify() throws {
        let d = try Self.destination()
        let ok = #"{"status":{"success":true,"code":5016,"message":"Transaction(s) updated successfully"},"transactions":[{"transactionId":3482445}]}"#
        #expect(d.classify(outboundResponse(200, ok)) == .delivered)
        #expect(d.classify(outboundResponse(200, #"{"transactions":[]}"#)) == .delivered)
        #expect(d.classify(outboundResponse(204, "")) == .delivered)
        #expect(d.classify(outboundResponse(200, #"{"status":{"success":false,"code":8015,"message":"Invalid fulfillment status: shipped"}}"#))
                == .terminal(reason: "HTTP 200 with status.success false: 8015: Invalid fulfillment status: shipped"))
        #expect(d.classify(outboundResponse(400, #"{"status":{"success":false,"code":8004,"message":"Transaction not found"}}"#))
                == .terminal(reason: "HTTP 400: 8004: Transaction not found"))
        #expect(d.classify(outboundResponse(401, #"{"status":{"success":false,"code":401,"message":"Invalid token"}}"#))
                == .terminal(reason: "HTTP 401: 401: Invalid token"))
        #expect(d.classify(outboundResponse(404, "<html>Not Found</html>")) == .terminal(reason: "HTTP 404"))
        #expect(d.classify(outboundResponse(500, #"{"status":{"success":false,"code":500,"message":"Internal Server Error"}}"#))
                == .retry(reason: "HTTP 500: 500: Internal Server Error", after: nil))
        #expect(d.classify(outboundResponse(502, "bad gateway")) == .retry(reason: "HTTP 502", after: nil))
        #expect(d.classify(outboundResponse(408, "")) == .retry(reason: "HTTP 408", after: nil))
        #expect(d.classify(outboundResponse(429, #"{"status":{"success":false,"code":429,"message":"Rate limit exceeded"}}"#,
                                         headers: [("Retry-After", "12")]))
                == .retry(reason: "HTTP 429: 429: Rate limit exceeded", after: 12))
    }

    // MARK: Destination: configuration

    @Test("destination config problems name their key path: baseURL and statusMap required, values checked")
    func destinationConfigErrors() throws {
        let (none, p1) = try Self.makeDestination("")
        #expect(none == nil)
        #expect(p1.map(\.path) == ["destinations.cap.baseURL", "destinations.cap.statusMap"], "\(p1)")
        #expect(p1.allSatisfy { $0.message.contains("is required") }, "\(p1)")

        let (_, p2) = try Self.makeDestination(#"""
            baseURL: "eu.api.capillarytech.com", statusMap: { shipped: "", arrived: "completed", delivered: 7 },
            customFields: { Partner_Order_Id: 12, Note: "${subject.note" }, skipValidation: "yes",
            customerId: "${customer}", transactionId: 3482445
            """#)
        #expect(Set(p2.map(\.path)) == ["destinations.cap.baseURL", "destinations.cap.statusMap.shipped",
                                        "destinations.cap.statusMap.arrived", "destinations.cap.customFields.Partner_Order_Id",
                                        "destinations.cap.customFields.Note", "destinations.cap.skipValidation",
                                        "destinations.cap.transactionId"], "\(p2)")
        #expect(p2.first { $0.path.hasSuffix("statusMap.shipped") }?.message.contains("status names") == true)
        #expect(p2.first { $0.path.hasSuffix("statusMap.arrived") }?.message.contains("not a canonical status") == true)

        let (_, p3) = try Self.makeDestination(Self.base + #", headers: { "X-CAP-API-OAUTH-TOKEN": "${env:CAPILLARY_TOKEN}" }"#,
                                               environment: [:])
        #expect(p3.map(\.path) == ["destinations.cap.headers.X-CAP-API-OAUTH-TOKEN"], "\(p3)")
        #expect(p3.first?.message.contains("CAPILLARY_TOKEN") == true)
    }

    // MARK: Source

    @Test("inbound fixtures: custom fields, mapped, canonical-named, unmapped and absent statuses; idempotency keys")
    func inbound() throws {
        let s = try Self.source(#"statusMap: { "In Progress": "shipped", "Completed": "delivered", "Denied": "cancelled" }"#)

        let full = try Self.normalize(s, #"""
            {"rewardTransactionId": 3482445, "customerId": 85076836, "rewardId": 177657,
             "fulfillmentStatus": "In Progress", "mobile": "919876543210",
             "customfield_Partner_Order_Id": "V-77", "customfield_Gift_Note": "Happy birthday", "customfield_Qty": 2,
             "customfield_": "ignored", "brand": "acme"}
            """#)
        #expect(full == NormalizedEvent(
            type: "redemption.status_changed",
            subject: ["transactionId": "3482445", "customerId": "85076836", "rewardId": "177657"],
            status: .shipped, providerStatus: ProviderStatus(code: "In Progress"),
            attributes: ["mobile": .string("919876543210"),
                         "customFields": .object(["Partner_Order_Id": .string("V-77"), "Gift_Note": .string("Happy birthday"),
                                                  "Qty": .string("2")])]))

        let rows: [(String, CanonicalStatus?, String, String)] = [
            // body, canonical status, type, idempotency key
            (#"{"rewardTransactionId":"3482445","fulfillmentStatus":"completed"}"#, .delivered,
             "redemption.status_changed", "3482445:completed"),                        // statusMap, case-insensitive
            (#"{"rewardTransactionId":"3482445","fulfillmentStatus":"Refunded"}"#, .refunded,
             "redemption.status_changed", "3482445:Refunded"),                         // a canonical name itself
            (#"{"rewardTransactionId":"3482445","fulfillmentStatus":"awaiting-stock"}"#, nil,
             "redemption.status_changed", "3482445:awaiting-stock"),                   // unmapped: accepted, no status
            (#"{"rewardTransactionId":"3482445","customerId":85076836}"#, nil, "reward.issued", "3482445:issued"),
            (#"{"rewardTransactionId":"3482445","fulfillmentStatus":""}"#, nil, "reward.issued", "3482445:issued"),
            (#"{"rewardTransactionId":"3482445","fulfillmentStatus":null}"#, nil, "reward.issued", "3482445:issued"),
        ]
        for (body, status, type, _) in rows {
            let e = try Self.normalize(s, body)
            #expect(e.status == status, "\(body)")
            #expect(e.type == type, "\(body)")
            #expect(e.idempotencyKey == nil, "\(body): deduplicated on the body's hash, not on txn:status")
            #expect(e.subject["transactionId"] == "3482445")
            #expect(e.attributes.isEmpty, "\(body)")
        }
        #expect(try Self.normalize(s, #"{"rewardTransactionId":"1","fulfillmentStatus":"awaiting-stock"}"#).providerStatus
                == ProviderStatus(code: "awaiting-stock"))
        #expect(try Self.normalize(s, #"{"rewardTransactionId":"1"}"#).providerStatus == nil)

        for body in [#"{"customerId":85076836,"fulfillmentStatus":"Completed"}"#, #"{"rewardTransactionId":""}"#,
                     #"{"rewardTransactionId":null}"#] {
            let error = try #require(throws: NormalizeError.self) { try Self.normalize(s, body) }
            #expect(error.status == 422)
            #expect(error.reason.contains("$.rewardTransactionId"), "\(error)")
        }
        let notObject = try #require(throws: NormalizeError.self) { try Self.normalize(s, "[1]") }
        #expect(notObject.status == 422)
    }

    @Test("source map overrides: other paths, removed defaults, extra attributes, type names")
    func inboundOverrides() throws {
        let s = try Self.source(#"""
            map: { subject: { transactionId: "$.txn.id", rewardId: null, vendorOrderId: "$.txn.vendorOrder" },
                   status: "$.txn.state", occurredAt: "$.txn.at",
                   attributes: { mobile: null, email: "$.member.email", customFields: "$.fields" } },
            statusMap: { "SHIPPED_OUT": "shipped" },
            type: { statusChanged: "capillary.fulfilment", issued: "capillary.issued" }
            """#)
        let e = try Self.normalize(s, #"""
            {"txn": {"id": "T-1", "state": "SHIPPED_OUT", "vendorOrder": "V-5", "at": "2026-11-20T10:00:00Z"},
             "rewardId": 177657, "customerId": "85076836", "mobile": "9198", "member": {"email": "a@b.c"},
             "fields": {"Partner_Order_Id": "V-5"}, "customfield_Ignored": "x"}
            """#)
        #expect(e == NormalizedEvent(
            type: "capillary.fulfilment", subject: ["transactionId": "T-1", "customerId": "85076836", "vendorOrderId": "V-5"],
            status: .shipped, providerStatus: ProviderStatus(code: "SHIPPED_OUT"), occurredAt: "2026-11-20T10:00:00Z",
            attributes: ["email": .string("a@b.c"), "customFields": .object(["Partner_Order_Id": .string("V-5")])]))
        #expect(try Self.normalize(s, #"{"txn":{"id":"T-1"}}"#).type == "capillary.issued")
        let missing = try #require(throws: NormalizeError.self) {
            try Self.normalize(s, #"{"rewardTransactionId":"3482445","txn":{}}"#)
        }
        #expect(missing.status == 422 && missing.reason.contains("$.txn.id"), "\(missing)")
        // `type` as a string names the status-changed type only.
        let typed = try Self.source(#"type: "reward.fulfilment_changed""#)
        #expect(try Self.normalize(typed, #"{"rewardTransactionId":1,"fulfillmentStatus":"x"}"#).type == "reward.fulfilment_changed")
        #expect(try Self.normalize(typed, #"{"rewardTransactionId":1}"#).type == "reward.issued")
    }

    @Test("source config problems name their key path")
    func sourceConfigErrors() throws {
        let (s, p) = try Self.makeSource(#"""
            map: { subject: { transactionId: null, customerId: 5 }, status: 7, extra: "$.x" },
            statusMap: { "In Progress": "in-transit" }, type: { statusChanged: "", later: "x" }
            """#)
        #expect(s == nil)
        #expect(Set(p.map(\.path)) == ["sources.capillary-acme.map.subject.transactionId",
                                       "sources.capillary-acme.map.subject.customerId", "sources.capillary-acme.map.status",
                                       "sources.capillary-acme.map.extra",
                                       #"sources.capillary-acme.statusMap["In Progress"]"#,
                                       "sources.capillary-acme.type.statusChanged", "sources.capillary-acme.type.later"],
                "\(p)")
    }

    // MARK: The stand-in

    @Test("stand-in over HTTP: Basic and OAuth token, bad auth, numeric ids, statuses, organisation status names")
    func standIn() throws {
        let sink = try startStandIn(CapillarySimulator(allowedStatuses: nil))
        defer { sink.stop() }
        let strict = try startStandIn(CapillarySimulator(allowedStatuses: CapillarySimulator.statuses(from: " received, completed ,,")))
        defer { strict.stop() }
        let target = "/api_gateway/rewards/core/v1/management/transactions?skip_validation=true"
        func put(_ body: String, _ auth: [(String, String)] = [("X-CAP-API-OAUTH-TOKEN", "tok")], on s: Sink? = nil,
                 method: String = "PUT", at path: String = target) throws -> Response {
            try Client(port: (s ?? sink).port).request(method, path, headers: [("Content-Type", "application/json")] + auth,
                                                       body: Array(body.utf8))
        }
        let valid = Self.one(#"{"customerId":85076836,"fulfillmentDetails":{"status":"completed"},"rewardId":177657,"transactionCustomFields":{"Partner_Order_Id":"V-1"},"transactionId":3482445}"#)
        for auth in [[("X-CAP-API-OAUTH-TOKEN", "tok")], [("Authorization", "Basic dGlsbDpwYXNz")]] {
            let ok = try put(valid, auth)
            #expect(ok.status == 200, "\(ok)")
            #expect(ok.json?["status"] == .object(["success": .bool(true), "code": .number(200),
                                                   "message": .string("1 transaction updated")]))
            #expect(ok.json?["transactions"] == (try JSONValue.parse(Data(valid.utf8)))["transactions"])
        }
        func expectError(_ r: Response, _ status: Int, _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(r.status == status, "\(r)", sourceLocation: sourceLocation)
            #expect(r.json?["status"]?["success"] == .bool(false), "\(r)", sourceLocation: sourceLocation)
            #expect(r.json?["status"]?["code"] == .number(Double(status)), "\(r)", sourceLocation: sourceLocation)
            #expect(r.json?["status"]?["message"]?.stringValue?.contains(fragment) == true, "\(r)", sourceLocation: sourceLocation)
        }
        expectError(try put(valid, []), 401, "X-CAP-API-OAUTH-TOKEN")
        expectError(try put(valid, [("Authorization", "Bearer tok")]), 401, "Unauthorized")
        expectError(try put(valid, [("X-CAP-API-OAUTH-TOKEN", " ")]), 401, "Unauthorized")
        expectError(try put(valid, [("Authorization", "Basic")]), 401, "Unauthorized")
        expectError(try put(Self.one(#"{"fulfillmentDetails":{"status":"completed"},"transactionId":"TX-1"}"#)), 400,
                    "transactions[0].transactionId must be a numeric")
        expectError(try put(Self.one(#"{"fulfillmentDetails":{"status":"completed"},"transactionId":"3482445"}"#)), 400,
                    "must be a numeric")
        expectError(try put(Self.one(#"{"fulfillmentDetails":{"status":"completed"},"transactionId":1.5}"#)), 400, "numeric")
        expectError(try put(Self.one(#"{"fulfillmentDetails":{"status":""},"transactionId":1}"#)), 400,
                    "fulfillmentDetails.status is required")
        expectError(try put(Self.one(#"{"transactionId":1}"#)), 400, "fulfillmentDetails.status is required")
        expectError(try put(#"{"transactions":[]}"#), 400, "non-empty array")
        expectError(try put(#"{"transaction":{}}"#), 400, "non-empty array")
        expectError(try put("not json"), 400, "JSON object")
        expectError(try put(Self.one(#"{"fulfillmentDetails":{"status":"x"},"transactionId":1,"transactionCustomFields":[]}"#)),
                    400, "transactionCustomFields")
        expectError(try put(valid, method: "POST"), 405, "use PUT")
        expectError(try put(valid, at: "/api_gateway/rewards/core/v1/management/transaction"), 404, "No API")

        // Any status name unless the organisation's list is set; then only those (exactly).
        #expect(try put(Self.one(#"{"fulfillmentDetails":{"status":"anything-goes"},"transactionId":1}"#)).status == 200)
        #expect(try put(Self.one(#"{"fulfillmentDetails":{"status":"received"},"transactionId":1}"#), on: strict).status == 200)
        expectError(try put(Self.one(#"{"fulfillmentDetails":{"status":"Completed"},"transactionId":1}"#), on: strict), 400,
                    "allowed: received, completed")
        #expect(CapillarySimulator.statuses(from: nil) == nil && CapillarySimulator.statuses(from: " , ") == nil)
    }

    @Test("the translated request, sent with the relay's HTTP client, is accepted by the stand-in")
    func translatedAgainstStandIn() throws {
        let sink = try startStandIn(CapillarySimulator(allowedStatuses: ["received", "in-progress", "completed", "denied", "pending"]))
        defer { sink.stop() }
        let client = try HTTPClient()
        defer { client.shutdown(timeout: 2) }
        let d = try Self.destination(#"baseURL: "\#(sink.baseURL)", headers: { "X-CAP-API-OAUTH-TOKEN": "${env:CAPILLARY_TOKEN}" }, "#
                                     + Self.statusMap + #", customFields: { Partner_Order_Id: "${subject.vendorOrderId?}" }"#)
        for status in [CanonicalStatus.placed, .shipped, .delivered, .cancelled] {
            let response = try client.sendAndWait(try Self.translate(d, Self.event(status))).get()
            #expect(d.classify(response) == .delivered, "\(status): \(String(decoding: response.body, as: UTF8.self))")
        }
        let text = try client.sendAndWait(try Self.translate(d, Self.event(.shipped, subject: ["transactionId": "TX-1"]))).get()
        #expect(d.classify(text) == .terminal(reason: #"HTTP 400: 400: transactions[0].transactionId must be a numeric reward transaction id, found "TX-1""#))
        let noAuth = try Self.destination(#"baseURL: "\#(sink.baseURL)", "# + Self.statusMap)
        let r = try client.sendAndWait(try Self.translate(noAuth, Self.event(.shipped))).get()
        guard case .terminal(let reason) = noAuth.classify(r) else { Issue.record("\(r.status)"); return }
        #expect(reason.hasPrefix("HTTP 401: 401: Unauthorized"))
    }

    // MARK: End to end

    @Test("one generic webhook reaches Returning.AI and Capillary stand-ins, each in its own format")
    func endToEndBothDestinations() throws {
        let rai = try startStandIn(ReturningAISimulator())
        defer { rai.stop() }
        let cap = try startStandIn(CapillarySimulator(allowedStatuses: nil))
        defer { cap.stop() }
        let relay = try RunningRelay(sources: """
            "shop": { adapter: "generic", verify: { none: true }, type: "redemption.status_changed",
                      map: { subject: { transactionId: "$.tx", customerId: "$.member", rewardId: "$.reward",
                                        vendorOrderId: "$.vendorOrder" },
                             status: "$.state", attributes: { refundCoins: "$.refundCoins" } },
                      statusMap: { "SHIPPED": "shipped", "REFUNDED": "refunded" } },
            """, extra: """
            destinations: {
              "returning-ai": { adapter: "returning-ai", baseURL: "\(rai.baseURL)/apis",
                                headers: { Authorization: "Bearer ${env:RAI_API_KEY}" },
                                statusMap: { shipped: "695dcc370ab8622381f27918", refunded: "695dcc370ab8622381f2791c" } },
              "capillary": { adapter: "capillary", baseURL: "\(cap.baseURL)",
                             headers: { "X-CAP-API-OAUTH-TOKEN": "${env:CAPILLARY_TOKEN}" },
                             customFields: { Partner_Order_Id: "${subject.vendorOrderId?}" },
                             statusMap: { shipped: "in-progress" } },
            },
            routes: [ { from: "shop", to: ["returning-ai", "capillary"] } ],
            """, environment: ["RAI_API_KEY": "rai_test_key", "CAPILLARY_TOKEN": "cap-token"])
        defer { relay.stop() }

        let shipped = try expectAccepted(try relay.client.post("/v1/hooks/shop", json: """
            {"tx": 3482445, "member": 85076836, "reward": 177657, "vendorOrder": "V-1", "state": "SHIPPED"}
            """))
        try DeliveryTests.waitForState(relay, shipped, "returning-ai", "delivered")
        try DeliveryTests.waitForState(relay, shipped, "capillary", "delivered")
        let r1 = try #require(rai.requests().first)
        #expect(r1.method == "PUT" && r1.target == "/apis/v1/redemption-transactions/status")
        #expect(r1.headers["Authorization"] == "Bearer rai_test_key")
        #expect(r1.headers["Content-Type"] == "application/json")
        #expect(r1.bodyText == #"{"statusId":"695dcc370ab8622381f27918","transactionId":"3482445"}"#)
        #expect(r1.status == 200)
        let c1 = try #require(cap.requests().first)
        #expect(c1.method == "PUT" && c1.target == "/api_gateway/rewards/core/v1/management/transactions?skip_validation=true")
        #expect(c1.headers["X-CAP-API-OAUTH-TOKEN"] == "cap-token")
        #expect(c1.bodyText == Self.one(#"{"customerId":85076836,"fulfillmentDetails":{"status":"in-progress"},"rewardId":177657,"transactionCustomFields":{"Partner_Order_Id":"V-1"},"transactionId":3482445}"#))
        #expect(c1.status == 200)

        // A refund without coins back: Returning.AI gets refundCoins false; Capillary has no name for it (skipped).
        let refunded = try expectAccepted(try relay.client.post("/v1/hooks/shop", json: """
            {"tx": 3482445, "state": "REFUNDED", "refundCoins": false}
            """))
        try DeliveryTests.waitForState(relay, refunded, "returning-ai", "delivered")
        try DeliveryTests.waitForState(relay, refunded, "capillary", "skipped")
        let r2 = try #require(rai.requests().last)
        #expect(r2.bodyText == #"{"refundCoins":false,"statusId":"695dcc370ab8622381f2791c","transactionId":"3482445"}"#)
        #expect(rai.requests().count == 2 && cap.requests().count == 1)
    }

    @Test("a Capillary vendor-redemption call is accepted and stored as the canonical event, then relayed")
    func endToEndSource() throws {
        let rai = try startStandIn(ReturningAISimulator())
        defer { rai.stop() }
        let relay = try RunningRelay(sources: """
            "capillary-acme": { adapter: "capillary",
                                verify: { basic: { username: "capillary", password: "${env:CAPILLARY_HOOK_PASSWORD}" } },
                                statusMap: { "In Progress": "shipped", "Completed": "delivered" } },
            """, extra: """
            destinations: {
              "returning-ai": { adapter: "returning-ai", baseURL: "\(rai.baseURL)/apis",
                                headers: { Authorization: "Bearer ${env:RAI_API_KEY}" },
                                transactionId: "CAP-${subject.transactionId}",
                                statusMap: { shipped: "695dcc370ab8622381f27918" } },
            },
            routes: [ { from: "capillary-acme", when: { type: "redemption.status_changed" }, to: ["returning-ai"] } ],
            """, environment: ["CAPILLARY_HOOK_PASSWORD": "hook-pass", "RAI_API_KEY": "rai_test_key"])
        defer { relay.stop() }
        let auth = [("Authorization", "Basic " + Data("capillary:hook-pass".utf8).base64EncodedString())]
        let body = #"""
            {"rewardTransactionId": 3482445, "customerId": 85076836, "rewardId": 177657, "fulfillmentStatus": "In Progress",
             "mobile": "919876543210", "customfield_Partner_Order_Id": "V-77"}
            """#
        let id = try expectAccepted(try relay.client.post("/v1/hooks/capillary-acme", json: body, headers: auth))
        let e = try #require(try relay.store.event(id: id))
        #expect(e.source == "capillary-acme")
        #expect(e.type == "redemption.status_changed")
        #expect(e.subject == ["transactionId": "3482445", "customerId": "85076836", "rewardId": "177657"])
        #expect(e.status == .shipped)
        #expect(e.providerStatus == ProviderStatus(code: "In Progress"))
        #expect(e.attributes == ["mobile": .string("919876543210"),
                                 "customFields": .object(["Partner_Order_Id": .string("V-77")])])
        #expect(e.idempotencyKey == "sha256:" + ByteEncoding.hex(Digest.sha256(Array(body.utf8))))
        #expect(e.raw?.body == body)

        // The same call again is a duplicate; the issue-time call (no status) is a separate reward.issued event.
        let again = try relay.client.post("/v1/hooks/capillary-acme", json: body, headers: auth)
        #expect(again.status == 200, "\(again)")
        let issued = try expectAccepted(try relay.client.post("/v1/hooks/capillary-acme",
                                                              json: #"{"rewardTransactionId": 3482445}"#, headers: auth))
        #expect(try relay.store.event(id: issued)?.type == "reward.issued")
        #expect(try relay.store.event(id: issued)?.idempotencyKey.hasPrefix("sha256:") == true)
        // Unmapped status: accepted, no canonical status. Missing id: 422 naming the path. Wrong password: 401.
        let odd = try expectAccepted(try relay.client.post("/v1/hooks/capillary-acme",
                                                           json: #"{"rewardTransactionId": 3482445, "fulfillmentStatus": "On Hold"}"#,
                                                           headers: auth))
        #expect(try relay.store.event(id: odd)?.status == nil)
        #expect(try relay.store.event(id: odd)?.providerStatus?.code == "On Hold")
        let missing = try relay.client.post("/v1/hooks/capillary-acme", json: #"{"fulfillmentStatus": "Completed"}"#, headers: auth)
        #expect(missing.status == 422 && missing["reason"]?.contains("$.rewardTransactionId") == true, "\(missing)")
        let wrong = try relay.client.post("/v1/hooks/capillary-acme", json: body,
                                          headers: [("Authorization", "Basic " + Data("capillary:nope".utf8).base64EncodedString())])
        #expect(wrong.status == 401, "\(wrong)")

        // Relayed to Returning.AI with the configured transaction id template.
        try DeliveryTests.waitForState(relay, id, "returning-ai", "delivered")
        try DeliveryTests.waitForState(relay, odd, "returning-ai", "skipped")
        let sent = try #require(rai.requests().first)
        #expect(sent.bodyText == #"{"statusId":"695dcc370ab8622381f27918","transactionId":"CAP-3482445"}"#)
        #expect(try relay.store.deliveries(eventID: issued).isEmpty)
    }
}
