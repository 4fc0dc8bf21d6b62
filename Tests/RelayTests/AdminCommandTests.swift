import Adapters
import Foundation
@testable import Relay
import Simulator
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `relay events`, `relay deliveries`, `relay replay` as processes, against a `relay serve` process's admin API.
@Suite("Admin commands")
struct AdminCommandTests {
    @Test("events, events show, deliveries, replay (one and bulk): tables, --json, exit codes, the token")
    func commands() throws {
        let dir = try TempDir("relay-admin-cli")
        defer { dir.remove() }
        let sink = try DeliveryTests.startSink([SinkFault(times: 2, action: .status(422))])
        defer { sink.stop() }
        let token = "cli-" + UUID().uuidString
        let config = try dir.write("relay.json5", relayConfigText(dbPath: dir.file("relay.db"), sources: DeliveryTests.sources, extra: """
            admin: { listen: "127.0.0.1:0", token: "${env:RELAY_ADMIN_TOKEN}" },
            destinations: { "vendor": { adapter: "generic", url: "\(sink.baseURL)/hook", retry: { schedule: ["50ms"], jitter: "none" } } },
            routes: [ { from: "shop", to: ["vendor"] } ],
            """))
        let env = ["RELAY_ADMIN_TOKEN": token]
        let relay = try RelayProcess(["serve", "--config", config], environment: env, dir: dir, label: "serve")
        defer { relay.killIfRunning() }
        try relay.waitUntilReady()
        let address = try #require(try relay.waitForLog("admin API listening")["address"]?.stringValue)
        let admin = "http://\(address)"
        let a = try expectAccepted(try relay.client.post("/v1/hooks/shop", json: #"{"id":"ORD-1","state":"shipped"}"#))
        let b = try expectAccepted(try relay.client.post("/v1/hooks/shop", json: #"{"id":"ORD-2","state":"shipped"}"#))
        func run(_ args: [String], token: String? = token) throws -> (status: Int32, stdout: String, stderr: String) {
            try RelayProcess.run(args + ["--admin", admin], environment: token.map { ["RELAY_ADMIN_TOKEN": $0] } ?? [:],
                                 dir: dir, label: "cli")
        }
        // Both are dead letters (422 twice).
        try DeliveryTests.eventually("two dead letters") {
            let r = try run(["deliveries", "--state", "dead", "--json"])
            return r.status == 0 && (r.stdout.contains(a) && r.stdout.contains(b))
        }

        let list = try run(["events"])
        #expect(list.status == 0, "\(list.stderr)")
        #expect(list.stdout.hasPrefix("EVENT") && list.stdout.contains(a) && list.stdout.contains("orderId=ORD-1"), "\(list.stdout)")
        let json = try run(["events", "--subject", "orderId:ORD-2", "--json"])
        #expect(try JSONValue.parse(Data(json.stdout.utf8))["events"]?.arrayValue?.map { $0["id"]?.stringValue } == [b])
        let show = try run(["events", "show", a])
        #expect(show.status == 0 && show.stdout.contains("vendor") && show.stdout.contains("422"), "\(show.stdout)")
        let dead = try run(["deliveries", "--state", "dead"])
        #expect(dead.stdout.contains("HTTP 422"), "\(dead.stdout)")

        // Replay one by id, then the rest in bulk (a dry run first).
        let deadIDs = try JSONValue.parse(Data(try run(["deliveries", "--state", "dead", "--json"]).stdout.utf8))["deliveries"]?
            .arrayValue?.compactMap { $0["id"]?.stringValue } ?? []
        #expect(deadIDs.count == 2)
        let one = try run(["replay", deadIDs[0]])
        #expect(one.status == 0 && one.stdout.contains("queued again (was dead)"), "\(one.stdout) \(one.stderr)")
        let dry = try run(["replay", "--state", "dead"])
        #expect(dry.status == 0 && dry.stdout.contains("1 deliveries match (a dry run"), "\(dry.stdout)")
        let bulk = try run(["replay", "--state", "dead", "--yes"])
        #expect(bulk.stdout.contains("1 deliveries queued again"), "\(bulk.stdout)")
        try DeliveryTests.eventually("both delivered") { sink.requests(path: "/hook").filter { $0.status == 200 }.count == 2 }

        // Refused without the token; unreachable; usage.
        let refused = try run(["events"], token: nil)
        #expect(refused.status == 1 && refused.stderr.contains("answered 401"), "\(refused.stderr)")
        let unreachable = try RelayProcess.run(["events", "--admin", "http://127.0.0.1:\(SecretHygieneTests.closedPort())"],
                                               dir: dir, label: "cli")
        #expect(unreachable.status == 1 && unreachable.stderr.contains("cannot reach the admin API"))
        #expect(try run(["replay"]).status == 2)
        #expect(try run(["events", "--bogus"]).status == 2)
        let help = try RelayProcess.run(["events", "--help"], dir: dir, label: "cli")
        #expect(help.status == 0 && help.stdout.contains("relay replay DELIVERY_ID"))
        #expect(!(list.stdout + list.stderr + refused.stderr).contains(token))
        relay.signal(SIGTERM)
        _ = try relay.waitForExit()
    }

    @Test("SIGHUP reloads the configuration: new routes, destinations and sources apply; a broken file is refused, the old config keeps running")
    func reload() throws {
        let dir = try TempDir("relay-reload")
        defer { dir.remove() }
        let sink = try DeliveryTests.startSink()
        defer { sink.stop() }
        func config(_ destination: String, extraSource: String = "", broken: Bool = false) -> String {
            relayConfigText(dbPath: dir.file("relay.db"), sources: DeliveryTests.sources + extraSource, extra: """
                destinations: { "\(destination)": { adapter: "generic", url: "\(sink.baseURL)/\(destination)"\(broken ? ", retry: { schedule: [\"soon\"] }" : "") } },
                routes: [ { from: "shop", to: ["\(destination)"] } ],
                """)
        }
        let path = try dir.write("relay.json5", config("one"))
        let relay = try RelayProcess(["serve", "--config", path], dir: dir, label: "serve")
        defer { relay.killIfRunning() }
        try relay.waitUntilReady()
        _ = try expectAccepted(try relay.client.post("/v1/hooks/shop", json: #"{"id":"A","state":"shipped"}"#))
        try DeliveryTests.eventually("delivery to one") { sink.requests(path: "/one").count == 1 }

        _ = try dir.write("relay.json5", config("two", extraSource: #""later": { adapter: "generic", verify: { none: true } },"#))
        relay.signal(SIGHUP)
        _ = try relay.waitForLog("configuration reloaded")
        _ = try expectAccepted(try relay.client.post("/v1/hooks/shop", json: #"{"id":"B","state":"shipped"}"#))
        try DeliveryTests.eventually("delivery to two") { sink.requests(path: "/two").count == 1 }
        _ = try expectAccepted(try relay.client.post("/v1/hooks/later", json: #"{"n":1}"#))

        _ = try dir.write("relay.json5", config("three", broken: true))
        relay.signal(SIGHUP)
        let refused = try relay.waitForLog("configuration reload refused: the running configuration stays")
        #expect(refused["problems"]?.stringValue?.contains("destinations.three.retry.schedule[0]") == true, "\(refused)")
        _ = try expectAccepted(try relay.client.post("/v1/hooks/shop", json: #"{"id":"C","state":"shipped"}"#))
        try DeliveryTests.eventually("still delivering to two") { sink.requests(path: "/two").count == 2 }
        #expect(sink.requests(path: "/one").count == 1 && sink.requests(path: "/three").isEmpty)
        relay.signal(SIGTERM)
        #expect(try relay.waitForExit().status == 0)
    }
}
