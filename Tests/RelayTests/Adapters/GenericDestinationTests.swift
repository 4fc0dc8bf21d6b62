import Adapters
import Foundation
@testable import Relay
import Simulator
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Shared by the adapter tests: a canonical event with the given fields.
func sampleEvent(subject: [String: String] = ["orderId": "ORD-1"], status: CanonicalStatus? = .shipped,
                 attributes: [String: JSONValue] = [:], raw: String? = nil, type: String = "order.status_changed",
                 providerStatus: ProviderStatus? = nil) -> CanonicalEvent {
    CanonicalEvent(id: "evt_01JTEST0000000000000000000", source: "shop", type: type, subject: subject, status: status,
                   providerStatus: providerStatus, occurredAt: "2026-11-20T10:00:00Z",
                   receivedAt: "2026-11-20T10:00:00.123Z", attributes: attributes, idempotencyKey: "k-1",
                   raw: raw.map { RawPayload(contentType: "application/json", body: $0) })
}

/// Builds one destination adapter from a JSON5 block; returns it and the problems found.
func makeDestination(_ adapter: String, _ block: String, environment: [String: String] = [:])
    -> (adapter: (any DestinationAdapter)?, problems: [String]) {
    let r = ConfigReader(environment: environment)
    guard let value = try? JSONValue.parse(Data(block.utf8), json5: true), let o = value.objectValue else {
        return (nil, ["unparsable test block"])
    }
    let factory = BuiltinAdapters.registry.destinations[adapter]!
    let d = factory.makeDestination(name: "d", config: o, path: "destinations.d", reader: r)
    return (d, r.problems.map(\.description))
}

let testContext = DeliveryContext(deliveryID: "dlv_1", destination: "d", attempt: 1)

extension OutboundRequest {
    var bodyText: String { String(decoding: body, as: UTF8.self) }
    func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
}

@Suite("Templates")
struct TemplateTests {
    let event = sampleEvent(subject: ["orderId": "A/B 1?&", "transactionId": "42"],
                            attributes: ["amount": .number(10.5), "tracking": .string("1Z\"x\n"),
                                         "address": .object(["city": .string("Zürich")])],
                            raw: #"{"order":{"id":"O-9","lines":[{"sku":"S1"}]}}"#,
                            providerStatus: ProviderStatus(code: "SHP", label: "Shipped"))

    @Test("placeholders over every event field, escaped for where they go")
    func render() throws {
        let scope = TemplateScope(event: event, context: testContext, values: ["mappedStatus": .string("SHIPPED")])
        let cases: [(String, Template.Escaping, String)] = [
            ("${subject.orderId}", .none, "A/B 1?&"),
            ("/orders/${subject.orderId}", .url, "/orders/A%2FB%201%3F%26"),
            ("q=${subject.orderId}", .form, "q=A%2FB+1%3F%26"),
            ("\"${attributes.tracking}\"", .json, #""1Z\"x\n""#),
            ("${attributes.address.city}", .url, "Z%C3%BCrich"),
            ("${status}/${mappedStatus}/${providerStatus.code}/${providerStatus.label}", .none, "shipped/SHIPPED/SHP/Shipped"),
            ("${id} ${source} ${type}", .none, "evt_01JTEST0000000000000000000 shop order.status_changed"),
            ("${delivery.id}#${delivery.attempt}", .none, "dlv_1#1"),
            ("${raw.order.id}:${raw.order.lines.0.sku}", .none, "O-9:S1"),
            ("${attributes.amount}", .none, "10.5"),
            ("[${attributes.carrier?}]", .none, "[]"),
            ("${attributes.address}", .none, #"{"city":"Zürich"}"#),
            ("no placeholders", .url, "no placeholders"),
        ]
        for (text, escaping, want) in cases {
            #expect(try Template(text).render(scope, escaping: escaping) == want, "\(text)")
        }
    }

    @Test("a missing required value fails with a reason naming it; a malformed placeholder fails at parse time")
    func missing() throws {
        let scope = TemplateScope(event: event)
        #expect(throws: TranslateError("the event has no subject.vendorId (needed by \"/v/${subject.vendorId}\")", kind: .retry)) {
            try Template("/v/${subject.vendorId}").render(scope)
        }
        for bad in ["${", "${}", "${subject.}", "${subject..x}", "${nope.x}"] {
            #expect(throws: TemplateError.self, "\(bad)") { try Template(bad) }
        }
    }

    @Test("a JSON template keeps value types, fills strings, and leaves out optional fields that are absent")
    func jsonTemplate() throws {
        let t = try JSONTemplate(try JSONValue.parse(Data(#"""
            {"amount":"${attributes.amount}","id":"${subject.transactionId}","note":"order ${subject.transactionId}",
             "carrier":"${attributes.carrier?}","fixed":[1,true,null],"nested":{"city":"${attributes.address.city}"}}
            """#.utf8)))
        let v = try t.render(TemplateScope(event: event))
        #expect(v.jsonString() == #"{"amount":10.5,"fixed":[1,true,null],"id":"42","nested":{"city":"Zürich"},"note":"order 42"}"#)
    }

    @Test("config references are resolved at load, event placeholders kept for each delivery")
    func configReferences() throws {
        let r = ConfigReader(environment: ["TOKEN": "s3cr3t"])
        let t = try #require(r.template(["h": .string("Bearer ${env:TOKEN} for ${subject.orderId}")], "h", "x"))
        #expect(r.problems.isEmpty)
        #expect(try t.render(TemplateScope(event: event)) == "Bearer s3cr3t for A/B 1?&")
        _ = r.template(["h": .string("${env:MISSING}")], "h", "x")
        #expect(r.problems.map(\.description) == ["x.h: environment variable MISSING is not set (${env:MISSING})"])
    }
}

@Suite("Generic destination")
struct GenericDestinationTranslateTests {
    @Test("one call: method, URL, headers and body exactly as configured")
    func table() throws {
        let event = sampleEvent(subject: ["orderId": "ORD 7"], status: .shipped,
                                attributes: ["trackingNumber": .string("1Z9"), "amount": .number(3)],
                                raw: #"{"x":1}"#)
        let cases: [(String, String, String, [(String, String)], String)] = [
            // block, method, url, headers, body
            (#"{ url: "https://v.example/o/${subject.orderId}", method: "put", headers: { "X-Id": "${id}" }, body: { state: "${status}", tracking: "${attributes.trackingNumber}", amount: "${attributes.amount}", carrier: "${attributes.carrier?}" } }"#,
             "PUT", "https://v.example/o/ORD%207",
             [("X-Id", "evt_01JTEST0000000000000000000"), ("Content-Type", "application/json")],
             #"{"amount":3,"state":"shipped","tracking":"1Z9"}"#),
            (#"{ url: "https://v.example/s", statusMap: { shipped: "SHP" }, body: "{\"s\":\"${mappedStatus}\",\"o\":\"${subject.orderId}\"}" }"#,
             "POST", "https://v.example/s", [("Content-Type", "application/json")], #"{"s":"SHP","o":"ORD 7"}"#),
            (#"{ url: "https://v.example/f", method: "PATCH", form: { process: "true", amount: "${attributes.amount}", note: "${attributes.none?}" } }"#,
             "PATCH", "https://v.example/f", [("Content-Type", "application/x-www-form-urlencoded")], "amount=3&process=true"),
            (#"{ url: "https://v.example/g?o=${subject.orderId}", method: "GET" }"#,
             "GET", "https://v.example/g?o=ORD%207", [], ""),
            (#"{ url: "https://v.example/r", body: "raw" }"#,
             "POST", "https://v.example/r", [("Content-Type", "application/json")], #"{"x":1}"#),
            (#"{ url: "https://v.example/t", contentType: "text/plain", body: "order ${subject.orderId} is ${status}" }"#,
             "POST", "https://v.example/t", [("Content-Type", "text/plain")], "order ORD 7 is shipped"),
        ]
        for (block, method, url, headers, body) in cases {
            let (d, problems) = makeDestination("generic", block)
            #expect(problems.isEmpty, "\(problems)")
            let req = try #require(d).translate(event, context: testContext)
            #expect(req.method == method, "\(block)")
            #expect(req.url == url, "\(block)")
            #expect(req.headers.map { "\($0.0): \($0.1)" } == headers.map { "\($0.0): \($0.1)" }, "\(block)")
            #expect(req.bodyText == body, "\(block)")
        }
    }

    @Test("a status the statusMap does not name is skipped, never guessed; a missing identifier waits, a missing attribute is terminal")
    func skipAndTerminal() throws {
        let (d, _) = makeDestination("generic", #"{ url: "https://v.example/${subject.orderId}", statusMap: { shipped: "S" } }"#)
        let adapter = try #require(d)
        #expect(throws: TranslateError.noMapping(.cancelled)) {
            try adapter.translate(sampleEvent(status: .cancelled), context: testContext)
        }
        #expect(throws: TranslateError.noMapping(nil)) {
            try adapter.translate(sampleEvent(status: nil), context: testContext)
        }
        do {
            _ = try adapter.translate(sampleEvent(subject: [:]), context: testContext)
            Issue.record("translated without its order id")
        } catch {
            #expect(error.kind == .retry, "correlation may still supply a subject identifier")
            #expect(error.reason.contains("subject.orderId"))
        }
        let (withAttribute, _) = makeDestination("generic", #"{ url: "https://v.example/", body: { t: "${attributes.tracking}" } }"#)
        #expect(throws: TranslateError("the event has no attributes.tracking (needed by \"${attributes.tracking}\")")) {
            try #require(withAttribute).translate(sampleEvent(), context: testContext)
        }
    }

    @Test("a secret resolved into a template never appears in a failure's reason (stored and logged)")
    func secretNotInReasons() throws {
        let (d, problems) = makeDestination("generic", #"{ url: "https://v.example/o/${subject.orderId}?key=${env:VENDOR_KEY}", headers: { Authorization: "Bearer ${env:VENDOR_KEY}", "X-O": "${subject.orderId}" } }"#,
                                            environment: ["VENDOR_KEY": "s3cr3t-value"])
        #expect(problems.isEmpty, "\(problems)")
        let adapter = try #require(d)
        #expect(try adapter.translate(sampleEvent(), context: testContext).url == "https://v.example/o/ORD-1?key=s3cr3t-value")
        do {
            _ = try adapter.translate(sampleEvent(subject: [:]), context: testContext)
            Issue.record("translated without its order id")
        } catch {
            #expect(!error.reason.contains("s3cr3t"), "\(error.reason)")
            #expect(error.reason.contains("${env:VENDOR_KEY}"), "\(error.reason)")
        }
    }

    @Test("a value of only dots stays a name in the URL path, never a dot-segment")
    func dotSegments() throws {
        let (d, _) = makeDestination("generic", #"{ url: "https://v.example/o/${subject.orderId}/status" }"#)
        let adapter = try #require(d)
        for (id, path) in [("..", "%2E%2E"), (".", "%2E"), ("a.b", "a.b"), ("../x", "..%2Fx")] {
            #expect(try adapter.translate(sampleEvent(subject: ["orderId": id]), context: testContext).url
                    == "https://v.example/o/\(path)/status", "\(id)")
        }
    }

    @Test("header values cannot smuggle a line break into the request")
    func headerInjection() throws {
        let (d, _) = makeDestination("generic", #"{ url: "https://v.example/", headers: { "X-O": "${subject.orderId}" } }"#)
        let req = try #require(d).translate(sampleEvent(subject: ["orderId": "a\r\nX-Evil: 1"]), context: testContext)
        #expect(req.header("X-O") == "a  X-Evil: 1")
    }

    @Test("response rules: first match decides, default reading otherwise; reasons name the fields")
    func responses() throws {
        let (d, problems) = makeDestination("generic", #"""
            { url: "https://v.example/", responses: [
                { status: 200, body: { "$.category": ["invalid", "expired"] }, result: "terminal" },
                { status: "2xx", body: { "$.ok": false }, result: "retry", reason: "vendor busy" },
                { status: [409], result: "delivered" },
              ] }
            """#)
        #expect(problems.isEmpty, "\(problems)")
        let adapter = try #require(d)
        func classify(_ status: Int, _ body: String) -> Classification {
            adapter.outcome(OutboundResponse(status: status, body: Array(body.utf8)), event: sampleEvent(),
                            context: testContext).classification
        }
        #expect(classify(200, #"{"category":"expired"}"#) == .terminal(reason: "HTTP 200 $.category=expired"))
        #expect(classify(200, #"{"category":"processed"}"#) == .delivered)
        #expect(classify(202, #"{"ok":false}"#) == .retry(reason: "vendor busy", after: nil))
        #expect(classify(409, "") == .delivered)
        #expect(classify(503, "") == .retry(reason: "HTTP 503", after: nil))
        #expect(classify(404, "") == .terminal(reason: "HTTP 404"))
        #expect(classify(200, "not json") == .delivered)
    }

    @Test("configuration problems name their key path")
    func configProblems() {
        let cases: [(String, String)] = [
            (#"{ url: "ftp://x" }"#, "destinations.d.url: must be an http:// or https:// URL"),
            (#"{ url: "https://x/${nope.y}" }"#, "destinations.d.url: unknown placeholder"),
            (#"{ url: "https://x/", method: "FETCH" }"#, "destinations.d.method: must be GET, POST, PUT, PATCH or DELETE"),
            (#"{ url: "https://x/", statusMap: { shipped: "S", sent: 3.5 } }"#, "destinations.d.statusMap.sent: expected the provider's status value"),
            (#"{ url: "https://x/", statusMap: { shiped: "S" } }"#, "destinations.d.statusMap.shiped: \"shiped\" is not a canonical status"),
            (#"{ url: "https://x/", responses: [{ status: 700, result: "terminal" }] }"#, "destinations.d.responses[0].status: expected an HTTP status"),
            (#"{ url: "https://x/", responses: [{ status: 200 }] }"#, "destinations.d.responses[0].result: is required"),
            (#"{ url: "https://x/", responses: [{ body: { "ok": 1 }, result: "retry" }] }"#, "destinations.d.responses[0].body.ok: expected a JSON path such as \"$.order.id\": \"ok\" does not start with $"),
            (#"{ url: "https://x/", contextKeys: { v: "coupon.code" } }"#, "destinations.d.contextKeys.v: expected a path into the response"),
            (#"{ url: "https://x/", correlate: ["v"] }"#, "destinations.d.correlate[0]: \"v\" is not one of the contextKeys"),
            (#"{ url: "https://x/", actions: [{ url: "https://x/" }] }"#, "destinations.d.url: belongs inside each of actions[]"),
            (#"{ actions: [] }"#, "destinations.d.actions: expected a non-empty list"),
            (#"{ actions: [{ name: "a", url: "https://x/${voucher}" }] }"#, "destinations.d.actions[0]: ${voucher} is not an event field nor a value an earlier step extracts"),
            (#"{ actions: [{ name: "a", url: "https://x/" }, { name: "a", url: "https://y/" }] }"#, "destinations.d.actions[1].name: \"a\" is used twice"),
        ]
        for (block, want) in cases {
            let (_, problems) = makeDestination("generic", block)
            #expect(problems.contains { $0.hasPrefix(want) }, "\(block): \(problems)")
        }
    }

    @Test("actions: a value a step extracts is a placeholder of the next; disabled steps are left out")
    func actionsTranslate() throws {
        let (d, problems) = makeDestination("generic", #"""
            { actions: [
                { name: "issue", method: "POST", url: "https://v.example/coupons", body: { order: "${subject.orderId}" },
                  contextKeys: { voucher: "response.coupon.code", where: "response.headers.Location" } },
                { name: "audit", enabled: false, url: "https://v.example/audit" },
                { name: "confirm", method: "PUT", url: "https://v.example/coupons/${voucher}", body: "{\"c\":\"${context.voucher}\"}" },
              ], correlate: ["voucher"] }
            """#)
        #expect(problems.isEmpty, "\(problems)")
        let adapter = try #require(d)
        let event = sampleEvent()
        let first = try adapter.translate(event, context: testContext)
        #expect(first.url == "https://v.example/coupons" && first.bodyText == #"{"order":"ORD-1"}"#)
        let response = OutboundResponse(status: 201, headers: HTTPHeaders([("Location", "/c/V 1")]),
                                        body: Array(#"{"coupon":{"code":"V 1"}}"#.utf8))
        let o = adapter.outcome(response, event: event, context: testContext)
        #expect(o == StepOutcome(.delivered, values: ["voucher": "V 1", "where": "/c/V 1"],
                                 correlation: ["voucher": "V 1"], next: true))
        var next = testContext
        next.step = 1
        next.values = o.values
        let second = try adapter.translate(event, context: next)
        #expect(second.method == "PUT" && second.url == "https://v.example/coupons/V%201" && second.bodyText == #"{"c":"V 1"}"#)
        let last = adapter.outcome(OutboundResponse(status: 200), event: event, context: next)
        #expect(last == StepOutcome(.delivered, values: [:], correlation: ["voucher": "V 1"], next: false))
        // A response without the value a later step needs ends the chain, naming the step and the path.
        let bad = adapter.outcome(OutboundResponse(status: 200, body: Array("{}".utf8)), event: event, context: testContext)
        #expect(bad.classification == .terminal(reason: "step \"issue\" (1 of 2): the response has no response.coupon.code (contextKeys.voucher)"))
        let failed = adapter.outcome(OutboundResponse(status: 502), event: event, context: next)
        #expect(failed.classification == .retry(reason: "step \"confirm\" (2 of 2): HTTP 502", after: nil))
    }
}

/// A provider stand-in (`responder`) on a free loopback port, recording requests like the sink.
func startStandIn(_ responder: any SinkResponder, faults: [SinkFault] = []) throws -> Sink {
    var options = SinkOptions(host: "127.0.0.1", port: 0, faults: faults, shutdownTimeout: 2)
    options.responder = responder
    let sink = Sink(options: options)
    try sink.start()
    return sink
}

/// A destination's answer, for classification tables.
func outboundResponse(_ status: Int, _ body: String = "", headers: [(String, String)] = []) -> OutboundResponse {
    OutboundResponse(status: status, headers: HTTPHeaders(headers), body: Array(body.utf8))
}
