@testable import Adapters
import Foundation
@testable import Relay
import Simulator
import Testing

// Mastercard Digital Redemptions and the Traditional Fulfillment Service: translation to the exact request,
// classification of Mastercard's Errors envelope, configuration problems by key path, the stand-ins over real
// HTTP, and the relay end to end against them.

/// Shared helpers of the two Mastercard suites.
enum MC {
    static let oauth = #"OAuth oauth_consumer_key="ck-test",oauth_signature="c2ln""#

    /// A destination built from a JSON5 block, with the problems the reader found.
    static func make(_ factory: any DestinationAdapterFactory, _ block: String,
                     environment: [String: String] = [:]) throws -> (adapter: (any DestinationAdapter)?, problems: [ConfigProblem]) {
        let value = try JSONValue.parse(Data(block.utf8), json5: true)
        let config = try #require(value.objectValue, "not an object: \(block)")
        let r = ConfigReader(environment: environment)
        let adapter = factory.makeDestination(name: "mc", config: config, path: "destinations.mc", reader: r)
        return (adapter, r.problems)
    }

    /// The paths of the problems of a destination block.
    static func problemPaths(_ factory: any DestinationAdapterFactory, _ block: String) throws -> [String] {
        try make(factory, block).problems.map(\.path)
    }

    static func event(_ status: CanonicalStatus?, subject: [String: String],
                      attributes: [String: JSONValue] = [:]) -> CanonicalEvent {
        CanonicalEvent(id: "evt_01JTEST", source: "shop", type: "redemption.status_changed", subject: subject,
                       status: status, receivedAt: "2026-11-20T10:00:00.000Z", attributes: attributes,
                       idempotencyKey: "k1")
    }

    static let context = DeliveryContext(deliveryID: "dlv_1", destination: "mc", attempt: 1)

    /// What a translation came to, comparable: the request as text, or the error.
    enum Outcome: Equatable, CustomStringConvertible {
        case request(method: String, url: String, headers: [String], body: String)
        case skip(String)
        case terminal(String)

        var description: String {
            switch self {
            case .request(let m, let u, let h, let b): return "\(m) \(u) \(h) \(b)"
            case .skip(let r): return "skip: \(r)"
            case .terminal(let r): return "terminal: \(r)"
            }
        }
    }

    static func outcome(_ body: () throws(TranslateError) -> OutboundRequest) -> Outcome {
        do {
            let r = try body()
            return .request(method: r.method, url: r.url, headers: r.headers.map { "\($0.0): \($0.1)" },
                            body: String(decoding: r.body, as: UTF8.self))
        } catch {
            return error.kind == .skip ? .skip(error.reason) : .terminal(error.reason)
        }
    }

    /// A request to a stand-in over real HTTP; the answer's status, body and `Allow` header.
    static func call(_ sink: Sink, _ method: String, _ path: String, _ body: String?,
                     auth: String? = oauth, contentType: String? = "application/json") throws -> Response {
        var headers: [(String, String)] = []
        if let auth { headers.append(("Authorization", auth)) }
        if let contentType { headers.append(("Content-Type", contentType)) }
        return try Client(port: sink.port).request(method, path, headers: headers, body: body.map { Array($0.utf8) })
    }

    static func envelope(_ items: [(String, String, String)]) -> String {
        let inner = items.map { #"{"Description":"\#($0.2)","Details":null,"ReasonCode":"\#($0.1)","Recoverable":"false","Source":"\#($0.0)"}"# }
        return #"{"Errors":{"Error":["# + inner.joined(separator: ",") + "]}}"
    }
}

// MARK: - Digital Redemptions

@Suite("Mastercard Digital Redemptions")
struct MastercardRedemptionsTests {
    static let factory = MastercardRedemptionsDestinationFactory()
    static let url = "https://sandbox.api.mastercard.com/loyalty/redemptions"
    static let json = ["Content-Type: application/json", "Accept: application/json"]

    static func adapter(_ block: String = "{}", environment: [String: String] = [:]) throws -> any DestinationAdapter {
        let (adapter, problems) = try MC.make(factory, block, environment: environment)
        #expect(problems.isEmpty, "\(problems)")
        return try #require(adapter)
    }

    static func translate(_ a: any DestinationAdapter, _ status: CanonicalStatus?,
                          subject: [String: String] = ["redemptionId": "R-1001"],
                          attributes: [String: JSONValue] = [:]) -> MC.Outcome {
        MC.outcome { () throws(TranslateError) in
            try a.translate(MC.event(status, subject: subject, attributes: attributes), context: MC.context)
        }
    }

    @Test("the default map: each canonical status to its exact PUT /redemptions request, B with its date")
    func defaultTranslations() throws {
        let a = try Self.adapter()
        func put(_ body: String) -> MC.Outcome { .request(method: "PUT", url: Self.url, headers: Self.json, body: body) }
        let required = "backOrderDate is required for statusCode B"
        let cases: [(CanonicalStatus?, [String: JSONValue], MC.Outcome)] = [
            (.placed, [:], put(#"{"redemptionId":"R-1001","statusCode":"O"}"#)),
            (.invoiced, [:], put(#"{"redemptionId":"R-1001","statusCode":"I"}"#)),
            (.sent, [:], put(#"{"redemptionId":"R-1001","statusCode":"N"}"#)),
            (.shipped, ["backOrderDate": .string("2026-12-01")], put(#"{"redemptionId":"R-1001","statusCode":"S"}"#)),
            (.backordered, ["backOrderDate": .string("2026-12-01")],
             put(#"{"backOrderDate":"2026-12-01","redemptionId":"R-1001","statusCode":"B"}"#)),
            // An RFC 3339 date-time is written as its UTC date.
            (.backordered, ["backOrderDate": .string("2026-12-01T10:00:00Z")],
             put(#"{"backOrderDate":"2026-12-01","redemptionId":"R-1001","statusCode":"B"}"#)),
            (.backordered, ["backOrderDate": .string("2026-11-30T23:30:00.250-02:00")],
             put(#"{"backOrderDate":"2026-12-01","redemptionId":"R-1001","statusCode":"B"}"#)),
            (.backordered, [:], .terminal("\(required): the event has none (\"${attributes.backOrderDate?}\" gave no text)")),
            (.backordered, ["backOrderDate": .null], .terminal("\(required): the event has none (\"${attributes.backOrderDate?}\" gave no text)")),
            (.backordered, ["backOrderDate": .string("next week")],
             .terminal("\(required): \"next week\" is not a date (yyyy-MM-dd or an RFC 3339 date-time)")),
            (.backordered, ["backOrderDate": .string("2026-02-30")],
             .terminal("\(required): \"2026-02-30\" is not a date (yyyy-MM-dd or an RFC 3339 date-time)")),
            (.delivered, [:], .skip("no mapping: status \"delivered\" has no value for this destination")),
            (.cancelled, [:], .skip("no mapping: status \"cancelled\" has no value for this destination")),
            (nil, [:], .skip("no mapping: an event without a status has no value for this destination")),
        ]
        for (status, attributes, want) in cases {
            #expect(Self.translate(a, status, attributes: attributes) == want, "\(status?.rawValue ?? "nil") \(attributes)")
        }
        for status in CanonicalStatus.builtin where ![.placed, .invoiced, .backordered, .sent, .shipped].contains(status) {
            guard case .skip = Self.translate(a, status) else {
                Issue.record("\(status) should be skipped")
                continue
            }
        }
    }

    @Test("redemptionId: missing or empty is terminal and names it")
    func redemptionIdRequired() throws {
        let a = try Self.adapter()
        #expect(Self.translate(a, .shipped, subject: ["orderId": "O-1"])
                == .terminal("the event has no subject.redemptionId (needed by \"${subject.redemptionId}\")"))
        #expect(Self.translate(a, .shipped, subject: ["redemptionId": ""])
                == .terminal("redemptionId is empty (\"${subject.redemptionId}\" gave no text)"))
    }

    @Test("overridden statusMap, redemptionId template, headers, baseURL and date format")
    func overrides() throws {
        let a = try Self.adapter("""
            { baseURL: "https://api.mastercard.com/loyalty/", statusMap: { delivered: "S", shipped: null, sent: "N" },
              redemptionId: "MC-${subject.orderId}", backOrderDate: "${attributes.eta}", backOrderDateFormat: "dd/MM/yyyy",
              headers: { Authorization: "OAuth oauth_consumer_key=\\"${env:MC_CONSUMER_KEY}\\"", "X-Delivery": "${delivery.id}" } }
            """, environment: ["MC_CONSUMER_KEY": "ck-123"])
        let headers = Self.json + [#"Authorization: OAuth oauth_consumer_key="ck-123""#, "X-Delivery: dlv_1"]
        let url = "https://api.mastercard.com/loyalty/redemptions"
        let subject = ["orderId": "42", "redemptionId": "ignored"]
        #expect(Self.translate(a, .delivered, subject: subject)
                == .request(method: "PUT", url: url, headers: headers, body: #"{"redemptionId":"MC-42","statusCode":"S"}"#))
        #expect(Self.translate(a, .sent, subject: subject)
                == .request(method: "PUT", url: url, headers: headers, body: #"{"redemptionId":"MC-42","statusCode":"N"}"#))
        #expect(Self.translate(a, .shipped, subject: subject)
                == .skip("no mapping: status \"shipped\" has no value for this destination"))
        #expect(Self.translate(a, .backordered, subject: subject, attributes: ["eta": .string("2027-01-05")])
                == .request(method: "PUT", url: url, headers: headers,
                            body: #"{"backOrderDate":"05/01/2027","redemptionId":"MC-42","statusCode":"B"}"#))
        // A required placeholder (no `?`) that is missing: still the B reason, with the template's own.
        #expect(Self.translate(a, .backordered, subject: subject)
                == .terminal("backOrderDate is required for statusCode B: the event has no attributes.eta (needed by \"${attributes.eta}\")"))
    }

    @Test("responses: 2xx delivered; the Errors envelope by Recoverable (several items, one object, booleans); else by status")
    func classification() throws {
        let a = try Self.adapter()
        let notFound = MC.envelope([("redemptionId", "INVALID_REDEMPTION_ID", "Redemption not found")])
        let cases: [(OutboundResponse, Classification)] = [
            (outboundResponse(200, #"{"redemptionId":"R-1001","statusCode":"S"}"#), .delivered),
            (outboundResponse(200), .delivered),
            (outboundResponse(204), .delivered),
            (outboundResponse(400, notFound), .terminal(reason: "HTTP 400: redemptionId INVALID_REDEMPTION_ID: Redemption not found")),
            (outboundResponse(401, #"{"Errors":{"Error":[{"Source":"Gateway","ReasonCode":"AUTHENTICATION_FAILED","Description":"OAuth signature invalid","Recoverable":"false","Details":null}]}}"#),
             .terminal(reason: "HTTP 401: Gateway AUTHENTICATION_FAILED: OAuth signature invalid")),
            (outboundResponse(500, #"{"Errors":{"Error":[{"Source":"System","ReasonCode":"SYSTEM_ERROR","Description":"Try again","Recoverable":"true","Details":null}]}}"#,
                         headers: [("Retry-After", "30")]),
             .retry(reason: "HTTP 500: System SYSTEM_ERROR: Try again", after: 30)),
            // Several items: one recoverable is enough to retry; the reason lists them all.
            (outboundResponse(400, #"{"Errors":{"Error":[{"Source":"statusCode","ReasonCode":"INVALID","Description":"bad code","Recoverable":"false"},{"Source":"System","ReasonCode":"BUSY","Description":"locked","Recoverable":true}]}}"#),
             .retry(reason: "HTTP 400: statusCode INVALID: bad code; System BUSY: locked", after: nil)),
            (outboundResponse(400, MC.envelope([("redemptionId", "MISSING", "required"), ("statusCode", "INVALID", "bad code")])),
             .terminal(reason: "HTTP 400: redemptionId MISSING: required; statusCode INVALID: bad code")),
            // Error as one object, lower-case keys, a boolean false: still the envelope, and a 5xx that says it
            // cannot recover is not retried.
            (outboundResponse(503, #"{"errors":{"error":{"source":"System","reasonCode":"DOWN","description":"maintenance","recoverable":false}}}"#),
             .terminal(reason: "HTTP 503: System DOWN: maintenance")),
            (outboundResponse(409, #"{"Errors":{"Error":{"Source":"Redemption","ReasonCode":"STATE","Description":"already shipped","Recoverable":"TRUE"}}}"#),
             .retry(reason: "HTTP 409: Redemption STATE: already shipped", after: nil)),
            // Recoverable missing: the status decides, with the envelope's reason.
            (outboundResponse(502, #"{"Errors":{"Error":[{"Source":"Gateway","ReasonCode":"BAD_GATEWAY","Description":"upstream"}]}}"#),
             .retry(reason: "HTTP 502: Gateway BAD_GATEWAY: upstream", after: nil)),
            (outboundResponse(422, #"{"Errors":{"Error":[{"Source":"x","ReasonCode":"Y","Description":"z"}]}}"#),
             .terminal(reason: "HTTP 422: x Y: z")),
            // No envelope: the default reading.
            (outboundResponse(503), .retry(reason: "HTTP 503", after: nil)),
            (outboundResponse(503, "", headers: [("Retry-After", "7")]), .retry(reason: "HTTP 503", after: 7)),
            (outboundResponse(429, #"{"message":"slow down"}"#), .retry(reason: "HTTP 429", after: nil)),
            (outboundResponse(404, "<html>Not Found</html>"), .terminal(reason: "HTTP 404")),
            (outboundResponse(400, #"{"Errors":{"Error":[]}}"#), .terminal(reason: "HTTP 400")),
        ]
        for (response, want) in cases {
            #expect(a.classify(response) == want, "HTTP \(response.status) \(String(decoding: response.body, as: UTF8.self))")
            #expect(a.outcome(response, event: MC.event(.shipped, subject: [:]), context: MC.context).classification == want)
        }
    }

    @Test("config problems name their key paths")
    func configProblems() throws {
        let f = Self.factory
        #expect(try MC.problemPaths(f, #"{ statusMap: { shipping: "S" } }"#) == ["destinations.mc.statusMap.shipping"])
        #expect(try MC.problemPaths(f, #"{ statusMap: { shipped: "X", placed: 1 } }"#)
                == ["destinations.mc.statusMap.placed", "destinations.mc.statusMap.shipped"])
        #expect(try MC.problemPaths(f, #"{ statusMap: "S" }"#) == ["destinations.mc.statusMap"])
        #expect(try MC.problemPaths(f, #"{ baseURL: "ftp://mastercard.example" }"#) == ["destinations.mc.baseURL"])
        #expect(try MC.problemPaths(f, #"{ redemptionId: "${subject.}" }"#) == ["destinations.mc.redemptionId"])
        #expect(try MC.problemPaths(f, #"{ redemptionId: "" }"#) == ["destinations.mc.redemptionId"])
        #expect(try MC.problemPaths(f, #"{ redemptionId: 7 }"#) == ["destinations.mc.redemptionId"])
        #expect(try MC.problemPaths(f, #"{ backOrderDate: "${nope.x}" }"#) == ["destinations.mc.backOrderDate"])
        #expect(try MC.problemPaths(f, #"{ backOrderDateFormat: "" }"#) == ["destinations.mc.backOrderDateFormat"])
        #expect(try MC.problemPaths(f, #"{ headers: { Authorization: "OAuth ${env:MC_UNSET_VARIABLE}" } }"#)
                == ["destinations.mc.headers.Authorization"])
        let problem = try MC.make(f, #"{ statusMap: { shipped: "X" } }"#).problems.first
        #expect(problem?.message == "\"X\" is not a Mastercard status code (B, I, N, O, S)")

        // Through the relay's own reader: an unknown key of the block is named too.
        let text = """
            { server: { listen: "127.0.0.1:0" }, store: { sqlite: "/tmp/unused.db" },
              sources: { s: { adapter: "generic", verify: { none: true } } },
              destinations: { mc: { adapter: "mastercard-digital-redemptions", statusCodes: { shipped: "S" },
                                    statusMap: { shipped: "Z" } } },
              routes: [ { from: "s", to: ["mc"] } ] }
            """
        do {
            _ = try RelayConfig.parse(Data(text.utf8), registry: BuiltinAdapters.registry, environment: [:])
            Issue.record("the configuration should be refused")
        } catch let error as ConfigError {
            let paths = error.problems.map(\.path)
            #expect(paths.contains("destinations.mc.statusCodes"), "\(error)")
            #expect(paths.contains("destinations.mc.statusMap.shipped"), "\(error)")
        }
    }

    @Test("stand-in over HTTP: valid updates 200; B without date, bad code, missing OAuth, wrong method in the Errors envelope")
    func standIn() throws {
        let sink = try startStandIn(MastercardRedemptionsSimulator())
        defer { sink.stop() }
        let path = "/loyalty/redemptions"

        let ok = try MC.call(sink, "PUT", path, #"{"redemptionId":"R-1001","statusCode":"S"}"#)
        #expect(ok.status == 200)
        #expect(ok.text == #"{"redemptionId":"R-1001","statusCode":"S"}"#)
        let b = try MC.call(sink, "PUT", path, #"{"redemptionId":"R-1001","statusCode":"B","backOrderDate":"2026-12-01"}"#)
        #expect(b.status == 200)
        #expect(b.text == #"{"backOrderDate":"2026-12-01","redemptionId":"R-1001","statusCode":"B"}"#)

        let noDate = try MC.call(sink, "PUT", path, #"{"redemptionId":"R-1001","statusCode":"B"}"#)
        #expect(noDate.status == 400)
        #expect(noDate.text == MC.envelope([("backOrderDate", "MISSING_BACK_ORDER_DATE", "backOrderDate is required when statusCode is B")]))
        let badDate = try MC.call(sink, "PUT", path, #"{"redemptionId":"R-1001","statusCode":"B","backOrderDate":"2026-12-01T10:00:00Z"}"#)
        #expect(badDate.status == 400)
        #expect(badDate.text == MC.envelope([("backOrderDate", "INVALID_BACK_ORDER_DATE",
                                              #"backOrderDate must be a date written yyyy-MM-dd (was \"2026-12-01T10:00:00Z\")"#)]))
        let badCode = try MC.call(sink, "PUT", path, #"{"redemptionId":"R-1001","statusCode":"X"}"#)
        #expect(badCode.status == 400)
        #expect(badCode.text == MC.envelope([("statusCode", "INVALID_STATUS_CODE", #"statusCode must be one of B, I, N, O, S (was \"X\")"#)]))
        let two = try MC.call(sink, "PUT", path, #"{"redemptionId":"","statusCode":"s"}"#)
        #expect(two.status == 400)
        #expect(two.text == MC.envelope([("redemptionId", "INVALID_REDEMPTION_ID", "redemptionId must be a non-empty string"),
                                         ("statusCode", "INVALID_STATUS_CODE", #"statusCode must be one of B, I, N, O, S (was \"s\")"#)]))
        let noID = try MC.call(sink, "PUT", path, #"{"statusCode":"O"}"#)
        #expect(noID.text == MC.envelope([("redemptionId", "MISSING_REDEMPTION_ID", "redemptionId is required")]))

        let noAuth = try MC.call(sink, "PUT", path, #"{"redemptionId":"R-1001","statusCode":"S"}"#, auth: nil)
        #expect(noAuth.status == 401)
        #expect(noAuth.text == MC.envelope([("Gateway", "AUTHENTICATION_FAILED", "the Authorization header is missing")]))
        let bearer = try MC.call(sink, "PUT", path, #"{"redemptionId":"R-1001","statusCode":"S"}"#, auth: "Bearer abc")
        #expect(bearer.status == 401)
        #expect(bearer.json?["Errors"]?["Error"]?.arrayValue?.first?["Source"]?.stringValue == "Gateway")

        let post = try MC.call(sink, "POST", path, #"{"redemptionId":"R-1001","statusCode":"S"}"#)
        #expect(post.status == 405)
        #expect(post.header("Allow") == "PUT")
        #expect(post.text == MC.envelope([("Gateway", "METHOD_NOT_ALLOWED", "POST is not allowed here (allowed: PUT)")]))
        let form = try MC.call(sink, "PUT", path, "redemptionId=R-1001&statusCode=S", contentType: "application/x-www-form-urlencoded")
        #expect(form.status == 415)
        let garbage = try MC.call(sink, "PUT", path, "{not json")
        #expect(garbage.status == 400)
        #expect(garbage.text == MC.envelope([("Request", "INVALID_JSON", "the body is not JSON")]))
        let elsewhere = try MC.call(sink, "PUT", "/loyalty/redemption", #"{"redemptionId":"R-1001","statusCode":"S"}"#)
        #expect(elsewhere.status == 404)

        // The adapter reads the stand-in's answers as Mastercard's: its own request is delivered, a refusal terminal.
        let a = try Self.adapter("{ baseURL: \"\(sink.baseURL)/loyalty\", headers: { Authorization: \"OAuth oauth_consumer_key=\\\"k\\\"\" } }")
        let client = try HTTPClient()
        defer { client.shutdown(timeout: 1) }
        let request = try a.translate(MC.event(.backordered, subject: ["redemptionId": "R-7"],
                                               attributes: ["backOrderDate": .string("2026-12-24T18:00:00+01:00")]), context: MC.context)
        let answer = try client.sendAndWait(request).get()
        #expect(answer.status == 200, "\(String(decoding: answer.body, as: UTF8.self))")
        #expect(a.classify(answer) == .delivered)
        let refused = try client.sendAndWait(OutboundRequest(method: "PUT", url: request.url,
                                                             headers: [("Content-Type", "application/json")],
                                                             body: request.body)).get()
        #expect(a.classify(refused) == .terminal(reason: "HTTP 401: Gateway AUTHENTICATION_FAILED: the Authorization header is missing"))
    }

    @Test("end to end: a generic webhook becomes the exact PUT at the stand-in; B without a date is dead, unmapped skipped")
    func endToEnd() throws {
        let sink = try startStandIn(MastercardRedemptionsSimulator())
        defer { sink.stop() }
        let relay = try RunningRelay(sources: """
            "shop": { adapter: "generic", verify: { none: true }, type: "redemption.status_changed",
                      map: { subject: { redemptionId: "$.redemption.id" }, status: "$.redemption.state",
                             attributes: { backOrderDate: "$.redemption.eta" } },
                      statusMap: { "BACKORDER": "backordered", "SHIPPED": "shipped", "DELIVERED": "delivered" } },
            """, extra: """
            destinations: {
              "mc-dr": { adapter: "mastercard-digital-redemptions", baseURL: "\(sink.baseURL)/loyalty",
                         headers: { Authorization: "OAuth oauth_consumer_key=\\"${env:MC_CONSUMER_KEY}\\"" },
                         retry: { schedule: ["100ms"], jitter: "none" } },
            },
            routes: [ { from: "shop", to: ["mc-dr"] } ],
            """, environment: ["MC_CONSUMER_KEY": "ck-e2e"])
        defer { relay.stop() }

        let back = try expectAccepted(try relay.client.post("/v1/hooks/shop", json: """
            {"redemption":{"id":"R-2001","state":"BACKORDER","eta":"2026-12-01T09:30:00Z"}}
            """))
        let d1 = try DeliveryTests.waitForState(relay, back, "mc-dr", "delivered")
        let shipped = try expectAccepted(try relay.client.post("/v1/hooks/shop",
                                                               json: #"{"redemption":{"id":"R-2001","state":"SHIPPED"}}"#))
        let d2 = try DeliveryTests.waitForState(relay, shipped, "mc-dr", "delivered")

        let got = sink.requests(path: "/loyalty/redemptions")
        try #require(got.count == 2, "\(got.map(\.bodyText))")
        for (r, d, body) in [(got[0], d1, #"{"backOrderDate":"2026-12-01","redemptionId":"R-2001","statusCode":"B"}"#),
                             (got[1], d2, #"{"redemptionId":"R-2001","statusCode":"S"}"#)] {
            #expect(r.method == "PUT")
            #expect(r.bodyText == body)
            #expect(r.status == 200)
            #expect(r.headers["Content-Type"] == "application/json")
            #expect(r.headers["Accept"] == "application/json")
            #expect(r.headers["Authorization"] == #"OAuth oauth_consumer_key="ck-e2e""#)
            #expect(r.headers["Idempotency-Key"] == d.id)
        }

        // Back-ordered without a date: never sent, dead at once with the reason; an unmapped status is skipped.
        let noDate = try expectAccepted(try relay.client.post("/v1/hooks/shop",
                                                              json: #"{"redemption":{"id":"R-2002","state":"BACKORDER"}}"#))
        let dead = try DeliveryTests.waitForState(relay, noDate, "mc-dr", "dead")
        let row = try DeliveryTests.deliveryRow(relay.store, dead.id)
        #expect(row.lastError?.contains("backOrderDate is required for statusCode B") == true, "\(row.lastError ?? "nil")")
        let delivered = try expectAccepted(try relay.client.post("/v1/hooks/shop",
                                                                 json: #"{"redemption":{"id":"R-2001","state":"DELIVERED"}}"#))
        _ = try DeliveryTests.waitForState(relay, delivered, "mc-dr", "skipped")
        #expect(sink.requests(path: "/loyalty/redemptions").count == 2)
    }
}

// MARK: - Fulfillment

@Suite("Mastercard fulfillment")
struct MastercardFulfillmentTests {
    static let factory = MastercardFulfillmentDestinationFactory()
    static let statusMap = #"statusMap: { placed: "ORDERED", backordered: "BACKORDERED", shipped: "SHIPPED" }"#

    static func adapter(_ keys: String = "") throws -> MastercardFulfillmentDestination {
        let (adapter, problems) = try MC.make(factory, "{ \(statusMap), \(keys) }")
        #expect(problems.isEmpty, "\(problems)")
        return try #require(adapter as? MastercardFulfillmentDestination)
    }

    enum ItemOutcome: Equatable {
        case item(key: String, json: String)
        case skip(String)
        case terminal(String)
    }

    static func item(_ a: MastercardFulfillmentDestination, _ status: CanonicalStatus?, _ subject: [String: String],
                     _ attributes: [String: JSONValue] = [:]) -> ItemOutcome {
        do {
            let i = try a.batchItem(MC.event(status, subject: subject, attributes: attributes), context: MC.context)
            return .item(key: i.key, json: i.item.jsonString())
        } catch {
            return error.kind == .skip ? .skip(error.reason) : .terminal(error.reason)
        }
    }

    @Test("items from canonical events: the default template, optional fields left out, the vendor as the batch key")
    func items() throws {
        let a = try Self.adapter()
        #expect(a.batching == BatchOptions(maxItems: 50, wait: 1))
        let v = ["vendorId": "V-124", "orderId": "O-1"]
        let cases: [(CanonicalStatus?, [String: String], [String: JSONValue], ItemOutcome)] = [
            (.placed, v, [:], .item(key: "V-124", json: #"{"orderId":"O-1","status":"ORDERED"}"#)),
            (.shipped, v, ["trackingNumber": .string("1Z999"), "carrier": .string("UPS"), "shippingDate": .string("2026-11-20")],
             .item(key: "V-124", json: #"{"carrier":"UPS","orderId":"O-1","shipDate":"2026-11-20","status":"SHIPPED","trackingNumber":"1Z999"}"#)),
            (.backordered, v, ["backOrderDate": .string("2026-12-01")], .item(key: "V-124", json: #"{"orderId":"O-1","status":"BACKORDERED"}"#)),
            (.delivered, v, [:], .skip("no mapping: status \"delivered\" has no value for this destination")),
            (nil, v, [:], .skip("no mapping: an event without a status has no value for this destination")),
            (.shipped, ["orderId": "O-1"], [:], .terminal("the event has no subject.vendorId (needed by \"${subject.vendorId}\")")),
            (.shipped, ["orderId": "O-1", "vendorId": " "], [:], .terminal("vendorId is empty (\"${subject.vendorId}\" gave no text)")),
            (.shipped, ["vendorId": "V-124"], [:], .terminal("the event has no subject.orderId (needed by \"${subject.orderId}\")")),
        ]
        for (status, subject, attributes, want) in cases {
            #expect(Self.item(a, status, subject, attributes) == want, "\(status?.rawValue ?? "nil") \(subject) \(attributes)")
        }
    }

    @Test("the batch request: method, vendor URL (percent-encoded), headers and body bytes")
    func requests() throws {
        let a = try Self.adapter()
        let items: [JSONValue] = [.object(["orderId": .string("O-1"), "status": .string("SHIPPED")]), .object(["orderId": .string("O-2"), "status": .string("ORDERED")])]
        #expect(MC.outcome { () throws(TranslateError) in try a.translate(batchKey: "V-124", items: items) }
                == .request(method: "POST", url: "https://sandbox.api.mastercard.com/loyalty/rewards/vendors/V-124/orders/status",
                            headers: ["Content-Type: application/json", "Accept: application/json"],
                            body: #"{"OrderStatusArray":[{"orderId":"O-1","status":"SHIPPED"},{"orderId":"O-2","status":"ORDERED"}]}"#))
        // A single delivery is a batch of one.
        #expect(MC.outcome { () throws(TranslateError) in
            try a.translate(MC.event(.shipped, subject: ["vendorId": "V 1/2", "orderId": "O-9"]), context: MC.context)
        } == .request(method: "POST", url: "https://sandbox.api.mastercard.com/loyalty/rewards/vendors/V%201%2F2/orders/status",
                      headers: ["Content-Type: application/json", "Accept: application/json"],
                      body: #"{"OrderStatusArray":[{"orderId":"O-9","status":"SHIPPED"}]}"#))

        // Everything configurable: method, base, vendor and item templates, array key, headers (${vendorId} only).
        let c = try Self.adapter("""
            baseURL: "http://127.0.0.1:9102/loyalty/rewards", method: "put", vendorId: "${attributes.vendor.id}",
            arrayKey: "orderStatuses", headers: { "X-Vendor": "${vendorId}", Authorization: "OAuth x=\\"1\\"" },
            item: { orderNumber: "${subject.orderId}", statusCode: "${mappedStatus}", shipment: { tracking: "${attributes.trackingNumber?}",
                    note: "status ${status}" }, source: "relay", lines: "${attributes.lines?}" },
            batch: { maxItems: 3, wait: 0 }
            """)
        #expect(c.batching == BatchOptions(maxItems: 3, wait: 0))
        let event = MC.event(.shipped, subject: ["orderId": "O-5"],
                             attributes: ["vendor": .object(["id": .string("77")]), "trackingNumber": .string("T1"), "lines": .array([.number(2)])])
        #expect(MC.outcome { () throws(TranslateError) in try c.translate(event, context: MC.context) }
                == .request(method: "PUT", url: "http://127.0.0.1:9102/loyalty/rewards/vendors/77/orders/status",
                            headers: ["Content-Type: application/json", "Accept: application/json",
                                      #"Authorization: OAuth x="1""#, "X-Vendor: 77"],
                            body: #"{"orderStatuses":[{"lines":[2],"orderNumber":"O-5","shipment":{"note":"status shipped","tracking":"T1"},"source":"relay","statusCode":"SHIPPED"}]}"#))
    }

    @Test("responses are read by the same Errors envelope")
    func classification() throws {
        let a = try Self.adapter()
        #expect(a.classify(outboundResponse(200, #"{"vendorId":"V","OrderStatusArray":[]}"#)) == .delivered)
        #expect(a.classify(outboundResponse(400, MC.envelope([("OrderStatusArray[0].status", "MISSING_STATUS", "required")])))
                == .terminal(reason: "HTTP 400: OrderStatusArray[0].status MISSING_STATUS: required"))
        #expect(a.classify(outboundResponse(503, #"{"Errors":{"Error":[{"Source":"System","ReasonCode":"UNAVAILABLE","Description":"later","Recoverable":"true"}]}}"#,
                                       headers: [("Retry-After", "12")]))
                == .retry(reason: "HTTP 503: System UNAVAILABLE: later", after: 12))
        #expect(a.classify(outboundResponse(503)) == .retry(reason: "HTTP 503", after: nil))
        #expect(a.classify(outboundResponse(403, "forbidden")) == .terminal(reason: "HTTP 403"))
    }

    @Test("config problems name their key paths: statusMap is required, batch.maxItems within 1...1000")
    func configProblems() throws {
        let f = Self.factory
        #expect(try MC.problemPaths(f, "{}") == ["destinations.mc.statusMap"])
        #expect(try MC.make(f, "{}").adapter == nil)
        #expect(try MC.problemPaths(f, "{ statusMap: {} }") == ["destinations.mc.statusMap"])
        #expect(try MC.problemPaths(f, #"{ statusMap: { shiped: "S" } }"#).contains("destinations.mc.statusMap.shiped"))
        #expect(try MC.problemPaths(f, #"{ statusMap: { shipped: "" } }"#).contains("destinations.mc.statusMap.shipped"))
        #expect(try MC.problemPaths(f, "{ \(Self.statusMap), batch: { maxItems: 0 } }") == ["destinations.mc.batch.maxItems"])
        #expect(try MC.problemPaths(f, "{ \(Self.statusMap), batch: { maxItems: 1001 } }") == ["destinations.mc.batch.maxItems"])
        #expect(try MC.problemPaths(f, "{ \(Self.statusMap), batch: { maxItems: \"ten\" } }") == ["destinations.mc.batch.maxItems"])
        #expect(try MC.problemPaths(f, "{ \(Self.statusMap), batch: { wait: \"soon\" } }") == ["destinations.mc.batch.wait"])
        #expect(try MC.problemPaths(f, "{ \(Self.statusMap), batch: { size: 5 } }") == ["destinations.mc.batch.size"])
        #expect(try MC.problemPaths(f, "{ \(Self.statusMap), method: \"DELETE\" }") == ["destinations.mc.method"])
        #expect(try MC.problemPaths(f, "{ \(Self.statusMap), item: \"${subject.orderId}\" }") == ["destinations.mc.item"])
        #expect(try MC.problemPaths(f, "{ \(Self.statusMap), item: { id: \"${subject.}\" } }") == ["destinations.mc.item"])
        #expect(try MC.problemPaths(f, "{ \(Self.statusMap), arrayKey: \"\" }") == ["destinations.mc.arrayKey"])
        #expect(try MC.problemPaths(f, "{ \(Self.statusMap), vendorId: \"\" }") == ["destinations.mc.vendorId"])
        #expect(try MC.problemPaths(f, "{ \(Self.statusMap), headers: { \"X-Order\": \"${subject.orderId}\" } }")
                == ["destinations.mc.headers.X-Order"])
        #expect(try MC.make(f, "{}").problems.first?.message
                == "is required: a map of canonical status -> this provider's value, e.g. { shipped: \"...\" }")
    }

    @Test("stand-in over HTTP: a valid batch 200 with each item accepted; missing fields, no OAuth, wrong method refused")
    func standIn() throws {
        let sink = try startStandIn(MastercardFulfillmentSimulator())
        defer { sink.stop() }
        let path = "/loyalty/rewards/vendors/V-124/orders/status"
        let valid = #"{"OrderStatusArray":[{"orderId":"O-1","status":"SHIPPED","trackingNumber":"1Z"},{"orderId":"O-2","status":"ORDERED"}]}"#
        let accepted = #"{"OrderStatusArray":[{"orderId":"O-1","result":"accepted","status":"SHIPPED"},{"orderId":"O-2","result":"accepted","status":"ORDERED"}],"vendorId":"V-124"}"#
        for method in ["POST", "PUT", "GET"] {
            let r = try MC.call(sink, method, path, valid)
            #expect(r.status == 200, "\(method) \(r)")
            #expect(r.text == accepted, "\(method)")
        }
        let encoded = try MC.call(sink, "POST", "/vendors/V%2F9/orders/status", #"{"OrderStatusArray":[{"orderId":"A","status":"S"}]}"#)
        #expect(encoded.status == 200)
        #expect(encoded["vendorId"] == "V/9")

        let missing = try MC.call(sink, "POST", path, #"{"OrderStatusArray":[{"orderId":"O-1","status":"SHIPPED"},{"orderId":"","trackingNumber":"1Z"},"x"]}"#)
        #expect(missing.status == 400)
        #expect(missing.text == MC.envelope([
            ("OrderStatusArray[1].orderId", "MISSING_ORDER_ID", "OrderStatusArray[1].orderId must be a non-empty string"),
            ("OrderStatusArray[1].status", "MISSING_STATUS", "OrderStatusArray[1].status must be a non-empty string"),
            ("OrderStatusArray[2]", "INVALID_ORDER_STATUS", "OrderStatusArray[2] must be an object"),
        ]))
        for body in [#"{"OrderStatusArray":[]}"#, #"{"orders":[{"orderId":"O-1","status":"S"}]}"#] {
            let r = try MC.call(sink, "POST", path, body)
            #expect(r.status == 400)
            #expect(r.text == MC.envelope([("OrderStatusArray", "MISSING_ORDER_STATUS_ARRAY", "OrderStatusArray must be a non-empty array")]))
        }
        let noAuth = try MC.call(sink, "POST", path, valid, auth: nil)
        #expect(noAuth.status == 401)
        #expect(noAuth.text == MC.envelope([("Gateway", "AUTHENTICATION_FAILED", "the Authorization header is missing")]))
        let delete = try MC.call(sink, "DELETE", path, valid)
        #expect(delete.status == 405)
        #expect(delete.header("Allow") == "GET, POST, PUT, PATCH")
        let wrong = try MC.call(sink, "POST", "/loyalty/rewards/vendors/V-124/orders", valid)
        #expect(wrong.status == 404)
        #expect(wrong.json?["Errors"]?["Error"]?.arrayValue?.first?["ReasonCode"]?.stringValue == "RESOURCE_NOT_FOUND")
        let noVendor = try MC.call(sink, "POST", "/vendors//orders/status", valid)
        #expect(noVendor.status == 404)

        // The adapter's own requests, with each method it may be configured with, read back by its classifier.
        let client = try HTTPClient()
        defer { client.shutdown(timeout: 1) }
        let items: [JSONValue] = [.object(["orderId": .string("O-1"), "status": .string("SHIPPED")])]
        // Every method the adapter may be configured with is one the stand-in takes.
        for (method, want) in [("GET", Classification.delivered), ("POST", .delivered), ("PUT", .delivered),
                               ("PATCH", .delivered)] {
            let a = try Self.adapter("baseURL: \"\(sink.baseURL)/loyalty/rewards\", method: \"\(method)\", headers: { Authorization: \"OAuth k=\\\"v\\\"\" }")
            let answer = try client.sendAndWait(try a.translate(batchKey: "V/1", items: items)).get()
            #expect(a.classify(answer) == want, "\(method): \(String(decoding: answer.body, as: UTF8.self))")
            if want == .delivered { #expect(answer.body == Array(#"{"OrderStatusArray":[{"orderId":"O-1","result":"accepted","status":"SHIPPED"}],"vendorId":"V/1"}"#.utf8)) }
        }
        #expect(sink.requests().suffix(4).map(\.method) == ["GET", "POST", "PUT", "PATCH"])
    }

    static let sources = """
        "vendor": { adapter: "generic", verify: { none: true }, type: "order.status_changed",
                    map: { subject: { orderId: "$.order", vendorId: "$.vendor" }, status: "$.state",
                           attributes: { trackingNumber: "$.tracking", carrier: "$.carrier" } },
                    statusMap: { "PLACED": "placed", "BACKORDER": "backordered", "SHIPPED": "shipped" } },
        """

    static func relay(_ sink: Sink, batch: String) throws -> RunningRelay {
        try RunningRelay(sources: sources, extra: """
            destinations: {
              "mc-tfs": { adapter: "mastercard-fulfillment", baseURL: "\(sink.baseURL)/loyalty/rewards",
                          headers: { Authorization: "OAuth oauth_consumer_key=\\"ck\\"" },
                          \(statusMap), batch: \(batch), retry: { schedule: ["100ms"], jitter: "none" } },
            },
            routes: [ { from: "vendor", to: ["mc-tfs"] } ],
            """)
    }

    static func post(_ relay: RunningRelay, _ vendor: String, _ order: String, _ state: String,
                     tracking: String? = nil) throws -> String {
        let extra = tracking.map { #","tracking":"\#($0)","carrier":"UPS""# } ?? ""
        return try expectAccepted(try relay.client.post("/v1/hooks/vendor",
                                                        json: #"{"vendor":"\#(vendor)","order":"\#(order)","state":"\#(state)"\#(extra)}"#))
    }

    @Test("end to end: three statuses for one vendor posted together arrive in ONE request with three items")
    func oneVendorOneRequest() throws {
        let sink = try startStandIn(MastercardFulfillmentSimulator())
        defer { sink.stop() }
        let relay = try Self.relay(sink, batch: #"{ wait: "300ms" }"#)
        defer { relay.stop() }
        let ids = [try Self.post(relay, "V-124", "O-1", "PLACED"),
                   try Self.post(relay, "V-124", "O-2", "BACKORDER"),
                   try Self.post(relay, "V-124", "O-3", "SHIPPED", tracking: "1Z999")]
        let deliveries = try ids.map { try DeliveryTests.waitForState(relay, $0, "mc-tfs", "delivered") }
        let got = sink.requests()
        try #require(got.count == 1, "\(got.map(\.bodyText))")
        let r = got[0]
        #expect(r.method == "POST")
        #expect(r.path == "/loyalty/rewards/vendors/V-124/orders/status")
        #expect(r.status == 200)
        #expect(r.bodyText == #"{"OrderStatusArray":[{"orderId":"O-1","status":"ORDERED"},{"orderId":"O-2","status":"BACKORDERED"},{"carrier":"UPS","orderId":"O-3","status":"SHIPPED","trackingNumber":"1Z999"}]}"#)
        #expect(r.headers["Authorization"] == #"OAuth oauth_consumer_key="ck""#)
        #expect(r.headers["Content-Type"] == "application/json")
        #expect(r.headers["X-Relay-Deliveries"] == deliveries.map(\.id).joined(separator: ","))
        #expect(deliveries.allSatisfy { $0.attempts == 1 })
    }

    @Test("end to end: statuses for two vendors arrive in two requests; maxItems splits one vendor's batch")
    func twoVendorsTwoRequests() throws {
        let sink = try startStandIn(MastercardFulfillmentSimulator())
        defer { sink.stop() }
        let relay = try Self.relay(sink, batch: #"{ wait: "300ms", maxItems: 2 }"#)
        defer { relay.stop() }
        let ids = [try Self.post(relay, "V-1", "A-1", "SHIPPED"),
                   try Self.post(relay, "V-2", "B-1", "PLACED"),
                   try Self.post(relay, "V-1", "A-2", "BACKORDER"),
                   try Self.post(relay, "V-1", "A-3", "PLACED")]
        for id in ids { try DeliveryTests.waitForState(relay, id, "mc-tfs", "delivered") }
        let got = sink.requests().sorted { $0.path == $1.path ? $0.seq < $1.seq : $0.path < $1.path }
        try #require(got.count == 3, "\(got.map { $0.path + " " + $0.bodyText })")
        #expect(got.map(\.path) == ["/loyalty/rewards/vendors/V-1/orders/status", "/loyalty/rewards/vendors/V-1/orders/status",
                                    "/loyalty/rewards/vendors/V-2/orders/status"])
        // V-1's two batches are for different orders, so they may go out together and arrive in either order;
        // what each holds is fixed: the first two of V-1's statuses, in the order posted, then the third.
        #expect(Set(got[0...1].map(\.bodyText)) == [#"{"OrderStatusArray":[{"orderId":"A-1","status":"SHIPPED"},{"orderId":"A-2","status":"BACKORDERED"}]}"#,
                                                  #"{"OrderStatusArray":[{"orderId":"A-3","status":"ORDERED"}]}"#])
        #expect(got[2].bodyText == #"{"OrderStatusArray":[{"orderId":"B-1","status":"ORDERED"}]}"#)
    }

    @Test("end to end: a refusal of the batch is terminal for every delivery in it")
    func batchRefused() throws {
        let sink = try startStandIn(MastercardFulfillmentSimulator())
        defer { sink.stop() }
        // The stand-in wants OrderStatusArray: a different arrayKey is refused with its Errors envelope.
        let relay = try RunningRelay(sources: Self.sources, extra: """
            destinations: {
              "mc-tfs": { adapter: "mastercard-fulfillment", baseURL: "\(sink.baseURL)", arrayKey: "statuses",
                          headers: { Authorization: "OAuth oauth_consumer_key=\\"ck\\"" },
                          \(Self.statusMap), batch: { wait: "200ms" } },
            },
            routes: [ { from: "vendor", to: ["mc-tfs"] } ],
            """)
        defer { relay.stop() }
        let ids = [try Self.post(relay, "V-1", "A-1", "SHIPPED"), try Self.post(relay, "V-1", "A-2", "SHIPPED")]
        for id in ids {
            let d = try DeliveryTests.waitForState(relay, id, "mc-tfs", "dead")
            let row = try DeliveryTests.deliveryRow(relay.store, d.id)
            #expect(row.lastStatus == 400)
            #expect(row.lastError == "HTTP 400: OrderStatusArray MISSING_ORDER_STATUS_ARRAY: OrderStatusArray must be a non-empty array",
                    "\(row.lastError ?? "nil")")
        }
        #expect(sink.requests().count == 1)
    }

    @Test("end to end: a refusal naming one item fails that item alone; the others go again without it")
    func oneItemRefused() throws {
        let sink = try startStandIn(MastercardFulfillmentSimulator())
        defer { sink.stop() }
        let relay = try RunningRelay(sources: Self.sources, extra: """
            destinations: {
              "mc-tfs": { adapter: "mastercard-fulfillment", baseURL: "\(sink.baseURL)",
                          headers: { Authorization: "OAuth oauth_consumer_key=\\"ck\\"" },
                          \(Self.statusMap), batch: { wait: "300ms" }, retry: { schedule: ["100ms"], jitter: "none" } },
            },
            routes: [ { from: "vendor", to: ["mc-tfs"] } ],
            """)
        defer { relay.stop() }
        // The second has an empty order id: Mastercard refuses it by its position in the array.
        let ids = [try Self.post(relay, "V-1", "A-1", "SHIPPED"), try Self.post(relay, "V-1", "", "SHIPPED"),
                   try Self.post(relay, "V-1", "A-3", "SHIPPED")]
        let bad = try DeliveryTests.waitForState(relay, ids[1], "mc-tfs", "dead")
        #expect(try DeliveryTests.deliveryRow(relay.store, bad.id).lastError
                == "HTTP 400: OrderStatusArray[1].orderId MISSING_ORDER_ID: OrderStatusArray[1].orderId must be a non-empty string")
        for id in [ids[0], ids[2]] {
            let d = try DeliveryTests.waitForState(relay, id, "mc-tfs", "delivered")
            #expect(try DeliveryTests.attempts(relay.store, d.id).map(\.status) == [400, 200])
        }
        let got = sink.requests()
        #expect(got.map(\.status) == [400, 200])
        #expect(got.last?.bodyText.contains(#""orderId":"A-1""#) == true && got.last?.bodyText.contains(#""orderId":"A-3""#) == true)
        #expect(got.last?.bodyText.contains(#""orderId":"""#) == false, "the refused item is not sent again")
    }
}
