import Adapters
import Foundation
@testable import Relay
import Simulator
import Testing

/// The configuration files shipped in config/ (config/relay.json5, config/demo.json5, config/partners/*.json5), read
/// as `relay serve` reads them.
@Suite("config/ files")
struct ConfigFilesTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    /// Every .json5 under config/, relative to the repo root, sorted.
    static func files() -> [String] {
        var out: [String] = []
        for dir in ["config", "config/partners"] {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: root + "/" + dir)) ?? []
            out += names.filter { $0.hasSuffix(".json5") }.map { dir + "/" + $0 }
        }
        return out.sorted()
    }

    /// `file` loaded as `relay serve` run from the repo root loads it, with each `${env:...}` set.
    static func load(_ file: String) throws -> RelayConfig {
        let text = readText(root + "/" + file)
        // ${file:config/...} is relative to the working directory, the repo root for `make run`.
        let rooted = text.replacingOccurrences(of: "${file:config/", with: "${file:\(root)/config/")
        return try RelayConfig.parse(Data(rooted.utf8), registry: BuiltinAdapters.registry,
                                     environment: PartnerConfigTests.environment(for: text))
    }

    @Test("no two files in config/ share a database or a port, and none takes a stand-in's port: any two run side by side")
    func ownDatabaseAndPorts() throws {
        let files = Self.files()
        #expect(files.contains("config/relay.json5") && files.filter { $0.hasPrefix("config/partners/") }.count >= 6,
                "\(files)")
        var databases: [String: String] = [:]   // path -> file
        var ports: [UInt16: String] = [:]       // port -> "file server.listen"
        // The stand-ins' default ports: relay simulate sink and every provider's.
        var standIns: [UInt16: String] = [SinkOptions().port: "relay simulate sink"]
        for s in BuiltinAdapters.simulators { standIns[s.port] = "relay simulate \(s.name)" }
        for file in files {
            let config: RelayConfig
            do { config = try Self.load(file) } catch {
                Issue.record("\(file): \(error)")
                continue
            }
            guard case .sqlite(let o) = config.store else {
                Issue.record("\(file): the examples store in SQLite")
                continue
            }
            let db = URL(fileURLWithPath: o.path, relativeTo: URL(fileURLWithPath: Self.root + "/")).standardizedFileURL.path
            #expect(databases[db] == nil, "\(file) and \(databases[db] ?? "") both store in \(o.path)")
            databases[db] = file
            // Every file under config/ stores under data/ (git ignores it).
            #expect(o.path.hasPrefix("data/") && o.path.hasSuffix(".db"), "\(file): store.sqlite \(o.path)")
            var listeners = [("server.listen", config.server.http.port)]
            if let admin = config.admin { listeners.append(("admin.listen", admin.http.port)) }
            for (key, port) in listeners {
                #expect(port != 0, "\(file): \(key) has no fixed port")
                #expect(ports[port] == nil, "\(file) \(key) and \(ports[port] ?? "") both use port \(port)")
                #expect(standIns[port] == nil, "\(file) \(key) takes \(standIns[port] ?? "")'s port \(port)")
                ports[port] = "\(file) \(key)"
            }
        }
        #expect(databases.count == files.count)
    }

    @Test("config/relay.json5 (make run) listens on loopback only: the webhook listener and the admin API")
    func makeRunIsLoopback() throws {
        let config = try Self.load("config/relay.json5")
        #expect(config.server.http.host == "127.0.0.1" && config.server.http.port == 8080)
        let admin = try #require(config.admin)
        #expect(admin.http.host == "127.0.0.1" && admin.http.port == 9090)
        // The Makefile's run target serves that file, and binds elsewhere only when told to (LISTEN=).
        let makefile = readText(Self.root + "/Makefile")
        #expect(makefile.contains("serve --config config/relay.json5 $(if $(LISTEN),--listen \"$(LISTEN)\")"))
    }
}
