import Adapters
import Foundation
import Relay
import Testing

/// The routing table: which destinations an event gets a delivery row for, written with the event.
@Suite("Routing")
struct RoutingTests {
    static let sources = """
        "vendor": {
          adapter: "generic", verify: { none: true }, type: "order.status_changed",
          map: { subject: { orderId: "$.id", vendorId: "$.vendor" }, status: "$.state", attributes: { amount: "$.amount" } },
          statusMap: { "SHIPPED": "shipped", "VOID": "cancelled", "PLACED": "placed" },
        },
        "other": { adapter: "generic", verify: { none: true } },
        """
    static let extra = """
        destinations: {
          // Nobody listens there: the dispatcher's attempts fail and are retried much later; routing is what counts.
          "loyalty": { adapter: "generic", url: "http://127.0.0.1:9/loyalty", retry: { schedule: ["1h"] } },
          "fulfilment": { adapter: "generic", url: "http://127.0.0.1:9/fulfilment", retry: { schedule: ["1h"] } },
          "audit": { adapter: "generic", url: "http://127.0.0.1:9/audit", retry: { schedule: ["1h"] } },
        },
        routes: [
          { from: "vendor", when: { status: ["shipped", "cancelled"] }, to: ["loyalty"] },
          { from: "vendor", when: { type: "order.status_changed", match: [
              { field: "subject.vendorId", equals: "124" }, { field: "subject.orderId", prefix: "ORD" },
              { field: "attributes.amount", exists: true } ] }, to: ["fulfilment", "loyalty"] },
          { from: "vendor", when: { match: [ { field: "status", in: ["placed"] } ] }, to: ["audit"] },
          { from: "other", to: ["audit"] },
        ],
        """

    func destinations(_ relay: RunningRelay, _ json: String, source: String = "vendor") throws -> [String] {
        let id = try expectAccepted(try relay.client.post("/v1/hooks/\(source)", json: json))
        return try relay.store.deliveries(eventID: id).map(\.destination)
    }

    @Test("each matching route adds its destinations once, in route order; no match, no delivery")
    func matching() throws {
        let relay = try RunningRelay(sources: Self.sources, extra: Self.extra)
        defer { relay.stop() }
        #expect(try destinations(relay, #"{"id":"A1","vendor":"9","state":"SHIPPED"}"#) == ["loyalty"])
        #expect(try destinations(relay, #"{"id":"ORD-7","vendor":"124","state":"SHIPPED","amount":10}"#) == ["loyalty", "fulfilment"])
        // The second route's predicates all have to hold: no amount, no fulfilment.
        #expect(try destinations(relay, #"{"id":"ORD-8","vendor":"124","state":"VOID"}"#) == ["loyalty"])
        #expect(try destinations(relay, #"{"id":"ORD-9","vendor":"124","state":"PLACED","amount":0}"#) == ["fulfilment", "loyalty", "audit"])
        #expect(try destinations(relay, #"{"id":"X-1","vendor":"125","state":"PLACED"}"#) == ["audit"])
        #expect(try destinations(relay, #"{"anything":true}"#, source: "other") == ["audit"])
    }

    @Test("deliveries are written with the event, pending, keyed by subject; a duplicate adds none")
    func writtenOnceWithTheEvent() throws {
        let relay = try RunningRelay(sources: Self.sources, extra: Self.extra)
        defer { relay.stop() }
        let body = #"{"id":"ORD-1","vendor":"124","state":"SHIPPED","amount":5}"#
        let id = try expectAccepted(try relay.client.post("/v1/hooks/vendor", json: body))
        let first = try relay.store.deliveries(eventID: id)
        #expect(first.map(\.destination) == ["loyalty", "fulfilment"])
        #expect(first.allSatisfy { $0.subjectKey == "orderId=ORD-1&vendorId=124" })
        #expect(Set(first.map(\.id)).count == 2 && first.allSatisfy { $0.id.hasPrefix("dlv_") })
        let again = try relay.client.post("/v1/hooks/vendor", json: body)
        #expect(again.status == 200)
        #expect(try relay.store.deliveries(eventID: id).map(\.id) == first.map(\.id))
    }

    @Test("a broken `when` is reported with its key path")
    func badConditions() {
        let text = """
            { store: { sqlite: "/tmp/unused.db" },
              sources: { s: { adapter: "generic", verify: { none: true } } },
              destinations: { d: { adapter: "generic", url: "http://127.0.0.1:9/d" } },
              routes: [ { from: "s", to: ["d"], when: { status: ["shipped", "teleported"], colour: "red",
                          match: [ { field: "type" }, { field: "x", equals: "1", prefix: "2" }, { field: "y", in: [] } ] } } ] }
            """
        do {
            _ = try RelayConfig.parse(Data(text.utf8), registry: BuiltinAdapters.registry, environment: [:])
            Issue.record("expected problems")
        } catch let error as ConfigError {
            let paths = error.problems.map(\.path)
            #expect(paths.contains("routes[0].when.status[1]"), "\(error)")
            #expect(paths.contains("routes[0].when.colour"), "\(error)")
            #expect(paths.contains("routes[0].when.match[0]"), "\(error)")
            #expect(paths.contains("routes[0].when.match[1]"), "\(error)")
            #expect(paths.contains("routes[0].when.match[2].in"), "\(error)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test("field predicates on the canonical event's JSON form")
    func predicates() {
        let event = CanonicalEvent(id: "evt_1", source: "s", type: "t", subject: ["orderId": "ORD-1"], status: .shipped,
                                   providerStatus: ProviderStatus(code: "S"), receivedAt: "2026-01-01T00:00:00.000Z",
                                   attributes: ["amount": .number(10), "flag": .bool(false), "none": .null],
                                   idempotencyKey: "k")
        let tree = event.canonicalJSON()
        func holds(_ field: String, _ test: FieldPredicate.Test) -> Bool { FieldPredicate(field: field, test: test).matches(tree) }
        #expect(holds("status", .equals("shipped")))
        #expect(holds("providerStatus.code", .oneOf(["B", "S"])))
        #expect(holds("attributes.amount", .equals("10")))
        #expect(holds("attributes.flag", .equals("false")))
        #expect(holds("attributes.none", .exists(false)))
        #expect(holds("attributes.missing", .exists(false)))
        #expect(!holds("attributes.amount", .exists(false)))
        #expect(holds("subject.orderId", .prefix("ORD-")))
        #expect(!holds("subject.orderId", .prefix("ord-")))
        #expect(!holds("subject.vendorId", .equals("")))
    }
}
