import Adapters
import Crypto
import Foundation
@testable import Relay
import Simulator
@testable import RelaySQLite
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Secret hygiene, end to end: one full run of a relay configured with every kind of secret it has (inbound
/// verification secrets, outbound static credentials, Standard Webhooks signing keys, `${env:}` header values),
/// driven through successes, rejections, retries, dead letters and a failing `relay check`; then every log line it
/// wrote and every value of every table of its store are searched for each secret (and the forms in which it goes
/// over the wire: Basic's base64, a whsec key's base64 and hex), and none is found.
@Suite("Secret hygiene")
struct SecretHygieneTests {
    /// One configured secret: its environment variable, its value, and every form that must never be written.
    struct Configured {
        let variable: String
        let value: String
        var forms: [String]

        init(_ variable: String, _ value: String, also: [String] = []) {
            self.variable = variable
            self.value = value
            // The value, its random core (what is left without the readable prefix), every 16-character piece of
            // that core (a truncated or partly masked leak), and the wire forms.
            let core = String(value.drop { $0 != "_" }.dropFirst())
            var forms = [value, core] + also
            let chars = Array(core)
            if chars.count > 16 {
                for i in 0...(chars.count - 16) { forms.append(String(chars[i..<(i + 16)])) }
            }
            self.forms = forms.filter { $0.count >= 12 }
        }
    }

    /// The names of the secrets any of whose forms occur in `text` (the names only: a failure message must not
    /// itself leak a secret).
    static func leaks(_ secrets: [Configured], in text: String) -> [String] {
        secrets.filter { s in s.forms.contains { text.contains($0) } }.map(\.variable)
    }

    /// Every value of every row of every table of the SQLite file at `path`, each read as bytes (a blob as is, text
    /// as its UTF-8, a number as its text) and decoded leniently; with the table, row and column it came from. Also
    /// the number of rows of each table.
    static func everyStoredValue(_ path: String) throws -> (rows: [String: Int], values: [(place: String, text: String)]) {
        let db = try Database(path: path, readOnly: true)
        let tables = try db.statement("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        var names: [String] = []
        while try tables.step() { names.append(tables.text(0) ?? "") }
        tables.reset()
        var out: [(String, String)] = []
        var counts: [String: Int] = [:]
        for table in names {
            let info = try db.statement("SELECT name FROM pragma_table_info('\(table)')")
            var columns: [String] = []
            while try info.step() { columns.append(info.text(0) ?? "") }
            info.reset()
            let rows = try db.statement("SELECT * FROM \"\(table)\"")
            var n = 0
            while try rows.step() {
                n += 1
                for (i, column) in columns.enumerated() {
                    out.append(("\(table) row \(n) \(column)", String(decoding: rows.blob(Int32(i)), as: UTF8.self)))
                }
            }
            rows.reset()
            counts[table] = n
        }
        return (counts, out)
    }

    @Test("a full run: no configured secret in any log line or stored value")
    func fullRun() throws {
        let dir = try TempDir("relay-hygiene")
        defer { dir.remove() }
        let sink = try DeliveryTests.startSink([
            SinkFault(path: "/fails", action: .status(503, body: .text("upstream unavailable"))),
            SinkFault(path: "/refuses", action: .status(401, body: .text(#"{"error":"invalid_token"}"#))),
        ])
        defer { sink.stop() }

        // Distinctive random values, each in the form its scheme takes.
        let inWhsec = Preset.standardWebhooks.makeSecret(), inGithub = Preset.github.makeSecret()
        let outWhsecNew = Preset.standardWebhooks.makeSecret(), outWhsecOld = Preset.standardWebhooks.makeSecret()
        let env: [String: String] = [
            "IN_WHSEC": inWhsec.text,
            "IN_BASIC_PW": randomSecret("inpw_"), "IN_BEARER": randomSecret("inbearer_"), "IN_APIKEY": randomSecret("inkey_"),
            "OUT_BASIC_PW": randomSecret("outpw_"), "OUT_BEARER": randomSecret("outbearer_"),
            "OUT_TOKEN": randomSecret("outtoken_"), "OUT_BTOKEN": randomSecret("outbtoken_"),
            "OUT_APIKEY": randomSecret("outkey_"), "OUT_WHSEC_NEW": outWhsecNew.text, "OUT_WHSEC_OLD": outWhsecOld.text,
            "OUT_HEADER": randomSecret("outheader_"), "OUT_HEADER2": randomSecret("outheader2_"),
            "OUT_OAUTH2_SECRET": randomSecret("oauth2secret_"), "OUT_CAP_KEY": randomSecret("capkey_"),
            "OUT_CAP_SECRET": randomSecret("capsecret_"), "OUT_MC_CONSUMER": randomSecret("mcconsumer_"),
            "OUT_MC_KEY_PW": randomSecret("mckeypw_"),
        ]
        // Token endpoints: an OAuth2 one and Capillary's, each issuing random tokens (searched for afterwards too).
        let oauth2 = try startStandIn(OAuth2TokenEndpoint(clients: ["relay": env["OUT_OAUTH2_SECRET"]!]))
        let capillary = try startStandIn(CapillarySimulator(allowedStatuses: nil,
                                                            credentials: (env["OUT_CAP_KEY"]!, env["OUT_CAP_SECRET"]!)))
        defer { oauth2.stop(); capillary.stop() }
        // A Mastercard signing key in a PKCS#12 protected by a password.
        try mcOpenSSL(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "mc.pem", "-out", "mc.crt", "-days", "2",
                       "-subj", "/CN=hygiene"], in: dir.path)
        try mcOpenSSL(["pkcs12", "-export", "-inkey", "mc.pem", "-in", "mc.crt", "-passout", "pass:\(env["OUT_MC_KEY_PW"]!)",
                       "-out", "mc.p12"], in: dir.path)
        let inBasic = "Basic " + ByteEncoding.base64(Array("relay-in:\(env["IN_BASIC_PW"]!)".utf8))
        let outBasic = "Basic " + ByteEncoding.base64(Array("relay-out:\(env["OUT_BASIC_PW"]!)".utf8))
        // A value `relay check` is given in place of a signing secret, and refuses: it must not be printed either.
        let notWhsec = randomSecret("notwhsec_")
        var secrets = env.sorted { $0.key < $1.key }.map { Configured($0.key, $0.value) }
        for (i, s) in secrets.enumerated() {
            switch s.variable {
            case "IN_BASIC_PW": secrets[i].forms.append(String(inBasic.dropFirst(6)))
            case "OUT_BASIC_PW": secrets[i].forms.append(String(outBasic.dropFirst(6)))
            case "IN_WHSEC": secrets[i].forms.append(ByteEncoding.hex(inWhsec.key))
            case "OUT_WHSEC_NEW": secrets[i].forms.append(ByteEncoding.hex(outWhsecNew.key))
            case "OUT_WHSEC_OLD": secrets[i].forms.append(ByteEncoding.hex(outWhsecOld.key))
            default: break
            }
        }
        secrets.append(Configured("github.secret (a ${file:} secret)", inGithub.text))
        secrets.append(Configured("NOT_WHSEC (given to relay check)", notWhsec))
        // The scanner itself finds what it looks for, whole or in part.
        #expect(Self.leaks(secrets, in: "x \(env["OUT_BEARER"]!) y") == ["OUT_BEARER"])
        #expect(Self.leaks(secrets, in: "Authorization: \(outBasic)") == ["OUT_BASIC_PW"])
        #expect(Self.leaks(secrets, in: "key=" + String(env["IN_APIKEY"]!.dropFirst(7).prefix(20))) == ["IN_APIKEY"])

        // One secret read from a file rather than the environment.
        let githubFile = try dir.write("github.secret", inGithub.text + "\n")
        let fast = #"retry: { schedule: ["100ms", "100ms"], jitter: "none" }, circuitBreaker: { failures: 1000, cooldown: "1s" }"#
        let url = sink.baseURL
        let sources = """
            acme: { adapter: "generic", verify: { preset: "standard-webhooks", secrets: ["${env:IN_WHSEC}"] } },
            gh: { adapter: "generic", verify: { preset: "github", secrets: ["${file:\(githubFile)}"] } },
            basic: { adapter: "generic", verify: { basic: { username: "relay-in", password: "${env:IN_BASIC_PW}" } } },
            bearer: { adapter: "generic", verify: { bearer: { tokens: ["${env:IN_BEARER}"] } } },
            keyed: { adapter: "generic", verify: { apiKey: { header: "X-API-Key", tokens: ["${env:IN_APIKEY}"] } },
                     type: "order.status_changed", map: { subject: { orderId: "$.order", vendorOrderId: "$.vendor" }, status: "$.state" } },
            """
        let destinations: [(String, String)] = [
            ("basic", #"url: "\#(url)/basic", auth: { basic: { username: "relay-out", password: "${env:OUT_BASIC_PW}" } }"#),
            ("bearer", #"url: "\#(url)/bearer", auth: { bearer: "${env:OUT_BEARER}" }"#),
            ("token", #"url: "\#(url)/token", auth: { token: { token: "${env:OUT_TOKEN}", btoken: "${env:OUT_BTOKEN}" } }"#),
            ("apikey", #"url: "\#(url)/apikey", auth: { apiKey: { header: "X-API-Key", value: "${env:OUT_APIKEY}" } }"#),
            ("signed", #"url: "\#(url)/signed", auth: { standardWebhooks: { secrets: ["${env:OUT_WHSEC_NEW}", "${env:OUT_WHSEC_OLD}"] } }"#),
            ("headers", #"url: "\#(url)/headers", headers: { "X-Partner-Key": "${env:OUT_HEADER}", "X-Mixed": "k=${env:OUT_HEADER2}; type=${type}" }"#),
            ("oauth2", #"url: "\#(url)/oauth2", auth: { oauth2: { tokenURL: "\#(oauth2.baseURL)/token", clientId: "relay", clientSecret: "${env:OUT_OAUTH2_SECRET}" } }"#),
            ("captoken", #"url: "\#(url)/captoken", auth: { capillaryToken: { url: "\#(capillary.baseURL)/v3/oauth/token/generate", key: "${env:OUT_CAP_KEY}", secret: "${env:OUT_CAP_SECRET}" } }"#),
            ("mastercard", #"url: "\#(url)/mastercard", auth: { mastercardOAuth1: { consumerKey: "${env:OUT_MC_CONSUMER}", keyFile: "\#(dir.file("mc.p12"))", keyPassword: "${env:OUT_MC_KEY_PW}" } }"#),
            // Fails every attempt (503): retries, then a dead letter; with every kind of credential on it.
            ("fails", #"url: "\#(url)/fails", \#(fast), headers: { "X-Partner-Key": "${env:OUT_HEADER}" }, auth: { bearer: "${env:OUT_BEARER}", apiKey: { header: "X-API-Key", value: "${env:OUT_APIKEY}" }, standardWebhooks: { secrets: ["${env:OUT_WHSEC_NEW}"] } }"#),
            // Refuses the credentials (401): dead at once (static credentials are not resent).
            ("refuses", #"url: "\#(url)/refuses", \#(fast), auth: { basic: { username: "relay-out", password: "${env:OUT_BASIC_PW}" } }"#),
            // Nothing listens: transport errors, retried, then dead.
            ("unreachable", #"url: "http://127.0.0.1:\#(Self.closedPort())/x", \#(fast), auth: { token: { token: "${env:OUT_TOKEN}" } }"#),
        ]
        let names = destinations.map(\.0)
        let extra = """
            destinations: {
            \(destinations.map { "  \"\($0.0)\": { adapter: \"generic\", \($0.1) }," }.joined(separator: "\n"))
            },
            routes: [
            \(["acme", "gh", "basic", "bearer", "keyed"].map { "  { from: \"\($0)\", to: [\(names.map { "\"\($0)\"" }.joined(separator: ", "))] }," }.joined(separator: "\n"))
            ],
            """
        let configText = relayConfigText(dbPath: dir.file("relay.db"), sources: sources, extra: extra)
        let configPath = try dir.write("relay.json5", configText)

        // MARK: The run
        let relay = try RunningRelay(sources: sources, extra: extra, environment: env, in: dir)
        var stopped = false
        defer { if !stopped { relay.stop() } }
        let c = relay.client
        var events: [String] = []
        let wrong = randomSecret("wrong_")

        // Signed inbound webhooks, good and bad (401s are logged).
        for (preset, source, good) in [(Preset.standardWebhooks, "acme", inWhsec), (.github, "gh", inGithub)] {
            let m = Preset.Message(body: Preset.body())
            events.append(try expectAccepted(try c.post("/v1/hooks/\(source)", m.body, headers: preset.headers(m, keys: [good.key]))))
            let forged = Preset.Message(body: Preset.body())
            expectUnauthorized(try c.post("/v1/hooks/\(source)", forged.body, headers: preset.headers(forged, keys: [preset.makeSecret().key])),
                               "signature does not match")
        }
        events.append(try expectAccepted(try c.post("/v1/hooks/basic", json: #"{"n":1}"#, headers: [("Authorization", inBasic)])))
        expectUnauthorized(try c.post("/v1/hooks/basic", json: #"{"n":2}"#,
                                      headers: [("Authorization", "Basic " + ByteEncoding.base64(Array("relay-in:\(wrong)".utf8)))]),
                           "credentials do not match")
        events.append(try expectAccepted(try c.post("/v1/hooks/bearer", json: #"{"n":3}"#,
                                                    headers: [("Authorization", "Bearer \(env["IN_BEARER"]!)")])))
        expectUnauthorized(try c.post("/v1/hooks/bearer", json: #"{"n":4}"#, headers: [("Authorization", "Bearer \(wrong)")]),
                           "credentials do not match")
        // (Two identifiers of one subject: the relay links them in the correlations table.)
        events.append(try expectAccepted(try c.post("/v1/hooks/keyed", json: #"{"order":"O-5","vendor":"V-5","state":"shipped"}"#,
                                                    headers: [("X-API-Key", env["IN_APIKEY"]!)])))
        expectUnauthorized(try c.post("/v1/hooks/keyed", json: #"{"n":6}"#, headers: [("X-API-Key", wrong)]), "credentials do not match")
        let health = try c.get("/healthz")
        #expect(health.status == 200)

        // Every delivery ends: delivered, or dead after its retries.
        let terminal: Set<String> = ["delivered", "dead"]
        try DeliveryTests.eventually("every delivery to end", timeout: 10) {
            try events.allSatisfy { id in
                let d = try relay.store.deliveries(eventID: id)
                return d.count == names.count && d.allSatisfy { terminal.contains($0.state) }
            }
        }
        for id in events {
            for d in try relay.store.deliveries(eventID: id) {
                let want = ["fails", "refuses", "unreachable"].contains(d.destination) ? "dead" : "delivered"
                #expect(d.state == want, "\(d.destination): \(d.state)")
            }
        }
        // The credentials did go out (so the run exercised them)...
        func sent(_ path: String, _ header: String) -> Set<String> {
            Set(sink.requests(path: path).compactMap { $0.headers[header] })
        }
        #expect(sent("/basic", "Authorization") == [outBasic])
        #expect(sent("/bearer", "Authorization") == ["Bearer \(env["OUT_BEARER"]!)"])
        #expect(sent("/token", "Authorization") == ["Token token=\(env["OUT_TOKEN"]!), btoken=\(env["OUT_BTOKEN"]!)"])
        #expect(sent("/apikey", "X-API-Key") == [env["OUT_APIKEY"]!])
        #expect(sent("/signed", "webhook-signature").allSatisfy { $0.split(separator: " ").count == 2 })
        #expect(sent("/headers", "X-Partner-Key") == [env["OUT_HEADER"]!])
        let mixed = sent("/headers", "X-Mixed")
        #expect(!mixed.isEmpty && mixed.allSatisfy { $0.hasPrefix("k=\(env["OUT_HEADER2"]!); type=") })
        #expect(sink.requests(path: "/fails").count == 3 * events.count)
        #expect(sent("/fails", "Authorization") == ["Bearer \(env["OUT_BEARER"]!)"])
        #expect(sent("/refuses", "Authorization") == [outBasic])
        // The tokens the endpoints issued went out, and are searched for like the configured secrets.
        let oauth2Tokens = sent("/oauth2", "Authorization"), capTokens = sent("/captoken", "X-CAP-API-OAUTH-TOKEN")
        #expect(oauth2Tokens.count == 1 && oauth2Tokens.first?.hasPrefix("Bearer ") == true)
        #expect(capTokens.count == 1)
        for t in oauth2Tokens { secrets.append(Configured("an issued OAuth2 token", String(t.dropFirst(7)))) }
        for t in capTokens { secrets.append(Configured("an issued Capillary token", t)) }
        #expect(sent("/mastercard", "Authorization").allSatisfy { $0.contains("oauth_consumer_key=\"\(env["OUT_MC_CONSUMER"]!)\"") })
        relay.stop()
        stopped = true

        // `relay check` on the same file: one variable missing, a signing secret in the wrong form, then all good.
        var missing = env
        missing["OUT_BEARER"] = nil
        var malformed = env
        malformed["OUT_WHSEC_OLD"] = notWhsec
        let failedMissing = try RelayProcess.run(["check", "--config", configPath], environment: missing, dir: dir, label: "check-missing")
        let failedMalformed = try RelayProcess.run(["check", "--config", configPath], environment: malformed, dir: dir, label: "check-malformed")
        let passed = try RelayProcess.run(["check", "--config", configPath], environment: env, dir: dir, label: "check-ok")
        #expect(failedMissing.status != 0)
        #expect((failedMissing.stdout + failedMissing.stderr).contains("OUT_BEARER"), "\(failedMissing.stderr)")
        #expect(failedMalformed.status != 0)
        #expect((failedMalformed.stdout + failedMalformed.stderr).contains("destinations.signed.auth.standardWebhooks.secrets[1]"),
                "\(failedMalformed.stderr)")
        #expect(passed.status == 0, "\(passed.stderr)")

        // MARK: The search
        // Every log line: the relay's log file, and everything the `relay check` processes printed.
        let log = relay.log
        #expect(log.contains("\"msg\":\"signature rejected\""), "the rejections were not logged")
        #expect(log.contains("HTTP 503") && log.contains("HTTP 401"), "the failures were not logged")
        var texts: [(String, String)] = []
        for (i, line) in log.split(separator: "\n").enumerated() { texts.append(("relay.log line \(i + 1)", String(line))) }
        for run in [("check-missing", failedMissing), ("check-malformed", failedMalformed), ("check-ok", passed)] {
            texts.append(("\(run.0) stdout", run.1.stdout))
            texts.append(("\(run.0) stderr", run.1.stderr))
        }
        texts.append(("GET /healthz", health.text))
        #expect(texts.count > 50, "only \(texts.count) log lines")

        // Every value of every table of the store (the relay has stopped: all is checkpointed into the file).
        let (rows, stored) = try Self.everyStoredValue(dir.file("relay.db"))
        for table in ["events", "deliveries", "attempts", "correlations"] {
            #expect((rows[table] ?? 0) > 0, "no rows in \(table): \(rows)")
        }
        #expect(stored.contains { $0.place.hasPrefix("attempts") && $0.text.contains("upstream unavailable") })
        #expect(stored.contains { $0.place.hasPrefix("deliveries") && $0.text == "HTTP 401" })
        texts += stored
        // And the raw bytes of the database files, whatever SQLite left in free pages or the WAL.
        for file in ["relay.db", "relay.db-wal"] {
            texts.append((file + " (raw bytes)", String(decoding: FileManager.default.contents(atPath: dir.file(file)) ?? Data(), as: UTF8.self)))
        }

        for (place, text) in texts {
            let found = Self.leaks(secrets, in: text)
            #expect(found.isEmpty, "\(place) contains \(found)")
        }
    }

    /// A loopback port nothing listens on (bound, then closed).
    static func closedPort() -> UInt16 {
        #if os(Linux)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return UInt16(bigEndian: addr.sin_port)
    }
}
