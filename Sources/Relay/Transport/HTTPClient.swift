import CCurl
import Foundation
import Synchronization

/// The outbound HTTP client: libcurl's multi interface on one dedicated thread, with a keep-alive connection pool
/// (the multi handle's connection cache), connection limits, per-request timeouts and TLS verification.
///
/// Threads: `send` may be called from any thread. It queues the request in a mutex-protected inbox and wakes the
/// client's thread (`curl_multi_wakeup`), which alone touches curl handles: it starts queued requests, drives
/// every transfer (`curl_multi_perform`, `curl_multi_poll`) and calls each completion when its transfer ends.
/// Completions run on that thread and must be short; they may call `send` again.
///
/// Nothing is logged, and errors never carry request headers or bodies (they hold credentials).
public final class HTTPClient: Sendable {
    private let core: ClientCore
    private let exited = DispatchGroup()

    public init(options: HTTPClientOptions = .init()) throws {
        core = try ClientCore(options: options)
        let core = self.core
        let exited = self.exited
        exited.enter()
        let thread = Thread {
            core.run()
            exited.leave()
        }
        thread.start()
    }

    deinit {
        shutdown(timeout: 0)
    }

    /// Sends `request`; `completion` is called exactly once, on the client's thread (keep it short). After
    /// `shutdown` it is called at once, on the calling thread, with `.closed`.
    public func send(_ request: OutboundRequest,
                     completion: @escaping @Sendable (Result<OutboundResponse, TransportError>) -> Void) {
        let submission = Submission(request: request, completion: completion, submittedAt: transportNow())
        if !core.submit(submission) { completion(.failure(.closed)) }
    }

    /// Convenience for tests and tools: sends and blocks the calling thread until the result. Never call it on the
    /// client's thread (from a completion): that would wait for itself, so it fails with `.invalidRequest`.
    public func sendAndWait(_ request: OutboundRequest) -> Result<OutboundResponse, TransportError> {
        if core.isClientThread {
            return .failure(.invalidRequest("sendAndWait was called on the HTTP client's own thread"))
        }
        let box = Handoff<Result<OutboundResponse, TransportError>>()
        send(request) { box.put($0) }
        return box.take()
    }

    /// Stops taking requests (later `send`s fail with `.closed` at once), fails the queued ones that have not
    /// started with `.closed`, lets the ones in flight finish for up to `timeout` seconds, fails what is left with
    /// `.closed`, closes every connection and joins the thread. Called from a completion (the client's own
    /// thread), it does all that without waiting for it. Calling it again only waits.
    public func shutdown(timeout: Double) {
        core.beginShutdown(grace: timeout)
        if !core.isClientThread { exited.wait() }
    }
}

/// A one-shot result handed from the client's thread to a waiting one.
/// The client's state. `inbox` is shared (under its mutex); everything else belongs to the client's thread.
private final class ClientCore: @unchecked Sendable {
    struct Inbox {
        var queue: [Submission] = []
        var closing = false
        /// Monotonic time after which transfers still in flight are failed with `.closed`.
        var graceDeadline = Double.infinity
        /// For `curl_multi_wakeup` from other threads; nil once the thread has cleaned the multi handle up. Only
        /// used under the mutex, so a wakeup can never meet a freed handle.
        var wakeHandle: UnsafeMutableRawPointer?
        /// The client's thread, once it runs.
        var thread: pthread_t?
    }

    let inbox: Mutex<Inbox>
    // The client's thread only:
    private let options: HTTPClientOptions
    private let multi: CurlMulti
    private var inFlight: [UnsafeMutableRawPointer: Transfer] = [:]
    private var idleHandles: [CurlEasy] = []
    private static let maxIdleHandles = 32

    init(options: HTTPClientOptions) throws(TransportError) {
        let global = CurlGlobal.initCode
        guard global == CURLE_OK.rawValue else {
            throw .io(code: Int32(bitPattern: global), message: "curl_global_init failed")
        }
        guard let multi = CurlMulti(), let m = multi.handle else {
            throw .io(code: CURLM_OUT_OF_MEMORY.rawValue, message: "curl_multi_init failed")
        }
        // 0 (or less): no limit. The keep-alive cache holds as many idle connections as may be open.
        var settings: [(CURLMoption, Int, String)] = [
            (CURLMOPT_MAX_HOST_CONNECTIONS, max(0, options.maxConnectionsPerHost), "maxConnectionsPerHost"),
            (CURLMOPT_MAX_TOTAL_CONNECTIONS, max(0, options.maxTotalConnections), "maxTotalConnections"),
        ]
        if options.maxTotalConnections > 0 {
            settings.append((CURLMOPT_MAXCONNECTS, options.maxTotalConnections, "connection cache size"))
        }
        for (option, value, what) in settings {
            let rc = relay_curl_multi_setopt_long(m, option, value)
            guard rc == CURLM_OK else { throw .fromMulti(rc, what) }
        }
        self.options = options
        self.multi = multi
        self.inbox = Mutex(Inbox(wakeHandle: m))
    }

    var isClientThread: Bool {
        let thread = inbox.withLock { $0.thread }
        return thread.map { pthread_equal($0, pthread_self()) != 0 } ?? false
    }

    /// Queues a request and wakes the thread; false when the client is closing.
    func submit(_ submission: Submission) -> Bool {
        inbox.withLock { s in
            guard !s.closing, let wake = s.wakeHandle else { return false }
            s.queue.append(submission)
            _ = curl_multi_wakeup(wake)
            return true
        }
    }

    func beginShutdown(grace: Double) {
        let deadline = transportNow() + max(0, grace)
        inbox.withLock { s in
            s.closing = true
            s.graceDeadline = min(s.graceDeadline, deadline)
            if let wake = s.wakeHandle { _ = curl_multi_wakeup(wake) }
        }
    }

    // MARK: - The client's thread

    func run() {
        nameThisThread("relay-http")
        let me = pthread_self()
        inbox.withLock { $0.thread = me }
        guard let m = multi.handle else { return }
        while true {
            let (new, closing, deadline) = inbox.withLock { s in
                let q = s.queue
                s.queue.removeAll()
                return (q, s.closing, s.graceDeadline)
            }
            for submission in new {
                if closing { submission.completion(.failure(.closed)) } else { start(submission, m) }
            }
            var running: Int32 = 0
            let rc = curl_multi_perform(m, &running)
            finishDone(m)
            if closing && (inFlight.isEmpty || transportNow() >= deadline) { break }

            var waitMs = 1000.0
            if closing { waitMs = min(waitMs, max(1, (deadline - transportNow()) * 1000)) }
            let polled = rc == CURLM_OK ? curl_multi_poll(m, nil, 0, Int32(waitMs.rounded(.up)), nil) : rc
            if polled != CURLM_OK { usleep(10_000) }   // never spin on a failing multi handle
        }
        // Whatever is still in flight after the grace period ends here, then every connection closes.
        for (easy, transfer) in inFlight {
            curl_multi_remove_handle(m, easy)
            transfer.submission.completion(.failure(.closed))
        }
        inFlight.removeAll()
        idleHandles.removeAll()
        inbox.withLock { s in
            s.wakeHandle = nil
            s.queue.removeAll()   // empty: nothing is queued once closing is seen
        }
        multi.cleanup()
    }

    private func start(_ submission: Submission, _ m: UnsafeMutableRawPointer) {
        guard let easy = idleHandles.popLast() ?? CurlEasy() else {
            submission.completion(.failure(.io(code: Int32(bitPattern: CURLE_OUT_OF_MEMORY.rawValue),
                                               message: "curl_easy_init failed")))
            return
        }
        let transfer = Transfer(easy: easy, submission: submission)
        do {
            try configure(transfer)
        } catch {
            recycle(easy)
            submission.completion(.failure(error))
            return
        }
        inFlight[easy.handle] = transfer
        let rc = curl_multi_add_handle(m, easy.handle)
        if rc != CURLM_OK {
            inFlight[easy.handle] = nil
            recycle(easy)
            submission.completion(.failure(.fromMulti(rc, "curl_multi_add_handle")))
        }
    }

    /// Sets every option of one transfer on a fresh (or reset) easy handle.
    private func configure(_ t: Transfer) throws(TransportError) {
        let request = t.submission.request
        let method = request.method
        guard !method.isEmpty, method.utf8.allSatisfy(ClientCore.isTokenByte) else {
            throw .invalidRequest("the method is not an HTTP token")
        }
        let url = request.url
        let lower = url.prefix(8).lowercased()
        guard lower.hasPrefix("http://") || lower.hasPrefix("https://") else {
            throw .invalidRequest("the URL is not an absolute http:// or https:// URL")
        }
        guard !url.utf8.contains(where: { $0 <= 0x20 || $0 == 0x7F }) else {
            throw .invalidRequest("the URL contains spaces or control characters")
        }

        let easy = t.easy
        try easy.setDefaults()
        try easy.setURL(url)
        try easy.setTimeouts(connectMillis: ClientCore.millis(request.connectTimeout),
                             totalMillis: ClientCore.millis(request.totalTimeout))
        try easy.setTLSVerification(options.verifyTLS, caBundle: options.caBundlePath)
        if let tls = request.clientTLS { try easy.setClientCertificate(tls) }
        try easy.setReceivers(context: Unmanaged.passUnretained(t).toOpaque())

        // Method and body. GET and HEAD without a body send no Content-Length; POST, PUT and PATCH always send
        // one (0 for an empty body); other methods send one when they have a body.
        let upper = method.uppercased()
        let sendsBody: Bool
        if upper == "HEAD" {
            guard request.body.isEmpty else { throw .invalidRequest("a HEAD request cannot have a body") }
            try easy.setNoBody()
            sendsBody = false
        } else if request.body.isEmpty && !["POST", "PUT", "PATCH"].contains(upper) {
            try easy.setGet()
            sendsBody = false
        } else {
            try easy.setBody(t.pinBody(request.body), count: request.body.count)
            sendsBody = true
        }
        try easy.setMethod(method)

        // Headers: the caller's, in order; then blanks that stop libcurl adding its own `Expect: 100-continue`
        // and (for a body) its form Content-Type. A line `Name;` is libcurl's way to send an empty value.
        var hasExpect = false, hasContentType = false, hasUserAgent = false
        for (name, value) in request.headers {
            guard !name.isEmpty, name.utf8.allSatisfy(ClientCore.isTokenByte) else {
                throw .invalidRequest("a header name is not an HTTP token")
            }
            guard !value.utf8.contains(where: { $0 == 0x0D || $0 == 0x0A || $0 == 0 }) else {
                throw .invalidRequest("the value of header \(name) contains CR, LF or NUL")
            }
            if HTTPHeaders.sameName(name, "Content-Length") || HTTPHeaders.sameName(name, "Transfer-Encoding") {
                continue
            }
            if HTTPHeaders.sameName(name, "Expect") { hasExpect = true }
            if HTTPHeaders.sameName(name, "Content-Type") { hasContentType = true }
            if HTTPHeaders.sameName(name, "User-Agent") { hasUserAgent = true }
            let trimmed = value.trimmedASCII
            var line = name
            if trimmed.isEmpty { line += ";" } else { line += ": "; line.append(contentsOf: trimmed) }
            guard t.headerList.append(line) else {
                throw .io(code: Int32(bitPattern: CURLE_OUT_OF_MEMORY.rawValue), message: "curl_slist_append failed")
            }
        }
        if !hasExpect && !t.headerList.append("Expect:")
            || sendsBody && !hasContentType && !t.headerList.append("Content-Type:") {
            throw .io(code: Int32(bitPattern: CURLE_OUT_OF_MEMORY.rawValue), message: "curl_slist_append failed")
        }
        try easy.setHeaders(t.headerList)
        if !hasUserAgent, let agent = options.userAgent { try easy.setUserAgent(agent) }
    }

    /// Completes every transfer libcurl reports done.
    private func finishDone(_ m: UnsafeMutableRawPointer) {
        var left: Int32 = 0
        while let message = curl_multi_info_read(m, &left) {
            guard message.pointee.msg == CURLMSG_DONE, let easy = message.pointee.easy_handle else { continue }
            let code = message.pointee.data.result   // read before the removal invalidates the message
            curl_multi_remove_handle(m, easy)
            guard let transfer = inFlight.removeValue(forKey: easy) else { continue }
            let result = outcome(transfer, code)
            recycle(transfer.easy)
            transfer.submission.completion(result)
        }
    }

    private func outcome(_ t: Transfer, _ code: CURLcode) -> Result<OutboundResponse, TransportError> {
        if code != CURLE_OK {
            return .failure(.fromCurl(code, detail: t.easy.errorDetail, connected: t.easy.connected))
        }
        let connects = t.easy.newConnections
        return .success(OutboundResponse(status: t.easy.responseCode, headers: HTTPHeaders(t.responseHeaders), body: t.responseBody,
                                         truncated: t.truncated, elapsed: transportNow() - t.submission.submittedAt,
                                         newConnections: connects))
    }

    /// Back to the idle list with every option cleared (the connection stays in the multi handle's cache).
    private func recycle(_ easy: CurlEasy) {
        easy.reset()
        if idleHandles.count < ClientCore.maxIdleHandles { idleHandles.append(easy) }
    }

    private static func millis(_ seconds: Double) -> Int {
        guard seconds.isFinite else { return 0 }   // 0: no limit
        return Int(min(max(1, (seconds * 1000).rounded(.up)), Double(Int32.max)))
    }

    /// RFC 9110 tchar.
    private static func isTokenByte(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "!#$%&'*+-.^_`|~".utf8.contains(c)
        }
    }
}
