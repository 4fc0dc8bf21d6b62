import CCurl

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The libcurl layer of the transport: handle wrappers that free what they own, one transfer's state and its C
// callbacks, and CURLcode -> TransportError. Everything here runs on the client's thread only.

/// `curl_global_init` exactly once per process (a static let is initialised once, thread-safely), before the
/// first handle.
enum CurlGlobal {
    static let initCode: UInt32 = curl_global_init(Int(CURL_GLOBAL_ALL)).rawValue
}

/// An easy handle (one transfer at a time; reused after `curl_easy_reset`) with its error buffer.
final class CurlEasy {
    let handle: UnsafeMutableRawPointer
    /// CURLOPT_ERRORBUFFER: libcurl's detail for the last failure (CURL_ERROR_SIZE bytes).
    let errorBuffer: UnsafeMutablePointer<CChar>

    init?() {
        guard let h = curl_easy_init() else { return nil }
        handle = h
        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
    }

    deinit {
        curl_easy_cleanup(handle)
        errorBuffer.deallocate()
    }

    var errorDetail: String { String(cString: errorBuffer) }
}

/// Every option the transport sets, one named method each (as swift-corelibs-foundation's EasyHandle does), so that
/// no caller passes a raw CURLOPT or forgets a failed setopt. Each throws `.invalidRequest` naming the option
/// (`.io` when libcurl is out of memory).
extension CurlEasy {
    private func check(_ rc: CURLcode, _ what: String) throws(TransportError) {
        guard rc == CURLE_OK else {
            let message = TransportError.curlMessage(rc, detail: "")
            if rc == CURLE_OUT_OF_MEMORY { throw .io(code: Int32(bitPattern: rc.rawValue), message: message) }
            throw .invalidRequest(what + ": " + message)
        }
    }

    /// What every transfer has: libcurl's detail into `errorBuffer`, no signals (threads), http and https only,
    /// redirects not followed (a 3xx is the destination's answer), TCP keep-alive.
    func setDefaults() throws(TransportError) {
        errorBuffer[0] = 0
        try check(relay_curl_easy_setopt_ptr(handle, CURLOPT_ERRORBUFFER, errorBuffer), "error buffer")
        try check(relay_curl_easy_setopt_long(handle, CURLOPT_NOSIGNAL, 1), "nosignal")
        try check(relay_curl_easy_setopt_str(handle, CURLOPT_PROTOCOLS_STR, "http,https"), "protocols")
        try check(relay_curl_easy_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 0), "follow location")
        try check(relay_curl_easy_setopt_long(handle, CURLOPT_TCP_KEEPALIVE, 1), "TCP keep-alive")
    }

    func setURL(_ url: String) throws(TransportError) {
        try check(relay_curl_easy_setopt_str(handle, CURLOPT_URL, url), "url")
    }

    func setTimeouts(connectMillis: Int, totalMillis: Int) throws(TransportError) {
        try check(relay_curl_easy_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, connectMillis), "connect timeout")
        try check(relay_curl_easy_setopt_long(handle, CURLOPT_TIMEOUT_MS, totalMillis), "total timeout")
    }

    /// Peer and host verification on or off, and the CA bundle when not the system's.
    func setTLSVerification(_ verify: Bool, caBundle: String?) throws(TransportError) {
        try check(relay_curl_easy_setopt_long(handle, CURLOPT_SSL_VERIFYPEER, verify ? 1 : 0), "verify peer")
        try check(relay_curl_easy_setopt_long(handle, CURLOPT_SSL_VERIFYHOST, verify ? 2 : 0), "verify host")
        if let caBundle { try check(relay_curl_easy_setopt_str(handle, CURLOPT_CAINFO, caBundle), "CA bundle") }
    }

    /// Mutual TLS from PEM files.
    func setClientCertificate(_ tls: ClientTLS) throws(TransportError) {
        try check(relay_curl_easy_setopt_str(handle, CURLOPT_SSLCERT, tls.certificatePath), "client certificate")
        try check(relay_curl_easy_setopt_str(handle, CURLOPT_SSLCERTTYPE, "PEM"), "client certificate type")
        try check(relay_curl_easy_setopt_str(handle, CURLOPT_SSLKEY, tls.keyPath), "client key")
        // Always set: without it OpenSSL would prompt for an encrypted key's passphrase on the terminal.
        try check(relay_curl_easy_setopt_str(handle, CURLOPT_KEYPASSWD, tls.keyPassword ?? ""), "client key password")
    }

    /// The body and header callbacks, with `context` (the transfer) as their userdata.
    func setReceivers(context: UnsafeMutableRawPointer) throws(TransportError) {
        try check(relay_curl_easy_setopt_writefn(handle, CURLOPT_WRITEFUNCTION, relayTransportWriteBody), "write function")
        try check(relay_curl_easy_setopt_ptr(handle, CURLOPT_WRITEDATA, context), "write data")
        try check(relay_curl_easy_setopt_writefn(handle, CURLOPT_HEADERFUNCTION, relayTransportWriteHeader), "header function")
        try check(relay_curl_easy_setopt_ptr(handle, CURLOPT_HEADERDATA, context), "header data")
    }

    /// HEAD: no body is read.
    func setNoBody() throws(TransportError) {
        try check(relay_curl_easy_setopt_long(handle, CURLOPT_NOBODY, 1), "nobody")
    }

    /// No body sent (and no Content-Length).
    func setGet() throws(TransportError) {
        try check(relay_curl_easy_setopt_long(handle, CURLOPT_HTTPGET, 1), "httpget")
    }

    /// `count` bytes at `bytes` (which must stay valid until the transfer ends) as the body, with its Content-Length.
    func setBody(_ bytes: UnsafeMutableRawPointer, count: Int) throws(TransportError) {
        try check(relay_curl_easy_setopt_off(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(count)), "body size")
        try check(relay_curl_easy_setopt_ptr(handle, CURLOPT_POSTFIELDS, bytes), "body")
    }

    func setMethod(_ method: String) throws(TransportError) {
        try check(relay_curl_easy_setopt_str(handle, CURLOPT_CUSTOMREQUEST, method), "method")
    }

    func setHeaders(_ list: CurlHeaderList) throws(TransportError) {
        try check(relay_curl_easy_setopt_slist(handle, CURLOPT_HTTPHEADER, list.head), "headers")
    }

    /// The `User-Agent` libcurl sends when the headers have none of their own.
    func setUserAgent(_ agent: String) throws(TransportError) {
        try check(relay_curl_easy_setopt_str(handle, CURLOPT_USERAGENT, agent), "user agent")
    }

    /// After a transfer: the HTTP status, the connections it opened, and whether it connected at all.
    var responseCode: Int {
        var v = 0
        _ = relay_curl_easy_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &v)
        return v
    }
    var newConnections: Int {
        var v = 0
        _ = relay_curl_easy_getinfo_long(handle, CURLINFO_NUM_CONNECTS, &v)
        return v
    }
    var connected: Bool {
        var v = 0.0
        _ = relay_curl_easy_getinfo_double(handle, CURLINFO_CONNECT_TIME, &v)
        return v > 0
    }

    /// Every option cleared, for the next transfer (the connection stays in the multi handle's cache).
    func reset() { curl_easy_reset(handle) }
}

/// The multi handle: the transfers in progress and the connection cache they share.
final class CurlMulti {
    private(set) var handle: UnsafeMutableRawPointer?

    init?() {
        guard let h = curl_multi_init() else { return nil }
        handle = h
    }

    /// Closes every cached connection; the easy handles must have been removed.
    func cleanup() {
        if let h = handle {
            handle = nil
            curl_multi_cleanup(h)
        }
    }

    deinit { cleanup() }
}

/// A `curl_slist` of request header lines, freed with its owner.
final class CurlHeaderList {
    private(set) var head: UnsafeMutablePointer<curl_slist>?

    /// False when libcurl could not allocate.
    func append(_ line: String) -> Bool {
        guard let next = curl_slist_append(head, line) else { return false }
        head = next
        return true
    }

    deinit { if let head { curl_slist_free_all(head) } }
}

/// A request submitted to the client and not yet started (crosses threads through the client's inbox).
struct Submission: Sendable {
    let request: OutboundRequest
    let completion: @Sendable (Result<OutboundResponse, TransportError>) -> Void
    let submittedAt: Double
}

/// One request in flight: owns everything libcurl points into (body bytes, header list, the transfer itself as
/// the callbacks' user data) until the easy handle has been removed from the multi handle. The client's
/// in-flight table owns it for exactly that long, so the callbacks' unretained pointers to it stay valid.
final class Transfer {
    let easy: CurlEasy
    let submission: Submission
    let maxResponseBytes: Int
    /// The request body for CURLOPT_POSTFIELDS (libcurl reads it while sending, without copying).
    private var bodyBytes: UnsafeMutableRawBufferPointer?
    var headerList = CurlHeaderList()

    // Filled by the callbacks:
    var responseHeaders: [(String, String)] = []
    var responseBody: [UInt8] = []
    var truncated = false

    init(easy: CurlEasy, submission: Submission) {
        self.easy = easy
        self.submission = submission
        self.maxResponseBytes = max(0, submission.request.maxResponseBytes)
    }

    deinit { bodyBytes?.deallocate() }

    /// A stable copy of `body` (never empty, so the pointer is never null) that lives as long as the transfer.
    func pinBody(_ body: [UInt8]) -> UnsafeMutableRawPointer {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, body.count), alignment: 1)
        body.withUnsafeBytes { buffer.copyMemory(from: $0) }
        bodyBytes = buffer
        return buffer.baseAddress!
    }

    func receiveBody(_ bytes: UnsafeRawBufferPointer) {
        let room = maxResponseBytes - responseBody.count
        if bytes.count > room { truncated = true }
        let keep = min(bytes.count, room)
        if keep > 0 { responseBody.append(contentsOf: bytes[0..<keep]) }
    }

    /// One header line as libcurl hands it over: a status line (starts a new response: interim 1xx answers and
    /// anything before them are forgotten), `Name: value`, an obsolete folded continuation, or the blank end.
    func receiveHeaderLine(_ raw: UnsafeRawBufferPointer) {
        var end = raw.count
        while end > 0 && (raw[end - 1] == 0x0A || raw[end - 1] == 0x0D) { end -= 1 }
        if end == 0 { return }
        let line = UnsafeRawBufferPointer(rebasing: raw[0..<end])
        if line.starts(with: "HTTP/".utf8) {
            responseHeaders.removeAll(keepingCapacity: true)
            responseBody.removeAll(keepingCapacity: true)
            truncated = false
            return
        }
        if line[0] == 0x20 || line[0] == 0x09 {
            guard !responseHeaders.isEmpty else { return }
            let more = Transfer.trimmed(line, from: 0, to: line.count)
            if !more.isEmpty {
                let last = responseHeaders.count - 1
                responseHeaders[last].1 += responseHeaders[last].1.isEmpty ? more : " " + more
            }
            return
        }
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > 0 else { return }
        let name = Transfer.trimmed(line, from: 0, to: colon)
        guard !name.isEmpty else { return }
        responseHeaders.append((name, Transfer.trimmed(line, from: colon + 1, to: line.count)))
    }

    private static func trimmed(_ bytes: UnsafeRawBufferPointer, from: Int, to: Int) -> String {
        var a = from, b = to
        while a < b && (bytes[a] == 0x20 || bytes[a] == 0x09) { a += 1 }
        while b > a && (bytes[b - 1] == 0x20 || bytes[b - 1] == 0x09) { b -= 1 }
        return String(decoding: bytes[a..<b], as: UTF8.self)
    }

    static func from(_ userdata: UnsafeMutableRawPointer) -> Transfer {
        Unmanaged<Transfer>.fromOpaque(userdata).takeUnretainedValue()
    }
}

/// CURLOPT_WRITEFUNCTION: response body bytes. Always takes everything (the cap discards, it does not abort).
let relayTransportWriteBody: relay_curl_write_cb = { data, size, count, userdata in
    let n = size * count
    guard let data, let userdata, n > 0 else { return n }
    Transfer.from(userdata).receiveBody(UnsafeRawBufferPointer(start: data, count: n))
    return n
}

/// CURLOPT_HEADERFUNCTION: one response header line at a time, status lines included.
let relayTransportWriteHeader: relay_curl_write_cb = { data, size, count, userdata in
    let n = size * count
    guard let data, let userdata, n > 0 else { return n }
    Transfer.from(userdata).receiveHeaderLine(UnsafeRawBufferPointer(start: data, count: n))
    return n
}

extension TransportError {
    /// libcurl's text for `code`, and its detail for this transfer when it says more.
    static func curlMessage(_ code: CURLcode, detail: String) -> String {
        let text = String(cString: curl_easy_strerror(code))
        let detail = detail.trimmingSuffix("\n")
        if detail.isEmpty || detail == text { return text }
        return text + ": " + detail
    }

    /// A failed transfer's CURLcode as a transport error. `connected`: the transfer had reached the server (then
    /// an "unsupported protocol" is the server answering in something that is not HTTP, e.g. HTTP/0.9: an I/O
    /// failure, not a bad request).
    static func fromCurl(_ code: CURLcode, detail: String, connected: Bool) -> TransportError {
        let raw = Int32(bitPattern: code.rawValue)
        let message = curlMessage(code, detail: detail)
        switch code {
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY:
            return .connect(code: raw, message: message)
        case CURLE_OPERATION_TIMEDOUT:
            return .timeout(code: raw, message: message)
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER,
             CURLE_SSL_ENGINE_NOTFOUND, CURLE_SSL_ENGINE_SETFAILED, CURLE_SSL_ENGINE_INITFAILED,
             CURLE_SSL_CACERT_BADFILE, CURLE_SSL_SHUTDOWN_FAILED, CURLE_SSL_CRL_BADFILE, CURLE_SSL_ISSUER_ERROR,
             CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_INVALIDCERTSTATUS, CURLE_SSL_CLIENTCERT, CURLE_USE_SSL_FAILED:
            return .tls(code: raw, message: message)
        case CURLE_UNSUPPORTED_PROTOCOL where connected:
            return .io(code: raw, message: message)
        case CURLE_URL_MALFORMAT, CURLE_UNSUPPORTED_PROTOCOL, CURLE_BAD_FUNCTION_ARGUMENT, CURLE_NOT_BUILT_IN:
            return .invalidRequest(message)
        default:
            // CURLE_RECV_ERROR, SEND_ERROR, GOT_NOTHING, PARTIAL_FILE, WEIRD_SERVER_REPLY, HTTP2, ... and anything new.
            return .io(code: raw, message: message)
        }
    }

    /// A failure of the multi handle itself (CURLMcode).
    static func fromMulti(_ code: CURLMcode, _ what: String) -> TransportError {
        .io(code: code.rawValue, message: what + ": " + String(cString: curl_multi_strerror(code)))
    }
}

extension String {
    fileprivate func trimmingSuffix(_ suffix: String) -> String {
        var s = Substring(self)
        while s.hasSuffix(suffix) { s = s.dropLast(suffix.count) }
        return String(s)
    }
}

/// Monotonic seconds (for elapsed times and deadlines).
func transportNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
