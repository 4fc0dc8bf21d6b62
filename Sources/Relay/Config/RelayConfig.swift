import Foundation

/// Where the relay listens and how it treats connections.
public struct ServerSettings: Sendable {
    public var http = HTTPServerOptions()
    /// How long a stop (SIGTERM, SIGINT) waits for requests in flight.
    public var shutdownTimeout: Double = 10
    /// The public base URL senders post to (`https://relay.example.com`), used for `{uri}` in signatures.
    public var publicURL: String?
}

public struct SourceSettings: Sendable {
    public var name: String
    public var adapterName: String
    public var verifier: any Verifier
    public var idempotency: IdempotencyRule?
    public var adapter: any SourceAdapter
    /// What happens to a webhook whose status no map covers (`unmappedStatus`): kept (default) or refused.
    public var unmappedStatus: UnmappedStatusPolicy = .keep
    /// The vocabulary its statuses are named in (for the fallback of an added status).
    public var statuses = StatusVocabulary()

    public init(name: String, adapterName: String, verifier: any Verifier, idempotency: IdempotencyRule?,
                adapter: any SourceAdapter, unmappedStatus: UnmappedStatusPolicy = .keep,
                statuses: StatusVocabulary = StatusVocabulary()) {
        self.name = name
        self.adapterName = adapterName
        self.verifier = verifier
        self.idempotency = idempotency
        self.adapter = adapter
        self.unmappedStatus = unmappedStatus
        self.statuses = statuses
    }
}

/// A source's `unmappedStatus`: a webhook whose provider status no map covers is stored without a canonical
/// status and marked (`keep`, the default: nothing is lost), or answered 422 so the sender keeps it (`refuse`).
/// Either way it is logged (warn, with the raw value) and counted (`relay_unmapped_statuses_total{source}`).
public enum UnmappedStatusPolicy: String, Sendable, CaseIterable {
    case keep, refuse
}

public struct DestinationSettings: Sendable {
    public var name: String
    public var adapterName: String
    public var adapter: any DestinationAdapter
    public var policy: DeliveryPolicy
    /// Where identifiers its answers yield are linked (`correlationScope`, default: the name).
    public var correlationScope: String? = nil
    /// Credentials for every request (`auth`) and the client certificate (`tls`).
    public var auth: (any OutboundAuth)? = nil
    public var clientTLS: ClientTLS? = nil
}

public struct RouteSettings: Sendable {
    public var from: String
    public var to: [String]
    public var when: RouteCondition

    public init(from: String, to: [String], when: RouteCondition = RouteCondition()) {
        self.from = from
        self.to = to
        self.when = when
    }
}

/// The whole configuration, typed and checked.
public struct RelayConfig: Sendable {
    public var server = ServerSettings()
    public var store = StoreSettings.sqlite(SQLiteStoreOptions(path: "data/relay.db"))
    /// Which subject keys identify a subject and each source's scope (`correlation.keys`, `correlationScope`).
    public var correlation = CorrelationSettings()
    public var logLevel: LogLevel = .info
    /// The outbound HTTP client's settings (`client:`).
    public var client = HTTPClientOptions()
    public var sources: [String: SourceSettings] = [:]
    public var destinations: [String: DestinationSettings] = [:]
    public var routes: [RouteSettings] = []
    /// The status names: the built-in ones and those `statuses:` adds.
    public var statuses = StatusVocabulary()
    /// The admin API's listener and token (`admin:`, default 127.0.0.1:9090 without a token); nil (`admin: false`):
    /// no admin API.
    public var admin: AdminSettings? = AdminSettings()
    /// Trace export (`tracing:`); nil: none (trace context is still propagated).
    public var tracing: TracingSettings?

    /// Loads and checks a JSON5 file. Throws `ConfigError` listing every problem with its key path.
    /// `showLines`: whether a JSON5 syntax error quotes the file's line (false where problems go to a log: the line
    /// may hold a secret typed inline).
    public static func load(path: String, registry: AdapterRegistry,
                            environment: [String: String] = ProcessInfo.processInfo.environment,
                            showLines: Bool = true) throws -> RelayConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError(problems: [ConfigProblem(path: "", message: "cannot read configuration file \(path)")])
        }
        return try parse(data, registry: registry, environment: environment, showLines: showLines)
    }

    /// Reads and checks a configuration. A JSON5 syntax error is one problem giving line, column and the line
    /// with a caret under the column; a key given twice in one object is one naming both lines at its key path.
    public static func parse(_ data: Data, registry: AdapterRegistry,
                             environment: [String: String] = ProcessInfo.processInfo.environment,
                             showLines: Bool = true) throws -> RelayConfig {
        let tree: JSONValue
        do {
            tree = try JSON5.parse(data, showLines: showLines)
        } catch {
            throw ConfigError(problems: [error.problem])
        }
        let reader = ConfigReader(environment: environment)
        let config = read(tree, reader: reader, registry: registry)
        if !reader.problems.isEmpty { throw ConfigError(problems: reader.problems) }
        return config
    }

    /// `store: { sqlite: PATH, synchronous, maxBatch, commitDelay, maxSizeBytes }` or
    /// `store: { postgres: { url, pool, writers, maxBatch, lease, heartbeat, connectTimeout } }`.
    static func storeSettings(_ s: [String: JSONValue], reader r: ConfigReader) -> StoreSettings {
        if let pg = s["postgres"] {
            if let other = s.keys.sorted().first(where: { $0 != "postgres" }) {
                r.problem(ConfigReader.join("store", other), "belongs to the SQLite store; with store.postgres, set PostgreSQL's options inside it")
            }
            var o = PostgresStoreOptions(url: Secret(value: "", reference: ""))
            guard let p = r.object(pg, "store.postgres", keys: ["url", "pool", "writers", "maxBatch", "lease", "heartbeat", "connectTimeout"]) else {
                return .postgres(o)
            }
            let path = "store.postgres"
            if let raw = p["url"]?.stringValue, raw.trimmingCharacters(in: .whitespaces).hasPrefix("${"),
               raw.trimmingCharacters(in: .whitespaces).hasSuffix("}") {
                if let secret = r.secret(p["url"], path + ".url") { o.url = secret }
            } else if let url = r.string(p, "url", path, required: true) {
                if PostgresStoreOptions.hasPassword(url) && !(p["url"]?.stringValue ?? "").contains("${") {
                    r.problem(path + ".url", "holds a password: put the whole URL in a secret, \"${env:RELAY_DATABASE_URL}\" or \"${file:/run/secrets/relay-db-url}\", or the password in PGPASSWORD / ~/.pgpass")
                } else {
                    o.url = Secret(value: url, reference: p["url"]?.stringValue ?? url)
                }
            }
            if let v = r.int(p, "pool", path, min: 1, max: 64) { o.pool = v }
            if let v = r.int(p, "writers", path, min: 1, max: 16) { o.writers = v }
            if let v = r.int(p, "maxBatch", path, min: 1, max: 10_000) { o.maxBatch = v }
            if let v = r.duration(p, "lease", path) {
                if v < 1 { r.problem(path + ".lease", "must be at least 1s") }
                o.lease = max(1, v)
            }
            if let v = r.duration(p, "heartbeat", path) {
                // Heartbeats are written every second at most; a shorter window would count live relays as gone.
                if v < 2 { r.problem(path + ".heartbeat", "must be at least 2s (a relay writes its heartbeat every second)") }
                o.heartbeat = max(2, v)
            }
            if let v = r.duration(p, "connectTimeout", path) { o.connectTimeout = max(1, Int(v.rounded(.up))) }
            return .postgres(o)
        }
        var o = SQLiteStoreOptions(path: "data/relay.db")
        if let p = r.string(s, "sqlite", "store", required: true) { o.path = p }
        if let v = r.choice(s, "synchronous", "store", ["full", "normal"]) { o.synchronous = .init(rawValue: v)! }
        if let v = r.int(s, "maxBatch", "store", min: 1) { o.maxBatch = v }
        if let v = r.duration(s, "commitDelay", "store") {
            if v > 0.1 { r.problem("store.commitDelay", "must be at most 100ms (it adds to every answer under load)") }
            o.commitDelay = min(v, 0.1)
        }
        if let v = r.int(s, "maxSizeBytes", "store", min: 65536) { o.maxSizeBytes = Int64(v) }
        return .sqlite(o)
    }

    /// `tracing: { otlp: { endpoint, headers, serviceName, timeout }, sampleRatio }`.
    static func tracingSettings(_ t: [String: JSONValue], reader r: ConfigReader) -> TracingSettings {
        var settings = TracingSettings()
        if let v = t["sampleRatio"], !v.isNull {
            if case .number(let n) = v, n >= 0, n <= 1 {
                settings.sampleRatio = n
            } else {
                var found = v.kindName
                if case .number(let n) = v { found = n == n.rounded() && abs(n) < 1e15 ? String(Int64(n)) : String(n) }
                r.problem("tracing.sampleRatio", "expected a number from 0 to 1 (the share of new traces that are sampled), found \(found)")
            }
        }
        let path = "tracing.otlp"
        guard let o = r.object(t["otlp"], path, keys: ["endpoint", "headers", "serviceName", "timeout"]) else { return settings }
        var otlp = OTLPSettings()
        if let endpoint = r.string(o, "endpoint", path) {
            let lower = endpoint.lowercased()
            let rest = lower.hasPrefix("http://") ? lower.dropFirst(7) : lower.hasPrefix("https://") ? lower.dropFirst(8) : nil
            if let rest, let first = rest.first, first != "/", first != "?",
               !endpoint.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7f }) {
                otlp.endpoint = endpoint
            } else {
                r.problem(path + ".endpoint", "\(r.shown(o["endpoint"], endpoint)) is not an absolute http:// or https:// URL (e.g. \"\(OTLPSettings.defaultEndpoint)\")")
            }
        }
        if let headers = r.map(o["headers"], path + ".headers") {
            for name in headers.keys.sorted() {
                let p = ConfigReader.join(path + ".headers", name)
                let token = !name.isEmpty && name.utf8.allSatisfy { c in
                    (c >= 0x30 && c <= 0x39) || (c | 0x20 >= 0x61 && c | 0x20 <= 0x7a) || "!#$%&'*+-.^_`|~".utf8.contains(c)
                }
                guard token else { r.problem(p, "is not a header name"); continue }
                if ["content-type", "content-length", "transfer-encoding"].contains(name.lowercased()) {
                    r.problem(p, "is set by the exporter (Content-Type: application/x-protobuf)")
                    continue
                }
                guard let value = r.string(headers, name, path + ".headers", required: true) else { continue }
                if value.utf8.contains(where: { $0 == 0x0d || $0 == 0x0a || $0 == 0 }) {
                    r.problem(p, "holds a line break or NUL")
                    continue
                }
                otlp.headers[name] = value
            }
        }
        if let name = r.string(o, "serviceName", path) {
            if name.trimmingCharacters(in: .whitespaces).isEmpty { r.problem(path + ".serviceName", "must not be empty") } else { otlp.serviceName = name }
        }
        if let v = r.duration(o, "timeout", path) {
            if v <= 0 { r.problem(path + ".timeout", "must be more than 0") } else { otlp.timeout = v }
        }
        settings.otlp = otlp
        return settings
    }

    static func read(_ tree: JSONValue, reader r: ConfigReader, registry: AdapterRegistry) -> RelayConfig {
        var c = RelayConfig()
        guard let root = r.object(tree, "", keys: ["server", "store", "log", "client", "correlation", "admin", "statuses",
                                                   "tracing", "sources", "destinations", "routes"]) else {
            return c
        }
        // Before any source, destination or route: they name statuses.
        r.statusVocabulary(root["statuses"])
        c.statuses = r.statuses
        if let s = r.object(root["server"], "server", keys: ["listen", "maxBodyBytes", "threads", "connectionLimit",
                                                              "idleTimeout", "requestTimeout", "shutdownTimeout", "publicURL", "engine"]) {
            if let listen = r.string(s, "listen", "server") {
                if let (host, port) = parseListen(listen) {
                    c.server.http.host = host
                    c.server.http.port = port
                } else {
                    r.problem("server.listen", "\(r.shown(s["listen"], listen)) is not HOST:PORT (e.g. \"0.0.0.0:8080\", \"[::]:8080\")")
                }
            }
            if let v = r.int(s, "maxBodyBytes", "server", min: 1) { c.server.http.maxBodyBytes = v }
            if let v = r.int(s, "threads", "server", min: 1, max: 256) { c.server.http.threads = v }
            if let v = r.int(s, "connectionLimit", "server", min: 1) { c.server.http.connectionLimit = v }
            if let v = r.duration(s, "idleTimeout", "server") { c.server.http.idleTimeoutSeconds = max(1, Int(v.rounded(.up))) }
            if let v = r.duration(s, "requestTimeout", "server") { c.server.http.requestTimeoutSeconds = v }
            if let v = r.duration(s, "shutdownTimeout", "server") { c.server.shutdownTimeout = v }
            c.server.publicURL = r.string(s, "publicURL", "server")
            if let v = r.choice(s, "engine", "server", HTTPServerOptions.Engine.allCases.map(\.rawValue)) {
                c.server.http.engine = HTTPServerOptions.Engine(rawValue: v)!
            }
        }
        if root["admin"] == .bool(false) {
            c.admin = nil
        } else if let a = r.object(root["admin"], "admin", keys: ["listen", "token"]) {
            var admin = AdminSettings()
            if let listen = r.string(a, "listen", "admin") {
                if let (host, port) = parseListen(listen) {
                    admin.http.host = host
                    admin.http.port = port
                } else {
                    r.problem("admin.listen", "\(r.shown(a["listen"], listen)) is not HOST:PORT (e.g. \"127.0.0.1:9090\")")
                }
            }
            if a["token"] != nil { admin.token = r.secret(a["token"], "admin.token") }
            if admin.token == nil && a["token"] == nil && !AdminSettings.isLoopback(admin.http.host) {
                r.problem("admin.token", "is required when admin.listen is not a loopback address (\(admin.http.host)): the admin API can replay deliveries")
            }
            c.admin = admin
        }
        if let co = r.object(root["correlation"], "correlation", keys: ["keys"]) {
            // Subject keys that identify one subject: linked across events and responses (Correlation).
            if let keys = r.strings(co, "keys", "correlation") { c.correlation.keys = Set(keys) }
        }
        if let s = r.object(root["store"], "store", keys: ["sqlite", "synchronous", "maxBatch", "commitDelay", "maxSizeBytes", "postgres"]) {
            c.store = storeSettings(s, reader: r)
        }
        if let cl = r.object(root["client"], "client", keys: ["caBundle", "verifyTLS", "maxConnectionsPerHost", "maxConnections"]) {
            c.client.caBundlePath = r.string(cl, "caBundle", "client")
            if let v = r.bool(cl, "verifyTLS", "client") { c.client.verifyTLS = v }
            if let v = r.int(cl, "maxConnectionsPerHost", "client", min: 1) { c.client.maxConnectionsPerHost = v }
            if let v = r.int(cl, "maxConnections", "client", min: 1) { c.client.maxTotalConnections = v }
        }
        if let t = r.object(root["tracing"], "tracing", keys: ["otlp", "sampleRatio"]) {
            c.tracing = tracingSettings(t, reader: r)
        }
        if let l = r.object(root["log"], "log", keys: ["level"]) {
            if let v = r.choice(l, "level", "log", LogLevel.allCases.map(\.name)) { c.logLevel = LogLevel(name: v)! }
        }

        let sources = r.map(root["sources"], "sources") ?? [:]
        if root["sources"] == nil { r.problem("sources", "is required: at least one source to receive webhooks from") }
        for name in sources.keys.sorted() {
            let path = ConfigReader.join("sources", name)
            if let s = source(name: name, value: sources[name]!, path: path, reader: r, registry: registry,
                              publicURL: c.server.publicURL) {
                c.sources[name] = s
            }
            if let o = sources[name]?.objectValue, let scope = r.string(o, "correlationScope", path) {
                c.correlation.sourceScopes[name] = scope
            }
        }
        let destinations = r.map(root["destinations"], "destinations") ?? [:]
        for name in destinations.keys.sorted() {
            let path = ConfigReader.join("destinations", name)
            guard let d = r.map(destinations[name], path) else { continue }
            guard let adapterName = r.string(d, "adapter", path, required: true) else { continue }
            guard let factory = registry.destinations[adapterName] else {
                r.problem(ConfigReader.join(path, "adapter"), "unknown adapter \(r.shown(d["adapter"], adapterName)) (known: \(registry.destinations.keys.sorted().joined(separator: ", ")))")
                continue
            }
            _ = r.object(destinations[name], path, keys: ["adapter", "description", "correlationScope", "auth", "tls"] + DeliveryPolicy.keys + factory.destinationKeys)
            let policy = r.deliveryPolicy(d, path)
            let scope = r.string(d, "correlationScope", path)
            let auth = r.outboundAuth(d["auth"], ConfigReader.join(path, "auth"), factories: registry.auth)
            let tls = r.clientTLS(d["tls"], ConfigReader.join(path, "tls"))
            if let adapter = factory.makeDestination(name: name, config: d, path: path, reader: r) {
                c.destinations[name] = DestinationSettings(name: name, adapterName: adapterName, adapter: adapter, policy: policy,
                                                           correlationScope: scope, auth: auth, clientTLS: tls)
            }
        }
        if let routes = root["routes"] {
            guard case .array(let list) = routes else {
                r.problem("routes", "expected an array, found \(routes.kindName)")
                return c
            }
            for (i, item) in list.enumerated() {
                let path = ConfigReader.join("routes", i)
                guard let o = r.object(item, path, keys: ["from", "to", "when"]) else { continue }
                let from = r.string(o, "from", path, required: true)
                if let from, sources[from] == nil {
                    r.problem(ConfigReader.join(path, "from"), "names unknown source \(r.shown(o["from"], from))")
                }
                let to = r.strings(o, "to", path) ?? []
                if o["to"] == nil { r.problem(ConfigReader.join(path, "to"), "is required") }
                for (j, d) in to.enumerated() where destinations[d] == nil {
                    r.problem(ConfigReader.join(ConfigReader.join(path, "to"), j), "names unknown destination \"\(d)\"")
                }
                let when = r.routeCondition(o["when"], ConfigReader.join(path, "when"))
                if let from { c.routes.append(RouteSettings(from: from, to: to, when: when)) }
            }
        }
        return c
    }

    static func source(name: String, value: JSONValue, path: String, reader r: ConfigReader,
                       registry: AdapterRegistry, publicURL: String?) -> SourceSettings? {
        guard let o = r.map(value, path) else { return nil }
        let adapterName = r.string(o, "adapter", path, required: true)
        var factory: (any SourceAdapterFactory)?
        if let adapterName {
            factory = registry.sources[adapterName]
            if factory == nil {
                r.problem(ConfigReader.join(path, "adapter"), "unknown adapter \(r.shown(o["adapter"], adapterName)) (known: \(registry.sources.keys.sorted().joined(separator: ", ")))")
            }
        }
        let common = ["adapter", "verify", "idempotency", "publicURL", "description", "correlationScope", "unmappedStatus"]
        if let factory {
            _ = r.object(value, path, keys: common + factory.sourceKeys)
        }
        let sourceURL = r.string(o, "publicURL", path) ?? publicURL
        let verifier = r.verifier(o["verify"], ConfigReader.join(path, "verify"), publicBaseURL: sourceURL,
                                  presets: registry.verifyPresets)
        let idempotency = r.idempotency(o["idempotency"], ConfigReader.join(path, "idempotency"))
        let adapter = factory?.makeSource(name: name, config: o, path: path, reader: r)
        let unmapped = r.choice(o, "unmappedStatus", path, UnmappedStatusPolicy.allCases.map(\.rawValue))
            .flatMap(UnmappedStatusPolicy.init(rawValue:)) ?? .keep
        guard let adapterName, let verifier, let adapter else { return nil }
        return SourceSettings(name: name, adapterName: adapterName, verifier: verifier, idempotency: idempotency,
                              adapter: adapter, unmappedStatus: unmapped, statuses: r.statuses)
    }

    /// "0.0.0.0:8080", "[::]:8080", ":8080" (all IPv4 interfaces), "localhost:8080".
    public static func parseListen(_ s: String) -> (String, UInt16)? {
        guard let colon = s.lastIndex(of: ":"), let port = UInt16(s[s.index(after: colon)...]) else { return nil }
        var host = String(s[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "0.0.0.0" }
        if host == "localhost" { host = "127.0.0.1" }
        return (host, port)
    }
}
