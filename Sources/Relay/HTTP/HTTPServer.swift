import CMicroHTTPD
import Foundation
import Synchronization

/// Settings of the inbound HTTP server.
public struct HTTPServerOptions: Sendable {
    public var host: String = "0.0.0.0"
    public var port: UInt16 = 8080
    /// Worker threads, each running its own event loop over its share of the connections.
    public var threads: Int = max(1, ProcessInfo.processInfo.activeProcessorCount)
    /// Connections open at once; past it new ones are refused.
    public var connectionLimit: Int = 1024
    /// A connection that sends or reads nothing for this long is closed (also between keep-alive requests).
    public var idleTimeoutSeconds: Int = 30
    /// A request whose body has not fully arrived this long after its headers is dropped.
    public var requestTimeoutSeconds: Double = 30
    /// Larger bodies are answered 413 and not buffered.
    public var maxBodyBytes: Int = 1 << 20
    /// Which server takes the webhooks (`server.engine`): the relay's own epoll loops (`EpollServer`) or
    /// libmicrohttpd (`HTTPServer`). The admin API is always libmicrohttpd.
    public var engine: Engine = .epoll

    public enum Engine: String, Sendable, CaseIterable {
        case epoll, microhttpd
    }

    public init() {}
}

public struct HTTPServerError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// The inbound HTTP server over libmicrohttpd: a pool of event-loop threads, keep-alive, a body limit, a connection
/// limit, idle and request timeouts, and asynchronous answers (a connection waiting for its answer is suspended,
/// so it holds no thread).
public final class HTTPServer: @unchecked Sendable {
    // Immutable after init, except `daemon`, which only start/stop touch (from one controlling thread).
    let options: HTTPServerOptions
    let handler: HTTPHandler
    let inFlight = Atomic<Int>(0)
    /// Set when a stop begins: requests that reach the application after it are answered 503 at once (never
    /// suspended), so no connection can be parked when the daemon stops.
    let stopping = Atomic<Bool>(false)
    private var daemon: OpaquePointer?
    private var listenSocketClosed = false
    public private(set) var port: UInt16 = 0

    /// Looks at the request line before any body is read; a response it returns is sent at once (and the body,
    /// if any, is never read). For refusals that do not depend on the body: unknown paths, methods.
    public typealias Preflight = @Sendable (_ method: String, _ path: String, _ headers: PreflightHeaders) -> HTTPResponse?
    let preflight: Preflight?
    /// libmicrohttpd's threads hold a reference to this object while the daemon runs: taken in `start`, given back
    /// after `MHD_stop_daemon`. (A daemon never stopped, because requests were still parked, keeps it for good.)
    private var daemonReference: Unmanaged<HTTPServer>?

    public init(options: HTTPServerOptions, preflight: Preflight? = nil, handler: @escaping HTTPHandler) {
        self.options = options
        self.preflight = preflight
        self.handler = handler
    }

    deinit {
        // Only reached once the daemon is stopped (it holds a reference while it runs).
    }

    /// Binds and starts serving. Throws when the address cannot be bound.
    public func start() throws {
        var flags: UInt32 = UInt32(MHD_USE_INTERNAL_POLLING_THREAD.rawValue) | UInt32(MHD_ALLOW_SUSPEND_RESUME.rawValue)
        #if os(Linux)
        flags |= UInt32(MHD_USE_EPOLL.rawValue)
        #else
        flags |= UInt32(MHD_USE_POLL.rawValue)
        #endif
        var storage = sockaddr_storage()
        let family = relay_make_sockaddr(options.host, options.port, &storage)
        guard family != 0 else {
            throw HTTPServerError(message: "server.listen: \(options.host) is not a numeric IPv4 or IPv6 address")
        }
        if family == AF_INET6 { flags |= UInt32(MHD_USE_IPv6.rawValue) }
        let threads = max(1, options.threads)
        let started: OpaquePointer? = withUnsafeMutablePointer(to: &storage) { sa in
            var items: [MHD_OptionItem] = [
                MHD_OptionItem(option: MHD_OPTION.CONNECTION_LIMIT, value: options.connectionLimit, ptr_value: nil),
                MHD_OptionItem(option: MHD_OPTION.CONNECTION_TIMEOUT, value: max(1, options.idleTimeoutSeconds), ptr_value: nil),
                MHD_OptionItem(option: MHD_OPTION.LISTEN_BACKLOG_SIZE, value: 1024, ptr_value: nil),
                MHD_OptionItem(option: MHD_OPTION.SOCK_ADDR, value: 0, ptr_value: UnsafeMutableRawPointer(sa)),
            ]
            if threads > 1 {
                items.append(MHD_OptionItem(option: MHD_OPTION.THREAD_POOL_SIZE, value: threads, ptr_value: nil))
            }
            items.append(MHD_OptionItem(option: MHD_OPTION.END, value: 0, ptr_value: nil))
            let me = Unmanaged.passUnretained(self).toOpaque()   // retained below once the daemon runs
            return items.withUnsafeMutableBufferPointer { buf in
                relay_mhd_start(flags, options.port, relayAccessHandler, me, relayRequestCompleted, me,
                                relayURILog, me, buf.baseAddress)
            }
        }
        guard let started else {
            throw HTTPServerError(message: "cannot listen on \(options.host):\(options.port): \(String(cString: strerror(errno)))")
        }
        daemon = started
        daemonReference = Unmanaged.passRetained(self)
        port = relay_mhd_bound_port(started)
    }

    /// Requests that have started and not yet finished.
    public var requestsInFlight: Int { inFlight.load(ordering: .sequentiallyConsistent) }

    /// Graceful stop: closes the listening socket at once (no new connections), waits up to `timeout` for requests
    /// in flight to be answered, then closes every connection.
    public func shutdown(timeout: Double) {
        guard let d = daemon else { return }
        stopping.store(true, ordering: .sequentiallyConsistent)
        if !listenSocketClosed {
            let fd = MHD_quiesce_daemon(d)
            if fd >= 0 { close(fd) }
            listenSocketClosed = true
        }
        let deadline = Date().addingTimeInterval(timeout)
        while requestsInFlight > 0 && Date() < deadline { usleep(5_000) }
        if requestsInFlight > 0 {
            // A suspended connection must never meet MHD_stop_daemon: leave the daemon to process exit.
            return
        }
        stop()
    }

    /// Stops at once (connections closed).
    public func stop() {
        if let d = daemon {
            daemon = nil
            MHD_stop_daemon(d)
            daemonReference?.release()
            daemonReference = nil
        }
    }

    static func from(_ cls: UnsafeMutableRawPointer?) -> HTTPServer {
        Unmanaged<HTTPServer>.fromOpaque(cls!).takeUnretainedValue()
    }
}

/// One request's state: created when its request line arrives, released when MHD reports it complete.
final class RequestContext: @unchecked Sendable {
    // Touched only on the connection's MHD thread:
    let rawTarget: String
    let startedAt: DispatchTime
    var body: [UInt8] = []
    var tooLarge = false
    var dispatched = false
    /// The first call (headers only, which MHD always makes before any body) has been seen.
    var headersSeen = false
    /// The request began after a stop had begun: a stop waits only for requests that began before it.
    var startedWhileStopping = false
    // Shared with the responder's thread, under `state`:
    struct Shared {
        var response: HTTPResponse?
        var suspended = false
        var responded = false
    }
    let state = Mutex(Shared())
    let connection: OpaquePointer

    init(rawTarget: String, connection: OpaquePointer) {
        self.rawTarget = rawTarget
        self.connection = connection
        self.startedAt = DispatchTime.now()
    }
}

/// Hands the response back to MHD: stored, then the connection resumed if it was suspended waiting for it.
struct ConnectionResponder: HTTPResponder {
    let context: RequestContext

    func respond(_ response: HTTPResponse) {
        context.state.withLock { s in
            guard !s.responded else { return }
            s.responded = true
            s.response = response
            if s.suspended {
                s.suspended = false
                MHD_resume_connection(context.connection)
            }
        }
    }
}

/// Header lookup during the preflight (the request's headers are known, its body not yet read).
public struct PreflightHeaders {
    let connection: OpaquePointer?
    let headers: HTTPHeaders?

    init(connection: OpaquePointer) {
        self.connection = connection
        self.headers = nil
    }

    init(headers: HTTPHeaders) {
        self.connection = nil
        self.headers = headers
    }

    public subscript(name: String) -> String? {
        if let headers { return headers[name] }
        return MHD_lookup_connection_value(connection, MHD_ValueKind.HEADER_KIND, name).map { String(cString: $0) }
    }
}


private func queue(_ response: HTTPResponse, on connection: OpaquePointer?) -> MHD_Result {
    if response.dropsConnection { return MHD_Result.NO }
    let r: OpaquePointer? = response.body.withUnsafeBytes { buf in
        MHD_create_response_from_buffer(buf.count, UnsafeMutableRawPointer(mutating: buf.baseAddress),
                                        MHD_ResponseMemoryMode.RESPMEM_MUST_COPY)
    }
    guard let r else { return MHD_Result.NO }
    for (name, value) in response.headers { _ = MHD_add_response_header(r, name, value) }
    let result = MHD_queue_response(connection, UInt32(response.status), r)
    MHD_destroy_response(r)
    return result
}

private func headerIterator(_ cls: UnsafeMutableRawPointer?, _ kind: MHD_ValueKind,
                            _ key: UnsafePointer<CChar>?, _ value: UnsafePointer<CChar>?) -> MHD_Result {
    guard let cls, let key else { return MHD_Result.YES }
    let box = cls.assumingMemoryBound(to: HTTPHeaders.self)
    box.pointee.add(String(cString: key), value.map { String(cString: $0) } ?? "")
    return MHD_Result.YES
}

/// The first callback of a request: MHD passes the raw request target; what we return becomes the request's context.
let relayURILog: relay_mhd_uri_log_cb = { cls, uri, connection in
    let server = HTTPServer.from(cls)
    server.inFlight.add(1, ordering: .sequentiallyConsistent)
    let ctx = RequestContext(rawTarget: uri.map { String(cString: $0) } ?? "/", connection: connection!)
    // Read after counting the request: a stop that has not begun by now will see the count and wait for it.
    ctx.startedWhileStopping = server.stopping.load(ordering: .sequentiallyConsistent)
    return Unmanaged.passRetained(ctx).toOpaque()
}

let relayRequestCompleted: MHD_RequestCompletedCallback = { cls, connection, reqCls, toe in
    guard let reqCls, let ptr = reqCls.pointee else { return }
    reqCls.pointee = nil
    Unmanaged<RequestContext>.fromOpaque(ptr).release()
    HTTPServer.from(cls).inFlight.subtract(1, ordering: .sequentiallyConsistent)
}

let relayAccessHandler: MHD_AccessHandlerCallback = { cls, connection, url, method, version, uploadData, uploadSize, reqCls in
    let server = HTTPServer.from(cls)
    guard let reqCls, let raw = reqCls.pointee, let connection else { return MHD_Result.NO }
    let ctx = Unmanaged<RequestContext>.fromOpaque(raw).takeUnretainedValue()

    // Called again after a resume: the answer is ready.
    if ctx.dispatched {
        let response = ctx.state.withLock { $0.response }
        guard let response else { return MHD_Result.YES }
        return queue(response, on: connection)
    }

    let options = server.options
    if let uploadSize, uploadSize.pointee > 0 {
        let n = uploadSize.pointee
        if !ctx.tooLarge {
            if ctx.body.count + n > options.maxBodyBytes {
                ctx.tooLarge = true
                ctx.body = []
            } else if let uploadData {
                ctx.body.append(contentsOf: UnsafeRawBufferPointer(start: uploadData, count: n))
            }
        }
        uploadSize.pointee = 0
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - ctx.startedAt.uptimeNanoseconds) / 1e9
        if elapsed > options.requestTimeoutSeconds { return MHD_Result.NO }   // a trickling body: drop the connection
        return MHD_Result.YES
    }

    if !ctx.headersSeen {
        // First call, headers only: refuse what can be refused before reading any of the body (a request begun
        // during a stop, an unknown path or method, an announced oversize body). Otherwise wait for the body (with
        // a Content-Length or chunked) and the final call; a request without one gets that final call at once.
        ctx.headersSeen = true
        var early: HTTPResponse?
        if ctx.startedWhileStopping {
            early = HTTPResponse.error(503, "shutting down", ["reason": "the relay is stopping; nothing was recorded, retry"])
                .adding(headers: [("Connection", "close"), ("Retry-After", "1")])
        } else if let preflight = server.preflight,
                  let refusal = preflight(method.map { String(cString: $0) } ?? "GET", HTTPRequest.path(of: ctx.rawTarget),
                                          PreflightHeaders(connection: connection)) {
            early = refusal
        } else if let cl = MHD_lookup_connection_value(connection, MHD_ValueKind.HEADER_KIND, "Content-Length"),
                  let length = Int(String(cString: cl)) {
            if length > options.maxBodyBytes {
                early = .error(413, "body too large", ["limit": String(options.maxBodyBytes)])
            } else if length > 0 {
                ctx.body.reserveCapacity(length)
            }
        }
        if let early {
            ctx.dispatched = true
            ctx.state.withLock { $0.responded = true }
            return queue(early, on: connection)
        }
        return MHD_Result.YES   // the body follows in later calls
    }
    if ctx.tooLarge {
        ctx.dispatched = true
        ctx.state.withLock { $0.responded = true }
        return queue(.error(413, "body too large", ["limit": String(options.maxBodyBytes)]), on: connection)
    }

    // The whole request has arrived: hand it to the application. (One that began after a stop did was answered
    // 503 in its first call; one that began before is in flight, and the stop waits for its answer.)
    ctx.dispatched = true
    var headers = HTTPHeaders()
    withUnsafeMutablePointer(to: &headers) { p in
        _ = MHD_get_connection_values(connection, MHD_ValueKind.HEADER_KIND, headerIterator, p)
    }
    let address = withUnsafeTemporaryAllocation(of: CChar.self, capacity: 64) { buf in
        relay_mhd_client_address(connection, buf.baseAddress!, buf.count)
        return String(cString: buf.baseAddress!)
    }
    let request = HTTPRequest(method: method.map { String(cString: $0) } ?? "GET", target: ctx.rawTarget,
                              headers: headers, body: ctx.body, remoteAddress: address)
    ctx.body = []
    server.handler(request, ConnectionResponder(context: ctx))

    // Answered already: queue it now. Otherwise park the connection until the responder resumes it.
    let ready: HTTPResponse? = ctx.state.withLock { s in
        if let r = s.response { return r }
        s.suspended = true
        MHD_suspend_connection(connection)
        return nil
    }
    if let ready { return queue(ready, on: connection) }
    return MHD_Result.YES
}
