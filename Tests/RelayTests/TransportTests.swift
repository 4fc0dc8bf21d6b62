import Foundation
import Relay
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The outbound transport (`HTTPClient`, libcurl multi) against the relay's own `HTTPServer` on 127.0.0.1 with real
// sockets, plus `openssl s_server` for TLS verification.

/// The relay's HTTP server as a stand-in destination: records every request; `answer` returns the response, or
/// nil to hold the request (answered 503 when the stub stops, so the server can stop cleanly).
private final class StubServer: Sendable {
    /// What the handler shares with the test.
    final class Log: Sendable {
        let received = Mutex<[HTTPRequest]>([])
        let held = Mutex<[any HTTPResponder]>([])
    }
    let server: HTTPServer
    let log = Log()

    init(threads: Int = 2, _ answer: @escaping @Sendable (HTTPRequest) -> HTTPResponse? = { _ in HTTPResponse(status: 200) }) throws {
        var options = HTTPServerOptions()
        options.host = "127.0.0.1"
        options.port = 0
        options.threads = threads
        options.maxBodyBytes = 4 << 20
        let log = self.log
        server = HTTPServer(options: options) { request, responder in
            log.received.withLock { $0.append(request) }
            if let response = answer(request) {
                responder.respond(response)
            } else {
                log.held.withLock { $0.append(responder) }
            }
        }
        try server.start()
    }

    var base: String { "http://127.0.0.1:\(server.port)" }
    var requests: [HTTPRequest] { log.received.withLock { $0 } }

    func releaseHeld() {
        let responders = log.held.withLock { h in defer { h.removeAll() }; return h }
        for r in responders { r.respond(HTTPResponse(status: 503)) }
    }

    func stop() {
        releaseHeld()
        server.shutdown(timeout: 2)
    }
}

private func failure(_ result: Result<OutboundResponse, TransportError>) -> TransportError? {
    if case .failure(let e) = result { return e }
    return nil
}

private func response(_ result: Result<OutboundResponse, TransportError>,
                      sourceLocation: SourceLocation = #_sourceLocation) throws -> OutboundResponse {
    switch result {
    case .success(let r): return r
    case .failure(let e):
        Issue.record("expected a response, got \(e)", sourceLocation: sourceLocation)
        throw e
    }
}

/// A TCP port on 127.0.0.1 that nobody listens on: bound (so the kernel picks a free one), then closed.
private func unusedPort() throws -> UInt16 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TransportError.invalidRequest("socket failed") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &addr) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
            bind(fd, sa, len) == 0 && getsockname(fd, sa, &len) == 0
        }
    }
    guard ok else { throw TransportError.invalidRequest("bind failed") }
    return UInt16(bigEndian: addr.sin_port)
}

private func deterministicBytes(_ count: Int, seed: UInt64 = 0x9E37_79B9_7F4A_7C15) -> [UInt8] {
    var state = seed
    return (0..<count).map { _ in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return UInt8(truncatingIfNeeded: state >> 33)
    }
}

/// Collects the results of many concurrent sends.
private final class Results: Sendable {
    let group = DispatchGroup()
    let values = Mutex<[Result<OutboundResponse, TransportError>]>([])

    func send(_ client: HTTPClient, _ request: OutboundRequest) {
        group.enter()
        client.send(request) { r in
            self.values.withLock { $0.append(r) }
            self.group.leave()
        }
    }

    func wait(_ seconds: Double) -> Bool { group.wait(timeout: .now() + seconds) == .success }
    var all: [Result<OutboundResponse, TransportError>] { values.withLock { $0 } }
}

@Suite("TransportTests")
struct TransportTests {
    @Test func requestArrivesExactly() throws {
        let stub = try StubServer()
        defer { stub.stop() }
        let client = try HTTPClient()
        defer { client.shutdown(timeout: 1) }

        var body = (0...255).map { UInt8($0) } + [0, 13, 10, 0]
        body += body
        let headers = [("X-Api-Key", "k1"), ("X-Trace", "abc def"), ("X-Empty", ""),
                       ("Content-Type", "application/octet-stream"), ("X-Dup", "one"), ("X-Dup", "two")]
        let result = client.sendAndWait(OutboundRequest(method: "POST", url: stub.base + "/hooks/a%20b?x=1&y=%2F",
                                                        headers: headers, body: body))
        #expect(try response(result).status == 200)

        let got = try #require(stub.requests.first)
        #expect(got.method == "POST")
        #expect(got.path == "/hooks/a%20b")
        #expect(got.query == "x=1&y=%2F")
        #expect(got.body == body)
        for (name, value) in headers where name != "X-Dup" { #expect(got.headers[name] == value, "\(name)") }
        #expect(got.headers.filter { $0.name.lowercased() == "x-dup" }.map(\.value) == ["one", "two"])
        #expect(got.headers["Content-Length"] == String(body.count))
        #expect(got.headers["Expect"] == nil)
        #expect(got.headers["Transfer-Encoding"] == nil)
    }

    @Test("header values lose the spaces and tabs around them, and nothing else")
    func headerValuesTrimmedOfOWSOnly() throws {
        #expect(" \t a b \t".trimmedASCII == "a b")
        #expect(" \t ".trimmedASCII.isEmpty)
        #expect("".trimmedASCII == "")
        #expect("\u{00A0}v\u{3000}".trimmedASCII == "\u{00A0}v\u{3000}")
        #expect(" e\u{301} ".trimmedASCII == "e\u{301}")
        #expect(" \u{301}x".trimmedASCII == "\u{301}x", "cut on bytes: a combining mark after a space stays")
        let stub = try StubServer()
        defer { stub.stop() }
        let client = try HTTPClient()
        defer { client.shutdown(timeout: 1) }
        let headers = [("X-Padded", " \t a b \t"), ("X-Blank", "   "), ("X-Nbsp", "\u{00A0}v\u{00A0}"), ("X-Utf8", " café ")]
        let result = client.sendAndWait(OutboundRequest(method: "POST", url: stub.base + "/h", headers: headers, body: [1]))
        #expect(try response(result).status == 200)
        let got = try #require(stub.requests.first)
        #expect(got.headers["X-Padded"] == "a b")
        #expect(got.headers["X-Blank"] == "", "a blank value is sent as an empty header")
        #expect(got.headers["X-Nbsp"] == "\u{00A0}v\u{00A0}", "a no-break space is part of the value, not OWS")
        #expect(got.headers["X-Utf8"] == "café")
    }

    @Test func largeBinaryBodiesAndMethods() throws {
        let stub = try StubServer()
        defer { stub.stop() }
        let client = try HTTPClient()
        defer { client.shutdown(timeout: 1) }

        let big = deterministicBytes(1 << 20)
        #expect(try response(client.sendAndWait(OutboundRequest(method: "PUT", url: stub.base + "/big", body: big))).status == 200)
        #expect(try response(client.sendAndWait(OutboundRequest(method: "PATCH", url: stub.base + "/p", body: [1, 2, 3]))).status == 200)
        #expect(try response(client.sendAndWait(OutboundRequest(method: "GET", url: stub.base + "/g"))).status == 200)
        let head = try response(client.sendAndWait(OutboundRequest(method: "HEAD", url: stub.base + "/h")))
        #expect(head.status == 200 && head.body.isEmpty)
        #expect(try response(client.sendAndWait(OutboundRequest(method: "DELETE", url: stub.base + "/d"))).status == 200)
        #expect(try response(client.sendAndWait(OutboundRequest(method: "POST", url: stub.base + "/empty"))).status == 200)

        let r = stub.requests
        try #require(r.count == 6)
        #expect(r[0].method == "PUT" && r[0].body == big)
        #expect(r[0].headers["Content-Type"] == nil, "libcurl's form content type must not be added")
        #expect(r[0].headers["Expect"] == nil, "no Expect: 100-continue")
        #expect(r[1].method == "PATCH" && r[1].body == [1, 2, 3])
        #expect(r[2].method == "GET" && r[2].body.isEmpty && r[2].headers["Content-Length"] == nil)
        #expect(r[3].method == "HEAD" && r[3].headers["Content-Length"] == nil)
        #expect(r[4].method == "DELETE" && r[4].body.isEmpty && r[4].headers["Content-Length"] == nil)
        #expect(r[5].method == "POST" && r[5].headers["Content-Length"] == "0" && r[5].headers["Content-Type"] == nil)
    }

    @Test func responsesComeBackAsTheyAre() throws {
        let payload = deterministicBytes(5000)
        let stub = try StubServer { req in
            switch req.path {
            case "/ok": return HTTPResponse(status: 201, headers: [("X-Reply", "yes  please"), ("Set-Cookie", "a=1"),
                                                                  ("Set-Cookie", "b=2")], body: payload)
            case "/redirect": return HTTPResponse(status: 302, headers: [("Location", "/ok")], body: Array("moved".utf8))
            default: return HTTPResponse(status: Int(req.path.dropFirst()) ?? 400, body: Array("{\"error\":1}".utf8))
            }
        }
        defer { stub.stop() }
        let client = try HTTPClient()
        defer { client.shutdown(timeout: 1) }

        let ok = try response(client.sendAndWait(OutboundRequest(method: "POST", url: stub.base + "/ok", body: [1])))
        #expect(ok.status == 201)
        #expect(ok.body == payload && !ok.truncated)
        #expect(ok.headers["x-reply"] == "yes  please")
        #expect(ok.headers.filter { $0.name.lowercased() == "set-cookie" }.map(\.value) == ["a=1", "b=2"])
        #expect(ok.headers["Content-Length"] == "5000")
        #expect(ok.elapsed > 0 && ok.elapsed < 5)

        for status in [400, 404, 429, 500, 503] {
            let r = try response(client.sendAndWait(OutboundRequest(method: "POST", url: stub.base + "/\(status)")))
            #expect(r.status == status)
            #expect(r.body == Array("{\"error\":1}".utf8))
        }

        let before = stub.requests.count
        let moved = try response(client.sendAndWait(OutboundRequest(method: "POST", url: stub.base + "/redirect", body: [1])))
        #expect(moved.status == 302)
        #expect(moved.headers["Location"] == "/ok")
        #expect(moved.body == Array("moved".utf8))
        #expect(stub.requests.count == before + 1, "a redirect is not followed")
    }

    @Test func responseBodyCap() throws {
        let payload = deterministicBytes(100_000)
        let stub = try StubServer { _ in HTTPResponse(status: 200, body: payload) }
        defer { stub.stop() }
        let client = try HTTPClient()
        defer { client.shutdown(timeout: 1) }

        var request = OutboundRequest(method: "GET", url: stub.base + "/")
        request.maxResponseBytes = 1000
        let cut = try response(client.sendAndWait(request))
        #expect(cut.truncated && cut.body == Array(payload.prefix(1000)))
        request.maxResponseBytes = 100_000
        let exact = try response(client.sendAndWait(request))
        #expect(!exact.truncated && exact.body == payload)
        request.maxResponseBytes = 0
        let none = try response(client.sendAndWait(request))
        #expect(none.truncated && none.body.isEmpty && none.status == 200)
    }

    @Test func connectionRefused() throws {
        let client = try HTTPClient()
        defer { client.shutdown(timeout: 1) }
        let port = try unusedPort()
        let error = try #require(failure(client.sendAndWait(OutboundRequest(method: "POST", url: "http://127.0.0.1:\(port)/x",
                                                                             headers: [("Authorization", "Bearer s3cret")],
                                                                             body: [1]))))
        guard case .connect(let code, let message) = error else {
            Issue.record("expected .connect, got \(error)")
            return
        }
        #expect(code == 7)
        #expect(!message.isEmpty)
        #expect(error.isRetryable)
        #expect(!error.description.contains("s3cret"))
    }

    @Test func totalTimeout() throws {
        let stub = try StubServer { _ in nil }   // never answers while the client waits
        defer { stub.stop() }
        let client = try HTTPClient()
        defer { client.shutdown(timeout: 1) }

        var request = OutboundRequest(method: "POST", url: stub.base + "/slow", body: [1])
        request.totalTimeout = 0.3
        let started = Date()
        let error = try #require(failure(client.sendAndWait(request)))
        let took = Date().timeIntervalSince(started)
        guard case .timeout(let code, _) = error else {
            Issue.record("expected .timeout, got \(error)")
            return
        }
        #expect(code == 28)
        #expect(error.isRetryable)
        #expect(took > 0.2 && took < 3, "took \(took) s")
    }

    @Test func invalidRequests() throws {
        let stub = try StubServer()
        defer { stub.stop() }
        let client = try HTTPClient()
        defer { client.shutdown(timeout: 1) }

        let bad: [OutboundRequest] = [
            OutboundRequest(method: "POST", url: "not a url"),
            OutboundRequest(method: "POST", url: "ftp://127.0.0.1/x"),
            OutboundRequest(method: "POST", url: "file:///etc/passwd"),
            OutboundRequest(method: "POST", url: "http://exa mple.com/"),
            OutboundRequest(method: "POST", url: "http://[::1/x"),
            OutboundRequest(method: "POST", url: "http://127.0.0.1:99999/x"),
            OutboundRequest(method: "BAD METHOD", url: stub.base + "/x"),
            OutboundRequest(method: "POST", url: stub.base + "/x", headers: [("X-Evil", "a\r\nX-Injected: 1")]),
            OutboundRequest(method: "POST", url: stub.base + "/x", headers: [("Bad Name", "v")]),
            OutboundRequest(method: "HEAD", url: stub.base + "/x", body: [1]),
        ]
        for request in bad {
            let error = try #require(failure(client.sendAndWait(request)), "\(request.method) \(request.url)")
            guard case .invalidRequest = error else {
                Issue.record("\(request.method) \(request.url): expected .invalidRequest, got \(error)")
                continue
            }
            #expect(!error.isRetryable)
        }
        #expect(stub.requests.isEmpty)
        // The client still works afterwards.
        #expect(try response(client.sendAndWait(OutboundRequest(method: "GET", url: stub.base + "/fine"))).status == 200)
    }

    @Test func concurrentSendsReuseConnections() throws {
        let stub = try StubServer(threads: 4) { req in HTTPResponse(status: 200, body: req.body) }
        defer { stub.stop() }
        let client = try HTTPClient(options: HTTPClientOptions(maxConnectionsPerHost: 16))
        defer { client.shutdown(timeout: 1) }

        let results = Results()
        for i in 0..<200 {
            results.send(client, OutboundRequest(method: "POST", url: stub.base + "/n/\(i)", body: Array("\(i)".utf8)))
        }
        #expect(results.wait(8))
        let all = results.all
        #expect(all.count == 200)
        var connections = 0
        var ok = 0
        for r in all {
            switch r {
            case .success(let resp):
                if resp.status == 200 { ok += 1 }
                connections += resp.newConnections
            case .failure(let e):
                Issue.record("\(e)")
            }
        }
        #expect(ok == 200)
        #expect(connections >= 1 && connections <= 32, "\(connections) connections for 200 requests")
        #expect(Set(stub.requests.map(\.path)).count == 200)

        // Sequential requests later reuse the kept-alive connections: no new one.
        let again = try response(client.sendAndWait(OutboundRequest(method: "POST", url: stub.base + "/again", body: [1])))
        #expect(again.newConnections == 0)
    }

    @Test func shutdownFailsPendingRequests() throws {
        let stub = try StubServer { _ in nil }
        defer { stub.stop() }
        let client = try HTTPClient()

        let results = Results()
        for i in 0..<5 { results.send(client, OutboundRequest(method: "POST", url: stub.base + "/hold/\(i)", body: [1])) }
        let deadline = Date().addingTimeInterval(3)
        while stub.requests.count < 5 && Date() < deadline { usleep(5_000) }
        #expect(stub.requests.count == 5)

        let started = Date()
        client.shutdown(timeout: 0.2)
        let took = Date().timeIntervalSince(started)
        #expect(took >= 0.15 && took < 2, "shutdown took \(took) s")
        #expect(results.wait(1))
        let all = results.all
        #expect(all.count == 5)
        for r in all {
            guard let e = failure(r), case .closed = e else {
                Issue.record("expected .closed, got \(r)")
                continue
            }
            #expect(e.isRetryable)
        }
        // After shutdown: refused at once, on the calling thread.
        guard let late = failure(client.sendAndWait(OutboundRequest(method: "GET", url: stub.base + "/late"))),
              case .closed = late else {
            Issue.record("a send after shutdown must fail with .closed")
            return
        }
        client.shutdown(timeout: 1)   // again: returns at once
    }

    @Test func shutdownLetsInFlightRequestsFinish() throws {
        let stub = try StubServer { _ in nil }
        defer { stub.stop() }
        let client = try HTTPClient()

        let results = Results()
        for i in 0..<3 { results.send(client, OutboundRequest(method: "POST", url: stub.base + "/s/\(i)", body: [1])) }
        let deadline = Date().addingTimeInterval(3)
        while stub.requests.count < 3 && Date() < deadline { usleep(5_000) }
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.1) {
            let responders = stub.log.held.withLock { h in defer { h.removeAll() }; return h }
            for r in responders { r.respond(HTTPResponse(status: 204)) }
        }
        let started = Date()
        client.shutdown(timeout: 3)
        let took = Date().timeIntervalSince(started)
        #expect(took < 2, "shutdown took \(took) s")
        #expect(results.wait(1))
        let statuses = results.all.compactMap { try? $0.get().status }
        #expect(statuses == [204, 204, 204])
    }

    @Test func completionsRunOnTheClientThread() throws {
        let stub = try StubServer()
        defer { stub.stop() }
        let client = try HTTPClient()

        let results = Results()
        let nested = Mutex<Result<OutboundResponse, TransportError>?>(nil)
        results.group.enter()
        client.send(OutboundRequest(method: "GET", url: stub.base + "/a")) { _ in
            // Blocking on the client's own thread would deadlock: refused instead.
            nested.withLock { $0 = client.sendAndWait(OutboundRequest(method: "GET", url: stub.base + "/b")) }
            // A completion may send again, and may shut the client down (it does not wait for itself); a request
            // queued but not started when the shutdown begins fails with .closed.
            results.send(client, OutboundRequest(method: "GET", url: stub.base + "/c"))
            client.shutdown(timeout: 1)
            results.group.leave()
        }
        #expect(results.wait(3))
        guard let r = nested.withLock({ $0 }), let e = failure(r), case .invalidRequest = e else {
            Issue.record("sendAndWait on the client's thread must fail")
            return
        }
        client.shutdown(timeout: 1)
        let queued = results.all
        #expect(queued.count == 1)
        if let r = queued.first, let e = failure(r), case .closed = e {} else { Issue.record("expected .closed, got \(queued)") }
    }

    @Test func tlsHandshakeWithAPlainServer() throws {
        let stub = try StubServer()
        defer { stub.stop() }
        let client = try HTTPClient()
        defer { client.shutdown(timeout: 1) }
        let url = "https://127.0.0.1:\(stub.server.port)/x"
        let error = try #require(failure(client.sendAndWait(OutboundRequest(method: "GET", url: url, totalTimeout: 3))))
        guard case .tls(let code, _) = error else {
            Issue.record("expected .tls, got \(error)")
            return
        }
        #expect(code == 35)
        #expect(error.isRetryable)
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl")))
    func tlsVerification() throws {
        let tls = try TLSServer()
        defer { tls.stop() }
        let url = "https://127.0.0.1:\(tls.port)/"

        let strict = try HTTPClient()
        let error = try #require(failure(strict.sendAndWait(OutboundRequest(method: "GET", url: url, totalTimeout: 5))))
        strict.shutdown(timeout: 1)
        guard case .tls(let code, _) = error else {
            Issue.record("expected .tls, got \(error)")
            return
        }
        #expect(code == 60)
        #expect(!error.isRetryable, "a certificate that does not verify is not retried")

        let trusting = try HTTPClient(options: HTTPClientOptions(caBundlePath: tls.certificate))
        let ok = try response(trusting.sendAndWait(OutboundRequest(method: "GET", url: url, totalTimeout: 5)))
        trusting.shutdown(timeout: 1)
        #expect(ok.status == 200)

        let unverified = try HTTPClient(options: HTTPClientOptions(verifyTLS: false))
        let ok2 = try response(unverified.sendAndWait(OutboundRequest(method: "GET", url: url, totalTimeout: 5)))
        unverified.shutdown(timeout: 1)
        #expect(ok2.status == 200)
    }

    @Test func retryability() {
        #expect(TransportError.connect(code: 7, message: "").isRetryable)
        #expect(TransportError.timeout(code: 28, message: "").isRetryable)
        #expect(TransportError.io(code: 56, message: "").isRetryable)
        #expect(TransportError.closed.isRetryable)
        #expect(TransportError.tls(code: 35, message: "").isRetryable)
        #expect(!TransportError.tls(code: 60, message: "").isRetryable)
        #expect(!TransportError.tls(code: 77, message: "").isRetryable)
        #expect(!TransportError.invalidRequest("x").isRetryable)
        #expect(TransportError.timeout(code: 28, message: "Timeout was reached").description.contains("Timeout was reached"))
    }
}

/// `openssl s_server -www` with a fresh self-signed certificate for 127.0.0.1.
private final class TLSServer {
    let dir: String
    let certificate: String
    let port: UInt16
    private let process = Process()

    init() throws {
        var template = Array("\(NSTemporaryDirectory())/relay-tls-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw TransportError.invalidRequest("mkdtemp failed")
        }
        dir = String(cString: made)
        certificate = dir + "/cert.pem"
        let key = dir + "/key.pem"
        let gen = Process()
        gen.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        gen.arguments = ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                         "-keyout", key, "-out", certificate, "-days", "1", "-subj", "/CN=relay-test",
                         "-addext", "subjectAltName=IP:127.0.0.1"]
        gen.standardOutput = FileHandle.nullDevice
        gen.standardError = FileHandle.nullDevice
        try gen.run()
        gen.waitUntilExit()
        guard gen.terminationStatus == 0 else { throw TransportError.invalidRequest("openssl req failed") }

        port = try unusedPort()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = ["s_server", "-accept", "127.0.0.1:\(port)", "-cert", certificate, "-key", key, "-www",
                             "-naccept", "3"]   // exits by itself after the test's three connections
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // It prints ACCEPT once it listens.
        var seen = ""
        while !seen.contains("ACCEPT") {
            let data = out.fileHandleForReading.availableData
            if data.isEmpty { throw TransportError.invalidRequest("openssl s_server did not start") }
            seen += String(decoding: data, as: UTF8.self)
        }
    }

    func stop() {
        // SIGKILL: the test process's blocked signals are inherited, so a SIGTERM may never arrive.
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: dir)
    }
}
