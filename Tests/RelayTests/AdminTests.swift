import Adapters
import Foundation
@testable import Relay
import Simulator
import Testing

/// The admin API over real HTTP, on its own listener, against a relay delivering to a stand-in.
@Suite("Admin API")
struct AdminTests {
    static let token = "adm-" + UUID().uuidString
    static let env = ["ADMIN_TOKEN": token]

    static func relay(_ sink: Sink, retry: String = #"retry: { schedule: ["50ms"], jitter: "none" }"#) throws -> RunningRelay {
        try RunningRelay(sources: DeliveryTests.sources, extra: """
            admin: { listen: "127.0.0.1:0", token: "${env:ADMIN_TOKEN}" },
            destinations: {
              "vendor": { adapter: "generic", url: "\(sink.baseURL)/hook", \(retry) },
            },
            routes: [ { from: "shop", when: { status: ["shipped", "cancelled"] }, to: ["vendor"] } ],
            """, environment: env)
    }

    static func get(_ relay: RunningRelay, _ target: String, token: String? = AdminTests.token) throws -> Response {
        try Client(port: relay.service.adminPort!).request("GET", target, headers: token.map { [("Authorization", "Bearer \($0)")] } ?? [])
    }

    static func post(_ relay: RunningRelay, _ target: String) throws -> Response {
        try Client(port: relay.service.adminPort!).request("POST", target, headers: [("Authorization", "Bearer \(token)")], body: [])
    }

    @Test("the token is required (401 without it or with a wrong one); /healthz answers without it; /readyz with it")
    func auth() throws {
        let sink = try DeliveryTests.startSink()
        defer { sink.stop() }
        let relay = try Self.relay(sink)
        defer { relay.stop() }
        #expect(try Self.get(relay, "/v1/events", token: nil).status == 401)
        let wrong = try Self.get(relay, "/v1/events", token: "nope")
        #expect(wrong.status == 401 && wrong.header("WWW-Authenticate") == "Bearer")
        #expect(try Self.get(relay, "/healthz", token: nil).status == 200)
        let ready = try Self.get(relay, "/readyz")
        #expect(ready.status == 200 && ready["status"] == "ready")
        #expect(try Self.get(relay, "/v1/nothing").status == 404)
        #expect(try Self.post(relay, "/v1/events").status == 405)
        #expect(relay.log.contains("admin request refused") && !relay.log.contains(Self.token))
        // The ingest listener knows nothing of the admin API.
        #expect(try relay.client.get("/v1/events").status == 404)
    }

    @Test("events: filters, newest first, cursor pagination; one event with its deliveries and every attempt")
    func events() throws {
        let sink = try DeliveryTests.startSink([SinkFault(times: 1, action: .status(503))])
        defer { sink.stop() }
        let relay = try Self.relay(sink)
        defer { relay.stop() }
        let first = try DeliveryTests.post(relay, "ORD-1", "shipped")
        let placed = try DeliveryTests.post(relay, "ORD-2", "placed")
        let third = try DeliveryTests.post(relay, "ORD-3", "shipped")
        try DeliveryTests.waitForState(relay, first, "vendor", "delivered")
        try DeliveryTests.waitForState(relay, third, "vendor", "delivered")

        let all = try #require(try Self.get(relay, "/v1/events").json)
        #expect(all["events"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == [third, placed, first])
        #expect(all["nextCursor"] == .null)
        let shipped = try #require(try Self.get(relay, "/v1/events?status=shipped&source=shop").json)
        #expect(shipped["events"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == [third, first])
        let bySubject = try #require(try Self.get(relay, "/v1/events?subject=orderId:ORD-2").json)
        #expect(bySubject["events"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == [placed])
        // Pages of one, following the cursor.
        var ids: [String] = []
        var cursor: String?
        repeat {
            let page = try #require(try Self.get(relay, "/v1/events?limit=1" + (cursor.map { "&cursor=\($0)" } ?? "")).json)
            ids += page["events"]?.arrayValue?.compactMap { $0["id"]?.stringValue } ?? []
            cursor = page["nextCursor"]?.stringValue
        } while cursor != nil
        #expect(ids == [third, placed, first])
        #expect(try Self.get(relay, "/v1/events?status=lost").status == 400)
        #expect(try Self.get(relay, "/v1/events?subject=a%5B:x").status == 400, "a key that is not a plain name")
        // Time filters take any RFC 3339 form (whole seconds, offsets) and compare as instants.
        let f = ISO8601DateFormatter()
        let before = f.string(from: Date().addingTimeInterval(-60)), after = f.string(from: Date().addingTimeInterval(60))
        #expect(try Self.get(relay, "/v1/events?since=\(before)").json?["events"]?.arrayValue?.count == 3)
        #expect(try Self.get(relay, "/v1/events?since=\(after)").json?["events"]?.arrayValue?.count == 0)
        #expect(try Self.get(relay, "/v1/events?until=\(after)").json?["events"]?.arrayValue?.count == 3)
        let offset = ISO8601DateFormatter()
        offset.timeZone = TimeZone(secondsFromGMT: 3600)
        #expect(try Self.get(relay, "/v1/events?since=" + offset.string(from: Date().addingTimeInterval(-60)).replacingOccurrences(of: "+", with: "%2B"))
                .json?["events"]?.arrayValue?.count == 3)
        #expect(try Self.get(relay, "/v1/events?since=yesterday").status == 400)
        #expect(try Self.get(relay, "/v1/events?limit=0").status == 400)

        // One event: the canonical event with its raw body, its delivery, both attempts (503, then 200).
        let one = try #require(try Self.get(relay, "/v1/events/\(first)").json)
        #expect(one["event"]?["id"]?.stringValue == first)
        #expect(one["event"]?["raw"]?["body"]?.stringValue?.contains("ORD-1") == true)
        let delivery = try #require(one["deliveries"]?.arrayValue?.first)
        #expect(delivery["destination"]?.stringValue == "vendor" && delivery["state"]?.stringValue == "delivered")
        #expect(delivery["attemptLog"]?.arrayValue?.compactMap { $0["status"]?.numberValue } == [503, 200])
        // The event no route sent anywhere has no deliveries.
        #expect(try Self.get(relay, "/v1/events/\(placed)").json?["deliveries"]?.arrayValue?.isEmpty == true)
        #expect(try Self.get(relay, "/v1/events/evt_nope").status == 404)
    }

    @Test("a dead letter, listed, replayed, and delivered at the stand-in; a pending one is not replayed")
    func replay() throws {
        let sink = try DeliveryTests.startSink([SinkFault(times: 1, action: .status(422))])
        defer { sink.stop() }
        let relay = try Self.relay(sink)
        defer { relay.stop() }
        let id = try DeliveryTests.post(relay, "ORD-9", "shipped")
        let dead = try DeliveryTests.waitForState(relay, id, "vendor", "dead")
        let list = try #require(try Self.get(relay, "/v1/deliveries?state=dead").json)
        #expect(list["deliveries"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == [dead.id])
        #expect(list["deliveries"]?.arrayValue?.first?["lastError"]?.stringValue == "HTTP 422")

        let replayed = try Self.post(relay, "/v1/deliveries/\(dead.id)/replay")
        #expect(replayed.status == 202, "\(replayed)")
        #expect(replayed.json?["previousState"]?.stringValue == "dead")
        let delivered = try DeliveryTests.waitForState(relay, id, "vendor", "delivered")
        #expect(delivered.attempts == 2)
        #expect(sink.requests(path: "/hook").map(\.status) == [422, 200])
        #expect(sink.requests(path: "/hook").map { $0.headers["Idempotency-Key"] } == [dead.id, dead.id])
        #expect(try Self.get(relay, "/v1/deliveries?state=dead").json?["deliveries"]?.arrayValue?.isEmpty == true)
        #expect(relay.log.contains("delivery replayed"))

        #expect(try Self.post(relay, "/v1/deliveries/dlv_nope/replay").status == 404)
        #expect(try Self.get(relay, "/v1/deliveries?state=gone").status == 400)
    }

    @Test("a delivery still pending or in flight is not replayed (409)")
    func replayPending() throws {
        let sink = try DeliveryTests.startSink([SinkFault(action: .status(503))])
        defer { sink.stop() }
        let relay = try Self.relay(sink, retry: #"retry: { schedule: ["1h"], jitter: "none" }"#)
        defer { relay.stop() }
        let id = try DeliveryTests.post(relay, "ORD-5", "shipped")
        try DeliveryTests.eventually("a first attempt") { (try DeliveryTests.delivery(relay, id, "vendor")).attempts == 1 }
        let d = try DeliveryTests.delivery(relay, id, "vendor")
        let r = try Self.post(relay, "/v1/deliveries/\(d.id)/replay")
        #expect(r.status == 409, "\(r)")
    }

    @Test("the routing table as loaded, with adapters and auth schemes (never their secrets)")
    func routes() throws {
        let sink = try DeliveryTests.startSink()
        defer { sink.stop() }
        let relay = try Self.relay(sink)
        defer { relay.stop() }
        let r = try #require(try Self.get(relay, "/v1/routes").json)
        #expect(r["routes"] == .array([.object(["from": .string("shop"), "to": .array([.string("vendor")]),
                                                 "statuses": .array([.string("shipped"), .string("cancelled")])])]))
        #expect(r["destinations"]?["vendor"]?["adapter"]?.stringValue == "generic")
        #expect(r["sources"]?["shop"]?["verify"]?.stringValue == "none")
    }

    @Test("GET /metrics: ingest counters, delivery outcomes, latency histogram, circuit state, queue depth and age")
    func metrics() throws {
        let sink = try DeliveryTests.startSink([SinkFault(path: "/hook", times: 1, action: .status(503))])
        defer { sink.stop() }
        let relay = try RunningRelay(sources: DeliveryTests.sources, extra: """
            admin: { listen: "127.0.0.1:0", token: "${env:ADMIN_TOKEN}" },
            destinations: {
              "vendor": { adapter: "generic", url: "\(sink.baseURL)/hook", retry: { schedule: ["50ms"], jitter: "none" } },
              "down": { adapter: "generic", url: "http://127.0.0.1:\(SecretHygieneTests.closedPort())/x", retry: { schedule: ["1h"], jitter: "none" } },
            },
            routes: [ { from: "shop", to: ["vendor"] }, { from: "shop", when: { status: "cancelled" }, to: ["down"] } ],
            """, environment: Self.env)
        defer { relay.stop() }
        let a = try DeliveryTests.post(relay, "ORD-1", "shipped")
        try DeliveryTests.waitForState(relay, a, "vendor", "delivered")
        _ = try relay.client.post("/v1/hooks/shop", json: "{not json")
        let body = #"{"id":"ORD-2","state":"cancelled"}"#
        let b = try expectAccepted(try relay.client.post("/v1/hooks/shop", json: body))
        #expect(try relay.client.post("/v1/hooks/shop", json: body).status == 200)
        try DeliveryTests.waitForState(relay, b, "vendor", "delivered")
        try DeliveryTests.eventually("the attempt at the down destination") { (try DeliveryTests.delivery(relay, b, "down")).attempts == 1 }
        usleep(20_000)

        let r = try Self.get(relay, "/metrics")
        #expect(r.status == 200 && r.header("Content-Type")?.hasPrefix("text/plain; version=0.0.4") == true)
        let lines = Set(r.text.split(separator: "\n").map(String.init))
        for want in [
            #"relay_webhooks_received_total{source="shop"} 4"#,
            #"relay_webhooks_rejected_total{reason="unparsable",source="shop"} 1"#,
            #"relay_webhooks_duplicate_total{source="shop"} 1"#,
            #"relay_events_committed_total{source="shop"} 2"#,
            #"relay_deliveries_total{destination="vendor",outcome="retry"} 1"#,
            #"relay_deliveries_total{destination="vendor",outcome="delivered"} 2"#,
            #"relay_deliveries_total{destination="down",outcome="retry"} 1"#,
            #"relay_attempt_duration_seconds_count{destination="vendor"} 3"#,
            #"relay_attempt_duration_seconds_bucket{destination="vendor",le="+Inf"} 3"#,
            #"relay_queue_depth{destination="vendor"} 0"#,
            #"relay_queue_depth{destination="down"} 1"#,
            #"relay_deliveries_dead{destination="vendor"} 0"#,
            "# TYPE relay_attempt_duration_seconds histogram",
            "# TYPE relay_webhooks_received_total counter",
            "relay_store_events_written_total 2",
            "# TYPE relay_store_flushes_total counter",
        ] {
            #expect(lines.contains(want), "missing: \(want)")
        }
        // Every commit is a transaction and, with synchronous: full, flushed before its answer.
        func number(_ name: String) -> Double? {
            lines.first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ").last!) }
        }
        #expect((number("relay_store_transactions_total") ?? 0) >= 2)
        #expect((number("relay_store_flushes_total") ?? 0) >= 2)
        #expect((number("relay_store_flush_seconds_total") ?? 0) > 0)
        let age = lines.first { $0.hasPrefix(#"relay_queue_oldest_age_seconds{destination="down"} "#) }
        #expect(age.flatMap { Double($0.split(separator: " ").last!) }.map { $0 > 0 } == true, "\(age ?? "no age")")
        #expect(lines.contains { $0.hasPrefix(#"relay_circuit_open{destination="down"} "#) })
        #expect(try Self.get(relay, "/metrics", token: nil).status == 401)
    }

    @Test("pause holds a destination's deliveries (also across a restart); resume sends them")
    func pauseResume() throws {
        let dir = try TempDir("relay-admin-pause")
        defer { dir.remove() }
        let sink = try DeliveryTests.startSink()
        defer { sink.stop() }
        let extra = """
            admin: { listen: "127.0.0.1:0", token: "${env:ADMIN_TOKEN}" },
            destinations: { "vendor": { adapter: "generic", url: "\(sink.baseURL)/hook" } },
            routes: [ { from: "shop", to: ["vendor"] } ],
            """
        var ids: [String] = []
        do {
            let relay = try RunningRelay(sources: DeliveryTests.sources, extra: extra, environment: Self.env, in: dir, logName: "first.log")
            defer { relay.stop() }
            let paused = try Self.post(relay, "/v1/destinations/vendor/pause")
            #expect(paused.status == 200 && paused.json?["paused"] == .bool(true))
            #expect(try Self.post(relay, "/v1/destinations/nope/pause").status == 404)
            ids.append(try DeliveryTests.post(relay, "ORD-1", "shipped"))
            usleep(300_000)
            #expect(sink.requests().isEmpty, "nothing goes out while paused")
            #expect(try Self.get(relay, "/v1/routes").json?["destinations"]?["vendor"]?["paused"] == .bool(true))
        }
        // Still paused after a restart.
        let relay = try RunningRelay(sources: DeliveryTests.sources, extra: extra, environment: Self.env, in: dir, logName: "second.log")
        defer { relay.stop() }
        ids.append(try DeliveryTests.post(relay, "ORD-2", "shipped"))
        usleep(300_000)
        #expect(sink.requests().isEmpty, "paused across the restart")
        #expect(try Self.post(relay, "/v1/destinations/vendor/resume").status == 200)
        for id in ids { try DeliveryTests.waitForState(relay, id, "vendor", "delivered") }
        #expect(sink.requests().count == 2)
    }

    @Test("bulk replay: a dry run counts, the real run queues every matching dead letter again")
    func bulkReplay() throws {
        let sink = try DeliveryTests.startSink([SinkFault(times: 3, action: .status(422))])
        defer { sink.stop() }
        let relay = try Self.relay(sink)
        defer { relay.stop() }
        let ids = try (1...3).map { try DeliveryTests.post(relay, "ORD-\($0)", "shipped") }
        for id in ids { try DeliveryTests.waitForState(relay, id, "vendor", "dead") }
        func replay(_ body: String) throws -> Response {
            try Client(port: relay.service.adminPort!).request("POST", "/v1/replay",
                                                               headers: [("Authorization", "Bearer \(Self.token)")], body: Array(body.utf8))
        }
        let dry = try replay(#"{"state":"dead","destination":"vendor"}"#)
        #expect(dry.status == 200 && dry.json?["matched"]?.numberValue == 3 && dry.json?["replayed"]?.numberValue == 0)
        #expect(try replay(#"{"destination":"other"}"#).json?["matched"]?.numberValue == 0)
        #expect(try replay(#"{"until":"2000-01-01T00:00:00Z"}"#).json?["matched"]?.numberValue == 0)
        #expect(try replay(#"{"since":"yesterday"}"#).status == 400)
        #expect(try replay(#"{"state":"pending"}"#).status == 400)
        #expect(try replay(#"{"state":"superseded"}"#).status == 400)
        #expect(try replay(#"{"state":"delivered"}"#).status == 400, "delivered ones only for a named destination")
        #expect(try replay(#"{"destnation":"vendor"}"#).status == 400)
        #expect(sink.requests().count == 3, "a dry run sends nothing")
        let real = try replay(#"{"state":"dead","dryRun":false}"#)
        #expect(real.status == 202 && real.json?["replayed"]?.numberValue == 3)
        for id in ids { try DeliveryTests.waitForState(relay, id, "vendor", "delivered") }
        #expect(sink.requests().map(\.status) == [422, 422, 422, 200, 200, 200])
    }

    @Test("configuration: a non-loopback admin listener needs a token; a bad listen address is named")
    func config() {
        func problems(_ admin: String) -> [String] {
            let text = relayConfigText(dbPath: "/tmp/x.db", sources: DeliveryTests.sources, extra: "admin: \(admin),")
            do {
                _ = try RelayConfig.parse(Data(text.utf8), registry: BuiltinAdapters.registry, environment: Self.env)
                return []
            } catch let e as ConfigError {
                return e.problems.map(\.description)
            } catch {
                return ["\(error)"]
            }
        }
        #expect(problems(#"{ listen: "0.0.0.0:9090" }"#).contains { $0.hasPrefix("admin.token: is required when admin.listen is not a loopback address") })
        #expect(problems(#"{ listen: "0.0.0.0:9090", token: "${env:ADMIN_TOKEN}" }"#).isEmpty)
        #expect(problems(#"{ listen: "127.0.0.1:9090" }"#).isEmpty)
        #expect(problems(#"{ listen: "nowhere" }"#).contains { $0.hasPrefix("admin.listen:") })
        #expect(problems(#"{ listen: "127.0.0.1:9090", token: "inline" }"#).contains { $0.hasPrefix("admin.token: secrets must be a reference") })
        #expect(problems("true").contains { $0.hasPrefix("admin:") })
        // On by default on 127.0.0.1:9090 without a token; `admin: false` turns it off.
        let plain = #"{ sources: { s: { adapter: "generic", verify: { none: true } } } }"#
        let byDefault = try? RelayConfig.parse(Data(plain.utf8), registry: BuiltinAdapters.registry)
        #expect(byDefault?.admin?.http.host == "127.0.0.1" && byDefault?.admin?.http.port == 9090 && byDefault?.admin?.token == nil)
        let off = try? RelayConfig.parse(Data(#"{ admin: false, sources: { s: { adapter: "generic", verify: { none: true } } } }"#.utf8),
                                         registry: BuiltinAdapters.registry)
        #expect(off != nil && off?.admin == nil)
    }
}
