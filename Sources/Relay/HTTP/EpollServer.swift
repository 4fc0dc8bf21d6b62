import CHTTPParser
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What the relay needs of an inbound server: both `HTTPServer` (libmicrohttpd) and `EpollServer` are one.
public protocol HTTPServing: AnyObject, Sendable {
    var port: UInt16 { get }
    var requestsInFlight: Int { get }
    func start() throws
    /// No new connections at once; requests in flight are answered for up to `timeout`; then every connection closes.
    func shutdown(timeout: Double)
    func stop()
}

extension HTTPServer: HTTPServing {}

/// The webhook listener's own server: one epoll loop per thread, each with its own listening socket on the same
/// port (`SO_REUSEPORT`: the kernel spreads connections), HTTP/1.1 framing by http-parser (libhttp-parser).
///
/// Why not libmicrohttpd here: an answer that comes later from another thread (the store's group commit) costs MHD
/// a suspend and a resume per request (two `epoll_ctl`, an eventfd write and a wake-up each); here a connection that
/// waits for its answer just waits, and answers are handed back to a loop in batches: the first one of a batch writes
/// the loop's eventfd, the loop writes them all. Behaviour is libmicrohttpd's: keep-alive and pipelining (answered
/// in order: the next request is parsed only once the previous one is answered), chunked bodies, `Expect:
/// 100-continue`, the preflight before any body is read, 413 for a body over the limit (at once when announced),
/// idle and request timeouts, the connection limit, 503 to requests that begin during a stop, and a stop that waits
/// for the answers of requests in flight.
public final class EpollServer: HTTPServing, @unchecked Sendable {
    let options: HTTPServerOptions
    let preflight: HTTPServer.Preflight?
    let handler: HTTPHandler
    let inFlight = Atomic<Int>(0)
    let connections = Atomic<Int>(0)
    let stopping = Atomic<Bool>(false)
    private var loops: [EpollLoop] = []
    private var threads: [Thread] = []
    private let exited = DispatchGroup()
    public private(set) var port: UInt16 = 0

    public init(options: HTTPServerOptions, preflight: HTTPServer.Preflight? = nil, handler: @escaping HTTPHandler) {
        self.options = options
        self.preflight = preflight
        self.handler = handler
    }

    public var requestsInFlight: Int { inFlight.load(ordering: .sequentiallyConsistent) }

    public func start() throws {
        let count = max(1, options.threads)
        var port = options.port
        for i in 0..<count {
            let fd = relay_listen(options.host, port, 1024)
            guard fd >= 0 else {
                for l in loops { l.closeAll() }
                loops = []
                let what = fd == -EINVAL ? "\(options.host) is not a numeric IPv4 or IPv6 address" : String(cString: strerror(-fd))
                throw HTTPServerError(message: "cannot listen on \(options.host):\(options.port): \(what)")
            }
            if i == 0 { port = UInt16(relay_bound_port(fd)) }   // port 0: the others join the one the kernel chose
            loops.append(try EpollLoop(server: self, listenFD: fd, index: i))
        }
        self.port = port
        for loop in loops {
            exited.enter()
            let group = exited
            let t = Thread { loop.run(); group.leave() }
            t.name = "relay-http-\(loop.index)"
            // A request is parsed, verified, normalised and encoded for the store on this thread: JSON nested as
            // deep as the parsers allow (512 levels) takes about 1 MiB of stack in a debug build (was the whole
            // stack here: a crash). The stack is reserved, not used: what it costs is address space.
            t.stackSize = 8 << 20
            threads.append(t)
            t.start()
        }
    }

    public func shutdown(timeout: Double) {
        guard !loops.isEmpty else { return }
        stopping.store(true, ordering: .sequentiallyConsistent)
        for l in loops { l.post(.closeListener) }
        let deadline = Date().addingTimeInterval(timeout)
        while requestsInFlight > 0 && Date() < deadline { usleep(5_000) }
        stop()
    }

    public func stop() {
        guard !loops.isEmpty else { return }
        for l in loops { l.post(.stop) }
        exited.wait()
        loops = []
        threads = []
    }
}

/// One connection: its socket, parser and buffers. Touched only by its loop's thread, except that a responder
/// hands its answer to the loop (`EpollLoop.post`), never to the connection itself.
final class EpollConnection: @unchecked Sendable {
    let fd: Int32
    let remoteAddress: String
    let parser: UnsafeMutablePointer<http_parser>
    /// Strong: a responder can outlive the server (an answer after a stop gave up on it) and must still reach
    /// the loop, whose closed inbox drops it. The loop lets go of its connections when it closes them.
    let loop: EpollLoop
    var input: [UInt8] = []
    /// Bytes of `input` already given to the parser.
    var parsed = 0
    var output: [UInt8] = []
    var outputSent = 0
    var closed = false
    /// Close once `output` is written (an error, `Connection: close`, a refusal before the body).
    var closeAfterWrite = false
    /// A request has been handed to the application and not answered yet (the parser is paused meanwhile).
    var awaiting = false
    /// Inside a request: its first byte has arrived (for the request timeout), or nil between requests.
    var requestStarted: Double?
    var lastActivity: Double
    var wantsWrite = false
    /// Serial number of the request being answered: an answer for an earlier one (after a close) is dropped.
    var serial = 0

    // The request being parsed: its method and target, known once its headers are.
    var method = ""
    var target = ""
    var url: [UInt8] = []
    /// The parser's last piece was a value: a name piece that follows begins a new field.
    var lastWasValue = false
    var fieldOpen = false
    /// Past the header section: what comes as fields now is a chunked body's trailer, which is not read.
    var headersDone = false
    var headers = HTTPHeaders()
    var body: [UInt8] = []
    var tooLarge = false
    var keepAlive = true
    var early: HTTPResponse?
    var startedWhileStopping = false
    /// The request being answered is a HEAD: its answer has headers only.
    var isHead = false
    /// The peer has shut down its side: nothing more is read.
    var peerDone = false
    /// The events the socket is registered for (changed only when they must: each change is a system call).
    var events: UInt32 = EPOLLIN.rawValue | EPOLLRDHUP.rawValue

    /// While it waits for an answer or writes one, a connection keeps at most 256 KiB of what follows, then stops
    /// reading.
    var inputFull: Bool { (awaiting || wantsWrite) && input.count - parsed > 256 * 1024 }

    init(fd: Int32, remoteAddress: String, loop: EpollLoop, now: Double) {
        self.fd = fd
        self.remoteAddress = remoteAddress
        self.loop = loop
        self.lastActivity = now
        parser = .allocate(capacity: 1)
        http_parser_init(parser, HTTP_REQUEST)
    }

    deinit { parser.deallocate() }

    func resetRequest() {
        url.removeAll(keepingCapacity: true)
        lastWasValue = false
        fieldOpen = false
        headersDone = false
        headers = HTTPHeaders()
        body = []
        tooLarge = false
        early = nil
        startedWhileStopping = false
    }
}

/// Hands an answer back to the connection's loop, from any thread. Only the first answer to a request counts: the
/// loop drops any that finds the connection no longer waiting for request number `serial`.
struct EpollResponder: HTTPResponder {
    let connection: EpollConnection
    let serial: Int

    func respond(_ response: HTTPResponse) {
        connection.loop.post(.answer(connection, serial, response))
    }
}

// The parser's callbacks: plain C functions, no captures; the connection comes through `parser.data`.
private func conn(_ p: UnsafeMutablePointer<http_parser>?) -> EpollConnection {
    Unmanaged<EpollConnection>.fromOpaque(relay_hp_data(p)!).takeUnretainedValue()
}

private let onMessageBegin: http_cb = { p in
    let c = conn(p)
    c.resetRequest()
    c.requestStarted = c.loop.now
    c.startedWhileStopping = c.loop.server.stopping.load(ordering: .sequentiallyConsistent)
    c.loop.server.inFlight.add(1, ordering: .sequentiallyConsistent)
    return 0
}

private let onURL: http_data_cb = { p, at, n in
    let c = conn(p)
    if let at { c.url.append(contentsOf: UnsafeRawBufferPointer(start: at, count: n)) }
    return 0
}

private let onHeaderField: http_data_cb = { p, at, n in
    let c = conn(p)
    if c.headersDone { return 0 }
    if c.lastWasValue || !c.fieldOpen {
        c.headers.beginField()
        c.fieldOpen = true
        c.lastWasValue = false
    }
    if let at { c.headers.appendName(UnsafeRawBufferPointer(start: at, count: n)) }
    return 0
}

private let onHeaderValue: http_data_cb = { p, at, n in
    let c = conn(p)
    if c.headersDone { return 0 }
    c.lastWasValue = true
    if let at { c.headers.appendValue(UnsafeRawBufferPointer(start: at, count: n)) }
    return 0
}

private let onHeadersComplete: http_cb = { p in
    let c = conn(p)
    c.headersDone = true
    c.keepAlive = http_should_keep_alive(p) != 0
    let server = c.loop.server
    let options = server.options
    c.method = EpollLoop.methodName(relay_hp_method(p))
    c.target = String(decoding: c.url, as: UTF8.self)
    if c.startedWhileStopping {
        c.early = HTTPResponse.error(503, "shutting down", ["reason": "the relay is stopping; nothing was recorded, retry"])
            .adding(headers: [("Retry-After", "1")])
    } else if let preflight = server.preflight,
              let refusal = preflight(c.method, HTTPRequest.path(of: c.target), PreflightHeaders(headers: c.headers)) {
        c.early = refusal
    } else if relay_hp_chunked(p) == 0, c.headers["Content-Length"] != nil,
              relay_hp_content_length(p) != UInt64.max, relay_hp_content_length(p) > UInt64(options.maxBodyBytes) {
        c.early = .error(413, "body too large", ["limit": String(options.maxBodyBytes)])
    }
    if c.early != nil {
        // Answered before the body: nothing more is read from this connection.
        http_parser_pause(p, 1)
        return 0
    }
    if let expect = c.headers["Expect"], expect.lowercased() == "100-continue" {
        c.output.append(contentsOf: EpollLoop.continueLine)
    }
    let length = relay_hp_content_length(p)
    if length != UInt64.max && length > 0 && length <= UInt64(options.maxBodyBytes) { c.body.reserveCapacity(Int(length)) }
    return 0
}

private let onBody: http_data_cb = { p, at, n in
    let c = conn(p)
    guard !c.tooLarge, let at else { return 0 }
    if c.body.count + n > c.loop.server.options.maxBodyBytes {
        c.tooLarge = true
        c.body = []
        c.early = .error(413, "body too large", ["limit": String(c.loop.server.options.maxBodyBytes)])
        http_parser_pause(p, 1)
        return 0
    }
    c.body.append(contentsOf: UnsafeRawBufferPointer(start: at, count: n))
    return 0
}

private let onMessageComplete: http_cb = { p in
    let c = conn(p)
    c.awaiting = true
    http_parser_pause(p, 1)   // the next request (pipelined) waits for this one's answer
    return 0
}

/// Written once, then only read (by every loop's parser).
nonisolated(unsafe) private let parserSettings: UnsafeMutablePointer<http_parser_settings> = {
    let s = UnsafeMutablePointer<http_parser_settings>.allocate(capacity: 1)
    http_parser_settings_init(s)
    s.pointee.on_message_begin = onMessageBegin
    s.pointee.on_url = onURL
    s.pointee.on_header_field = onHeaderField
    s.pointee.on_header_value = onHeaderValue
    s.pointee.on_headers_complete = onHeadersComplete
    s.pointee.on_body = onBody
    s.pointee.on_message_complete = onMessageComplete
    return s
}()

/// One thread's loop: its listening socket, its connections, and an inbox for answers and commands from other threads.
final class EpollLoop: @unchecked Sendable {
    enum Message {
        case answer(EpollConnection, Int, HTTPResponse)
        case closeListener
        case stop
    }

    unowned let server: EpollServer
    let index: Int
    let epollFD: Int32
    let wakeFD: Int32
    var listenFD: Int32
    private var connections: [Int32: EpollConnection] = [:]
    /// Messages for the loop, and whether its eventfd is still open (after the loop ends, answers that still come
    /// from the store are dropped: the descriptor number may already belong to another file).
    private struct Inbox {
        var messages: [Message] = []
        var open = true
    }
    private let inbox = Mutex(Inbox())
    private var running = true
    /// Monotonic seconds, read once per turn of the loop.
    private(set) var now: Double = EpollLoop.clock()
    private var lastSweep: Double = 0
    /// The listening socket is out of the epoll set for a while (descriptors ran out).
    private var acceptPaused = false
    private var dateLine: [UInt8] = []
    private var dateSecond: Int = -1
    /// "HTTP/1.1 202 Accepted\r\n" and the like, made once per status.
    private var statusLines: [Int: [UInt8]] = [:]

    static let continueLine = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)

    init(server: EpollServer, listenFD: Int32, index: Int) throws {
        self.server = server
        self.listenFD = listenFD
        self.index = index
        epollFD = epoll_create1(Int32(EPOLL_CLOEXEC))
        wakeFD = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard epollFD >= 0, wakeFD >= 0 else {
            throw HTTPServerError(message: "cannot create an epoll loop: \(String(cString: strerror(errno)))")
        }
        _ = relay_epoll_add(epollFD, listenFD, EPOLLIN.rawValue)
        _ = relay_epoll_add(epollFD, wakeFD, EPOLLIN.rawValue)
    }

    static func clock() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// http-parser's method numbers, named once.
    static let methodNames: [String] = (0..<64).map { String(cString: http_method_str(http_method(UInt32($0)))) }

    static func methodName(_ n: UInt32) -> String { n < 64 ? methodNames[Int(n)] : "<unknown>" }


    /// From any thread. The first message of a batch wakes the loop; the rest ride along.
    func post(_ m: Message) {
        inbox.withLock { q in
            guard q.open else { return }
            let wake = q.messages.isEmpty
            q.messages.append(m)
            if wake {
                var one: UInt64 = 1
                _ = Glibc.write(wakeFD, &one, 8)
            }
        }
    }

    func closeAll() {
        for (_, c) in connections { close(c) }
        if listenFD >= 0 { Glibc.close(listenFD); listenFD = -1 }
        inbox.withLock { q in
            q.open = false
            q.messages = []
            Glibc.close(wakeFD)
        }
        Glibc.close(epollFD)
    }

    func run() {
        nameThisThread("relay-http-\(index)")
        var fds = [Int32](repeating: 0, count: 256)
        var events = [UInt32](repeating: 0, count: 256)
        while running {
            let n = fds.withUnsafeMutableBufferPointer { f in
                events.withUnsafeMutableBufferPointer { e in relay_epoll_wait(epollFD, f.baseAddress, e.baseAddress, 256, 1000) }
            }
            now = Self.clock()
            if n > 0 {
                for i in 0..<Int(n) {
                    let fd = fds[i], ev = events[i]
                    if fd == wakeFD {
                        drainInbox()
                    } else if fd == listenFD {
                        acceptAll()
                    } else if let c = connections[fd] {
                        if ev & (EPOLLIN.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue | EPOLLRDHUP.rawValue) != 0 { readable(c) }
                        if !c.closed, ev & EPOLLOUT.rawValue != 0 { flush(c) }
                    }
                }
            }
            if now - lastSweep >= 1 { sweep() }
        }
        closeAll()
    }

    private func drainInbox() {
        var one: UInt64 = 0
        _ = Glibc.read(wakeFD, &one, 8)
        let messages = inbox.withLock { q -> [Message] in
            let m = q.messages
            q.messages.removeAll(keepingCapacity: true)
            return m
        }
        for m in messages {
            switch m {
            case .answer(let c, let serial, let response):
                // An answer for a connection closed meanwhile (the peer went away) is dropped.
                if !c.closed && c.awaiting && c.serial == serial { answer(c, response) }
            case .closeListener:
                if listenFD >= 0 {
                    _ = epoll_ctl(epollFD, EPOLL_CTL_DEL, listenFD, nil)
                    Glibc.close(listenFD)
                    listenFD = -1
                }
            case .stop:
                running = false
            }
        }
    }

    private func acceptAll() {
        let limit = server.options.connectionLimit
        while listenFD >= 0 {
            var address = [CChar](repeating: 0, count: 64)
            let fd = address.withUnsafeMutableBufferPointer { relay_accept(listenFD, $0.baseAddress, 64) }
            if fd == -ECONNABORTED || fd == -EINTR { continue }
            if fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS || fd == -ENOMEM {
                // Out of descriptors: the listening socket would wake the loop at once, again and again. Stop
                // watching it until the next sweep (a second), while connections close.
                _ = epoll_ctl(epollFD, EPOLL_CTL_DEL, listenFD, nil)
                acceptPaused = true
                return
            }
            if fd < 0 { return }   // EAGAIN: nothing more to accept
            if server.connections.load(ordering: .relaxed) >= limit {
                Glibc.close(fd)
                continue
            }
            server.connections.add(1, ordering: .relaxed)
            let remote = address.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            let c = EpollConnection(fd: fd, remoteAddress: remote, loop: self, now: now)
            relay_hp_set_data(c.parser, Unmanaged.passUnretained(c).toOpaque())
            connections[fd] = c
            _ = relay_epoll_add(epollFD, fd, EPOLLIN.rawValue | EPOLLRDHUP.rawValue)
        }
    }

    /// One read buffer per loop, reused for every read.
    private var readBuffer = [UInt8](repeating: 0, count: 16 * 1024)

    private func readable(_ c: EpollConnection) {
        while !c.closed {
            if c.inputFull {
                register(c)
                return
            }
            let n = readBuffer.withUnsafeMutableBytes { Glibc.recv(c.fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                c.lastActivity = now
                if c.parsed == c.input.count {
                    c.input.removeAll(keepingCapacity: true)
                    c.parsed = 0
                }
                readBuffer.withUnsafeBufferPointer { c.input.append(contentsOf: UnsafeBufferPointer(rebasing: $0[0..<n])) }
                if !c.awaiting && !c.wantsWrite { parse(c) }
                if n < readBuffer.count { return }
            } else if n == 0 {
                // The peer is done sending. A request it has sent whole is still answered (a half-closed client
                // reads its answer), then the connection closes; anything else closes now.
                if c.awaiting {
                    c.closeAfterWrite = true
                    c.peerDone = true
                    register(c)
                } else {
                    close(c)
                }
                return
            } else {
                if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return }
                close(c)
                return
            }
        }
    }

    /// Feeds the parser what has arrived, and dispatches each complete request.
    private func parse(_ c: EpollConnection) {
        while !c.closed && !c.awaiting && c.early == nil && c.parsed < c.input.count {
            let consumed = c.input.withUnsafeBufferPointer { b -> Int in
                let base = UnsafeRawPointer(b.baseAddress!).assumingMemoryBound(to: CChar.self)
                return http_parser_execute(c.parser, parserSettings, base + c.parsed, b.count - c.parsed)
            }
            c.parsed += consumed
            if c.outputSent < c.output.count && !c.closeAfterWrite { flush(c) }   // 100 Continue
            let err = relay_hp_errno(c.parser)
            if err == UInt32(RELAY_HPE_PAUSED) {
                http_parser_pause(c.parser, 0)
            } else if err != UInt32(RELAY_HPE_OK) {
                let status = err == UInt32(RELAY_HPE_HEADER_OVERFLOW) ? 431 : 400
                let name = String(cString: http_errno_name(http_errno(err)))
                c.closeAfterWrite = true
                if c.requestStarted != nil { finishRequest(c) }
                write(c, .error(status, status == 431 ? "request header fields too large" : "bad request", ["reason": name]))
                return
            }
            if let early = c.early {
                // Refused before (or instead of reading) the body: answered, then closed.
                c.closeAfterWrite = true
                c.awaiting = false
                finishRequest(c)
                write(c, early)
                return
            }
            if c.awaiting { dispatch(c) }
            if consumed == 0 && !c.awaiting { return }
        }
    }

    private func dispatch(_ c: EpollConnection) {
        c.isHead = c.method == "HEAD"
        let request = HTTPRequest(method: c.method, target: c.target, headers: c.headers, body: c.body,
                                  remoteAddress: c.remoteAddress)
        c.body = []
        c.headers = HTTPHeaders()
        c.serial += 1
        server.handler(request, EpollResponder(connection: c, serial: c.serial))
    }

    private func answer(_ c: EpollConnection, _ response: HTTPResponse) {
        c.awaiting = false
        finishRequest(c)
        if response.dropsConnection {
            close(c)
            return
        }
        if !c.keepAlive || server.stopping.load(ordering: .relaxed) { c.closeAfterWrite = true }
        write(c, response)
        if !c.closed && !c.wantsWrite { resume(c) }
    }

    /// What `c` should be woken for: reading unless it waits for an answer with plenty buffered or the peer is
    /// done, writing while output is pending.
    private func register(_ c: EpollConnection) {
        var ev: UInt32 = 0
        if !c.peerDone && !c.inputFull { ev |= EPOLLIN.rawValue | EPOLLRDHUP.rawValue }
        if c.wantsWrite { ev |= EPOLLOUT.rawValue }
        if ev != c.events {
            c.events = ev
            _ = relay_epoll_mod(epollFD, c.fd, ev)
        }
    }

    /// After an answer is written whole: the requests pipelined behind it, then reading again. (While an answer is
    /// still being written, nothing more is parsed: a client that sends without reading cannot make output pile up.)
    private func resume(_ c: EpollConnection) {
        if !c.closeAfterWrite && !c.awaiting && c.parsed < c.input.count { parse(c) }
        if !c.closed { register(c) }
    }

    private func finishRequest(_ c: EpollConnection) {
        if c.requestStarted != nil {
            c.requestStarted = nil
            server.inFlight.subtract(1, ordering: .sequentiallyConsistent)
        }
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 200: return "OK"
        case 201: return "Created"
        case 202: return "Accepted"
        case 204: return "No Content"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 409: return "Conflict"
        case 413: return "Payload Too Large"
        case 415: return "Unsupported Media Type"
        case 422: return "Unprocessable Entity"
        case 429: return "Too Many Requests"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Timeout"
        default: return "Status"
        }
    }

    private func date() -> [UInt8] {
        let second = Int(Glibc.time(nil))
        if second != dateSecond {
            dateSecond = second
            var t = time_t(second)
            var tmv = tm()
            gmtime_r(&t, &tmv)
            var out = [CChar](repeating: 0, count: 64)
            let n = strftime(&out, 64, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tmv)
            dateLine = out[0..<n].map { UInt8(bitPattern: $0) }
        }
        return dateLine
    }

    private func write(_ c: EpollConnection, _ response: HTTPResponse) {
        // Bytes straight into the connection's buffer: the status line is made once per status, the rest copied.
        if let line = statusLines[response.status] {
            c.output.append(contentsOf: line)
        } else {
            let line = Array("HTTP/1.1 \(response.status) \(Self.reason(response.status))\r\n".utf8)
            statusLines[response.status] = line
            c.output.append(contentsOf: line)
        }
        for (k, v) in response.headers where !Self.framing(k) {
            c.output.append(contentsOf: k.utf8)
            c.output.append(0x3A)
            c.output.append(0x20)
            c.output.append(contentsOf: v.utf8)
            c.output.append(13)
            c.output.append(10)
        }
        c.output.append(contentsOf: Self.contentLengthName)
        Self.appendDecimal(response.body.count, to: &c.output)
        c.output.append(13)
        c.output.append(10)
        if c.closeAfterWrite { c.output.append(contentsOf: Self.connectionClose) }
        c.output.append(contentsOf: date())
        c.output.append(13)
        c.output.append(10)
        if !c.isHead { c.output.append(contentsOf: response.body) }
        c.isHead = false
        flush(c)
    }

    private static let contentLengthName = Array("Content-Length: ".utf8)
    private static let connectionClose = Array("Connection: close\r\n".utf8)

    static func appendDecimal(_ value: Int, to out: inout [UInt8]) {
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var v = UInt(max(0, value))
        var n = 0
        withUnsafeMutableBytes(of: &digits) { d in
            repeat {
                d[19 - n] = UInt8(ascii: "0") + UInt8(v % 10)
                v /= 10
                n += 1
            } while v > 0
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: d[(20 - n)...]))
        }
    }

    /// Headers the server frames itself.
    static func framing(_ name: String) -> Bool {
        switch name.utf8.count {
        case 10: return HTTPHeaders.sameName(name, "Connection")
        case 14: return HTTPHeaders.sameName(name, "Content-Length")
        case 17: return HTTPHeaders.sameName(name, "Transfer-Encoding")
        default: return false
        }
    }

    private func flush(_ c: EpollConnection) {
        while c.outputSent < c.output.count {
            let n = c.output.withUnsafeBytes { b in relay_send(c.fd, b.baseAddress! + c.outputSent, b.count - c.outputSent) }
            if n > 0 {
                c.outputSent += n
                c.lastActivity = now
            } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                if !c.wantsWrite {
                    c.wantsWrite = true
                    register(c)
                }
                return
            } else if n < 0 && errno == EINTR {
                continue
            } else {
                close(c)
                return
            }
        }
        c.output.removeAll(keepingCapacity: true)
        c.outputSent = 0
        if c.closeAfterWrite {
            close(c)
            return
        }
        if c.wantsWrite {
            c.wantsWrite = false
            register(c)
            if !c.awaiting { resume(c) }
        }
    }

    private func close(_ c: EpollConnection) {
        guard !c.closed else { return }
        c.closed = true
        finishRequest(c)
        c.awaiting = false
        _ = epoll_ctl(epollFD, EPOLL_CTL_DEL, c.fd, nil)
        Glibc.close(c.fd)
        connections[c.fd] = nil
        server.connections.subtract(1, ordering: .relaxed)
    }

    /// Idle connections and requests whose body trickles past the request timeout are closed.
    private func sweep() {
        lastSweep = now
        if acceptPaused && listenFD >= 0 {
            acceptPaused = false
            _ = relay_epoll_add(epollFD, listenFD, EPOLLIN.rawValue)
        }
        let idle = Double(max(1, server.options.idleTimeoutSeconds))
        let request = server.options.requestTimeoutSeconds
        for (_, c) in connections where !c.awaiting {
            if let started = c.requestStarted {
                if now - started > request { close(c) }
            } else if now - c.lastActivity > idle {
                close(c)
            }
        }
    }
}
