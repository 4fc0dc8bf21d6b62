import Adapters
import Foundation
@testable import Relay
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The webhook listener's own epoll server, over real sockets: framing, ordering, limits and stopping. (The relay's
/// ingest tests run on it too: it is the default `server.engine`.)
@Suite("Epoll HTTP server")
struct EpollServerTests {
    static func start(_ configure: (inout HTTPServerOptions) -> Void = { _ in },
                      preflight: HTTPServer.Preflight? = nil,
                      handler: @escaping HTTPHandler) throws -> EpollServer {
        var o = HTTPServerOptions()
        o.host = "127.0.0.1"
        o.port = 0
        o.threads = 2
        configure(&o)
        let s = EpollServer(options: o, preflight: preflight, handler: handler)
        try s.start()
        return s
    }

    /// Answers `"<path>"` after `delay` seconds from another thread (0: at once, on the loop's thread).
    static func echo(delay: @escaping @Sendable (String) -> Double = { _ in 0 }) -> HTTPHandler {
        { request, responder in
            let answer = HTTPResponse(status: 200, headers: [("Content-Type", "text/plain")],
                                      body: Array((request.path + " " + String(request.body.count)).utf8))
            let d = delay(request.path)
            if d == 0 { responder.respond(answer); return }
            DispatchQueue.global().asyncAfter(deadline: .now() + d) { responder.respond(answer) }
        }
    }

    @Test("pipelined requests are answered in order, each after the one before, even when the first answer comes last")
    func pipelining() throws {
        let server = try Self.start(handler: Self.echo(delay: { $0 == "/slow" ? 0.3 : 0.01 }))
        defer { server.stop() }
        let c = try Connection(port: server.port)
        let one = "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        let two = "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n"
        let three = "POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n0\r\n\r\n"
        try c.send(one + two + three)
        #expect(try c.readResponse().text == "/slow 3")
        #expect(try c.readResponse().text == "/fast 0")
        #expect(try c.readResponse().text == "/chunked 4")
        // Still open: keep-alive.
        try c.send(two)
        let again = try c.readResponse()
        #expect(again.text == "/fast 0" && again.header("Connection") == nil && again.header("Date") != nil)
        #expect(server.requestsInFlight == 0)
    }

    @Test("header fields split across reads arrive whole and in order; a chunked body's trailer is not read as headers")
    func headersInPieces() throws {
        let seen = Mutex<[[(String, String)]]>([])
        let server = try Self.start { request, responder in
            seen.withLock { $0.append(request.headers.fields.map { ($0.name, $0.value) }) }
            responder.respond(HTTPResponse(status: 200, body: Array((request.headers["x-signature"] ?? "-").utf8)))
        }
        defer { server.stop() }
        let c = try Connection(port: server.port)
        let request = "POST /p HTTP/1.1\r\nHost: x\r\nX-Signature: sha256=abcdef\r\nX-Empty:\r\nX-Dup: 1\r\n"
            + "x-dup: 2\r\nContent-Length: 2\r\n\r\nok"
        // One byte per write, with a pause: the parser hands names and values over in pieces.
        for byte in request.utf8 {
            try c.send([byte])
            usleep(200)
        }
        #expect(try c.readResponse().text == "sha256=abcdef")
        try c.send("POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-Signature: forged\r\n\r\n")
        #expect(try c.readResponse().text == "-")
        let all = seen.withLock { $0 }
        #expect(all.count == 2)
        #expect(all.first?.map(\.0) == ["Host", "X-Signature", "X-Empty", "X-Dup", "x-dup", "Content-Length"])
        #expect(all.first?.map(\.1) == ["x", "sha256=abcdef", "", "1", "2", "2"])
        #expect(all.last?.map(\.0) == ["Host", "Transfer-Encoding"])
    }

    @Test("HEAD gets the headers and no body; HTTP/1.0 and Connection: close are answered, then closed")
    func headAndClose() throws {
        let server = try Self.start(handler: Self.echo())
        defer { server.stop() }
        let c = try Connection(port: server.port)
        try c.send("HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        let head = try c.readResponse(head: true)
        #expect(head.status == 200 && head.header("Content-Length") == "4")
        #expect(try c.readResponse().text == "/after 0", "no body bytes were sent for the HEAD")
        let old = try Connection(port: server.port)
        try old.send("GET /ten HTTP/1.0\r\n\r\n")
        #expect(try old.readResponse().text == "/ten 0")
        #expect(old.waitForClose(timeout: 2) != nil)
        let closing = try Connection(port: server.port)
        try closing.send("GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        let bye = try closing.readResponse()
        #expect(bye.text == "/bye 0" && bye.header("Connection") == "close")
        #expect(closing.waitForClose(timeout: 2) != nil)
    }

    @Test("malformed requests are 400 and oversized headers 431, each closing the connection; bodies over the limit are 413 before or while they arrive")
    func refusals() throws {
        let called = Atomic<Int>(0)
        let server = try Self.start({ $0.maxBodyBytes = 100 }) { request, responder in
            called.add(1, ordering: .relaxed)
            responder.respond(HTTPResponse(status: 200))
        }
        defer { server.stop() }
        let bad = try Connection(port: server.port)
        try bad.send("NOT A REQUEST\r\n\r\n")
        let r400 = try bad.readResponse()
        #expect(r400.status == 400 && r400.text.contains("HPE_"), "\(r400)")
        #expect(bad.waitForClose(timeout: 2) != nil)
        let big = try Connection(port: server.port)
        try big.send("GET / HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "a", count: 100_000))\r\n\r\n")
        #expect(try big.readResponse().status == 431)
        let announced = try Connection(port: server.port)
        try announced.send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n")
        let r413 = try announced.readResponse()
        #expect(r413.status == 413 && r413.header("Connection") == "close")
        let chunked = try Connection(port: server.port)
        try chunked.send("POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n50\r\n\(String(repeating: "b", count: 80))\r\n")
        try chunked.send("50\r\n\(String(repeating: "b", count: 80))\r\n0\r\n\r\n")
        #expect(try chunked.readResponse().status == 413)
        #expect(called.load(ordering: .relaxed) == 0)
    }

    @Test("the preflight refuses before the body is read; Expect: 100-continue gets its interim answer only when accepted")
    func preflightAndContinue() throws {
        let server = try Self.start(preflight: { method, path, headers in
            path == "/nope" ? .error(404, "no", ["id": headers["X-Id"] ?? ""]) : nil
        }, handler: Self.echo())
        defer { server.stop() }
        let refused = try Connection(port: server.port)
        try refused.send("POST /nope HTTP/1.1\r\nHost: x\r\nX-Id: 7\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        let r = try refused.readResponse()
        #expect(r.status == 404 && r.text.contains("\"id\":\"7\""))
        let ok = try Connection(port: server.port)
        try ok.send("POST /yes HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        usleep(50_000)
        try ok.send("12345")
        #expect(try ok.readResponse().text == "/yes 5")
    }

    @Test("the connection limit closes connections past it; idle connections close after idleTimeout")
    func limits() throws {
        let server = try Self.start({ $0.connectionLimit = 2; $0.idleTimeoutSeconds = 1; $0.threads = 1 }, handler: Self.echo())
        defer { server.stop() }
        let a = try Connection(port: server.port), b = try Connection(port: server.port)
        try a.send("GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        try b.send("GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(try a.readResponse().text == "/a 0" && b.readResponse().text == "/b 0")
        let third = try Connection(port: server.port)
        #expect(third.waitForClose(timeout: 2) == [], "closed at once, unanswered")
        #expect(a.waitForClose(timeout: 4) != nil, "idle past idleTimeout")
    }

    @Test("a stop waits for the answers in flight; a request that begins during it gets 503 and a close")
    func stopping() throws {
        let release = DispatchSemaphore(value: 0)
        let server = try Self.start(handler: { request, responder in
            if request.path == "/held" {
                DispatchQueue.global().async { release.wait(); responder.respond(HTTPResponse(status: 202)) }
            } else {
                responder.respond(HTTPResponse(status: 200))
            }
        })
        let held = try Connection(port: server.port)
        try held.send("POST /held HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        let idle = try Connection(port: server.port)
        try idle.send("GET /warm HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(try idle.readResponse().status == 200)
        for _ in 0..<200 where server.requestsInFlight == 0 { usleep(10_000) }
        #expect(server.requestsInFlight == 1, "the held request is in flight before the stop begins")
        var waited = false
        let done = DispatchSemaphore(value: 0)
        Thread {
            server.shutdown(timeout: 5)
            done.signal()
        }.start()
        // Wait until the server has closed its listeners, then try a new request on the kept-alive connection.
        for _ in 0..<100 where server.stopping.load(ordering: .relaxed) == false { usleep(10_000) }
        usleep(50_000)
        try idle.send("GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
        let late = try idle.readResponse()
        #expect(late.status == 503 && late.header("Connection") == "close" && late.header("Retry-After") == "1")
        #expect(done.wait(timeout: .now() + 0.3) == .timedOut, "still waiting for the held answer")
        waited = true
        release.signal()
        #expect(try held.readResponse().status == 202)
        #expect(done.wait(timeout: .now() + 5) == .success && waited)
        #expect(!Connection.canConnect(port: server.port))
    }

    @Test("a client that shuts down its sending side after a whole request still gets the answer, then the close")
    func halfClose() throws {
        let server = try Self.start(handler: Self.echo(delay: { _ in 0.1 }))
        defer { server.stop() }
        let c = try Connection(port: server.port)
        try c.send("POST /half HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        _ = shutdown(c.fd, Int32(SHUT_WR))
        #expect(try c.readResponse().text == "/half 2")
        #expect(c.waitForClose(timeout: 2) != nil)
        for _ in 0..<100 where server.requestsInFlight != 0 { usleep(10_000) }
        #expect(server.requestsInFlight == 0)
    }

    @Test("a client that goes away while its request is being committed: the request counts as in flight until its answer, which is then dropped")
    func clientGone() throws {
        let release = DispatchSemaphore(value: 0)
        let server = try Self.start(handler: { _, responder in
            DispatchQueue.global().async { release.wait(); responder.respond(HTTPResponse(status: 202)) }
        })
        defer { server.stop() }
        do {
            let c = try Connection(port: server.port)
            try c.send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
            for _ in 0..<200 where server.requestsInFlight == 0 { usleep(10_000) }
            #expect(server.requestsInFlight == 1)
            c.close()
        }
        usleep(100_000)
        #expect(server.requestsInFlight == 1, "a stop still waits for the store's answer")
        release.signal()
        for _ in 0..<200 where server.requestsInFlight != 0 { usleep(10_000) }
        #expect(server.requestsInFlight == 0)
        let next = try Connection(port: server.port)
        try next.send("POST /y HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        release.signal()
        #expect(try next.readResponse().status == 202)
    }

    @Test("an answer that comes after the stop gave up waiting for it is dropped: the server is gone, the process goes on")
    func answerAfterStop() throws {
        let release = DispatchSemaphore(value: 0)
        let answered = DispatchSemaphore(value: 0)
        var c: Connection?
        do {
            let server = try Self.start(handler: { _, responder in
                DispatchQueue.global().async {
                    release.wait()
                    responder.respond(HTTPResponse(status: 202))
                    answered.signal()
                }
            })
            c = try Connection(port: server.port)
            try c?.send("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
            for _ in 0..<200 where server.requestsInFlight == 0 { usleep(10_000) }
            #expect(server.requestsInFlight == 1)
            server.shutdown(timeout: 0.05)   // gives up on the held request: its loops end and are released
            #expect(!Connection.canConnect(port: server.port))
        }
        usleep(50_000)
        release.signal()
        #expect(answered.wait(timeout: .now() + 5) == .success, "the late answer returned")
        #expect(c?.waitForClose(timeout: 2) != nil, "the connection was closed by the stop, not answered")
    }

    @Test("server.engine picks the webhook listener: epoll by default, microhttpd still serves the same answers; anything else is refused")
    func engines() throws {
        let parse = { (engine: String) throws -> RelayConfig in
            try RelayConfig.parse(Data("""
                { server: { engine: \(engine) }, sources: { s: { adapter: "generic", verify: { none: true } } } }
                """.utf8), registry: BuiltinAdapters.registry, environment: [:])
        }
        #expect(try parse("\"microhttpd\"").server.http.engine == .microhttpd)
        #expect(try RelayConfig.parse(Data(#"{ sources: { s: { adapter: "generic", verify: { none: true } } } }"#.utf8),
                                      registry: BuiltinAdapters.registry, environment: [:]).server.http.engine == .epoll)
        #expect(throws: ConfigError.self) { try parse("\"nginx\"") }
        do {
            _ = try parse("\"nginx\"")
        } catch let e as ConfigError {
            #expect(e.problems.map(\.description) == [#"server.engine: "nginx" is not one of: epoll, microhttpd"#])
        }
        for engine in ["epoll", "microhttpd"] {
            let relay = try RunningRelay(sources: DeliveryTests.sources, server: "engine: \"\(engine)\", maxBodyBytes: 64")
            defer { relay.stop() }
            #expect((relay.service.server is EpollServer) == (engine == "epoll"))
            _ = try expectAccepted(try relay.client.post("/v1/hooks/shop", json: #"{"id":"A","state":"shipped"}"#))
            let big = try relay.client.post("/v1/hooks/shop", json: "{\"id\":\"\(String(repeating: "x", count: 100))\"}")
            #expect(big.status == 413, "\(engine): \(big)")
            #expect(try relay.client.get("/v1/hooks/nowhere").status == 404)
        }
    }
}
