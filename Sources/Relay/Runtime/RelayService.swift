import Foundation
import Synchronization

/// A running relay: store, ingest pipeline, HTTP server and dispatcher, with an orderly stop.
public final class RelayService: Sendable {
    /// The configuration the service started with (listeners, store); `currentConfig` after reloads.
    public let config: RelayConfig
    private let current: Locked<RelayConfig>
    public var currentConfig: RelayConfig { current.value }
    public let log: Logger
    public let store: any RelayStore
    /// Counters and histograms (`GET /metrics` on the admin listener).
    public let metrics = Metrics()
    let server: any HTTPServing
    let adminServer: HTTPServer?
    /// The inbound pipeline for the current configuration (replaced whole by a reload).
    private let ingestBox: Locked<Ingest>
    let client: HTTPClient?
    let dispatcher: Dispatcher?
    /// Trace context and ids for ingest and deliveries; exports spans when `tracing.otlp` is configured.
    public let tracer: Tracer

    /// A relay on `store`, which the caller opened for `config.store` (`RelaySQLite`, `RelayPostgres`); the
    /// service closes it at shutdown.
    public init(config: RelayConfig, log: Logger, store: any RelayStore) throws {
        self.config = config
        current = Locked(config)
        self.log = log
        self.store = store
        if let otlp = config.tracing?.otlp {
            let exporter = try SpanExporter(settings: otlp, client: config.client, log: log, metrics: metrics)
            tracer = Tracer(sampleRatio: config.tracing?.sampleRatio ?? 1, exporter: exporter)
        } else {
            tracer = .disabled
        }
        if config.destinations.isEmpty {
            client = nil
            dispatcher = nil
        } else {
            let client = try HTTPClient(options: config.client)
            self.client = client
            dispatcher = Dispatcher(store: store, client: client, destinations: config.destinations.values.map {
                Dispatcher.Destination(name: $0.name, adapter: $0.adapter, policy: $0.policy,
                                       correlationScope: $0.correlationScope, auth: $0.auth, clientTLS: $0.clientTLS)
            }, log: log, correlation: config.correlation, metrics: metrics, tracer: tracer)
        }
        let dispatcher = self.dispatcher
        // The dispatcher's cue: once per durable batch with new deliveries, from this relay or (a shared store)
        // another one.
        if let dispatcher {
            store.signals.observe(newDeliveries: { dispatcher.wake() }, changed: { dispatcher.storeChanged() })
        }
        let ingest = Self.ingest(config, store: store, log: log, metrics: metrics, tracer: tracer)
        let box = Locked(ingest)
        ingestBox = box
        let preflight: HTTPServer.Preflight = { method, path, headers in
            box.value.preflight(method: method, path: path, requestID: headers["X-Request-Id"])
        }
        let handler: HTTPHandler = { request, responder in box.value.handle(request, responder) }
        switch config.server.http.engine {
        case .epoll: server = EpollServer(options: config.server.http, preflight: preflight, handler: handler)
        case .microhttpd: server = HTTPServer(options: config.server.http, preflight: preflight, handler: handler)
        }
        if let admin = config.admin {
            let current = self.current
            let api = AdminAPI(store: store, config: { current.value }, token: admin.token, log: log, metrics: metrics,
                               setPaused: { name, pause in try dispatcher?.setPaused(name, pause) ?? false },
                               paused: { dispatcher?.pausedDestinations ?? [] },
                               wake: { dispatcher?.wake() })
            adminServer = HTTPServer(options: admin.http) { request, responder in api.handle(request, responder) }
        } else {
            adminServer = nil
        }
    }

    static func ingest(_ config: RelayConfig, store: any EventStore, log: Logger, metrics: Metrics, tracer: Tracer) -> Ingest {
        Ingest(sources: config.sources, router: Router(routes: config.routes), store: store, log: log, metrics: metrics,
               disciplines: config.destinations.mapValues { $0.policy.discipline }, correlation: config.correlation,
               tracer: tracer)
    }

    public func start() throws {
        dispatcher?.start()
        try server.start()
        if let adminServer {
            try adminServer.start()
            log.info("admin API listening", ["address": "\(config.admin!.http.host):\(adminServer.port)", "port": adminServer.port,
                                             "token": config.admin!.token == nil ? "none (loopback)" : "required"])
        }
        log.info("relay listening", ["address": "\(config.server.http.host):\(server.port)", "store": store.summary,
                                     "sources": config.sources.keys.sorted().joined(separator: ","),
                                     "port": server.port, "threads": config.server.http.threads])
    }

    /// The bound port (useful when configured as 0).
    public var port: UInt16 { server.port }
    /// The admin API's bound port, when it runs.
    public var adminPort: UInt16? { adminServer?.port }

    /// Stops taking connections, lets requests in flight finish (up to the configured timeout), lets delivery
    /// attempts in flight finish and records them, then closes the store after its last commit.
    public func shutdown() {
        log.info("stopping", ["inFlight": server.requestsInFlight])
        server.shutdown(timeout: config.server.shutdownTimeout)
        adminServer?.shutdown(timeout: 2)
        dispatcher?.shutdown(timeout: config.server.shutdownTimeout)
        // After the last answer and the last attempt: their spans are queued; send them before exiting.
        tracer.exporter?.shutdown(timeout: 3)
        client?.shutdown(timeout: 1)
        store.close()
        log.info("stopped")
    }

    /// Applies a new configuration without a restart: sources, verification, routes and
    /// destinations (adapters, auth, delivery policy). What only a restart can change (listeners, store, client,
    /// admin) is kept as it is, each named in the returned notes. Webhooks in flight finish on the pipeline they
    /// started on; the next ones use the new one.
    @discardableResult
    public func reload(_ new: RelayConfig) -> [String] {
        var notes: [String] = []
        let old = currentConfig
        if new.server.http.host != old.server.http.host || new.server.http.port != old.server.http.port
            || new.server.http.threads != old.server.http.threads || new.server.http.engine != old.server.http.engine {
            notes.append("server: needs a restart")
        }
        if new.store != old.store { notes.append("store: needs a restart") }
        if (new.admin?.http.host, new.admin?.http.port) != (old.admin?.http.host, old.admin?.http.port)
            || new.admin?.token?.value != old.admin?.token?.value { notes.append("admin: needs a restart") }
        if new.tracing != old.tracing { notes.append("tracing: needs a restart") }
        var applied = new
        applied.server = old.server
        applied.store = old.store
        applied.admin = old.admin
        applied.client = old.client
        applied.tracing = old.tracing
        if let dispatcher {
            dispatcher.replaceDestinations(new.destinations.values.map {
                Dispatcher.Destination(name: $0.name, adapter: $0.adapter, policy: $0.policy,
                                       correlationScope: $0.correlationScope, auth: $0.auth, clientTLS: $0.clientTLS)
            }, correlation: new.correlation)
        } else if !new.destinations.isEmpty {
            notes.append("destinations: the relay started without any; adding the first needs a restart")
            applied.destinations = [:]
            applied.routes = new.routes.map { RouteSettings(from: $0.from, to: [], when: $0.when) }
        }
        ingestBox.value = Self.ingest(applied, store: store, log: log, metrics: metrics, tracer: tracer)
        current.value = applied
        log.info("configuration reloaded", ["sources": applied.sources.keys.sorted().joined(separator: ","),
                                            "destinations": applied.destinations.keys.sorted().joined(separator: ","),
                                            "routes": applied.routes.count,
                                            "notes": notes.joined(separator: "; ")])
        return notes
    }

    /// Blocks until SIGTERM or SIGINT (or a failure of the store's disk), then shuts down gracefully. Returns the
    /// process's exit status: 0 after a signal, 1 after a store failure (so that a supervisor restarts it and the
    /// restart recovers from what is really on disk). On SIGHUP, `reload` reads the configuration again: a new one
    /// is applied (`reload(_:)`); problems are logged and the running configuration stays.
    @discardableResult
    public func runUntilSignalled(reload source: (@Sendable () -> Result<RelayConfig, ConfigError>)? = nil) -> Int32 {
        let stop = DispatchSemaphore(value: 0)
        store.signals.observe(failed: { _ in stop.signal() })
        var onHangup: (@Sendable () -> Void)?
        if let source {
            onHangup = { [self] in
                log.info("SIGHUP: reading the configuration again")
                switch source() {
                case .success(let config): reload(config)
                case .failure(let error):
                    log.error("configuration reload refused: the running configuration stays",
                              ["problems": error.problems.map(\.description).joined(separator: "; ")])
                }
            }
        }
        waitForTerminationSignal(or: stop, onHangup: onHangup)
        shutdown()
        return store.failure == nil ? 0 : 1
    }
}

/// The signals the relay handles itself: SIGTERM and SIGINT (stop in order), SIGHUP (reload).
public enum ProcessSignals {
    static let handled = [SIGTERM, SIGINT, SIGHUP]

    /// Blocks the handled signals in the calling thread and in every thread it starts from now on: they stay
    /// pending, neither lost nor fatal, until `waitForTerminationSignal` takes them. Call it first thing in `main`,
    /// before any thread exists, so that a SIGTERM sent the moment the listeners are up still stops the process in
    /// order (without it, a signal between the first accepted request and the handler's installation killed it).
    public static func block() {
        var set = handledSet()
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    static func handledSet() -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for sig in handled { sigaddset(&set, sig) }
        return set
    }
}

/// Blocks the calling thread until SIGTERM or SIGINT arrives (or `other` is signalled, when given); SIGHUP runs
/// `onHangup` (ignored without one). The signals are taken with `sigwait` on a thread of their own, so they must be
/// blocked in every thread (`ProcessSignals.block()` first thing in `main`); this blocks them in the caller too.
public func waitForTerminationSignal(or other: DispatchSemaphore? = nil, onHangup: (@Sendable () -> Void)? = nil) {
    ProcessSignals.block()
    let stop = other ?? DispatchSemaphore(value: 0)
    let waiter = Thread {
        var set = ProcessSignals.handledSet()
        while true {
            var sig: Int32 = 0
            guard sigwait(&set, &sig) == 0 else { continue }
            if sig == SIGHUP {
                onHangup?()
            } else {
                stop.signal()
                return
            }
        }
    }
    waiter.name = "relay-signals"
    waiter.start()
    stop.wait()
}

/// A value shared between threads, replaced whole (a reload's configuration and pipeline).
final class Locked<T: Sendable>: Sendable {
    private let mutex: Mutex<T>
    init(_ value: T) { mutex = Mutex(value) }
    var value: T {
        get { mutex.withLock { $0 } }
        set { mutex.withLock { $0 = newValue } }
    }
}
