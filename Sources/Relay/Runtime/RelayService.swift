import Foundation

/// A running relay: store, ingest pipeline, HTTP server and dispatcher, with an orderly stop.
public final class RelayService: Sendable {
    public let config: RelayConfig
    public let log: Logger
    public let store: SQLiteStore
    /// Counters and histograms (`GET /metrics` on the admin listener).
    public let metrics = Metrics()
    let server: HTTPServer
    let adminServer: HTTPServer?
    let ingest: Ingest
    let client: HTTPClient?
    let dispatcher: Dispatcher?

    public init(config: RelayConfig, log: Logger) throws {
        self.config = config
        self.log = log
        store = try SQLiteStore(options: config.store, log: log)
        if config.destinations.isEmpty {
            client = nil
            dispatcher = nil
        } else {
            let client = try HTTPClient(options: config.client)
            self.client = client
            dispatcher = Dispatcher(store: store, client: client, destinations: config.destinations.values.map {
                Dispatcher.Destination(name: $0.name, adapter: $0.adapter, policy: $0.policy,
                                       correlationScope: $0.correlationScope, auth: $0.auth, clientTLS: $0.clientTLS)
            }, log: log, correlationKeys: config.store.correlationKeys, sourceScopes: config.store.correlationScopes,
               metrics: metrics)
        }
        let dispatcher = self.dispatcher
        let ingest = Ingest(sources: config.sources, router: Router(routes: config.routes), store: store, log: log,
                            metrics: metrics, committed: { dispatcher?.wake() })
        self.ingest = ingest
        server = HTTPServer(options: config.server.http,
                            preflight: { method, path, headers in
                                ingest.preflight(method: method, path: path, requestID: headers["X-Request-Id"])
                            },
                            handler: { request, responder in ingest.handle(request, responder) })
        if let admin = config.admin {
            let api = AdminAPI(store: store, config: config, token: admin.token, log: log, metrics: metrics,
                               setPaused: { name, pause in try dispatcher?.setPaused(name, pause) ?? false },
                               paused: { dispatcher?.pausedDestinations ?? [] },
                               wake: { dispatcher?.wake() })
            adminServer = HTTPServer(options: admin.http) { request, responder in api.handle(request, responder) }
        } else {
            adminServer = nil
        }
    }

    public func start() throws {
        try dispatcher?.start()
        try server.start()
        if let adminServer {
            try adminServer.start()
            log.info("admin API listening", ["address": "\(config.admin!.http.host):\(adminServer.port)",
                                             "token": config.admin!.token == nil ? "none (loopback)" : "required"])
        }
        log.info("relay listening", ["address": "\(config.server.http.host):\(server.port)", "store": config.store.path,
                                     "sources": config.sources.keys.sorted().joined(separator: ","),
                                     "threads": String(config.server.http.threads)])
    }

    /// The bound port (useful when configured as 0).
    public var port: UInt16 { server.port }
    /// The admin API's bound port, when it runs.
    public var adminPort: UInt16? { adminServer?.port }

    /// Stops taking connections, lets requests in flight finish (up to the configured timeout), lets delivery
    /// attempts in flight finish and records them, then closes the store after its last commit.
    public func shutdown() {
        log.info("stopping", ["inFlight": String(server.requestsInFlight)])
        server.shutdown(timeout: config.server.shutdownTimeout)
        adminServer?.shutdown(timeout: 2)
        dispatcher?.shutdown(timeout: config.server.shutdownTimeout)
        client?.shutdown(timeout: 1)
        store.close()
        log.info("stopped")
    }

    /// Blocks until SIGTERM or SIGINT (or a failure of the store's disk), then shuts down gracefully. Returns the
    /// process's exit status: 0 after a signal, 1 after a store failure (so that a supervisor restarts it and the
    /// restart recovers from what is really on disk).
    @discardableResult
    public func runUntilSignalled() -> Int32 {
        let stop = DispatchSemaphore(value: 0)
        store.onFailure = { _ in stop.signal() }
        waitForTerminationSignal(or: stop)
        shutdown()
        return store.failure == nil ? 0 : 1
    }
}

/// Blocks the calling thread until SIGTERM or SIGINT arrives (or `other` is signalled, when given). The signals are
/// taken from their default action (termination) for good: the caller stops in order instead.
public func waitForTerminationSignal(or other: DispatchSemaphore? = nil) {
    let stop = other ?? DispatchSemaphore(value: 0)
    let queue = DispatchQueue(label: "relay.signals")
    var sources: [DispatchSourceSignal] = []
    for sig in [SIGTERM, SIGINT] {
        signal(sig, SIG_IGN)
        let s = DispatchSource.makeSignalSource(signal: sig, queue: queue)
        s.setEventHandler { stop.signal() }
        s.resume()
        sources.append(s)
    }
    stop.wait()
    for s in sources { s.cancel() }
}
