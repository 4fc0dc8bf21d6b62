import Adapters
import Foundation
import Relay
import Testing

/// Configuration checking: every problem with its key path, exit code 2 from `relay check`, and secrets that
/// never show up in what the relay prints.
@Suite("Configuration and relay check")
struct ConfigTests {
    /// A configuration with one problem of each kind; `KNOWN_SECRET` resolves, everything else is wrong.
    static func brokenConfig(dir: TempDir) -> String {
        """
        {
          server: { listen: "127.0.0.1:0", lisen: "typo", idleTimeout: "soon" },
          store: { sqlite: "\(dir.file("relay.db"))", maxSizeBytes: 10 },
          sources: {
            good: { adapter: "generic", verify: { preset: "github", secrets: ["${env:KNOWN_SECRET}"] } },
            "no-env": { adapter: "generic", verify: { preset: "stripe", secrets: ["${env:RELAY_TEST_MISSING_SECRET}"] } },
            "no-file": { adapter: "generic", verify: { preset: "github", secrets: ["${file:\(dir.file("absent.secret"))}"] } },
            "dir-file": { adapter: "generic", verify: { preset: "github", secrets: ["${file:\(dir.path)}"] } },
            inline: { adapter: "generic", verify: { preset: "github", secrets: ["inline-secret-text-1234"] } },
            "bad-preset": { adapter: "generic", verify: { preset: "stripey", secrets: ["${env:KNOWN_SECRET}"] } },
            "bad-whsec": { adapter: "generic", verify: { preset: "standard-webhooks", secrets: ["${env:KNOWN_SECRET}"] } },
            "no-verify": { adapter: "generic" },
            "bad-adapter": { adapter: "carrier-pigeon", verify: { none: true } },
            "bad-map": { adapter: "generic", verify: { none: true }, colour: "blue",
                         statusMap: { "X": "teleported", "Y": "shipped" } },
          },
          routes: [ { from: "nowhere", to: [] } ],
        }
        """
    }

    /// Key path → a piece of its message, for every problem in `brokenConfig`.
    static let expectedProblems: [(String, String)] = [
        ("server.lisen", "unknown key"),
        ("server.idleTimeout", "is not a duration"),
        ("store.maxSizeBytes", "at least 65536"),
        ("sources.no-env.verify.secrets[0]", "RELAY_TEST_MISSING_SECRET is not set"),
        ("sources.no-file.verify.secrets[0]", "no such file"),
        ("sources.dir-file.verify.secrets[0]", "cannot read file"),
        ("sources.inline.verify.secrets[0]", "not inline text"),
        ("sources.bad-preset.verify.preset", "unknown preset \"stripey\""),
        ("sources.bad-whsec.verify.secrets[0]", "is not valid whsec"),
        ("sources.no-verify.verify", "is required"),
        ("sources.bad-adapter.adapter", "unknown adapter \"carrier-pigeon\""),
        ("sources.bad-map.colour", "unknown key"),
        ("sources.bad-map.statusMap.X", "is not a canonical status"),
        ("sources.bad-map.statusMap", "needs map.status"),
        ("routes[0].from", "names unknown source \"nowhere\""),
    ]

    static let knownSecret = "gh-known-secret-" + randomSecret("")

    @Test("every problem is reported with its key path, not just the first")
    func allProblems() throws {
        let dir = try TempDir("relay-config")
        defer { dir.remove() }
        let error = try #require(throws: ConfigError.self) {
            try RelayConfig.parse(Data(Self.brokenConfig(dir: dir).utf8), registry: BuiltinAdapters.registry,
                                  environment: ["KNOWN_SECRET": Self.knownSecret])
        }
        let problems = error.problems
        for (path, message) in Self.expectedProblems {
            #expect(problems.contains { $0.path == path && $0.message.contains(message) },
                    "no problem at \(path) mentioning \"\(message)\" in:\n\(error)")
        }
        #expect(problems.count == Self.expectedProblems.count, "\(error)")
        let text = error.description
        #expect(!text.contains(Self.knownSecret))
        #expect(!text.contains("inline-secret-text-1234"))
    }

    @Test("secrets print as *** and a valid configuration reads them from env and files")
    func secretsResolve() throws {
        let dir = try TempDir("relay-config")
        defer { dir.remove() }
        let file = try dir.write("gh.secret", "from-a-file\n")
        let config = try RelayConfig.parse(Data("""
            { store: { sqlite: "\(dir.file("r.db"))" },
              sources: {
                a: { adapter: "generic", verify: { preset: "github", secrets: ["${env:A}", "${file:\(file)}"] } },
                b: { adapter: "generic", verify: { basic: { username: "u", password: "${env:A}" } } },
              } }
            """.utf8), registry: BuiltinAdapters.registry, environment: ["A": "from-env"])
        #expect(config.sources.keys.sorted() == ["a", "b"])
        let reader = ConfigReader(environment: ["A": "from-env"])
        let secret = try #require(reader.secret(.string("${env:A}"), "x"))
        #expect(secret.value == "from-env")
        #expect("\(secret)" == "***")
        #expect(String(reflecting: secret) == "Secret(${env:A})")
        #expect(reader.secret(.string("${file:\(file)}"), "y")?.value == "from-a-file")
        #expect(reader.problems.isEmpty)
    }

    @Test("store.postgres: the URL from a secret reference; a password inline, SQLite keys beside it, bad values refused")
    func postgresStore() throws {
        func parse(_ store: String, env: [String: String] = [:]) throws -> RelayConfig {
            try RelayConfig.parse(Data("""
                { store: \(store), sources: { a: { adapter: "generic", verify: { none: true } } } }
                """.utf8), registry: BuiltinAdapters.registry, environment: env)
        }
        func problems(_ store: String, env: [String: String] = [:]) -> [ConfigProblem] {
            do { _ = try parse(store, env: env); return [] } catch let e as ConfigError { return e.problems } catch { return [] }
        }
        let url = "postgresql://relay:s3cr3t-pw@db.internal:5432/relay?sslmode=require"
        let config = try parse(#"{ postgres: { url: "${env:RELAY_DATABASE_URL}", pool: 4, lease: "20s", heartbeat: "5s" } }"#,
                               env: ["RELAY_DATABASE_URL": url])
        guard case .postgres(let o) = config.store else { Issue.record("not a postgres store: \(config.store)"); return }
        #expect(o.url.value == url && o.pool == 4 && o.lease == 20 && o.heartbeat == 5 && o.writers == 2)
        #expect(!"\(config.store)".contains("s3cr3t-pw"))
        // Without a password (PGPASSWORD, ~/.pgpass or a client certificate do that part), inline is fine.
        let open = try parse(#"{ postgres: { url: "host=/run/postgresql dbname=relay" } }"#)
        if case .postgres(let o2) = open.store { #expect(o2.url.value == "host=/run/postgresql dbname=relay") }

        let inline = problems(#"{ postgres: { url: "postgres://relay:hunter2@db/relay" } }"#)
        #expect(inline.contains { $0.path == "store.postgres.url" && $0.message.contains("holds a password") }, "\(inline)")
        #expect(!inline.description.contains("hunter2"))
        let kv = problems(#"{ postgres: { url: "host=db password=hunter2" } }"#)
        #expect(kv.contains { $0.path == "store.postgres.url" && $0.message.contains("holds a password") }, "\(kv)")
        let mixed = problems(#"{ sqlite: "x.db", postgres: { url: "${env:U}", pool: 0, heartbeat: "1s", lease: "soon", colour: 1 } }"#,
                             env: ["U": "host=db"])
        for (path, text) in [("store.sqlite", "belongs to the SQLite store"), ("store.postgres.pool", "at least 1"),
                             ("store.postgres.heartbeat", "at least 2s"), ("store.postgres.lease", "not a duration"),
                             ("store.postgres.colour", "unknown key")] {
            #expect(mixed.contains { $0.path == path && $0.message.contains(text) }, "no \(path) in \(mixed)")
        }
        let missing = problems(#"{ postgres: { url: "${env:RELAY_TEST_NO_SUCH_URL}" } }"#)
        #expect(missing.contains { $0.path == "store.postgres.url" && $0.message.contains("is not set") }, "\(missing)")
    }

    @Test("relay check: a PostgreSQL URL libpq cannot read is named, without its password")
    func checkPostgresURL() throws {
        let dir = try TempDir("relay-check")
        defer { dir.remove() }
        let path = try dir.write("relay.json5", """
            { store: { postgres: { url: "${env:RELAY_DATABASE_URL}" } },
              sources: { a: { adapter: "generic", verify: { none: true } } } }
            """)
        let (status, stdout, stderr) = try RelayProcess.run(["check", "--config", path],
                                                             environment: ["RELAY_DATABASE_URL": "postgresql://u:pw-xyz-123@db/relay?sslmod=require"],
                                                             dir: dir)
        #expect(status == 2, "stdout: \(stdout)\nstderr: \(stderr)")
        #expect(stderr.contains("store.postgres.url") && stderr.contains("sslmod"), "\(stderr)")
        #expect(!(stdout + stderr).contains("pw-xyz-123"))
        let (ok, out, err) = try RelayProcess.run(["check", "--config", path],
                                                  environment: ["RELAY_DATABASE_URL": "postgresql://u:pw-xyz-123@db/relay?sslmode=require"],
                                                  dir: dir)
        #expect(ok == 0, "stdout: \(out)\nstderr: \(err)")
        #expect(!(out + err).contains("pw-xyz-123"))
    }

    @Test("relay check lists every problem with its key path, exits 2 and prints no secret")
    func checkBroken() throws {
        let dir = try TempDir("relay-check")
        defer { dir.remove() }
        let path = try dir.write("relay.json5", Self.brokenConfig(dir: dir))
        let (status, stdout, stderr) = try RelayProcess.run(["check", "--config", path],
                                                             environment: ["KNOWN_SECRET": Self.knownSecret], dir: dir)
        #expect(status == 2, "stdout: \(stdout)\nstderr: \(stderr)")
        #expect(stderr.contains("\(path): \(Self.expectedProblems.count) problems"), "\(stderr)")
        let lines = stderr.split(separator: "\n").map(String.init)
        for (key, message) in Self.expectedProblems {
            #expect(lines.contains { $0.hasPrefix("  \(key): ") && $0.contains(message) },
                    "no line for \(key) in:\n\(stderr)")
        }
        #expect(!(stdout + stderr).contains(Self.knownSecret))
        #expect(!(stdout + stderr).contains("inline-secret-text-1234"))
    }

    @Test("relay check accepts a good configuration without printing its secrets, and the example config")
    func checkGood() throws {
        let dir = try TempDir("relay-check")
        defer { dir.remove() }
        let fileSecret = randomSecret("file_")
        let secretFile = try dir.write("shop.secret", fileSecret + "\n")
        let whsec = Preset.standardWebhooks.makeSecret().text
        let path = try dir.write("relay.json5", """
            {
              server: { listen: "127.0.0.1:0" },
              store: { sqlite: "\(dir.file("relay.db"))" },
              sources: {
                gh: { adapter: "generic", verify: { preset: "github", secrets: ["${env:GH_SECRET}", "${env:GH_OLD}"] } },
                shop: { adapter: "generic", verify: { preset: "shopify", secrets: "${file:\(secretFile)}" } },
                acme: { adapter: "generic", verify: { preset: "standard-webhooks", secrets: ["${env:WHSEC}"] },
                        map: { status: "$.s" }, statusMap: { "OK": "delivered" } },
              },
            }
            """)
        let secrets = ["GH_SECRET": randomSecret("gh_"), "GH_OLD": randomSecret("old_"), "WHSEC": whsec]
        let (status, stdout, stderr) = try RelayProcess.run(["check", "--config", path], environment: secrets, dir: dir)
        #expect(status == 0, "stdout: \(stdout)\nstderr: \(stderr)")
        #expect(stdout.contains("ok (3 sources, 0 destinations, 0 routes)"), "\(stdout)")
        for value in Array(secrets.values) + [fileSecret, String(whsec.dropFirst(6))] {
            #expect(!(stdout + stderr).contains(value))
        }
        // The same file with a secret missing from the environment: exit 2, the reference named, no value shown.
        let missing = try RelayProcess.run(["check", "--config", path],
                                           environment: ["GH_SECRET": secrets["GH_SECRET"]!, "WHSEC": whsec],
                                           dir: dir, label: "missing")
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("sources.gh.verify.secrets[1]: environment variable GH_OLD is not set"), "\(missing.stderr)")
        #expect(!(missing.stdout + missing.stderr).contains(secrets["GH_SECRET"]!))

        // The example configuration shipped in config/ checks out from the package root.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let example = try RelayProcess.run(["check", "--config", "config/relay.json5"], dir: dir, label: "example",
                                           currentDirectory: root)
        let text = example.stdout + example.stderr
        #expect(example.status == 0, "\(text)")
        #expect(text.contains("ok (2 sources"), "\(text)")
        for secretFile in ["config/secrets/github-style.secret", "config/secrets/vendor-acme.whsec"] {
            let value = readText(root + "/" + secretFile).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(!value.isEmpty && !text.contains(value))
        }
    }

    @Test("relay check: unreadable file, invalid JSON5 (its line and column) and a missing --config are exit 2")
    func checkUsage() throws {
        let dir = try TempDir("relay-check")
        defer { dir.remove() }
        let absent = try RelayProcess.run(["check", "--config", dir.file("nope.json5")], dir: dir, label: "absent")
        #expect(absent.status == 2 && absent.stderr.contains("cannot read configuration file"), "\(absent.stderr)")
        let bad = try dir.write("bad.json5", "{ sources: { a: { adapter: \"generic\", } ")
        let invalid = try RelayProcess.run(["check", "--config", bad], dir: dir, label: "invalid")
        #expect(invalid.status == 2 && invalid.stderr.contains("line 1, column 40: expected ',' or '}' after an object member, found the end of the file (the '{' at line 1, column 12 is never closed)"),
                "\(invalid.stderr)")
        let usage = try RelayProcess.run(["check"], dir: dir, label: "usage")
        #expect(usage.status == 2 && usage.stderr.contains("--config FILE is required"), "\(usage.stderr)")
        let version = try RelayProcess.run(["version"], dir: dir, label: "version")
        #expect(version.status == 0 && version.stdout.hasPrefix("relay "), "\(version.stdout)")
    }
}
