import Crypto
import Foundation
import Relay
@testable import RelaySQLite
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The `relay serve` executable as operators run it: a crash right after an answer, a graceful stop, its logs.
@Suite("relay serve as a process")
struct ProcessTests {
    static func config(dir: TempDir, sources: String, server: String = "") -> String {
        """
        {
          server: { listen: "127.0.0.1:0", threads: 2, \(server) },
          admin: { listen: "127.0.0.1:0" },
          store: { sqlite: "\(dir.file("relay.db"))" },
          log: { level: "info" },
          sources: { \(sources) },
        }
        """
    }

    @Test("kill -9 right after a 202: the event is in the WAL and in the database after restart")
    func killAfterAccept() throws {
        let dir = try TempDir("relay-kill9")
        defer { dir.remove() }
        let secret = Preset.standardWebhooks.makeSecret()
        let configPath = try dir.write("relay.json5", Self.config(dir: dir, sources: """
            acme: { adapter: "generic", verify: { preset: "standard-webhooks", secrets: ["${env:ACME}"] } },
            """))
        let env = ["ACME": secret.text]
        let relay = try RelayProcess(["serve", "--config", configPath], environment: env, dir: dir, label: "first")
        defer { relay.killIfRunning() }
        try relay.waitUntilReady()

        let m = Preset.Message(body: Preset.body(extra: ",\"crash\":\"test\""))
        let r = try relay.client.post("/v1/hooks/acme", m.body, headers: Preset.standardWebhooks.headers(m, keys: [secret.key]))
        let id = try expectAccepted(r)
        relay.signal(SIGKILL)
        let (reason, status) = try relay.waitForExit()
        #expect(reason == .uncaughtSignal && status == SIGKILL)

        // No checkpoint ran: the committed event lives in the write-ahead log, and the main file alone lacks it.
        let db = dir.file("relay.db")
        #expect(fileSize(db + "-wal") > 0, "no WAL after the crash")
        let copy = dir.file("main-only.db")
        try FileManager.default.copyItem(atPath: db, toPath: copy)
        let mainOnly = try Database(path: copy, readOnly: true)
        let inMainFile = (try? mainOnly.scalarText("SELECT count(*) FROM events WHERE id = '\(id)'")) ?? "0"
        #expect(inMainFile == "0", "the event reached the main file before any checkpoint?")

        // Opening the store recovers it from the WAL.
        do {
            let store = try SQLiteStore(options: SQLiteStoreOptions(path: db))
            defer { store.close() }
            let e = try #require(try store.event(id: id), "the acknowledged event was lost in the crash")
            #expect(e.source == "acme")
            #expect(e.idempotencyKey == m.id)
            #expect(e.raw?.body == String(decoding: m.body, as: UTF8.self))
            #expect(try store.eventCount() == 1)
        }

        // Restarted on the same file, the relay knows the event: the sender's retry is a duplicate of it.
        let again = try RelayProcess(["serve", "--config", configPath], environment: env, dir: dir, label: "second")
        defer { again.killIfRunning() }
        try again.waitUntilReady()
        let retry = try again.client.post("/v1/hooks/acme", m.body, headers: Preset.standardWebhooks.headers(m, keys: [secret.key]))
        #expect(retry.status == 200 && retry["eventId"] == id, "\(retry)")
        again.signal(SIGTERM)
        let end = try again.waitForExit()
        #expect(end.reason == .exit && end.status == 0, "\(again.stderr)")
    }

    @Test("SIGTERM: no new connections or requests, the one in flight still gets its 202 and is stored, exit 0")
    func gracefulStop() throws {
        let dir = try TempDir("relay-sigterm")
        defer { dir.remove() }
        let configPath = try dir.write("relay.json5", Self.config(dir: dir, sources: """
            open: { adapter: "generic", verify: { none: true } },
            """, server: "shutdownTimeout: \"10s\", requestTimeout: \"20s\", idleTimeout: \"20s\""))
        let relay = try RelayProcess(["serve", "--config", configPath], dir: dir)
        defer { relay.killIfRunning() }
        let port = try relay.waitUntilReady()

        // Headers and half the body now; the rest after the relay has been told to stop.
        let body = Array("{\"inflight\":true,\"pad\":\"\(String(repeating: "p", count: 200))\"}".utf8)
        let half = body.count / 2
        let c = try Connection(port: port, timeout: 10)
        try c.send(requestBytes("POST", "/v1/hooks/open", port: port, headers: [("Content-Type", "application/json")],
                                body: nil, contentLength: body.count) + body[0..<half])
        // An idle keep-alive connection must not hold up the stop.
        let idle = try Connection(port: port, timeout: 10)
        try idle.send(requestBytes("GET", "/healthz", port: port, keepAlive: true))
        #expect(try idle.readResponse().status == 200)
        usleep(300_000)   // time for the relay to read the request's head

        relay.signal(SIGTERM)
        let stopping = try relay.waitForLog("stopping")
        #expect(stopping["inFlight"]?.numberValue == 1, "\(stopping.jsonString())")
        // The listening socket closes just after that line is written.
        #expect(RelayProcess.poll(timeout: 2) { !Connection.canConnect(port: port) },
                "the relay still accepts connections while stopping")

        // A new request on the kept-alive connection, begun after the stop: 503, nothing recorded.
        try idle.send(requestBytes("POST", "/v1/hooks/open", port: port, headers: [("Content-Type", "application/json")],
                                   body: Array("{\"late\":true}".utf8), keepAlive: true))
        let late = try idle.readResponse()
        #expect(late.status == 503 && late["error"] == "shutting down", "\(late)")

        // The request in flight completes: 202, and the relay exits once it has been answered.
        try c.send(Array(body[half...]))
        let id = try expectAccepted(try c.readResponse())
        let (reason, status) = try relay.waitForExit()
        #expect(reason == .exit && status == 0, "\(relay.stderr)")
        try relay.waitForLog("stopped", timeout: 1)

        let store = try SQLiteStore(options: SQLiteStoreOptions(path: dir.file("relay.db")))
        defer { store.close() }
        #expect(try store.event(id: id)?.raw?.body == String(decoding: body, as: UTF8.self))
        #expect(try store.eventCount() == 1)
        // A clean stop checkpoints: nothing is left in the WAL.
        #expect(fileSize(dir.file("relay.db-wal")) <= 0)
    }

    @Test("no secret ever appears in the logs of a running relay, whatever it is sent")
    func noSecretsInLogs() throws {
        let dir = try TempDir("relay-secrets")
        defer { dir.remove() }
        let whsec = Preset.standardWebhooks.makeSecret()
        let gh = Preset.github.makeSecret(), ghOld = Preset.github.makeSecret()
        let password = randomSecret("pw_"), token = randomSecret("tok_"), apiKey = randomSecret("key_")
        let configPath = try dir.write("relay.json5", Self.config(dir: dir, sources: """
            acme: { adapter: "generic", verify: { preset: "standard-webhooks", secrets: ["${env:WHSEC}"] } },
            gh: { adapter: "generic", verify: { preset: "github", secrets: ["${env:GH}", "${env:GH_OLD}"] } },
            basic: { adapter: "generic", verify: { basic: { username: "relay", password: "${env:PASSWORD}" } } },
            bearer: { adapter: "generic", verify: { bearer: { tokens: ["${env:TOKEN}"] } } },
            keyed: { adapter: "generic", verify: { apiKey: { header: "X-API-Key", tokens: ["${env:APIKEY}"] } } },
            """))
        let env = ["WHSEC": whsec.text, "GH": gh.text, "GH_OLD": ghOld.text, "PASSWORD": password, "TOKEN": token,
                   "APIKEY": apiKey, "RELAY_LOG_LEVEL": "debug"]
        let relay = try RelayProcess(["serve", "--config", configPath], environment: env, dir: dir)
        defer { relay.killIfRunning() }
        try relay.waitUntilReady()
        let c = relay.client
        let wrong = randomSecret("wrong_")

        // Valid and invalid requests of every scheme.
        for (preset, source, good) in [(Preset.standardWebhooks, "acme", whsec), (.github, "gh", gh), (.github, "gh", ghOld)] {
            let m = Preset.Message(body: Preset.body())
            try expectAccepted(try c.post("/v1/hooks/\(source)", m.body, headers: preset.headers(m, keys: [good.key])))
            let bad = Preset.Message(body: Preset.body())
            expectUnauthorized(try c.post("/v1/hooks/\(source)", bad.body, headers: preset.headers(bad, keys: [preset.makeSecret().key])),
                               "signature does not match")
            var stale = Preset.Message(body: Preset.body())
            stale.timestamp -= 3600
            _ = try c.post("/v1/hooks/\(source)", stale.body, headers: preset.headers(stale, keys: [good.key]))
        }
        let basicGood = "Basic " + ByteEncoding.base64(Array("relay:\(password)".utf8))
        try expectAccepted(try c.post("/v1/hooks/basic", json: "{\"a\":1}", headers: [("Authorization", basicGood)]))
        expectUnauthorized(try c.post("/v1/hooks/basic", json: "{\"a\":2}",
                                      headers: [("Authorization", "Basic " + ByteEncoding.base64(Array("relay:\(wrong)".utf8)))]),
                           "credentials do not match")
        try expectAccepted(try c.post("/v1/hooks/bearer", json: "{\"a\":3}", headers: [("Authorization", "Bearer \(token)")]))
        expectUnauthorized(try c.post("/v1/hooks/bearer", json: "{\"a\":4}", headers: [("Authorization", "Bearer \(wrong)")]),
                           "credentials do not match")
        expectUnauthorized(try c.post("/v1/hooks/bearer", json: "{\"a\":5}", headers: [("Authorization", token)]),
                           "not of the form")
        try expectAccepted(try c.post("/v1/hooks/keyed", json: "{\"a\":6}", headers: [("X-API-Key", apiKey)]))
        expectUnauthorized(try c.post("/v1/hooks/keyed", json: "{\"a\":7}", headers: [("X-API-Key", wrong)]),
                           "credentials do not match")
        _ = try c.post("/v1/hooks/unknown", json: "{}", headers: [("Authorization", "Bearer \(token)")])
        _ = try c.post("/v1/hooks/bearer", Array("x".utf8), headers: [("Authorization", "Bearer \(token)")], contentType: "text/plain")

        relay.signal(SIGTERM)
        #expect(try relay.waitForExit().status == 0)
        let output = relay.stdout + relay.stderr
        #expect(output.contains("\"msg\":\"signature rejected\""), "the rejections were not logged:\n\(output)")
        #expect(output.contains("\"msg\":\"webhook accepted\""))
        let forbidden = [whsec.text, String(whsec.text.dropFirst(6)), ByteEncoding.hex(whsec.key), gh.text, ghOld.text,
                         password, token, apiKey, ByteEncoding.base64(Array("relay:\(password)".utf8))]
        for value in forbidden {
            #expect(!output.contains(value), "a secret appeared in the relay's output")
        }
        // `relay check` on the same file says nothing of them either.
        let check = try RelayProcess.run(["check", "--config", configPath], environment: env, dir: dir, label: "check")
        #expect(check.status == 0, "\(check.stderr)")
        for value in forbidden { #expect(!(check.stdout + check.stderr).contains(value)) }
    }
}
