import Foundation
@testable import Relay
import Simulator
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The command line: each command's own `--help`, `relay help COMMAND`, unknown options, `serve --listen`.
@Suite("relay commands")
struct CommandTests {
    /// Each command's help: the arguments, and text only its own usage has.
    static let helps: [(args: [String], first: String, has: [String])] = [
        (["serve", "--help"], "relay serve:", ["--config FILE", "--listen HOST:PORT", "SIGHUP", "exit codes:"]),
        (["check", "--help"], "relay check:", ["--config FILE", "key path", "exit codes:"]),
        (["sign", "--help"], "relay sign:", ["mastercard-oauth1", "exit codes:"]),
        (["sign", "mastercard-oauth1", "--help"], "relay sign mastercard-oauth1:", ["--consumer-key", "--key FILE", "Exit codes"]),
        (["version", "--help"], "relay version:", ["relay --version", "exit codes:"]),
        (["serve", "-h"], "relay serve:", ["--listen HOST:PORT"]),
        (["serve", "--config", "x.json5", "--help"], "relay serve:", ["--listen HOST:PORT"]),
        (["help", "serve"], "relay serve:", ["--listen HOST:PORT"]),
        (["help", "check"], "relay check:", ["--config FILE"]),
        (["help", "sign", "mastercard-oauth1"], "relay sign mastercard-oauth1:", ["--consumer-key"]),
        (["help", "version"], "relay version:", ["relay --version"]),
        (["help"], "relay: webhook relay", ["relay serve --config FILE", "relay help [COMMAND]"]),
    ]

    @Test("serve, check, sign (and sign mastercard-oauth1), version: each --help prints its own usage, exit 0; so does relay help COMMAND")
    func ownHelp() throws {
        let dir = try TempDir("relay-help")
        defer { dir.remove() }
        var firstLines: [String: String] = [:]
        for (i, h) in Self.helps.enumerated() {
            let r = try RelayProcess.run(h.args, dir: dir, label: "help\(i)")
            #expect(r.status == 0, "relay \(h.args.joined(separator: " ")): exit \(r.status)\n\(r.stderr)")
            #expect(r.stdout.hasPrefix(h.first), "relay \(h.args.joined(separator: " ")) printed:\n\(r.stdout)")
            for text in h.has {
                #expect(r.stdout.contains(text), "relay \(h.args.joined(separator: " ")): no \"\(text)\" in\n\(r.stdout)")
            }
            firstLines[h.args.joined(separator: " ")] = String(r.stdout.prefix { $0 != "\n" })
        }
        // Not the global usage any more: five different texts.
        let distinct = Set(["serve --help", "check --help", "sign --help", "sign mastercard-oauth1 --help", "version --help", "help"]
            .compactMap { firstLines[$0] })
        #expect(distinct.count == 6, "\(firstLines)")
        let viaHelp = try RelayProcess.run(["help", "serve"], dir: dir, label: "help-serve")
        let viaFlag = try RelayProcess.run(["serve", "--help"], dir: dir, label: "serve-help")
        #expect(viaHelp.stdout == viaFlag.stdout)
    }

    @Test("an option a command does not take is an error naming it (exit 2); so are a stray argument and a missing value")
    func unknownOptions() throws {
        let dir = try TempDir("relay-options")
        defer { dir.remove() }
        let config = try dir.write("relay.json5", relayConfigText(dbPath: dir.file("relay.db"), sources: DeliveryTests.sources))
        let cases: [(args: [String], names: String)] = [
            (["serve", "--config", config, "--bogus"], "\"--bogus\""),
            (["serve", "--listn", "127.0.0.1:0", "--config", config], "\"--listn\""),
            (["serve", "--config"], "--config needs a value"),
            (["serve", "--config", config, "--listen", "nowhere"], "\"nowhere\" is not HOST:PORT"),
            (["check", "--config", config, "--verbose"], "\"--verbose\""),
            (["check", "--config=\(config)", "extra"], "unexpected argument \"extra\""),
            (["check", "--config", config, "-c", config], "given twice"),
            (["version", "--short"], "\"--short\""),
            (["sign", "--consumer-key", "k"], "\"--consumer-key\""),
            (["sign", "mastercard-oauth1", "--consumer-kee", "k"], "--consumer-kee"),
            (["help", "nope"], "\"nope\""),
        ]
        for (i, c) in cases.enumerated() {
            let r = try RelayProcess.run(c.args, dir: dir, label: "opt\(i)")
            #expect(r.status == 2, "relay \(c.args.joined(separator: " ")): exit \(r.status)\n\(r.stdout)\(r.stderr)")
            #expect(r.stderr.contains(c.names), "relay \(c.args.joined(separator: " ")): stderr does not name it:\n\(r.stderr)")
            #expect(!r.stderr.contains("relay listening"))
        }
        // The same config with only known options is fine.
        let ok = try RelayProcess.run(["check", "-c", config], dir: dir, label: "check-ok")
        #expect(ok.status == 0, "\(ok.stderr)")
    }

    /// A loopback port nothing listens on (bound once, then released).
    static func freePort() throws -> UInt16 {
        let probe = Sink(options: SinkOptions(host: "127.0.0.1", port: 0))
        try probe.start()
        let port = probe.port
        probe.stop()
        return port
    }

    @Test("serve --listen HOST:PORT replaces server.listen, and a SIGHUP keeps it (no 'needs a restart')")
    func listenOverride() throws {
        let dir = try TempDir("relay-listen")
        defer { dir.remove() }
        let config = try dir.write("relay.json5", relayConfigText(dbPath: dir.file("relay.db"), sources: DeliveryTests.sources))
        let port = try Self.freePort()
        let relay = try RelayProcess(["serve", "--config", config, "--listen", "127.0.0.1:\(port)"], dir: dir)
        defer { relay.killIfRunning() }
        #expect(try relay.waitUntilReady() == port)
        #expect(relay.logLine("relay listening")?["port"]?.numberValue == Double(port))
        relay.signal(SIGHUP)
        let reloaded = try relay.waitForLog("configuration reloaded")
        #expect(reloaded["notes"]?.stringValue?.contains("server") == false, "\(reloaded.jsonString())")
        #expect((try? relay.client.get("/healthz").status) == 200)
        relay.signal(SIGTERM)
        #expect(try relay.waitForExit().status == 0)
    }
}
