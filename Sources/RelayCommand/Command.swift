import Adapters
import Foundation
import Relay

enum Command {
    static let version = "0.1.0"

    static let usage = """
        relay: webhook relay and protocol-translation gateway

        usage:
          relay serve --config FILE     receive, verify and record webhooks (SIGTERM/SIGINT stop gracefully)
          relay check --config FILE     validate a configuration; lists every problem with its key path
          relay version                 print the version

        environment:
          RELAY_LOG_LEVEL               debug, info, warn or error (overrides log.level)
        """

    static func run(_ args: [String]) -> Int32 {
        guard let verb = args.first else {
            fail(usage)
            return 2
        }
        let rest = Array(args.dropFirst())
        if rest.contains("--help") || rest.contains("-h") || verb == "help" || verb == "--help" || verb == "-h" {
            print(usage)
            return 0
        }
        switch verb {
        case "version", "--version":
            print("relay \(version)")
            return 0
        case "check":
            guard let path = configPath(rest), let config = loadConfig(path) else { return 2 }
            print("\(path): ok (\(plural(config.sources.count, "source")), \(plural(config.destinations.count, "destination")), \(plural(config.routes.count, "route")))")
            return 0
        case "serve":
            guard let path = configPath(rest) else { return 2 }
            return serve(configPath: path)
        default:
            fail("relay: unknown command \"\(verb)\"\n\n\(usage)")
            return 2
        }
    }

    static func configPath(_ args: [String]) -> String? {
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "--config" || a == "-c", i + 1 < args.count { return args[i + 1] }
            if a.hasPrefix("--config=") { return String(a.dropFirst("--config=".count)) }
            i += 1
        }
        fail("relay: --config FILE is required")
        return nil
    }

    /// The configuration, or nil after printing every problem with its key path on stderr.
    static func loadConfig(_ path: String) -> RelayConfig? {
        do {
            return try RelayConfig.load(path: path, registry: BuiltinAdapters.registry)
        } catch let error as ConfigError {
            fail("\(path): \(plural(error.problems.count, "problem"))")
            for p in error.problems { fail("  \(p)") }
        } catch {
            fail("\(path): \(error)")
        }
        return nil
    }

    static func plural(_ n: Int, _ word: String) -> String { "\(n) \(word)\(n == 1 ? "" : "s")" }

    static func serve(configPath path: String) -> Int32 {
        guard let config = loadConfig(path) else { return 2 }
        var level = config.logLevel
        if let env = ProcessInfo.processInfo.environment["RELAY_LOG_LEVEL"] {
            guard let l = LogLevel(name: env) else {
                fail("RELAY_LOG_LEVEL: \"\(env)\" is not one of debug, info, warn, error")
                return 2
            }
            level = l
        }
        let log = Logger(level: level)
        do {
            let service = try RelayService(config: config, log: log)
            try service.start()
            service.runUntilSignalled()
            return 0
        } catch {
            log.error("cannot start", ["error": "\(error)"])
            return 1
        }
    }

    static func fail(_ message: String) {
        FileHandle.standardError.write(Data((message + "\n").utf8))
    }
}
