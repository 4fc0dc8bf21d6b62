import Foundation
import Relay
import Testing

/// The generic source adapter, end to end: what a webhook becomes in the store.
@Suite("Generic adapter")
struct AdapterTests {
    static let sources = """
        "vendor-acme": {
          adapter: "generic", verify: { none: true }, type: "order.status_changed",
          map: { subject: { orderId: "$.order.id", vendorId: "$.vendor" }, status: "$.order.state",
                 occurredAt: "$.order.updated_at", attributes: { tracking: "$.order.tracking", lines: "$.order.lines" } },
          statusMap: { "PLACED": "placed", "BACKORDER": "backordered", "SHIPPED": "shipped", "CANCELLED": "cancelled" },
        },
        "typed": { adapter: "generic", verify: { none: true }, map: { type: "$.event", subject: { id: "$.data[0].id" } } },
        "raw": { adapter: "generic", verify: { none: true } },
        """

    @Test("map and statusMap produce subject, status and attributes in the stored canonical event")
    func mapped() throws {
        let relay = try RunningRelay(sources: Self.sources)
        defer { relay.stop() }
        let body = """
            {"vendor":"v9","order":{"id":"A-1","state":"BACKORDER","updated_at":"2026-03-01T10:00:00Z",
             "tracking":"1Z999","lines":[{"sku":"X","qty":2}]}}
            """
        let id = try expectAccepted(try relay.client.post("/v1/hooks/vendor-acme", json: body))
        let e = try #require(try relay.store.event(id: id))
        #expect(e.id == id)
        #expect(e.source == "vendor-acme")
        #expect(e.type == "order.status_changed")
        #expect(e.subject == ["orderId": "A-1", "vendorId": "v9"])
        #expect(e.status == .backordered)
        #expect(e.providerStatus == ProviderStatus(code: "BACKORDER"))
        #expect(e.occurredAt == "2026-03-01T10:00:00Z")
        #expect(e.attributes["tracking"] == .string("1Z999"))
        #expect(e.attributes["lines"] == .array([.object(["sku": .string("X"), "qty": .number(2)])]))
        #expect(e.raw?.body == body)
        #expect(e.receivedAt.hasSuffix("Z") && e.receivedAt.count == 24, "\(e.receivedAt)")
        #expect(e.idempotencyKey.hasPrefix("sha256:"))

        // A status named like a canonical one needs no statusMap entry; numbers become text.
        let id2 = try expectAccepted(try relay.client.post("/v1/hooks/vendor-acme",
                                                           json: "{\"vendor\":7,\"order\":{\"id\":1234,\"state\":\"Delivered\"}}"))
        let e2 = try #require(try relay.store.event(id: id2))
        #expect(e2.status == .delivered)
        #expect(e2.providerStatus?.code == "Delivered")
        #expect(e2.subject == ["orderId": "1234", "vendorId": "7"])
        #expect(e2.occurredAt == nil && e2.attributes.isEmpty)
    }

    @Test("a status the adapter cannot map is stored without a canonical status; a missing status field is 422")
    func unmappable() throws {
        let relay = try RunningRelay(sources: Self.sources)
        defer { relay.stop() }
        let unknown = try expectAccepted(try relay.client.post("/v1/hooks/vendor-acme", json: "{\"order\":{\"id\":\"A\",\"state\":\"LOST_AT_SEA\"}}"))
        let e = try #require(try relay.store.event(id: unknown))
        #expect(e.status == nil && e.providerStatus == ProviderStatus(code: "LOST_AT_SEA"))
        let missing = try relay.client.post("/v1/hooks/vendor-acme", json: "{\"order\":{\"id\":\"A\"}}")
        #expect(missing.status == 422, "\(missing)")
        #expect(missing["reason"]?.contains("$.order.state") == true, "\(missing)")
        #expect(try relay.store.eventCount() == 1)
    }

    @Test("map.type takes the type from the payload; array paths work")
    func typeFromPayload() throws {
        let relay = try RunningRelay(sources: Self.sources)
        defer { relay.stop() }
        let id = try expectAccepted(try relay.client.post("/v1/hooks/typed",
                                                          json: "{\"event\":\"invoice.paid\",\"data\":[{\"id\":\"in_1\"}]}"))
        let e = try #require(try relay.store.event(id: id))
        #expect(e.type == "invoice.paid")
        #expect(e.subject == ["id": "in_1"])
        // Without the field the configured default applies.
        let id2 = try expectAccepted(try relay.client.post("/v1/hooks/typed", json: "{\"data\":[]}"))
        #expect(try relay.store.event(id: id2)?.type == "passthrough")
    }

    @Test("without map the event is a pass-through: nothing interpreted, the body kept whole")
    func passThrough() throws {
        let relay = try RunningRelay(sources: Self.sources)
        defer { relay.stop() }
        let body = "{\"order\":{\"id\":\"A-1\",\"state\":\"SHIPPED\"},  \"note\":\"kept as sent\"}"
        let id = try expectAccepted(try relay.client.post("/v1/hooks/raw", json: body))
        let e = try #require(try relay.store.event(id: id))
        #expect(e.type == "passthrough")
        #expect(e.subject.isEmpty)
        #expect(e.status == nil && e.providerStatus == nil && e.occurredAt == nil)
        #expect(e.attributes.isEmpty)
        #expect(e.raw == RawPayload(contentType: "application/json", body: body))
    }
}
