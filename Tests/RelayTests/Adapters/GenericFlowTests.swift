import Adapters
import Foundation
@testable import Relay
import Simulator
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
        #expect(rows.map(\.error) == [nil, nil, nil])
        #expect(try DeliveryTests.deliveryRow(relay.store, d.id).lastStatus == 200)

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
                              statusMap: { "SHIPPED": "shipped" }, correlationScope: "vendor" },
            """, extra: """
            destinations: {
              "vendor": { adapter: "generic", url: "\(vendor.baseURL)/orders", body: { ref: "${subject.transactionId}" },
                          contextKeys: { vendorOrderId: "response.order.id" }, correlate: ["vendorOrderId"] },
              "loyalty-api": { adapter: "generic", method: "PUT", url: "\(loyalty.baseURL)/transactions/${subject.transactionId}",
                               retry: { schedule: ["50ms", "50ms"], jitter: "none" },
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

        // An id nobody linked (yet): the link may still come, so the delivery is retried on the schedule, then dead,
        // saying why; nothing is sent meanwhile.
        let stray = try expectAccepted(try relay.client.post("/v1/hooks/vendor-hooks", json: #"{"order":"V-999","state":"SHIPPED"}"#))
        let dead = try DeliveryTests.waitForState(relay, stray, "loyalty-api", "dead")
        let row = try DeliveryTests.deliveryRow(relay.store, dead.id)
        #expect(row.attempts == 3)
        #expect(row.lastError == #"cannot translate yet: the event has no subject.transactionId (needed by "\#(loyalty.baseURL)/transactions/${subject.transactionId}") after 3 attempts"#)
        #expect(loyalty.requests().count == 1)
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

    @Test("a vendor status that arrives before the vendor's answer is linked waits for the link instead of dying")
    func correlationRace() throws {
        let vendor = try DeliveryTests.startSink([
            SinkFault(path: "/orders", action: .json(status: 201, body: Self.json(#"{"order":{"id":"V-5"}}"#))),
        ])
        let loyalty = try DeliveryTests.startSink()
        defer { vendor.stop(); loyalty.stop() }
        let relay = try RunningRelay(sources: """
            "loyalty": { adapter: "generic", verify: { none: true }, map: { subject: { transactionId: "$.txn" }, status: "$.status" } },
            "vendor": { adapter: "generic", verify: { none: true }, map: { subject: { vendorOrderId: "$.order" }, status: "$.state" } },
            """, extra: """
            destinations: {
              "vendor": { adapter: "generic", url: "\(vendor.baseURL)/orders", contextKeys: { vendorOrderId: "response.order.id" },
                          correlate: ["vendorOrderId"], retry: { schedule: ["50ms"], jitter: "none" } },
              "loyalty-api": { adapter: "generic", url: "\(loyalty.baseURL)/t/${subject.transactionId}", body: "none",
                               retry: { schedule: ["300ms", "1s", "2s", "5s"], jitter: "none" } },
            },
            routes: [ { from: "loyalty", to: ["vendor"] }, { from: "vendor", to: ["loyalty-api"] } ],
            """)
        defer { relay.stop() }
        // The vendor's status comes first (it names an order the relay has not heard of yet)...
        let early = try expectAccepted(try relay.client.post("/v1/hooks/vendor", json: #"{"order":"V-5","state":"shipped"}"#))
        try DeliveryTests.eventually("a first attempt at the early status") {
            (try DeliveryTests.delivery(relay, early, "loyalty-api")).attempts >= 1
        }
        // ... then the order is placed and the vendor answers with that id: the early status now finds its transaction.
        let placed = try expectAccepted(try relay.client.post("/v1/hooks/loyalty", json: #"{"txn":"T-5","status":"placed"}"#))
        try DeliveryTests.waitForState(relay, placed, "vendor", "delivered")
        try DeliveryTests.waitForState(relay, early, "loyalty-api", "delivered")
        #expect(loyalty.requests().map(\.path) == ["/t/T-5"])
    }

    @Test("identifiers are linked per partner: two vendors' order 1001 never meet")
    func correlationScopes() throws {
        let loyalty = try DeliveryTests.startSink()
        defer { loyalty.stop() }
        let relay = try RunningRelay(sources: """
            "vendor-a": { adapter: "generic", verify: { none: true }, map: { subject: { orderId: "$.order", transactionId: "$.ref" }, status: "$.state" } },
            "vendor-b": { adapter: "generic", verify: { none: true }, map: { subject: { orderId: "$.order", transactionId: "$.ref" }, status: "$.state" } },
            """, extra: """
            destinations: {
              "loyalty-api": { adapter: "generic", url: "\(loyalty.baseURL)/t/${subject.transactionId}", body: "none",
                               retry: { schedule: ["50ms"], jitter: "none" } },
            },
            routes: [ { from: "vendor-a", to: ["loyalty-api"] }, { from: "vendor-b", to: ["loyalty-api"] } ],
            """)
        defer { relay.stop() }
        let a = try expectAccepted(try relay.client.post("/v1/hooks/vendor-a", json: #"{"order":"1001","ref":"T-A","state":"placed"}"#))
        try DeliveryTests.waitForState(relay, a, "loyalty-api", "delivered")
        let b = try expectAccepted(try relay.client.post("/v1/hooks/vendor-b", json: #"{"order":"1001","state":"shipped"}"#))
        try DeliveryTests.waitForState(relay, b, "loyalty-api", "dead")
        let a2 = try expectAccepted(try relay.client.post("/v1/hooks/vendor-a", json: #"{"order":"1001","state":"shipped"}"#))
        try DeliveryTests.waitForState(relay, a2, "loyalty-api", "delivered")
        #expect(loyalty.requests().map(\.path) == ["/t/T-A", "/t/T-A"], "vendor B's order 1001 is not vendor A's")
    }

    @Test("a half-open circuit whose probe is skipped (no mapping) still probes with the next delivery")
    func breakerProbeSkipped() throws {
        let sink = try DeliveryTests.startSink([SinkFault(times: 1, action: .status(503))])
        defer { sink.stop() }
        let relay = try RunningRelay(sources: Self.shop, extra: """
            destinations: {
              "vendor": { adapter: "generic", url: "\(sink.baseURL)/s", statusMap: { shipped: "S" },
                          circuitBreaker: { failures: 1, cooldown: "100ms" }, retry: { schedule: ["30s"], jitter: "none" } },
            },
            routes: [ { from: "shop", to: ["vendor"] } ],
            """)
        defer { relay.stop() }
        let failed = try DeliveryTests.post(relay, "ORD-1", "shipped")
        try DeliveryTests.eventually("the first attempt to fail") { (try DeliveryTests.delivery(relay, failed, "vendor")).attempts == 1 }
        let skipped = try DeliveryTests.post(relay, "ORD-2", "refunded")    // the probe after the cooldown: skipped
        try DeliveryTests.waitForState(relay, skipped, "vendor", "skipped")
        let next = try DeliveryTests.post(relay, "ORD-3", "shipped")        // must still go out
        try DeliveryTests.waitForState(relay, next, "vendor", "delivered", timeout: 3)
    }

    @Test("a stop in the middle of a chain: the restart resumes after the last finished step, never repeating it")
    func restartMidChain() throws {
        let dir = try TempDir("relay-chain-restart")
        defer { dir.remove() }
        let sink = try DeliveryTests.startSink([
            SinkFault(path: "/coupons", action: .json(status: 201, body: Self.json(#"{"coupon":{"code":"V-7"}}"#))),
            SinkFault(path: "/confirm", times: 1, action: .hang(seconds: 30, status: 504)),
        ])
        defer { sink.stop() }
        let extra = """
            destinations: {
              "vendor": { adapter: "generic", timeout: "10s", retry: { schedule: ["50ms"], jitter: "none" }, actions: [
                  { name: "issue", url: "\(sink.baseURL)/coupons", contextKeys: { voucher: "response.coupon.code" } },
                  { name: "confirm", url: "\(sink.baseURL)/confirm/${voucher}" },
                ] },
            },
            routes: [ { from: "shop", to: ["vendor"] } ],
            """
        let first = try RunningRelay(sources: Self.shop, extra: extra, in: dir, logName: "first.log", shutdownTimeout: "200ms")
        var id = ""
        do {
            defer { first.stop() }
            id = try DeliveryTests.post(first, "ORD-9", "shipped")
            try DeliveryTests.eventually("step 2 in flight") { sink.requests(path: "/confirm/V-7").count == 1 }
        }
        let second = try RunningRelay(sources: Self.shop, extra: extra, in: dir, logName: "second.log", shutdownTimeout: "200ms")
        defer { second.stop() }
        try DeliveryTests.waitForState(second, id, "vendor", "delivered")
        #expect(sink.requests().map(\.path) == ["/coupons", "/confirm/V-7", "/confirm/V-7"], "the voucher is issued once")
    }

    @Test("a stop while a step is in flight: no new step starts; the attempt says so (credentials blanked out of its response), the restart sends the next step")
    func stopBeforeNextStep() throws {
        let dir = try TempDir("relay-chain-stop")
        defer { dir.remove() }
        let sink = try DeliveryTests.startSink([SinkFault(path: "/coupons", times: 1, action: .slow(seconds: 1.5))])
        defer { sink.stop() }
        let extra = """
            destinations: {
              "vendor": { adapter: "generic", timeout: "10s", auth: { bearer: "${env:VENDOR_TOKEN}" }, actions: [
                  { name: "issue", url: "\(sink.baseURL)/coupons" },
                  { name: "confirm", url: "\(sink.baseURL)/confirm" },
                ] },
            },
            routes: [ { from: "shop", to: ["vendor"] } ],
            """
        let env = ["VENDOR_TOKEN": "true"]
        let first = try RunningRelay(sources: Self.shop, extra: extra, environment: env, in: dir, logName: "first.log",
                                     shutdownTimeout: "5s")
        var id = ""
        do {
            defer { first.stop() }
            id = try DeliveryTests.post(first, "ORD-4", "shipped")
            try DeliveryTests.eventually("step 1 in flight") { sink.requests(path: "/coupons").count == 1 }
        }
        #expect(sink.requests(path: "/confirm").isEmpty, "no new step while stopping")
        let second = try RunningRelay(sources: Self.shop, extra: extra, environment: env, in: dir, logName: "second.log",
                                      shutdownTimeout: "200ms")
        defer { second.stop() }
        let d = try DeliveryTests.waitForState(second, id, "vendor", "delivered")
        #expect(sink.requests().map(\.path) == ["/coupons", "/confirm"], "step 1 is sent once")
        let attempts = try DeliveryTests.attempts(second.store, d.id)
        #expect(attempts.map(\.error) == ["stopped before step 2", nil])
        #expect(attempts.map(\.status) == [200, 200])
        // The sink's answer, {"ok":true}, echoes the token ("true"): never stored.
        #expect(attempts.map(\.response) == [#"{"ok":***}"#, #"{"ok":***}"#])
    }
}
