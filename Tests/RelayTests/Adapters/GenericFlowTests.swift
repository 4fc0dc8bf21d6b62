import Adapters
import Foundation
@testable import Relay
import Testing

/// The generic destination over real HTTP: multi-step actions, resuming at the failed step, skipped deliveries, and
/// correlation of a vendor's id back to the loyalty platform's transaction.
@Suite("Generic flows")
struct GenericFlowTests {
    static func json(_ text: String) -> JSONValue { try! JSONValue.parse(Data(text.utf8)) }

    static let shop = """
        "shop": { adapter: "generic", verify: { none: true }, type: "order.status_changed",
                  map: { subject: { orderId: "$.id" }, status: "$.state" } },
        """

    @Test("two steps: the voucher the first returns is in the second's URL and body; one attempt recorded")
    func twoSteps() throws {
        let sink = try DeliveryTests.startSink([
            SinkFault(path: "/coupons", action: .json(status: 201, body: Self.json(#"{"coupon":{"code":"V-9"}}"#))),
        ])
        defer { sink.stop() }
        let relay = try RunningRelay(sources: Self.shop, extra: """
            destinations: {
              "vendor": { adapter: "generic", actions: [
                  { name: "issue", method: "POST", url: "\(sink.baseURL)/coupons", body: { order: "${subject.orderId}" },
                    contextKeys: { voucher: "response.coupon.code" } },
                  { name: "confirm", method: "PUT", url: "\(sink.baseURL)/confirm/${voucher}",
                    body: { voucher: "${voucher}", status: "${status}" } },
                ] },
            },
            routes: [ { from: "shop", to: ["vendor"] } ],
            """)
        defer { relay.stop() }
        let id = try DeliveryTests.post(relay, "ORD-5", "shipped")
        let d = try DeliveryTests.waitForState(relay, id, "vendor", "delivered")
        let got = sink.requests()
        #expect(got.map { "\($0.method) \($0.path)" } == ["POST /coupons", "PUT /confirm/V-9"])
        #expect(got.first?.bodyText == #"{"order":"ORD-5"}"#)
        #expect(got.last?.bodyText == #"{"status":"shipped","voucher":"V-9"}"#)
        #expect(got.first?.headers["Idempotency-Key"] == d.id)
        #expect(got.last?.headers["Idempotency-Key"] == d.id + "-1")
        #expect(try DeliveryTests.attempts(relay.store, d.id).count == 1)
    }

    @Test("a retryable failure of step 2 retries step 2 only, with step 1's value; a terminal one names the step")
    func resumeAtFailedStep() throws {
        let sink = try DeliveryTests.startSink([
            SinkFault(path: "/coupons", action: .json(status: 201, body: Self.json(#"{"coupon":{"code":"V-1"}}"#))),
            SinkFault(path: "/confirm/V-1", times: 2, action: .status(503)),
            SinkFault(path: "/confirm/V-2", action: .status(422)),
        ])
        defer { sink.stop() }
        let relay = try RunningRelay(sources: Self.shop, extra: """
            destinations: {
              "vendor": { adapter: "generic", retry: { schedule: ["50ms", "50ms", "50ms"], jitter: "none" }, actions: [
                  { name: "issue", url: "\(sink.baseURL)/coupons", contextKeys: { voucher: "response.coupon.code" } },
                  { name: "confirm", method: "PUT", url: "\(sink.baseURL)/confirm/${voucher}" },
                ] },
            },
            routes: [ { from: "shop", to: ["vendor"] } ],
            """)
        defer { relay.stop() }
        let id = try DeliveryTests.post(relay, "ORD-1", "shipped")
        let d = try DeliveryTests.waitForState(relay, id, "vendor", "delivered")
        #expect(sink.requests().map(\.path) == ["/coupons", "/confirm/V-1", "/confirm/V-1", "/confirm/V-1"])
        let rows = try DeliveryTests.attempts(relay.store, d.id)
        #expect(rows.map(\.status) == [503, 503, 200])
        #expect(rows.first?.error == nil || rows.first?.error?.contains("confirm") == true)

        // Terminal at step 2: dead, the reason names the step.
        sink.setFaults([
            SinkFault(path: "/coupons", action: .json(status: 201, body: Self.json(#"{"coupon":{"code":"V-2"}}"#))),
            SinkFault(path: "/confirm/V-2", action: .status(422)),
        ])
        let id2 = try DeliveryTests.post(relay, "ORD-2", "shipped")
        let dead = try DeliveryTests.waitForState(relay, id2, "vendor", "dead")
        let row = try DeliveryTests.deliveryRow(relay.store, dead.id)
        #expect(row.lastError == "step \"confirm\" (2 of 2): HTTP 422")
    }

    @Test("a status the destination has no mapping for ends as skipped, with the reason, and nothing is sent")
    func skipped() throws {
        let sink = try DeliveryTests.startSink()
        defer { sink.stop() }
        let relay = try RunningRelay(sources: Self.shop, extra: """
            destinations: {
              "vendor": { adapter: "generic", url: "\(sink.baseURL)/s", statusMap: { shipped: "SHIPPED" },
                          body: { s: "${mappedStatus}" } },
            },
            routes: [ { from: "shop", to: ["vendor"] } ],
            """)
        defer { relay.stop() }
        let skippedID = try DeliveryTests.post(relay, "ORD-1", "refunded")
        let sentID = try DeliveryTests.post(relay, "ORD-2", "shipped")
        let s = try DeliveryTests.waitForState(relay, skippedID, "vendor", "skipped")
        try DeliveryTests.waitForState(relay, sentID, "vendor", "delivered")
        #expect(try DeliveryTests.deliveryRow(relay.store, s.id).lastError
                == "no mapping: status \"refunded\" has no value for this destination")
        #expect(sink.requests().map(\.bodyText) == [#"{"s":"SHIPPED"}"#])
        #expect(relay.log.contains("delivery skipped"))
    }

    @Test("correlation: the vendor's order id returned for a transaction routes the vendor's later status back to it")
    func correlation() throws {
        let vendor = try DeliveryTests.startSink([
            SinkFault(path: "/orders", action: .json(status: 201, body: Self.json(#"{"order":{"id":"V-778"}}"#))),
        ])
        let loyalty = try DeliveryTests.startSink()
        defer { vendor.stop(); loyalty.stop() }
        let relay = try RunningRelay(sources: """
            "loyalty": { adapter: "generic", verify: { none: true }, map: { subject: { transactionId: "$.txn" }, status: "$.status" } },
            "vendor-hooks": { adapter: "generic", verify: { none: true }, map: { subject: { vendorOrderId: "$.order" }, status: "$.state" },
                              statusMap: { "SHIPPED": "shipped" } },
            """, extra: """
            destinations: {
              "vendor": { adapter: "generic", url: "\(vendor.baseURL)/orders", body: { ref: "${subject.transactionId}" },
                          contextKeys: { vendorOrderId: "response.order.id" }, correlate: ["vendorOrderId"] },
              "loyalty-api": { adapter: "generic", method: "PUT", url: "\(loyalty.baseURL)/transactions/${subject.transactionId}",
                               body: { status: "${status}", vendorOrder: "${subject.vendorOrderId}" } },
            },
            routes: [ { from: "loyalty", to: ["vendor"] }, { from: "vendor-hooks", to: ["loyalty-api"] } ],
            """)
        defer { relay.stop() }
        let placed = try expectAccepted(try relay.client.post("/v1/hooks/loyalty", json: #"{"txn":"T-1","status":"placed"}"#))
        try DeliveryTests.waitForState(relay, placed, "vendor", "delivered")
        #expect(vendor.requests(path: "/orders").map(\.bodyText) == [#"{"ref":"T-1"}"#])

        // The vendor names only its own id.
        let shipped = try expectAccepted(try relay.client.post("/v1/hooks/vendor-hooks", json: #"{"order":"V-778","state":"SHIPPED"}"#))
        try DeliveryTests.waitForState(relay, shipped, "loyalty-api", "delivered")
        let back = loyalty.requests()
        #expect(back.map { "\($0.method) \($0.path) \($0.bodyText)" }
                == [#"PUT /transactions/T-1 {"status":"shipped","vendorOrder":"V-778"}"#])

        // An id nobody linked stays unmatched: the template needs transactionId, so the delivery is dead, saying why.
        let stray = try expectAccepted(try relay.client.post("/v1/hooks/vendor-hooks", json: #"{"order":"V-999","state":"SHIPPED"}"#))
        let dead = try DeliveryTests.waitForState(relay, stray, "loyalty-api", "dead")
        #expect(try DeliveryTests.deliveryRow(relay.store, dead.id).lastError?.contains("subject.transactionId") == true)
    }

    @Test("an inbound event naming two identifiers links them, for statuses that name only one")
    func inboundLink() throws {
        let loyalty = try DeliveryTests.startSink()
        defer { loyalty.stop() }
        let relay = try RunningRelay(sources: """
            "vendor-hooks": { adapter: "generic", verify: { none: true },
                              map: { subject: { vendorOrderId: "$.order", transactionId: "$.ref" }, status: "$.state" } },
            """, extra: """
            destinations: {
              "loyalty-api": { adapter: "generic", url: "\(loyalty.baseURL)/t/${subject.transactionId}", body: "none" },
            },
            routes: [ { from: "vendor-hooks", to: ["loyalty-api"] } ],
            """)
        defer { relay.stop() }
        let a = try expectAccepted(try relay.client.post("/v1/hooks/vendor-hooks", json: #"{"order":"V-1","ref":"T-7","state":"placed"}"#))
        try DeliveryTests.waitForState(relay, a, "loyalty-api", "delivered")
        let b = try expectAccepted(try relay.client.post("/v1/hooks/vendor-hooks", json: #"{"order":"V-1","state":"shipped"}"#))
        try DeliveryTests.waitForState(relay, b, "loyalty-api", "delivered")
        #expect(loyalty.requests().map(\.path) == ["/t/T-7", "/t/T-7"])
    }
}
