import Foundation
import FuzzSupport
import Glibc
import Relay
import Synchronization

// The webhook listener end to end, in process: bytes over a loopback socket into the relay's own `EpollServer`
// (http-parser framing, limits, keep-alive, pipelining, chunked bodies, `Expect: 100-continue`), its preflight and
// `Ingest.handle` with every kind of source configured (FuzzSources), onto a store that keeps nothing.
// Selector (the first byte) & 3:
// - 0, 1: the rest is sent as it is, then the client shuts its side: the relay must answer (or close) within 5 s,
//   every answer well-formed with an expected status, and no event of a signed source stored (the secrets are
//   random: a made-up request that passes is a hole);
// - 2, 3: NUL-separated fields (selector bytes: mode, source, method, framing, chunk size, repeats; then the
//   target's suffix, extra header lines, the content type, the body) make a request signed as `relay send` signs
//   it, framed by the selector (Content-Length, chunked in pieces, 100-continue), sent one to three times on one
//   connection: each must be answered in order; a signed JSON body to a pass-through source with no extra headers
//   must be accepted (202).
// After every input no request may stay in flight (a leak there would hold a stop forever), and every event accepted
// must read back unchanged as the stores read it (NullStore).

/// Keeps nothing, but checks what the stores would read back: they store `jsonText(includeRaw: false)` and read it
/// with `CanonicalEvent.fromStoredJSON` (RelaySQLite, RelayPostgres; JSONDecoder for any other shape), so an event
/// that does not decode, or decodes to another event, would be acknowledged and then lost or changed. JSONDecoder
/// must read it the same way too.
final class NullStore: EventStore, @unchecked Sendable {
    let committed = Mutex<[String]>([])
    let problems = Mutex<[String]>([])
    func commit(_ event: CanonicalEvent, deliveries: [PlannedDelivery], link: CorrelationScope?,
                completion: @escaping @Sendable (Result<CommitOutcome, StoreError>) -> Void) {
        committed.withLock { $0.append(event.source) }
        let text = event.jsonText(includeRaw: false)
        var expected = event
        expected.raw = nil
        if let back = try? CanonicalEvent.fromStoredJSON(Array(text.utf8)) {
            if !sameEvent(back, expected) {
                problems.withLock { $0.append("an accepted event reads back changed: stored \(text.prefix(300)), read \(back.jsonText(includeRaw: false).prefix(300))") }
            }
        } else {
            problems.withLock { $0.append("an accepted event cannot be read back (fromStoredJSON): \(text.prefix(300))") }
        }
        if let decoded = try? JSONDecoder().decode(CanonicalEvent.self, from: Data(text.utf8)) {
            if !sameEvent(decoded, expected) {
                problems.withLock { $0.append("JSONDecoder reads an accepted event changed: stored \(text.prefix(300))") }
            }
        } else {
            problems.withLock { $0.append("an accepted event cannot be read back (JSONDecoder): \(text.prefix(300))") }
        }
        completion(.success(.inserted(event.id)))
    }
}

func sameEvent(_ a: CanonicalEvent, _ b: CanonicalEvent) -> Bool {
    a.id == b.id && a.source == b.source && a.type == b.type && a.subject == b.subject && a.status == b.status
        && a.statusFallback == b.statusFallback && a.statusUnmapped == b.statusUnmapped && a.providerStatus == b.providerStatus
        && a.occurredAt == b.occurredAt && a.receivedAt == b.receivedAt && a.idempotencyKey == b.idempotencyKey
        && a.attributes.count == b.attributes.count
        && a.attributes.allSatisfy { k, v in b.attributes[k].map { sameJSON(v, $0) } ?? false }
}

let store = NullStore()
let server: EpollServer = {
    let config = FuzzSources.config
    let nullLog = Logger(level: .error, fd: open("/dev/null", O_WRONLY))
    let ingest = Ingest(sources: config.sources, router: Router(routes: config.routes), store: store, log: nullLog)
    var options = config.server.http
    options.port = 0
    let s = EpollServer(options: options,
                        preflight: { method, path, headers in ingest.preflight(method: method, path: path, requestID: headers["X-Request-Id"]) },
                        handler: { request, responder in ingest.handle(request, responder) })
    do { try s.start() } catch { fatalError("cannot start the server: \(error)") }
    return s
}()
let signedSources = Set(FuzzSources.signed)
let allSources = FuzzSources.signed + FuzzSources.unsigned
let expectedStatuses: Set<Int> = [200, 202, 400, 401, 404, 405, 413, 415, 422, 431]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = fuzzBytes(data, size)
    guard let mode = input.first else { return 0 }
    store.committed.withLock { $0 = [] }
    store.problems.withLock { $0 = [] }
    if mode & 2 == 0 {
        raw(Array(input.dropFirst()), input)
    } else {
        structured(input)
    }
    if let problem = store.problems.withLock({ $0.first }) { fuzzFailure(problem, input) }
    // Every request finished once its connection is closed (the server counts them down before it closes).
    let deadline = EpollClock.now() + 2
    while server.requestsInFlight != 0 {
        if EpollClock.now() > deadline { fuzzFailure("\(server.requestsInFlight) request(s) still in flight after the connection closed", input) }
        usleep(200)
    }
    return 0
}

func raw(_ bytes: [UInt8], _ input: [UInt8]) {
    let c = LoopbackClient(port: server.port)
    c.send(bytes)
    c.shutdownWrite()
    guard let received = c.readToEnd(timeout: 5) else {
        fuzzFailure("no answer and no close within 5 s", input)
    }
    let responses = parseResponses(received, input)
    for r in responses where !expectedStatuses.contains(r.status) {
        fuzzFailure("unexpected status \(r.status)", input)
    }
    let stored = store.committed.withLock { $0 }
    if let hole = stored.first(where: signedSources.contains) {
        fuzzFailure("a made-up request was stored for the signed source \(hole)", input)
    }
    if stored.count > responses.filter({ $0.status == 202 }).count + 1 {
        // (At most one answer may be lost: a reset after the answer was sent can drop it from the client's buffer.)
        fuzzFailure("\(stored.count) events stored for \(responses.count) answers", input)
    }
}

func structured(_ input: [UInt8]) {
    let f = FuzzFields(input, count: 5)
    let sel = f[0]
    func s(_ i: Int) -> Int { i < sel.count ? Int(sel[i]) : 0 }
    let name = allSources[s(1) % allSources.count]
    let source = FuzzSources.config.sources[name]!
    let methods = ["POST", "PUT", "GET", "DELETE", "PATCH"]
    let method = s(2) & 0x80 != 0 ? methods[s(2) % methods.count] : "POST"
    let suffix = f.text(1).filter { $0 != "\r" && $0 != "\n" && $0 != " " }
    let target = "/v1/hooks/\(name)" + (suffix.isEmpty ? "" : (suffix.hasPrefix("?") || suffix.hasPrefix("/") ? suffix : "?" + suffix))
    let extra = f.text(2)
    let contentType = f.text(3).isEmpty ? "application/json" : f.text(3).filter { $0 != "\r" && $0 != "\n" }
    let body = f[4]
    let signed = source.verifier.senderHeaders(body: body, url: "http://relay.example" + target, now: Date()) ?? []
    let framing = s(3) % 3   // 0 Content-Length, 1 chunked, 2 Content-Length with Expect: 100-continue
    var head = "\(method) \(target) HTTP/1.1\r\nHost: relay.example\r\nContent-Type: \(contentType)\r\n"
    for (k, v) in signed { head += "\(k): \(v)\r\n" }
    if !extra.isEmpty { head += extra.replacingOccurrences(of: "\n", with: "\r\n") + (extra.hasSuffix("\n") ? "" : "\r\n") }
    var request: [UInt8]
    switch framing {
    case 1:
        head += "Transfer-Encoding: chunked\r\n\r\n"
        request = Array(head.utf8)
        var rest = body[...]
        let piece = max(1, s(4))
        while !rest.isEmpty {
            let chunk = rest.prefix(piece)
            request += Array((String(chunk.count, radix: 16) + "\r\n").utf8) + chunk + [13, 10]
            rest = rest.dropFirst(chunk.count)
        }
        request += Array("0\r\n\r\n".utf8)
    case 2:
        head += "Content-Length: \(body.count)\r\nExpect: 100-continue\r\n\r\n"
        request = Array(head.utf8) + body
    default:
        head += "Content-Length: \(body.count)\r\n\r\n"
        request = Array(head.utf8) + body
    }
    let times = 1 + s(5) % 3
    let c = LoopbackClient(port: server.port)
    for _ in 0..<times { c.send(request) }
    guard let (responses, closed) = c.readResponses(times, timeout: 5, input) else {
        fuzzFailure("\(times) request(s) not answered within 5 s", input)
    }
    c.close()
    for r in responses where !expectedStatuses.contains(r.status) { fuzzFailure("unexpected status \(r.status)", input) }
    if responses.count < times && !closed { fuzzFailure("\(responses.count) of \(times) requests answered", input) }
    // A request nothing odd was done to: no extra headers, a query (if any) of visible ASCII without a fragment
    // (http-parser refuses control characters; a path suffix or a `#` names another source).
    let plainQuery = suffix.isEmpty || (!suffix.hasPrefix("/") && suffix.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "#") })
    let plain = plainQuery && extra.isEmpty && contentType == "application/json" && (method == "POST" || method == "PUT")
        && body.count <= FuzzSources.config.server.http.maxBodyBytes && (try? JSONParser.validate(body)) != nil
        && ["sw", "stripe", "gh", "slack", "shopify", "keyed", "list", "b64url", "basic", "bearer", "apikey", "token", "open"].contains(name)
    if plain {
        if responses.count != times || responses.contains(where: { $0.status != 202 }) {
            fuzzFailure("a signed JSON webhook to \(name) got \(responses.map(\.status)) (\(times) sent)", input)
        }
    }
}

struct ParsedResponse { var status: Int; var body: [UInt8] }

/// The answers in `bytes`, in order; 1xx interim answers skipped. A malformed answer fails the input.
func parseResponses(_ bytes: [UInt8], _ input: [UInt8], complete: Bool = false) -> [ParsedResponse] {
    responsesAndRest(bytes, input).0
}

func responsesAndRest(_ bytes: [UInt8], _ input: [UInt8]) -> ([ParsedResponse], Int) {
    var out: [ParsedResponse] = []
    var i = 0
    let sep: [UInt8] = [13, 10, 13, 10]
    while i < bytes.count {
        guard let end = find(sep, in: bytes, from: i) else { break }
        let head = String(decoding: bytes[i..<end], as: UTF8.self)
        let lines = head.components(separatedBy: "\r\n")
        let parts = lines[0].split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0] == "HTTP/1.1", let status = Int(parts[1]) else {
            fuzzFailure("a malformed status line: \(lines[0].debugDescription)", input)
        }
        if status == 100 { i = end + 4; continue }
        guard let cl = lines.dropFirst().first(where: { $0.lowercased().hasPrefix("content-length:") }),
              let length = Int(cl.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) else {
            fuzzFailure("an answer without Content-Length: \(head.debugDescription)", input)
        }
        if end + 4 + length > bytes.count { break }
        out.append(ParsedResponse(status: status, body: Array(bytes[(end + 4)..<(end + 4 + length)])))
        i = end + 4 + length
    }
    return (out, i)
}

func find(_ needle: [UInt8], in hay: [UInt8], from: Int) -> Int? {
    guard hay.count >= needle.count else { return nil }
    var i = from
    while i + needle.count <= hay.count {
        if hay[i] == needle[0] && Array(hay[i..<(i + needle.count)]) == needle { return i }
        i += 1
    }
    return nil
}

enum EpollClock {
    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}

/// A blocking loopback TCP client.
final class LoopbackClient {
    let fd: Int32

    init(port: UInt16) {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 && errno == EINTR {
            // libFuzzer's SIGALRM (its timeout check) interrupted it: the connection goes on being made; wait for it.
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            while poll(&p, 1, 5000) < 0 && errno == EINTR {}
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
            if error != 0 { fatalError("connect: \(String(cString: strerror(error)))") }
        } else if rc != 0 {
            fatalError("connect: \(String(cString: strerror(errno)))")
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { Glibc.close(fd) }

    /// Sends what the peer takes; a peer that closed early (a refusal before the body) ends it.
    func send(_ bytes: [UInt8]) {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }   // libFuzzer's SIGALRM
            if n <= 0 { return }
            sent += n
        }
    }

    func shutdownWrite() { _ = shutdown(fd, Int32(SHUT_WR)) }
    func close() { _ = shutdown(fd, Int32(SHUT_RDWR)) }

    /// Everything until the peer closes (or resets), nil when it does neither within `timeout`.
    func readToEnd(timeout: Double) -> [UInt8]? {
        var out: [UInt8] = []
        let deadline = EpollClock.now() + timeout
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let left = deadline - EpollClock.now()
            if left <= 0 { return nil }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, Int32(left * 1000) + 1) <= 0 { continue }   // nothing yet, or EINTR (libFuzzer's SIGALRM)
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n > 0 { out += buffer[0..<n] } else { return out }
        }
    }

    /// Up to `count` answers; `closed`: the peer closed before that many came. Nil on a timeout.
    func readResponses(_ count: Int, timeout: Double, _ input: [UInt8]) -> ([ParsedResponse], closed: Bool)? {
        var got: [UInt8] = []
        let deadline = EpollClock.now() + timeout
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let (responses, _) = responsesAndRest(got, input)
            if responses.count >= count { return (responses, false) }
            let left = deadline - EpollClock.now()
            if left <= 0 { return nil }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, Int32(left * 1000) + 1) <= 0 { continue }   // nothing yet, or EINTR (libFuzzer's SIGALRM)
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n > 0 { got += buffer[0..<n] } else { return (responses, true) }
        }
    }
}

_ = server.port
runFuzzer(fuzzOne)
