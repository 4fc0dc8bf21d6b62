import Adapters
import Foundation
@testable import Relay
import Testing

/// The Returning.AI destination (PUT /v1/redemption-transactions/status) and its stand-in.
@Suite("Returning.AI")
struct ReturningAITests {
    // A community's status ids (24 hex), as an operator copies them from Returning.AI's back office.
    static let placedId = "695dcc370ab8622381f27911"
    static let shippedId = "695dcc370ab8622381f27918"
    static let deliveredId = "695DCC370AB8622381F2791A"   // upper case hex is hex too
    static let cancelledId = "695dcc370ab8622381f2791b"
    static let refundedId = "695dcc370ab8622381f2791c"

    static let statusMap = """
        statusMap: { placed: "\(placedId)", shipped: "\(shippedId)", delivered: "\(deliveredId)",
                     cancelled: "\(cancelledId)", refunded: "\(refundedId)" }
        """

    // MARK: Helpers

    /// Builds the destination from a JSON5 block (without braces); returns it and the problems found.
    static func make(_ block: String, environment: [String: String] = [:])
        throws -> (ReturningAIDestination?, [ConfigProblem]) {
        let config = try #require(try JSONValue.parse(Data("{ \(block) }".utf8), json5: true).objectValue)
        let reader = ConfigReader(environment: environment)
        let adapter = ReturningAIDestinationFactory().makeDestination(name: "rai", config: config,
                                                                      path: "destinations.rai", reader: reader)
        return (adapter as? ReturningAIDestination, reader.problems)
    }

    static func destination(_ block: String = statusMap, environment: [String: String] = ["RAI_API_KEY": "rai_live_123"])
        throws -> ReturningAIDestination {
        let (d, problems) = try make(block, environment: environment)
        #expect(problems.isEmpty, "\(problems)")
        return try #require(d)
    }

    static func event(_ status: CanonicalStatus?, subject: [String: String] = ["transactionId": "ORD202507013831"],
                      attributes: [String: JSONValue] = [:]) -> CanonicalEvent {
        CanonicalEvent(id: "evt_01JTEST0000000000000000000", source: "shop", type: "redemption.status_changed",
                       subject: subject, status: status, receivedAt: "2026-11-20T10:00:00.123Z",
                       attributes: attributes, idempotencyKey: "k1")
    }

    static let context = DeliveryContext(deliveryID: "dlv_1", destination: "rai", attempt: 1)

    static func translate(_ d: ReturningAIDestination, _ e: CanonicalEvent) throws(TranslateError) -> OutboundRequest {
        try d.translate(e, context: context)
    }

    static func text(_ r: OutboundRequest) -> String { String(decoding: r.body, as: UTF8.self) }

    // MARK: Outbound requests

    @Test("every mapped status: the exact request (method, URL, headers, body bytes); refundCoins only for refunded")
    func outboundTable() throws {
        let d = try Self.destination(Self.statusMap + #", headers: { Authorization: "Bearer ${env:RAI_API_KEY}" }"#)
        let rows: [(CanonicalStatus, String)] = [
            (.placed, #"{"statusId":"695dcc370ab8622381f27911","transactionId":"ORD202507013831"}"#),
            (.shipped, #"{"statusId":"695dcc370ab8622381f27918","transactionId":"ORD202507013831"}"#),
            (.delivered, #"{"statusId":"695DCC370AB8622381F2791A","transactionId":"ORD202507013831"}"#),
            (.cancelled, #"{"statusId":"695dcc370ab8622381f2791b","transactionId":"ORD202507013831"}"#),
            (.refunded, #"{"refundCoins":true,"statusId":"695dcc370ab8622381f2791c","transactionId":"ORD202507013831"}"#),
        ]
        for (status, body) in rows {
            let r = try Self.translate(d, Self.event(status))
            #expect(r.method == "PUT")
            #expect(r.url == "https://integration.returning.ai/apis/v1/redemption-transactions/status")
            #expect(r.headers.map { "\($0.0): \($0.1)" } == ["Content-Type: application/json", "Accept: application/json",
                                                           "Authorization: Bearer rai_live_123"])
            #expect(Self.text(r) == body, "\(status)")
        }
        // Unmapped statuses are skipped, never guessed; so is an event without a status.
        for status in [CanonicalStatus.invoiced, .backordered, .sent, .processed, .expired, .failed, .pending] {
            #expect(throws: TranslateError.noMapping(status)) { try Self.translate(d, Self.event(status)) }
        }
        #expect(throws: TranslateError.noMapping(nil)) { try Self.translate(d, Self.event(nil)) }
        let skipped = try #require(throws: TranslateError.self) { try Self.translate(d, Self.event(.sent)) }
        #expect(skipped.kind == .skip)
    }

    @Test("refundCoins: refundCoinsOn, the event's attribute overriding both ways, and refundCoinsOn: []")
    func refundCoins() throws {
        let d = try Self.destination()
        // The attribute says false on a refunded status: sent explicitly as false.
        let noRefund = try Self.translate(d, Self.event(.refunded, attributes: ["refundCoins": .bool(false)]))
        #expect(Self.text(noRefund) == #"{"refundCoins":false,"statusId":"695dcc370ab8622381f2791c","transactionId":"ORD202507013831"}"#)
        // The attribute says true on a cancelled status.
        let refund = try Self.translate(d, Self.event(.cancelled, attributes: ["refundCoins": .bool(true)]))
        #expect(Self.text(refund) == #"{"refundCoins":true,"statusId":"695dcc370ab8622381f2791b","transactionId":"ORD202507013831"}"#)
        // A form-encoded source gives text: "true"/"false" are understood.
        let fromText = try Self.translate(d, Self.event(.shipped, attributes: ["refundCoins": .string("FALSE")]))
        #expect(Self.text(fromText) == #"{"refundCoins":false,"statusId":"695dcc370ab8622381f27918","transactionId":"ORD202507013831"}"#)
        // Anything else is not guessed.
        let bad = try #require(throws: TranslateError.self) {
            try Self.translate(d, Self.event(.refunded, attributes: ["refundCoins": .number(1)]))
        }
        #expect(bad.kind == .terminal && bad.reason.contains("attributes.refundCoins"), "\(bad)")

        // refundCoinsOn names the statuses that refund; [] refunds on none (unless the event says so).
        let custom = try Self.destination(Self.statusMap + #", refundCoinsOn: ["cancelled", "refunded"]"#)
        #expect(Self.text(try Self.translate(custom, Self.event(.cancelled)))
                == #"{"refundCoins":true,"statusId":"695dcc370ab8622381f2791b","transactionId":"ORD202507013831"}"#)
        let never = try Self.destination(Self.statusMap + ", refundCoinsOn: []")
        #expect(Self.text(try Self.translate(never, Self.event(.refunded)))
                == #"{"statusId":"695dcc370ab8622381f2791c","transactionId":"ORD202507013831"}"#)
        #expect(Self.text(try Self.translate(never, Self.event(.refunded, attributes: ["refundCoins": .bool(true)])))
                == #"{"refundCoins":true,"statusId":"695dcc370ab8622381f2791c","transactionId":"ORD202507013831"}"#)
    }

    @Test("statusIdField: statusID as the seed spells it; baseURL and transactionId templates")
    func fieldNameAndTemplates() throws {
        let seed = try Self.destination(Self.statusMap + #", statusIdField: "statusID", baseURL: "https://api.returning.ai/""#)
        let r = try Self.translate(seed, Self.event(.shipped))
        #expect(r.url == "https://api.returning.ai/v1/redemption-transactions/status")
        #expect(Self.text(r) == #"{"statusID":"695dcc370ab8622381f27918","transactionId":"ORD202507013831"}"#)

        // Ids that live elsewhere: a template over the subject, the attributes or the raw body.
        let t = try Self.destination(Self.statusMap + #", transactionId: "ORD${subject.orderId}""#)
        let r2 = try Self.translate(t, Self.event(.shipped, subject: ["orderId": "2025-07-01/3831"]))
        #expect(Self.text(r2) == #"{"statusId":"695dcc370ab8622381f27918","transactionId":"ORD2025-07-01/3831"}"#)

        // A missing transaction id is terminal and names what is missing; an empty one too.
        let missing = try #require(throws: TranslateError.self) {
            try Self.translate(seed, Self.event(.shipped, subject: ["orderId": "1"]))
        }
        #expect(missing.kind == .retry && missing.reason.contains("subject.transactionId"), "\(missing)")
        let empty = try #require(throws: TranslateError.self) {
            try Self.translate(seed, Self.event(.shipped, subject: ["transactionId": ""]))
        }
        #expect(empty.kind == .terminal && empty.reason.contains("transactionId is empty"), "\(empty)")
        // An unmapped status is a skip even when the transaction id is missing too.
        #expect(throws: TranslateError.noMapping(.pending)) { try Self.translate(seed, Self.event(.pending, subject: [:])) }
    }

    // MARK: Responses

    @Test("response classes from Returning.AI's bodies")
    func classify() throws {
        let d = try Self.destination()
        let success = ##"{"status":"success","message":"Redemption transaction status updated successfully","data":{"transactionId":"ORD202507013831","statusId":"695dcc370ab8622381f27918","status":{"_id":"695dcc370ab8622381f27918","name":"Shipping","category":"incomplete","color":"#3EA1FD"}}}"##
        #expect(d.classify(outboundResponse(200, success)) == .delivered)
        #expect(d.classify(outboundResponse(200, #"{"status":"error","message":"Status not allowed from Delivered"}"#))
                == .terminal(reason: #"HTTP 200 with status "error": Status not allowed from Delivered"#))
        #expect(d.classify(outboundResponse(200, "")) == .terminal(reason: #"HTTP 200 without the documented "status":"success": empty body"#))
        #expect(d.classify(outboundResponse(204, "")) == .terminal(reason: #"HTTP 204 without the documented "status":"success": empty body"#))
        #expect(d.classify(outboundResponse(200, "<html>ok</html>"))
                == .terminal(reason: #"HTTP 200 without the documented "status":"success": body is not JSON"#))
        let terminal: [(Int, String, String)] = [
            (400, #"{"status":"error","message":"statusId must be a valid ObjectId"}"#, "HTTP 400: statusId must be a valid ObjectId"),
            (401, #"{"status":"error","message":"Invalid API key"}"#, "HTTP 401: Invalid API key"),
            (403, #"{"status":"error","message":"API key lacks updateRedemptionTransactionStatus"}"#,
             "HTTP 403: API key lacks updateRedemptionTransactionStatus"),
            (404, #"{"status":"error","message":"Redemption transaction not found"}"#, "HTTP 404: Redemption transaction not found"),
            (409, #"{"status":"error","message":"Transaction already refunded"}"#, "HTTP 409: Transaction already refunded"),
            (404, "Not Found", "HTTP 404"),
            (422, #"{"error":"unprocessable"}"#, "HTTP 422: unprocessable"),
        ]
        for (status, body, reason) in terminal {
            #expect(d.classify(outboundResponse(status, body)) == .terminal(reason: reason))
        }
        #expect(d.classify(outboundResponse(500, #"{"status":"error","message":"Internal server error"}"#))
                == .retry(reason: "HTTP 500: Internal server error", after: nil))
        #expect(d.classify(outboundResponse(503, "")) == .retry(reason: "HTTP 503", after: nil))
        #expect(d.classify(outboundResponse(408, "")) == .retry(reason: "HTTP 408", after: nil))
        #expect(d.classify(outboundResponse(429, #"{"status":"error","message":"Too many requests"}"#, headers: [("Retry-After", "7")]))
                == .retry(reason: "HTTP 429: Too many requests", after: 7))
    }

    // MARK: Configuration

    @Test("config problems name their key path")
    func configErrors() throws {
        let (none, p1) = try Self.make("")
        #expect(none == nil || p1.isEmpty == false)
        #expect(p1.map(\.path) == ["destinations.rai.statusMap"], "\(p1)")
        #expect(p1.first?.message.contains("is required") == true)

        let (_, p2) = try Self.make(#"statusMap: { shipped: "Shipping", refunded: "695dcc370ab8622381f2791" }"#)
        #expect(p2.map(\.path) == ["destinations.rai.statusMap.refunded", "destinations.rai.statusMap.shipped",
                                   "destinations.rai.statusMap"], "\(p2)")
        #expect(p2.first?.message.contains("24 hexadecimal") == true, "\(p2)")

        let (_, p3) = try Self.make(#"statusMap: { shiped: "695dcc370ab8622381f27918", delivered: "695dcc370ab8622381f2791g" }"#)
        #expect(p3.map(\.path) == ["destinations.rai.statusMap.delivered", "destinations.rai.statusMap.shiped",
                                   "destinations.rai.statusMap"], "\(p3)")

        let (_, p4) = try Self.make(Self.statusMap + #", refundCoinsOn: ["refunded", "money-back"], statusIdField: "", "#
                                    + #"baseURL: "integration.returning.ai", transactionId: "${subject.transactionId""#)
        #expect(Set(p4.map(\.path)) == ["destinations.rai.refundCoinsOn[1]", "destinations.rai.statusIdField",
                                        "destinations.rai.baseURL", "destinations.rai.transactionId"], "\(p4)")
        #expect(p4.first { $0.path.hasSuffix("baseURL") }?.message.contains("http:// or https://") == true)

        // The API key is a reference that must resolve.
        let (_, p5) = try Self.make(Self.statusMap + #", headers: { Authorization: "Bearer ${env:RAI_API_KEY}" }"#)
        #expect(p5.map(\.path) == ["destinations.rai.headers.Authorization"], "\(p5)")
        #expect(p5.first?.message.contains("RAI_API_KEY") == true)
    }

    // MARK: The stand-in

    @Test("stand-in over HTTP: success shape, bad auth, statusID, bad ids, unknown transaction, double refund")
    func standIn() throws {
        let sim = ReturningAISimulator()
        let sink = try startStandIn(sim)
        defer { sink.stop() }
        let client = Client(port: sink.port)
        let path = "/apis/v1/redemption-transactions/status"
        func put(_ body: String, auth: String? = "Bearer rai_test_key", contentType: String = "application/json",
                 method: String = "PUT", at target: String = path) throws -> Response {
            var h = [("Content-Type", contentType)]
            if let auth { h.append(("Authorization", auth)) }
            return try client.request(method, target, headers: h, body: Array(body.utf8))
        }

        let ok = try put(#"{"transactionId":"ORD202507013831","statusId":"695dcc370ab8622381f27918"}"#)
        #expect(ok.status == 200, "\(ok)")
        #expect(ok.json?["status"] == .string("success"))
        #expect(ok.json?["data"]?["transactionId"] == .string("ORD202507013831"))
        #expect(ok.json?["data"]?["statusId"] == .string("695dcc370ab8622381f27918"))
        #expect(ok.json?["data"]?["status"]?["_id"] == .string("695dcc370ab8622381f27918"))
        #expect(ok.json?["data"]?["status"]?.objectValue?.keys.sorted() == ["_id", "category", "color", "name"])
        #expect(sim.statusId(of: "ORD202507013831") == "695dcc370ab8622381f27918")

        func expectError(_ r: Response, _ status: Int, _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(r.status == status, "\(r)", sourceLocation: sourceLocation)
            #expect(r.json?["status"] == .string("error"), "\(r)", sourceLocation: sourceLocation)
            #expect(r["message"]?.contains(fragment) == true, "\(r)", sourceLocation: sourceLocation)
        }
        let valid = #"{"transactionId":"ORD1","statusId":"695dcc370ab8622381f27918"}"#
        expectError(try put(valid, auth: nil), 401, "missing Authorization")
        expectError(try put(valid, auth: "Token rai_test_key"), 401, "Bearer")
        expectError(try put(valid, auth: "Bearer "), 401, "Bearer")
        expectError(try put(#"{"transactionId":"ORD1","statusID":"695dcc370ab8622381f27918"}"#), 400, "spells it \"statusId\"")
        expectError(try put(#"{"transactionId":"ORD1","statusId":"Shipping"}"#), 400, "24 character hexadecimal")
        expectError(try put(#"{"transactionId":"","statusId":"695dcc370ab8622381f27918"}"#), 400, "transactionId is required")
        expectError(try put(#"{"transactionId":42,"statusId":"695dcc370ab8622381f27918"}"#), 400, "transactionId is required")
        expectError(try put(#"{"transactionId":"ORD1","statusId":"695dcc370ab8622381f27918","refundCoins":"yes"}"#), 400,
                    "refundCoins must be a boolean")
        expectError(try put("transactionId=ORD1", contentType: "application/x-www-form-urlencoded"), 400, "application/json")
        expectError(try put("[1]"), 400, "JSON object")
        expectError(try put(#"{"transactionId":"UNKNOWN-77","statusId":"695dcc370ab8622381f27918"}"#), 404, "UNKNOWN-77")
        expectError(try put(valid, method: "POST"), 405, "use PUT")
        expectError(try put(valid, at: "/apis/v1/redemption-transactions"), 404, "not found")

        // A refund is remembered: a second refund of the same transaction is a conflicting state.
        let refund = #"{"transactionId":"ORD9","statusId":"695dcc370ab8622381f2791c","refundCoins":true}"#
        #expect(try put(refund).status == 200)
        expectError(try put(refund), 409, "already refunded")
        #expect(sim.statusId(of: "ORD9") == "695dcc370ab8622381f2791c")
        // What the destination would make of these answers.
        let d = try Self.destination()
        #expect(d.classify(outboundResponse(409, #"{"status":"error","message":"x"}"#)) == .terminal(reason: "HTTP 409: x"))
    }

    @Test("the translated request, sent with the relay's HTTP client, is accepted by the stand-in")
    func translatedAgainstStandIn() throws {
        let sink = try startStandIn(ReturningAISimulator())
        defer { sink.stop() }
        let client = try HTTPClient()
        defer { client.shutdown(timeout: 2) }
        let d = try Self.destination(Self.statusMap + #", baseURL: "\#(sink.baseURL)/apis", headers: { Authorization: "Bearer ${env:RAI_API_KEY}" }"#)
        for (status, expected) in [(CanonicalStatus.shipped, Classification.delivered), (.refunded, .delivered),
                                   (.refunded, .terminal(reason: "HTTP 409: Coins of redemption transaction ORD202507013831 were already refunded"))] {
            let response = try client.sendAndWait(try Self.translate(d, Self.event(status))).get()
            #expect(d.classify(response) == expected)
        }
        let unknown = try client.sendAndWait(try Self.translate(d, Self.event(.shipped, subject: ["transactionId": "UNKNOWN1"]))).get()
        #expect(d.classify(unknown) == .terminal(reason: "HTTP 404: Redemption transaction UNKNOWN1 not found in this community"))
        // Without the key the stand-in answers 401, which is terminal.
        let noKey = try Self.destination(Self.statusMap + #", baseURL: "\#(sink.baseURL)/apis""#)
        let r = try client.sendAndWait(try Self.translate(noKey, Self.event(.shipped))).get()
        guard case .terminal(let reason) = noKey.classify(r) else { Issue.record("\(r.status)"); return }
        #expect(reason.hasPrefix("HTTP 401: Unauthorized"))
    }
}
