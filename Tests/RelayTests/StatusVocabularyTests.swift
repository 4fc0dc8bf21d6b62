import Adapters
import Foundation
@testable import Relay
import Simulator
import Testing

/// `statuses:` (added statuses with a fallback) and unmapped provider statuses, from configuration to what a
/// stand-in receives.
@Suite("Status vocabulary")
struct StatusVocabularyTests {
    static func problems(_ text: String, environment: [String: String] = [:]) -> [String] {
        do {
            _ = try RelayConfig.parse(Data(text.utf8), registry: BuiltinAdapters.registry, environment: environment)
            return []
        } catch let e as ConfigError {
            return e.problems.map(\.description)
        } catch {
            return ["\(error)"]
        }
    }

    static func config(statuses: String, statusMap: String = #"{ "PACKED": "packed" }"#, destination: String = "") -> String {
        """
        {
          statuses: \(statuses),
          sources: { "shop": { adapter: "generic", verify: { none: true }, map: { status: "$.state" }, statusMap: \(statusMap) } },
          destinations: { "d": { adapter: "generic", url: "http://127.0.0.1:9/x" \(destination) } },
          routes: [ { from: "shop", to: ["d"] } ],
        }
        """
    }

    @Test("statuses: names, fallbacks and every place a status is named are checked, with key paths")
    func configuration() {
        #expect(Self.problems(Self.config(statuses: #"{ packed: { fallback: "placed" } }"#)).isEmpty)
        #expect(Self.problems(Self.config(statuses: #"{ packed: "placed" }"#)).isEmpty)
        let builtin = Self.problems(Self.config(statuses: #"{ shipped: "placed", packed: "placed" }"#))
        #expect(builtin == [#"statuses.shipped: "shipped" is a built-in status already"#], "\(builtin)")
        let reserved = Self.problems(Self.config(statuses: #"{ unmapped: "failed", packed: "placed" }"#))
        #expect(reserved.count == 1 && reserved[0].hasPrefix("statuses.unmapped: \"unmapped\" is reserved"), "\(reserved)")
        let badName = Self.problems(Self.config(statuses: #"{ "Packed Up": "placed", packed: "placed" }"#))
        #expect(badName.count == 1 && badName[0].hasPrefix(#"statuses["Packed Up"]: a status name is lowercase"#), "\(badName)")
        let chained = Self.problems(Self.config(statuses: #"{ packed: "placed", boxed: { fallback: "packed" } }"#))
        #expect(chained.count == 1 && chained[0].hasPrefix(#"statuses.boxed.fallback: "packed" is not a built-in status"#), "\(chained)")
        let missing = Self.problems(Self.config(statuses: #"{ packed: { description: "in a box" } }"#))
        #expect(missing.contains("statuses.packed.fallback: is required"), "\(missing)")
        // A name nobody added is refused wherever it appears, pointing at statuses.
        let unknown = Self.problems(Self.config(statuses: "{}", destination: #", statusMap: { lost: "L" }"#))
        #expect(unknown.contains { $0.hasPrefix(#"sources.shop.statusMap.PACKED: "packed" is not a canonical status"#) && $0.contains("add it under statuses") }, "\(unknown)")
        #expect(unknown.contains { $0.hasPrefix(#"destinations.d.statusMap.lost: "lost" is not a canonical status"#) }, "\(unknown)")
        let route = Self.problems("""
            { statuses: { packed: "placed" },
              sources: { "shop": { adapter: "generic", verify: { none: true } } },
              destinations: { "d": { adapter: "generic", url: "http://127.0.0.1:9/x" } },
              routes: [ { from: "shop", when: { status: ["packed", "boxed"] }, to: ["d"] } ] }
            """)
        #expect(route.count == 1 && route[0].hasPrefix(#"routes[0].when.status[1]: "boxed" is not a canonical status"#), "\(route)")
        let policy = Self.problems("""
            { sources: { "shop": { adapter: "generic", verify: { none: true }, unmappedStatus: "drop" } },
              destinations: { "d": { adapter: "generic", url: "http://127.0.0.1:9/x" } }, routes: [] }
            """)
        #expect(policy == [#"sources.shop.unmappedStatus: "drop" is not one of: keep, refuse"#], "\(policy)")
    }

    @Test("a destination's map: its own value for an added status first, then the fallback's; a skip names both")
    func fallbackThroughMaps() throws {
        let map = StatusMap(outbound: [.placed: "O", CanonicalStatus(named: "packed"): "PK"])
        var event = CanonicalEvent(id: "evt_1", source: "s", type: "t", status: CanonicalStatus(named: "packed"),
                                   receivedAt: "2026-12-06T00:00:00.000Z", idempotencyKey: "k", statusFallback: .placed)
        #expect(try map.value(for: event) == "PK")
        #expect(try StatusMap(outbound: [.placed: "O"]).value(for: event) == "O")
        #expect(throws: TranslateError.skip(#"no mapping: status "packed" has no value for this destination (nor its fallback "placed")"#)) {
            try StatusMap(outbound: [.shipped: "S"]).value(for: event)
        }
        event.status = .shipped
        event.statusFallback = nil
        #expect(try StatusMap(outbound: [.shipped: "S"]).value(for: event) == "S")
        #expect(event.builtinStatus == .shipped)
        // The canonical JSON says both, and reads back.
        event.status = CanonicalStatus(named: "packed")
        event.statusFallback = .placed
        let text = event.jsonText()
        #expect(text.contains(#""status":"packed","statusFallback":"placed""#), "\(text)")
        let back = try JSONDecoder().decode(CanonicalEvent.self, from: Data(text.utf8))
        #expect(back == event)
    }

    @Test("end to end: an added status reaches each destination as it maps it (or its fallback); routes on the fallback match; unmapped ones are kept, marked, logged and counted, or refused")
    func endToEnd() throws {
        let sink = try DeliveryTests.startSink()
        defer { sink.stop() }
        let relay = try RunningRelay(sources: """
            "shop": { adapter: "generic", verify: { none: true }, type: "order.status_changed",
                      map: { subject: { orderId: "$.id" }, status: "$.state" },
                      statusMap: { "PACKED": "packed", "SHIPPED": "shipped", "GONE": "lost" } },
            "strict": { adapter: "generic", verify: { none: true }, unmappedStatus: "refuse",
                        map: { subject: { orderId: "$.id" }, status: "$.state" }, statusMap: { "OK": "delivered" } },
            """, extra: """
            statuses: { packed: { fallback: "placed" }, lost: "failed" },
            destinations: {
              "own": { adapter: "generic", url: "\(sink.baseURL)/own", statusMap: { packed: "PACKED-HERE", placed: "P", shipped: "S" },
                       body: { s: "${mappedStatus}" } },
              "fallback": { adapter: "generic", url: "\(sink.baseURL)/fallback", statusMap: { placed: "Order Placed", failed: "F", shipped: "S" },
                            body: { s: "${mappedStatus}" } },
              "placed-only": { adapter: "generic", url: "\(sink.baseURL)/placed-only", body: { s: "${status}" } },
            },
            routes: [ { from: "shop", to: ["own", "fallback"] },
                      { from: "shop", when: { status: "placed" }, to: ["placed-only"] },
                      { from: "strict", to: ["own"] } ],
            """)
        defer { relay.stop() }
        let packed = try expectAccepted(try relay.client.post("/v1/hooks/shop", json: #"{"id":"A","state":"PACKED"}"#))
        let lost = try expectAccepted(try relay.client.post("/v1/hooks/shop", json: #"{"id":"B","state":"GONE"}"#))
        try DeliveryTests.eventually("the packed and lost statuses delivered") {
            sink.requests(path: "/own").count == 1 && sink.requests(path: "/fallback").count == 2
                && sink.requests(path: "/placed-only").count == 1
        }
        #expect(sink.requests(path: "/own").map { String(decoding: $0.body, as: UTF8.self) } == [#"{"s":"PACKED-HERE"}"#])
        // "own" maps neither lost nor its fallback, failed: skipped, saying so.
        try DeliveryTests.waitForState(relay, lost, "own", "skipped")
        #expect(try DeliveryTests.delivery(relay, lost, "own").lastError?.contains(#"nor its fallback "failed""#) == true)
        let fallback = Set(sink.requests(path: "/fallback").map { String(decoding: $0.body, as: UTF8.self) })
        #expect(fallback == [#"{"s":"Order Placed"}"#, #"{"s":"F"}"#], "\(fallback)")
        #expect(sink.requests(path: "/placed-only").map { String(decoding: $0.body, as: UTF8.self) } == [#"{"s":"packed"}"#])
        let stored = try #require(try relay.store.event(id: packed))
        #expect(stored.status?.rawValue == "packed" && stored.statusFallback == .placed)

        // Unmapped, kept: accepted, stored without a status and marked; warned about with the raw value; counted;
        // listed by status=unmapped; destinations that need a status skip it.
        let kept = try expectAccepted(try relay.client.post("/v1/hooks/shop", json: #"{"id":"C","state":"MISPLACED"}"#))
        let event = try #require(try relay.store.event(id: kept))
        #expect(event.status == nil && event.statusUnmapped == true && event.providerStatus?.code == "MISPLACED")
        var q = EventQuery(limit: 10)
        q.status = "unmapped"
        #expect(try relay.store.events(q).count == 1)
        try DeliveryTests.eventually("a warning with the raw value") {
            relay.log.split(separator: "\n").contains { $0.contains(#""msg":"unmapped status""#) && $0.contains(#""providerStatus":"MISPLACED""#) && $0.contains(#""source":"shop""#) }
        }
        try DeliveryTests.waitForState(relay, kept, "own", "skipped")
        #expect(try DeliveryTests.delivery(relay, kept, "own").lastError?.contains("no mapping") == true)

        // Unmapped, refused: 422 naming the value, nothing stored.
        let before = try relay.store.eventIDs(source: "strict").count
        let refused = try relay.client.post("/v1/hooks/strict", json: #"{"id":"D","state":"WEIRD"}"#)
        #expect(refused.status == 422 && refused.text.contains(#"the status \"WEIRD\" is not in the source's statusMap"#), "\(refused)")
        #expect(try relay.store.eventIDs(source: "strict").count == before)
        _ = try expectAccepted(try relay.client.post("/v1/hooks/strict", json: #"{"id":"D","state":"OK"}"#))
        let metrics = relay.service.metrics.prometheusText()
        #expect(metrics.contains(#"relay_unmapped_statuses_total{source="shop"} 1"#), "\(metrics)")
        #expect(metrics.contains(#"relay_unmapped_statuses_total{source="strict"} 1"#))
    }
}
