import Adapters
import Foundation
@testable import Relay
import Simulator
import Testing

/// The providers end to end over real HTTP: a relay in process, each destination at its provider's stand-in (which
/// validates the request as the provider documents it and answers in its format).
@Suite("Provider flows")
struct ProviderFlowTests {
    static func requests(_ sink: Sink) -> [String] {
        sink.requests().map { "\($0.method) \($0.target) \($0.status) \($0.bodyText)" }
    }

    @Test("one vendor webhook fans out to Mastercard DR, Returning.AI and Capillary, each in its own format")
    func fanOut() throws {
        let mc = try startStandIn(MastercardRedemptionsSimulator())
        let rai = try startStandIn(ReturningAISimulator())
        let cap = try startStandIn(CapillarySimulator())
        defer { mc.stop(); rai.stop(); cap.stop() }
        let relay = try RunningRelay(sources: """
            "vendor": { adapter: "generic", verify: { none: true }, type: "redemption.status_changed",
                        map: { subject: { redemptionId: "$.redemption", transactionId: "$.txn" }, status: "$.state",
                               attributes: { backOrderDate: "$.backOrderDate" } },
                        statusMap: { "SHIPPED": "shipped", "BACKORDER": "backordered" } },
            """, extra: """
            destinations: {
              "mastercard-dr": { adapter: "mastercard-digital-redemptions", baseURL: "\(mc.baseURL)/loyalty",
                                 headers: { Authorization: "OAuth stand-in" } },
              "returning-ai": { adapter: "returning-ai", baseURL: "\(rai.baseURL)/apis",
                                headers: { Authorization: "Bearer stand-in" },
                                statusMap: { shipped: "695dcc370ab8622381f27918" } },
              "capillary": { adapter: "capillary", baseURL: "\(cap.baseURL)",
                             headers: { "X-CAP-API-OAUTH-TOKEN": "stand-in" },
                             statusMap: { shipped: "Shipped", backordered: "Delayed" } },
            },
            routes: [ { from: "vendor", to: ["mastercard-dr", "returning-ai", "capillary"] } ],
            """)
        defer { relay.stop() }
        let shipped = try expectAccepted(try relay.client.post("/v1/hooks/vendor", json: #"{"redemption":"R-1","txn":"3482445","state":"SHIPPED"}"#))
        for d in ["mastercard-dr", "returning-ai", "capillary"] { try DeliveryTests.waitForState(relay, shipped, d, "delivered") }
        #expect(Self.requests(mc) == [#"PUT /loyalty/redemptions 200 {"redemptionId":"R-1","statusCode":"S"}"#])
        #expect(Self.requests(rai) == [#"PUT /apis/v1/redemption-transactions/status 200 {"statusId":"695dcc370ab8622381f27918","transactionId":"3482445"}"#])
        #expect(Self.requests(cap) == [#"PUT /api_gateway/rewards/core/v1/management/transactions?skip_validation=true 200 {"transactions":[{"fulfillmentDetails":{"status":"Shipped"},"transactionId":3482445}]}"#])
        for s in [mc, rai, cap] { #expect(s.requests().first?.headers["Content-Type"] == "application/json") }

        // Back-ordered: Mastercard needs the date (dead, saying so), Returning.AI has no id for it (skipped),
        // Capillary has a name for it (delivered).
        let backordered = try expectAccepted(try relay.client.post("/v1/hooks/vendor", json: #"{"redemption":"R-2","txn":"3482446","state":"BACKORDER"}"#))
        let dead = try DeliveryTests.waitForState(relay, backordered, "mastercard-dr", "dead")
        let skipped = try DeliveryTests.waitForState(relay, backordered, "returning-ai", "skipped")
        try DeliveryTests.waitForState(relay, backordered, "capillary", "delivered")
        #expect(try DeliveryTests.deliveryRow(relay.store, dead.id).lastError?.contains("backOrderDate") == true)
        #expect(try DeliveryTests.deliveryRow(relay.store, skipped.id).lastError?.hasPrefix("no mapping") == true)
        #expect(mc.requests().count == 1 && rai.requests().count == 1 && cap.requests().count == 2)

        // With its date it goes through as B.
        let dated = try expectAccepted(try relay.client.post("/v1/hooks/vendor", json: #"{"redemption":"R-3","txn":"3482447","state":"BACKORDER","backOrderDate":"2026-12-24"}"#))
        try DeliveryTests.waitForState(relay, dated, "mastercard-dr", "delivered")
        #expect(Self.requests(mc).last == #"PUT /loyalty/redemptions 200 {"backOrderDate":"2026-12-24","redemptionId":"R-3","statusCode":"B"}"#)
    }

    @Test("a Punchh redemption webhook reaches a vendor through a generic destination")
    func punchhToVendor() throws {
        let vendor = try DeliveryTests.startSink()
        defer { vendor.stop() }
        let relay = try RunningRelay(sources: """
            "punchh-acme": { adapter: "punchh", verify: { none: true } },
            """, extra: """
            destinations: {
              "vendor": { adapter: "generic", method: "PUT", url: "\(vendor.baseURL)/redemptions/${subject.redemptionId}",
                          statusMap: { processed: "REDEEMED", cancelled: "VOID" },
                          body: { code: "${subject.redemptionCode}", state: "${mappedStatus}", location: "${subject.locationId}",
                                  at: "${occurredAt}" } },
            },
            routes: [ { from: "punchh-acme", when: { type: "redemption.status_changed" }, to: ["vendor"] } ],
            """)
        defer { relay.stop() }
        let webhook = #"""
            {"content_id":"7f9c2a4e-0d1b-4f61-9a51-2f0c8d3e6b7a","timestamp":1763632800,"business_id":42,
             "business_uuid":"b-uuid-1","event_name":"redemptions","event_type":"redemption","action":"update",
             "payload":{"redemption_id":9001,"redemption_status":"processed","location_id":77,
                        "redemption_code":{"redemption_code":"ABC123","status":"processed","transaction_no":"T-55"},
                        "user":{"id":5}}}
            """#
        let id = try expectAccepted(try relay.client.post("/v1/hooks/punchh-acme", json: webhook))
        try DeliveryTests.waitForState(relay, id, "vendor", "delivered")
        #expect(vendor.requests().map { "\($0.method) \($0.path) \($0.bodyText)" }
                == [#"PUT /redemptions/9001 {"at":"2025-11-20T10:00:00.000Z","code":"ABC123","location":"77","state":"REDEEMED"}"#])
        // Punchh delivers at least once: the same content_id is a duplicate, sent nowhere again.
        let again = try relay.client.post("/v1/hooks/punchh-acme", json: webhook)
        #expect(again.status == 200)
        usleep(200_000)
        #expect(vendor.requests().count == 1)
    }

    @Test("a vendor status naming only its own order id is correlated back to the Capillary transaction")
    func correlatedToCapillary() throws {
        let acme = try DeliveryTests.startSink([
            SinkFault(path: "/v2/orders", action: .json(status: 201, body: try JSONValue.parse(Data(#"{"id":"V-778","accepted":true}"#.utf8)))),
        ])
        let cap = try startStandIn(CapillarySimulator())
        defer { acme.stop(); cap.stop() }
        let relay = try RunningRelay(sources: """
            "capillary-rewards": { adapter: "capillary", verify: { none: true } },
            "acme": { adapter: "generic", verify: { none: true }, type: "order.status_changed",
                      map: { subject: { vendorOrderId: "$.order.id" }, status: "$.order.state" },
                      statusMap: { "ACCEPTED": "placed", "SHIPPED": "shipped" } },
            """, extra: """
            destinations: {
              "acme": { adapter: "generic", url: "\(acme.baseURL)/v2/orders",
                        body: { reference: "${subject.transactionId}", reward: "${subject.rewardId?}" },
                        contextKeys: { vendorOrderId: "response.id" }, correlate: ["vendorOrderId"] },
              "capillary": { adapter: "capillary", baseURL: "\(cap.baseURL)", headers: { "X-CAP-API-OAUTH-TOKEN": "t" },
                             statusMap: { placed: "received", shipped: "completed" },
                             customFields: { Partner_Order_Id: "${subject.vendorOrderId?}" } },
            },
            routes: [ { from: "capillary-rewards", when: { type: "reward.issued" }, to: ["acme"] },
                      { from: "acme", to: ["capillary"] } ],
            """)
        defer { relay.stop() }
        // Capillary's vendor-redemption action calls the relay with the reward.
        let issued = try expectAccepted(try relay.client.post("/v1/hooks/capillary-rewards",
                                                              json: #"{"rewardTransactionId":"3482445","customerId":"85076836","rewardId":"177657"}"#))
        try DeliveryTests.waitForState(relay, issued, "acme", "delivered")
        #expect(acme.requests().map(\.bodyText) == [#"{"reference":"3482445","reward":"177657"}"#])

        // Acme reports the shipment naming only its own order id.
        let shipped = try expectAccepted(try relay.client.post("/v1/hooks/acme", json: #"{"order":{"id":"V-778","state":"SHIPPED"}}"#))
        try DeliveryTests.waitForState(relay, shipped, "capillary", "delivered")
        #expect(Self.requests(cap) == [#"PUT /api_gateway/rewards/core/v1/management/transactions?skip_validation=true 200 {"transactions":[{"customerId":85076836,"fulfillmentDetails":{"status":"completed"},"rewardId":177657,"transactionCustomFields":{"Partner_Order_Id":"V-778"},"transactionId":3482445}]}"#])
    }

    @Test("batches respect maxInFlight: eight vendors' statuses go out one request at a time")
    func batchesRespectMaxInFlight() throws {
        let sink = try startStandIn(MastercardFulfillmentSimulator(), faults: [SinkFault(action: .slow(seconds: 0.15))])
        defer { sink.stop() }
        let relay = try RunningRelay(sources: """
            "vendor": { adapter: "generic", verify: { none: true },
                        map: { subject: { orderId: "$.order", vendorId: "$.vendor" }, status: "$.state" } },
            """, extra: """
            destinations: {
              "fulfilment": { adapter: "mastercard-fulfillment", baseURL: "\(sink.baseURL)/loyalty/rewards",
                              headers: { Authorization: "OAuth stand-in" }, statusMap: { shipped: "SHIPPED" },
                              batch: { maxItems: 10, wait: "100ms" }, maxInFlight: 1 },
            },
            routes: [ { from: "vendor", to: ["fulfilment"] } ],
            """)
        defer { relay.stop() }
        var ids: [String] = []
        for v in 1...8 {
            ids.append(try expectAccepted(try relay.client.post("/v1/hooks/vendor", json: #"{"order":"O-\#(v)","vendor":"V\#(v)","state":"shipped"}"#)))
        }
        for id in ids { try DeliveryTests.waitForState(relay, id, "fulfilment", "delivered", timeout: 10) }
        let got = sink.requests()
        #expect(got.count == 8, "one request per vendor")
        // With one request in flight at a time, each arrives no sooner than the previous one's (slow) answer.
        for (a, b) in zip(got, got.dropFirst()) {
            #expect(DeliveryTests.seconds(a, b) >= 0.13, "requests \(a.seq) and \(b.seq) overlapped")
        }
        #expect(Set(got.map(\.path)).count == 8)
    }
}
