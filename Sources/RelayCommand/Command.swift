import Adapters
import Foundation
import Relay
import Simulator

enum Command {
    static let version = RelayVersion.current

    static let usage = """
        relay: webhook relay and protocol-translation gateway

        usage:
          relay serve --config FILE [--listen HOST:PORT]
                                        receive, verify and record webhooks (SIGTERM/SIGINT stop gracefully;
                                        SIGHUP reloads the file, keeping the running config if it has problems)
          relay check --config FILE     validate a configuration; lists every problem with its key path
          relay simulate sink [--listen HOST:PORT] [--fault SPEC]...
                                        a stand-in receiver that records requests and injects faults
          relay simulate PROVIDER [--listen HOST:PORT] [--fault SPEC]...
                                        a stand-in of a provider's update endpoint
                                        (relay simulate --help for the details)
          relay sign mastercard-oauth1 --consumer-key K --key FILE [--password P] --method M --url U
                     [--body-file F] [--nonce N --timestamp T]
                                        print the OAuth 1.0a Authorization header the relay would send
                                        (relay sign with no arguments lists every option)
          relay send SOURCE --config FILE --body FILE
                                        sign a test webhook with the source's own scheme and post it to the relay
          relay translate --config FILE --destination NAME --event FILE
                                        show the exact request a destination would be sent (credentials masked)
          relay capillary export --config FILE --source NAME [--put --redemption-id ID --brand-id ID]
                                        the vendor redemption Capillary should hold to call a relay source
          relay events [show ID] ...    events from the admin API (filters, --json)
          relay deliveries ...          deliveries by state or destination (--state dead)
          relay replay ID | --state dead [--yes]
                                        queue a delivery again, or every match of a filter (dry run without --yes)
                                        (relay events --help: every option)
          relay version                 print the version
          relay help [COMMAND]          this text, or COMMAND's own usage (as relay COMMAND --help prints it)

        exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error (each command's --help says more)

        environment:
          RELAY_LOG_LEVEL               debug, info, warn or error (overrides log.level)
        """

    static let serveUsage = """
        relay serve: receive, verify and record webhooks, and deliver them

        usage:
          relay serve --config FILE [--listen HOST:PORT]

          Serves FILE's configuration: the webhook listener (server.listen), the admin API (admin.listen: the
          relay events/deliveries/replay commands, /metrics, /healthz, /readyz) and the deliveries. Logs are JSON
          lines on stderr. SIGTERM/SIGINT stop it gracefully: no new connections, requests and delivery attempts
          in flight finish and are recorded. SIGHUP reads FILE again and applies its sources, routes and
          destinations; a file with problems is refused and the running configuration stays (listeners, store
          and admin need a restart).

          --config FILE, -c FILE        the configuration (JSON5); relative paths in it (${file:...},
                                        store.sqlite) are relative to the working directory
          --listen HOST:PORT            listen there instead of server.listen (also after a SIGHUP), e.g.
                                        0.0.0.0:8080 for every interface, 127.0.0.1:0 for any free port

        exit codes: 0 stopped by SIGTERM/SIGINT, 1 a runtime failure (cannot listen, cannot open the store, the
        store failed while serving), 2 bad arguments or a configuration with problems (each listed with its key
        path on stderr)

        environment:
          RELAY_LOG_LEVEL               debug, info, warn or error (overrides log.level)
        """

    static let checkUsage = """
        relay check: validate a configuration without serving it

        usage:
          relay check --config FILE

          Reads FILE as relay serve does (unknown keys, adapters and their settings, status maps, routes, secret
          references resolved from the environment and files, key files, the store's settings) and lists every
          problem with its key path on stderr; valid, it prints a summary (sources, destinations, routes) on
          stdout. Nothing is bound and nothing is written.

          --config FILE, -c FILE        the configuration (JSON5)

        exit codes: 0 valid, 2 bad arguments or a configuration with problems
        """

    static let versionUsage = """
        relay version: print the version ("relay \(version)") on stdout

        usage:
          relay version
          relay --version

        exit codes: 0 (2 for an argument it does not take)
        """

    /// Each command's own usage, as `relay COMMAND --help` and `relay help COMMAND` print it. A new command adds
    /// its entry here (and a line to `usage`); a command with sub-commands can answer per sub-command in `help`.
    static var usages: [String: String] {
        ["serve": serveUsage, "check": checkUsage, "version": versionUsage, "sign": Sign.overview,
         "simulate": simulateUsage, "events": AdminCommands.usage, "deliveries": AdminCommands.usage,
         "replay": AdminCommands.usage, "send": Try.sendUsage, "translate": Try.translateUsage,
         "capillary": CapillaryExport.usage]
    }

    /// The usage `relay VERB ... --help` prints (`rest`: the arguments after VERB), nil for an unknown VERB.
    static func help(_ verb: String, _ rest: [String]) -> String? {
        if verb == "sign", let scheme = rest.first(where: { !$0.hasPrefix("-") }) {
            return Sign.usages[scheme] ?? Sign.overview
        }
        return usages[verb == "--version" ? "version" : verb]
    }

    static var simulateUsage: String { simulateSinkUsage + "\n\n" + providersUsage }

    static var providersUsage: String {
        var text = """
            relay simulate PROVIDER: a stand-in of that provider's update endpoint, on its own port. It checks each
            request as the provider documents it (path, method, required fields, form vs JSON, the form of the auth
            header) and answers in the provider's success and error formats; it records requests and takes --fault
            rules like the sink (faults apply first, in the provider's formats: slow holds the stand-in's own answer;
            status, retryAfter and hang answer with the provider's error envelope unless the rule gives a body).
            docs/adapters.md and docs/adapters/PROVIDER.md say what each checks.

            """
        for s in BuiltinAdapters.simulators {
            text += "  \(s.name) (port \(s.port))\n      \(s.summary)\n"
        }
        text += """

            environment:
              RELAY_SIM_MASTERCARD_PUBLIC_KEY   PEM public key or certificate: the Mastercard stand-ins verify OAuth 1.0a
                                                signatures and body hashes with it (unset: the header's form only)
              RELAY_SIM_CAPILLARY_KEY, RELAY_SIM_CAPILLARY_SECRET, RELAY_SIM_CAPILLARY_TTL, RELAY_SIM_CAPILLARY_STATUSES
                                                the Capillary stand-in's token credentials, token lifetime (s), and the
                                                organisation's allowed status names (comma list)
              RELAY_SIM_OAUTH2_CLIENTS (id:secret,...), RELAY_SIM_OAUTH2_TTL, RELAY_SIM_OAUTH2_JWKS_KEY, RELAY_SIM_OAUTH2_AUDIENCE
                                                the OAuth2 token endpoint's clients, token lifetime (s), and the public key
                                                that private_key_jwt assertions must verify with
            """
        return text
    }

    static let simulateSinkUsage = """
        relay simulate sink: a stand-in receiver for delivery tests and demos

        usage:
          relay simulate sink [--listen HOST:PORT] [--fault SPEC]... [--keep N]

          Accepts any method and path, records every request in memory (the last N, default 100000; all are
          counted) and answers 200 {"ok":true}, unless a fault rule applies. Logs one JSON line per request
          (no bodies); SIGTERM/SIGINT stop it gracefully (held answers go out first).

          --listen HOST:PORT            default 127.0.0.1:9099 (port 0: any free port, logged at start)
          --fault SPEC                  a fault rule, in order (the first matching one that has not expired applies)
          --keep N                      recorded requests kept in memory (default 100000)

        fault SPEC: a JSON rule ('{"action":"status","status":503,"times":2}') or list, or ACTION[:ARG][,KEY=VALUE]...
          status:503                    answer 503
          retryAfter:2[,httpDate]       answer 429 with Retry-After: 2 (httpDate: as an HTTP date 2 s ahead)
          hang[:60]                     hold the answer 60 s (the client gives up first), then 504
          slow:1.5                      answer normally after 1.5 s (a provider stand-in: its own answer)
          reset                         close the connection without an answer
          json:200,body={"error":"card_declined"}
                                        answer 200 with that JSON body (a provider's business error)
          keys: path=/prefix (requests whose path starts with it), times=N (the next N matching requests, then
          expire), status=N, seconds=S, header=Name:value (repeatable), body=... (last: takes the rest of the spec)

        control endpoints (JSON; not recorded):
          GET  /_sink/requests?path=/x&since=SEQ&limit=N    recorded requests, oldest first, bodies as text
          GET  /_sink/stats                                 counts per path and per status answered
          GET  /_sink/faults                                the rules in force (times: what is left)
          POST /_sink/faults                                a JSON list of rules replacing them
          POST /_sink/reset                                 forget requests and counts, restore the --fault rules

        environment:
          RELAY_LOG_LEVEL               debug, info, warn or error (default info)
        """

    static func run(_ args: [String]) -> Int32 {
        guard let verb = args.first else {
            fail(usage)
            return 2
        }
        let rest = Array(args.dropFirst())
        if verb == "help" || verb == "--help" || verb == "-h" {
            guard let topic = rest.first else {
                print(usage)
                return 0
            }
            guard let text = help(topic, Array(rest.dropFirst())) else {
                fail("relay help: unknown command \"\(topic)\" (there is: \(usages.keys.sorted().joined(separator: ", ")))")
                return 2
            }
            print(text)
            return 0
        }
        if rest.contains("--help") || rest.contains("-h"), let text = help(verb, rest) {
            print(text)
            return 0
        }
        switch verb {
        case "version", "--version":
            guard let _ = options(rest, command: "version", valued: [:]) else { return 2 }
            print("relay \(version)")
            return 0
        case "check":
            guard let o = options(rest, command: "check", valued: ["--config": "--config", "-c": "--config"]),
                  let path = required(o, "--config", command: "check", "--config FILE"),
                  let config = loadConfig(path) else { return 2 }
            let storeProblems = Stores.problems(config.store)
            if !storeProblems.isEmpty {
                fail("\(path): \(plural(storeProblems.count, "problem"))")
                for p in storeProblems { fail("  \(p)") }
                return 2
            }
            print("\(path): ok (\(plural(config.sources.count, "source")), \(plural(config.destinations.count, "destination")), \(plural(config.routes.count, "route")))")
            return 0
        case "serve":
            guard let o = options(rest, command: "serve",
                                  valued: ["--config": "--config", "-c": "--config", "--listen": "--listen"]),
                  let path = required(o, "--config", command: "serve", "--config FILE") else { return 2 }
            var listen: (host: String, port: UInt16)?
            if let text = o["--listen"] {
                guard let parsed = RelayConfig.parseListen(text) else {
                    fail("relay serve: --listen \"\(text)\" is not HOST:PORT (e.g. 127.0.0.1:8080, 0.0.0.0:8080, [::]:8080)")
                    return 2
                }
                listen = parsed
            }
            return serve(configPath: path, listen: listen)
        case "simulate":
            return simulate(rest)
        case "sign":
            return Sign.run(rest)
        case "send":
            return Try.send(rest)
        case "translate":
            return Try.translate(rest)
        case "capillary":
            return CapillaryExport.run(rest)
        case "events":
            return AdminCommands.events(rest)
        case "deliveries":
            return AdminCommands.deliveries(rest)
        case "replay":
            return AdminCommands.replay(rest)
        default:
            fail("relay: unknown command \"\(verb)\"\n\n\(usage)")
            return 2
        }
    }

    /// A command's options, each taken once: `valued` maps each name it takes (`--config`, `-c`) to the key it is
    /// returned under; `--name VALUE` and `--name=VALUE` both work. nil, after naming the problem on stderr, for an
    /// option the command does not take, a stray argument, a missing value or an option given twice.
    static func options(_ args: [String], command: String, valued: [String: String]) -> [String: String]? {
        func problem(_ message: String) -> [String: String]? {
            fail("relay \(command): \(message) (relay \(command) --help lists its options)")
            return nil
        }
        let o: Options
        do {
            o = try Options(args, valued: Set(valued.values), aliases: valued.filter { $0.key != $0.value })
        } catch {
            if case .unknown(let arg) = error.kind { return problem("unknown option \"\(arg)\"") }
            return problem(error.description)
        }
        if let stray = o.positional.first { return problem("unexpected argument \"\(stray)\"") }
        if let name = o.repeated { return problem("\(name) given twice") }
        return o.values.compactMapValues(\.last)
    }

    /// `options[key]`, or nil after saying that `shown` is required.
    static func required(_ options: [String: String], _ key: String, command: String, _ shown: String) -> String? {
        if let v = options[key] { return v }
        fail("relay \(command): \(shown) is required (relay \(command) --help)")
        return nil
    }

    /// The configuration, or nil after printing every problem with its key path on stderr. `showLines`: a JSON5
    /// syntax error quotes its line (`relay check`, a person at a terminal); `relay serve`'s stderr is a log, where
    /// a line that holds an inline secret must not go.
    static func loadConfig(_ path: String, showLines: Bool = true) -> RelayConfig? {
        do {
            return try RelayConfig.load(path: path, registry: BuiltinAdapters.registry, showLines: showLines)
        } catch let error as ConfigError {
            fail("\(path): \(plural(error.problems.count, "problem"))")
            // A problem may run over several lines (a JSON5 error shows its line and a caret): all indented.
            for p in error.problems { fail("  " + p.description.replacingOccurrences(of: "\n", with: "\n  ")) }
        } catch {
            fail("\(path): \(error)")
        }
        return nil
    }

    /// A logger at `RELAY_LOG_LEVEL`, else `level`; nil (after saying why) when the variable is not a level.
    static func logger(default level: LogLevel) -> Logger? {
        guard let env = ProcessInfo.processInfo.environment["RELAY_LOG_LEVEL"] else { return Logger(level: level) }
        guard let l = LogLevel(name: env) else {
            fail("RELAY_LOG_LEVEL: \"\(env)\" is not one of debug, info, warn, error")
            return nil
        }
        return Logger(level: l)
    }

    static func plural(_ n: Int, _ word: String) -> String { "\(n) \(word)\(n == 1 ? "" : "s")" }

    /// `relay serve`: `listen`, when given, replaces `server.listen` (at start and in every reload).
    static func serve(configPath path: String, listen: (host: String, port: UInt16)? = nil) -> Int32 {
        // Before any thread starts: SIGTERM/SIGINT/SIGHUP stay pending until the service waits for them, so a
        // signal sent the moment the listeners are up still stops (or reloads) it in order.
        ProcessSignals.block()
        @Sendable func overridden(_ config: RelayConfig) -> RelayConfig {
            guard let listen else { return config }
            var c = config
            c.server.http.host = listen.host
            c.server.http.port = listen.port
            return c
        }
        guard let config = loadConfig(path, showLines: false).map(overridden) else { return 2 }
        guard let log = logger(default: config.logLevel) else { return 2 }
        do {
            let service = try RelayService(config: config, log: log, store: try Stores.open(config.store, log: log))
            try service.start()
            // SIGHUP: read the file again; a configuration with problems is refused and the running one stays.
            return service.runUntilSignalled(reload: {
                do {
                    return .success(overridden(try RelayConfig.load(path: path, registry: BuiltinAdapters.registry, showLines: false)))
                } catch let error as ConfigError {
                    return .failure(error)
                } catch {
                    return .failure(ConfigError(problems: [ConfigProblem(path: "", message: "\(error)")]))
                }
            })
        } catch {
            log.error("cannot start", ["error": "\(error)"])
            return 1
        }
    }

    static func simulate(_ args: [String]) -> Int32 {
        ProcessSignals.block()
        let names = ["sink"] + BuiltinAdapters.simulators.map(\.name)
        guard let which = args.first, names.contains(which) else {
            fail("relay simulate: \(args.first.map { "unknown simulator \"\($0)\"" } ?? "which one?") (there is: \(names.joined(separator: ", ")))\n\n\(simulateUsage)")
            return 2
        }
        let options: SinkOptions
        do {
            options = try SinkOptions(arguments: Array(args.dropFirst()))
        } catch {
            fail("relay simulate \(which): \(error)")
            return 2
        }
        var withResponder = options
        if let simulator = BuiltinAdapters.simulators.first(where: { $0.name == which }) {
            withResponder.responder = simulator.make()
            if !args.contains(where: { $0 == "--listen" || $0.hasPrefix("--listen=") }) { withResponder.port = simulator.port }
        }
        guard let log = logger(default: .info) else { return 2 }
        let sink = Sink(options: withResponder, log: log)
        do {
            try sink.start()
        } catch {
            log.error("cannot start", ["error": "\(error)"])
            return 1
        }
        sink.runUntilSignalled()
        return 0
    }

    static func fail(_ message: String) {
        FileHandle.standardError.write(Data((message + "\n").utf8))
    }
}
