import Foundation
import Synchronization
import Testing
@testable import Relay
import Simulator

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The sink (`relay simulate sink`) over real sockets: recording, fault injection, control endpoints, the CLI.
/// Self-contained: its HTTP client and process helpers are below, not shared with other test files.
@Suite("sink: a stand-in receiver with fault injection")
struct SinkTests {
    typealias Wire = SinkTestWire

    /// A started sink on a free loopback port.
    static func startSink(_ faults: [SinkFault] = [], keep: Int = 100_000, threads: Int = 2) throws -> Sink {
        let sink = Sink(options: SinkOptions(host: "127.0.0.1", port: 0, keep: keep, faults: faults, threads: threads))
        try sink.start()
        return sink
    }

    // MARK: Recording

    @Test("default: 200 {\"ok\":true}, and the request recorded exactly (method, target, headers, body, seq)")
    func defaultAnswerAndRecording() throws {
        let sink = try Self.startSink()
        defer { sink.stop() }
        let body = Array(#"{"hello":"wörld","n":[1,2,3]}"#.utf8) + [0x0a]
        let before = Date()
        let r = try Wire.request(sink.port, "POST", "/hooks/acme?x=1&y=%2F", headers: [("X-Test", "one"), ("Content-Type", "application/json")], body: body)
        #expect(r.status == 200)
        #expect(r.text == #"{"ok":true}"#)
        #expect(r.header("Content-Type") == "application/json")
        #expect(r.header("X-Sink-Seq") == "1")
        let g = try Wire.request(sink.port, "GET", "/other")
        #expect(g.status == 200 && g.header("X-Sink-Seq") == "2")

        let recorded = sink.requests()
        try #require(recorded.count == 2)
        let first = recorded[0]
        #expect(first.seq == 1)
        #expect(first.method == "POST")
        #expect(first.path == "/hooks/acme" && first.query == "x=1&y=%2F" && first.target == "/hooks/acme?x=1&y=%2F")
        #expect(first.body == body)
        #expect(first.headers["x-test"] == "one")
        #expect(first.status == 200 && first.fault == nil)
        #expect(first.remoteAddress == "127.0.0.1")
        #expect(first.receivedAt >= before.addingTimeInterval(-1) && first.receivedAt <= Date())
        #expect(recorded[1].seq == 2 && recorded[1].method == "GET" && recorded[1].body.isEmpty)

        // The same through the control endpoint: the body as text, byte for byte.
        let list = try Wire.request(sink.port, "GET", "/_sink/requests").json()
        let items = try #require(list["requests"]?.arrayValue)
        try #require(items.count == 2)
        #expect(items[0]["body"]?.stringValue == String(decoding: body, as: UTF8.self))
        #expect(items[0]["bytes"] == .number(Double(body.count)))
        #expect(items[0]["headers"]?["x-test"]?.stringValue == "one")
        #expect(items[0]["target"]?.stringValue == "/hooks/acme?x=1&y=%2F")
        #expect(items[0]["status"] == .number(200) && items[0]["fault"] == .null && items[0]["seq"] == .number(1))
        #expect(items[0]["bodyBase64"] == nil)
        #expect(list["lastSeq"] == .number(2) && list["total"] == .number(2))
    }

    @Test("only the last `keep` requests are kept; every one is counted")
    func boundedRecording() throws {
        let sink = Sink(options: SinkOptions(port: 0, keep: 3))  // not started: driven in-process
        for i in 1...5 {
            let responder = SinkTestResponder()
            sink.handle(HTTPRequest(method: "POST", path: "/n", body: Array("\(i)".utf8)), responder)
            #expect(responder.response?.status == 200)
        }
        #expect(sink.requests().map(\.seq) == [3, 4, 5])
        #expect(sink.requests().map(\.bodyText) == ["3", "4", "5"])
        #expect(sink.requests(since: 3).map(\.seq) == [4, 5])
        #expect(sink.requests(since: 1).map(\.seq) == [3, 4, 5])
        #expect(sink.requests(path: "/other").isEmpty)
        let stats = sink.stats
        #expect(stats.total == 5 && stats.kept == 3 && stats.lastSeq == 5 && stats.statuses == [200: 5])
    }

    // MARK: Faults

    @Test("times: 2 — the next two matching requests get 503, then 200; other paths are not affected")
    func statusTimesTwo() throws {
        let sink = try Self.startSink([SinkFault(path: "/x", times: 2, action: .status(503))])
        defer { sink.stop() }
        #expect(try Wire.request(sink.port, "POST", "/y", body: [1]).status == 200)  // does not use up the rule
        let statuses = try (0..<3).map { _ in try Wire.request(sink.port, "POST", "/x/1", body: Array("{}".utf8)) }
        #expect(statuses.map(\.status) == [503, 503, 200])
        #expect(statuses[0].header("X-Sink-Fault") == "status")
        #expect(statuses[2].header("X-Sink-Fault") == nil)
        // Recorded before the fault, with the status answered.
        #expect(sink.requests(path: "/x/1").map(\.status) == [503, 503, 200])
        #expect(sink.requests(path: "/x/1").map(\.fault) == ["status", "status", nil])
        #expect(sink.faults.isEmpty, "the rule should have expired")
    }

    @Test("retryAfter: seconds, and an HTTP date that many seconds ahead")
    func retryAfter() throws {
        let sink = try Self.startSink(SinkFault.parse(spec: "retryAfter:2,path=/s")
                                      + SinkFault.parse(spec: #"{"path":"/d","action":"retryAfter","seconds":30,"httpDate":true,"status":503}"#))
        defer { sink.stop() }
        let s = try Wire.request(sink.port, "POST", "/s", body: [])
        #expect(s.status == 429)
        #expect(s.header("Retry-After") == "2")

        let d = try Wire.request(sink.port, "POST", "/d", body: [])
        #expect(d.status == 503)
        let value = try #require(d.header("Retry-After"))
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        let date = try #require(formatter.date(from: value), "\(value) is not an IMF-fixdate")
        let ahead = date.timeIntervalSinceNow
        #expect(ahead > 27 && ahead <= 31, "Retry-After \(value) is \(ahead) s ahead")
        #expect(value.count == 29)

        // RFC 9110's own example.
        #expect(Sink.httpDate(Date(timeIntervalSince1970: 784111777)) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(Sink.httpDate(Date(timeIntervalSince1970: 951782400.9)) == "Tue, 29 Feb 2000 00:00:00 GMT")
    }

    @Test("slow: answers normally after the delay")
    func slow() throws {
        let sink = try Self.startSink([SinkFault(path: "/slow", action: .slow(seconds: 0.3))])
        defer { sink.stop() }
        let start = Date()
        let r = try Wire.request(sink.port, "POST", "/slow", body: Array("x".utf8))
        let elapsed = Date().timeIntervalSince(start)
        #expect(r.status == 200 && r.text == #"{"ok":true}"#)
        #expect(elapsed >= 0.28 && elapsed < 3, "answered after \(elapsed) s")
        #expect(sink.requests().first?.fault == "slow")
    }

    @Test("hang: the client gives up, and meanwhile other clients are answered (one server thread, held answers hold none of it)")
    func hang() throws {
        let sink = try Self.startSink([SinkFault(path: "/hang", action: .hang(seconds: 30)),
                                       SinkFault(path: "/brief", action: .hang(seconds: 0.3))], threads: 1)
        defer { sink.stop() }
        // Three clients hang at once, each giving up after 1 s.
        let outcomes = SinkTestLocked<[String]>([])
        let group = DispatchGroup()
        for _ in 0..<3 {
            DispatchQueue.global().async(group: group) {
                let start = Date()
                let outcome: String
                do {
                    let r = try Wire.request(sink.port, "POST", "/hang", body: Array("{}".utf8), timeout: 1)
                    outcome = "answered \(r.status)"
                } catch SinkTestWire.Failure.timedOut {
                    outcome = Date().timeIntervalSince(start) >= 0.9 ? "timed out" : "timed out early"
                } catch {
                    outcome = "\(error)"
                }
                outcomes.withLock { $0.append(outcome) }
            }
        }
        #expect(SinkTestWire.poll(timeout: 5) { sink.stats.total == 3 }, "the hanging requests did not arrive")
        // While all three are held, another client is answered at once.
        let start = Date()
        let other = try Wire.request(sink.port, "POST", "/ok", body: [], timeout: 2)
        #expect(other.status == 200)
        #expect(Date().timeIntervalSince(start) < 0.9)
        group.wait()
        #expect(outcomes.value == ["timed out", "timed out", "timed out"], "a hanging client got an answer")
        #expect(sink.requests(path: "/hang").map(\.status) == [504, 504, 504])
        #expect(sink.requests(path: "/hang").map(\.fault) == ["hang", "hang", "hang"])

        // A patient client gets the 504 once the hold is over.
        let t = Date()
        let brief = try Wire.request(sink.port, "GET", "/brief", timeout: 5)
        #expect(brief.status == 504 && brief.header("X-Sink-Fault") == "hang")
        #expect(Date().timeIntervalSince(t) >= 0.28)
    }

    @Test("json: a given status and JSON body, with the rule's headers")
    func jsonAnswer() throws {
        let sink = try Self.startSink(SinkFault.parse(spec: #"json:200,header=X-Provider:acme,body={"error":{"code":"card_declined"},"ok":false}"#))
        defer { sink.stop() }
        let r = try Wire.request(sink.port, "POST", "/charge", body: Array("{}".utf8))
        #expect(r.status == 200)
        #expect(try r.json() == .object(["ok": .bool(false), "error": .object(["code": .string("card_declined")])]))
        #expect(r.header("Content-Type") == "application/json")
        #expect(r.header("X-Provider") == "acme")
        #expect(sink.requests().first?.fault == "json")
    }

    @Test("reset: the connection closes without an answer (502 until the HTTP layer can drop connections)")
    func resetFault() throws {
        let sink = try Self.startSink([SinkFault(times: 1, action: .reset)])
        defer { sink.stop() }
        if Sink.dropsConnections {
            #expect(throws: SinkTestWire.Failure.closedWithoutAnswer) {
                try Wire.request(sink.port, "POST", "/r", body: Array("{}".utf8))
            }
            #expect(sink.requests().first?.status == Sink.droppedStatus)
        } else {
            let r = try Wire.request(sink.port, "POST", "/r", body: Array("{}".utf8))
            #expect(r.status == 502 && r.header("X-Sink-Fault") == "reset")
            #expect(sink.requests().first?.status == 502)
        }
        #expect(sink.requests().first?.fault == "reset")
        #expect(try Wire.request(sink.port, "POST", "/r", body: []).status == 200)   // times: 1
    }

    // MARK: Control endpoints

    @Test("control: faults replace, stats, requests since SEQ, reset; control calls are not recorded")
    func controlEndpoints() throws {
        let sink = try Self.startSink(SinkFault.parse(spec: "status:500,path=/boom"))
        defer { sink.stop() }
        let port = sink.port
        #expect(try Wire.request(port, "GET", "/boom").status == 500)

        // Replace the rules.
        let set = try Wire.request(port, "POST", "/_sink/faults", body: Array(#"[{"path":"/a","action":"status","status":503,"body":"down"},{"path":"/c","times":1,"action":"status","status":409}]"#.utf8))
        #expect(set.status == 200, "\(set.text)")
        #expect(try set.json()["faults"]?.arrayValue?.count == 2)
        #expect(try Wire.request(port, "GET", "/boom").status == 200)
        let a = try Wire.request(port, "POST", "/a/1", body: [])
        #expect(a.status == 503 && a.text == "down" && a.header("Content-Type")?.hasPrefix("text/plain") == true)
        #expect(try Wire.request(port, "POST", "/c", body: []).status == 409)
        #expect(try Wire.request(port, "POST", "/c", body: []).status == 200)
        let faults = try Wire.request(port, "GET", "/_sink/faults").json()["faults"]?.arrayValue
        #expect(faults?.count == 1 && faults?.first?["path"]?.stringValue == "/a")

        // Bad rules are refused and change nothing.
        let bad = try Wire.request(port, "POST", "/_sink/faults", body: Array(#"[{"action":"status","status":99}]"#.utf8))
        #expect(bad.status == 400 && bad.text.contains("faults[0].status"), "\(bad.text)")
        let notJSON = try Wire.request(port, "POST", "/_sink/faults", body: Array("[{".utf8))
        #expect(notJSON.status == 400)
        let typo = try Wire.request(port, "POST", "/_sink/faults", body: Array(#"[{"action":"slow","second":1}]"#.utf8))
        #expect(typo.status == 400 && typo.text.contains("second"), "\(typo.text)")
        #expect(sink.faults.count == 1)

        // Stats: per status and per path; control calls not counted.
        let stats = try Wire.request(port, "GET", "/_sink/stats").json()
        #expect(stats["total"] == .number(5))
        #expect(stats["statuses"] == .object(["200": .number(2), "500": .number(1), "503": .number(1), "409": .number(1)]))
        #expect(stats["paths"]?["/boom"] == .object(["count": .number(2), "statuses": .object(["200": .number(1), "500": .number(1)])]))
        #expect(stats["paths"]?["/c"]?["count"] == .number(2))
        #expect(stats["lastSeq"] == .number(5))

        // Requests since a sequence number, and of one path.
        let since = try Wire.request(port, "GET", "/_sink/requests?since=3").json()
        #expect(since["requests"]?.arrayValue?.compactMap { $0["seq"]?.numberValue } == [4, 5])
        let ofPath = try Wire.request(port, "GET", "/_sink/requests?path=%2Fboom&since=1").json()
        #expect(ofPath["requests"]?.arrayValue?.compactMap { $0["seq"]?.numberValue } == [2])
        #expect(try Wire.request(port, "GET", "/_sink/requests?limit=1").json()["requests"]?.arrayValue?.count == 1)
        #expect(try Wire.request(port, "GET", "/_sink/requests?since=x").status == 400)
        #expect(try Wire.request(port, "GET", "/_sink/nope").status == 404)
        #expect(try Wire.request(port, "GET", "/_sink/reset").status == 405)

        // Reset: requests and counts gone, the start's rules back, sequence numbers go on.
        #expect(try Wire.request(port, "POST", "/_sink/reset", body: []).status == 200)
        let empty = try Wire.request(port, "GET", "/_sink/stats").json()
        #expect(empty["total"] == .number(0) && empty["kept"] == .number(0) && empty["lastSeq"] == .number(5))
        #expect(try Wire.request(port, "GET", "/_sink/requests").json()["requests"]?.arrayValue?.isEmpty == true)
        #expect(try SinkFault.parse(spec: "status:500,path=/boom") == sink.faults)
        let next = try Wire.request(port, "GET", "/boom")
        #expect(next.status == 500 && next.header("X-Sink-Seq") == "6")
        #expect(sink.requests().map(\.seq) == [6])
    }

    // MARK: Fault specs

    @Test("fault specs: short forms and JSON read to the same rules; mistakes are named")
    func faultSpecs() throws {
        #expect(try SinkFault.parse(spec: "status:503,times=2,path=/x") == [SinkFault(path: "/x", times: 2, action: .status(503))])
        #expect(try SinkFault.parse(spec: "status") == [SinkFault(action: .status(503))])
        #expect(try SinkFault.parse(spec: "retryAfter:2,httpDate") == [SinkFault(action: .retryAfter(seconds: 2, httpDate: true))])
        #expect(try SinkFault.parse(spec: "retryAfter,status=503,seconds=5") == [SinkFault(action: .retryAfter(status: 503, seconds: 5))])
        #expect(try SinkFault.parse(spec: "hang") == [SinkFault(action: .hang())])
        #expect(try SinkFault.parse(spec: "hang:5,status=502") == [SinkFault(action: .hang(seconds: 5, status: 502))])
        #expect(try SinkFault.parse(spec: "slow:1.5,path=/s") == [SinkFault(path: "/s", action: .slow(seconds: 1.5))])
        #expect(try SinkFault.parse(spec: "reset,times=1") == [SinkFault(times: 1, action: .reset)])
        #expect(try SinkFault.parse(spec: "status:400,header=X-A: b,body=no, thanks") ==
                [SinkFault(action: .status(400, body: .text("no, thanks"), headers: ["X-A": "b"]))])
        #expect(try SinkFault.parse(spec: #"json:202,body={"a":[1,2]}"#) ==
                [SinkFault(action: .json(status: 202, body: .object(["a": .array([.number(1), .number(2)])])))])
        #expect(try SinkFault.parse(spec: #"[{"action":"reset"},{"action":"status","status":500,"body":{"e":1}}]"#) ==
                [SinkFault(action: .reset), SinkFault(action: .status(500, body: .json(.object(["e": .number(1)]))))])
        // The JSON form of a rule reads back to the same rule.
        for rule in try SinkFault.parse(spec: "retryAfter:2,httpDate,path=/p,times=3") + SinkFault.parse(spec: #"json:200,body={"x":true}"#) {
            #expect(try SinkFault(json: rule.json) == rule)
        }

        for (spec, mentions) in [("explode", "not one of"), ("status:abc", "not a number"), ("status:700", "100 to 599"),
                                 ("slow,times=0", "times"), ("reset:3", "no argument"), ("hang,colour=red", "colour"),
                                 ("json:200", "body"), ("status,path=x", "path"), (#"{"action":"hang","body":"x"}"#, "body"),
                                 ("json:200,body={", "not valid JSON"), ("retryAfter,httpDate=maybe", "httpDate")] {
            do throws(SinkError) {
                _ = try SinkFault.parse(spec: spec)
                Issue.record("\(spec) was accepted")
            } catch {
                #expect(error.message.contains(mentions), "\(spec): \(error.message)")
            }
        }
    }

    @Test("command-line arguments: --listen, --fault (repeatable), --keep")
    func arguments() throws {
        let o = try SinkOptions(arguments: ["--listen", "[::1]:0", "--fault", "status:503,times=1", "--fault=reset", "--keep=10"])
        #expect(o.host == "::1" && o.port == 0 && o.keep == 10)
        #expect(o.faults == [SinkFault(times: 1, action: .status(503)), SinkFault(action: .reset)])
        let d = try SinkOptions(arguments: [])
        #expect(d.host == "127.0.0.1" && d.port == 9099 && d.keep == 100_000 && d.faults.isEmpty)
        #expect(throws: SinkError.self) { try SinkOptions(arguments: ["--listen", "nowhere"]) }
        #expect(throws: SinkError.self) { try SinkOptions(arguments: ["--fault"]) }
        #expect(throws: SinkError.self) { try SinkOptions(arguments: ["--colour", "red"]) }
    }

    // MARK: The command

    @Test("relay simulate sink --help exits 0 and documents the fault specs")
    func cliHelp() throws {
        let run = try SinkTestProcess.run(["simulate", "sink", "--help"])
        #expect(run.status == 0)
        #expect(run.stdout.contains("relay simulate sink") && run.stdout.contains("retryAfter"), "\(run.stdout)")
        let bad = try SinkTestProcess.run(["simulate", "sink", "--fault", "explode"])
        #expect(bad.status == 2 && bad.stderr.contains("explode"), "\(bad.stderr)")
    }

    @Test("relay simulate sink: one JSON log line per request (no body), faults from flags, SIGTERM stops it (exit 0)")
    func cliRun() throws {
        let p = try SinkTestProcess(["simulate", "sink", "--listen", "127.0.0.1:0", "--fault", "status:503,times=1,path=/h"])
        defer { p.killIfRunning() }
        let listening = try p.waitForLog("sink listening")
        let address = try #require(listening["address"]?.stringValue)
        let port = try #require(UInt16(address.split(separator: ":").last ?? ""), "\(listening)")
        #expect(try Wire.request(port, "POST", "/h", body: Array("secret-body".utf8)).status == 503)
        #expect(try Wire.request(port, "POST", "/h", body: Array("secret-body".utf8)).status == 200)
        let line = try p.waitForLog("sink request") { $0["seq"]?.numberValue == 2 }
        #expect(line["level"]?.stringValue == "info")
        #expect(line["method"]?.stringValue == "POST" && line["target"]?.stringValue == "/h" && line["status"]?.numberValue == 200)
        let first = try p.waitForLog("sink request") { $0["seq"]?.numberValue == 1 }
        #expect(first["status"]?.numberValue == 503 && first["fault"]?.stringValue == "status")
        #expect(!p.stderr.contains("secret-body"), "a body was logged")
        p.signal(SIGTERM)
        #expect(try p.waitForExit() == 0, "\(p.stderr)")
        #expect(p.stderr.contains("\"sink stopped\""))
    }
}

// MARK: - A tiny HTTP/1.1 client over POSIX sockets (one request per connection)

enum SinkTestWire {
    enum Failure: Error, Equatable {
        case connect(String)
        case timedOut
        case closedWithoutAnswer
        case malformed(String)
    }

    struct Reply {
        var status: Int
        var headers: [(String, String)]
        var body: [UInt8]
        var text: String { String(decoding: body, as: UTF8.self) }
        func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
        func json() throws -> JSONValue { try JSONValue.parse(body) }
    }

    /// Sends one request (`Connection: close`) and reads the answer to the end. `timeout`: how long the client
    /// waits for each read before giving up (`Failure.timedOut`).
    static func request(_ port: UInt16, _ method: String, _ target: String, headers: [(String, String)] = [],
                        body: [UInt8]? = nil, timeout: Double = 5) throws -> Reply {
        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw Failure.connect(String(cString: strerror(errno))) }
        defer { close(fd) }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: .init(Int((timeout - Double(Int(timeout))) * 1_000_000)))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw Failure.connect(String(cString: strerror(errno))) }

        var head = "\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        for (n, v) in headers { head += "\(n): \(v)\r\n" }
        if let body { head += "Content-Length: \(body.count)\r\n" }
        let bytes = Array((head + "\r\n").utf8) + (body ?? [])
        var sent = 0
        while sent < bytes.count {
            #if canImport(Glibc)
            let flags = Int32(MSG_NOSIGNAL)
            #else
            let flags: Int32 = 0
            #endif
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, flags) }
            guard n > 0 else { throw Failure.connect("send: \(String(cString: strerror(errno)))") }
            sent += n
        }

        var received: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 { received += buf[0..<n]; continue }
            if n == 0 { break }
            if errno == EAGAIN || errno == EWOULDBLOCK { throw Failure.timedOut }
            if errno == EINTR { continue }
            if errno == ECONNRESET && received.isEmpty { throw Failure.closedWithoutAnswer }
            throw Failure.malformed("recv: \(String(cString: strerror(errno)))")
        }
        if received.isEmpty { throw Failure.closedWithoutAnswer }
        return try parse(received)
    }

    static func parse(_ data: [UInt8]) throws -> Reply {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let end = (0...(max(0, data.count - 4))).first(where: { data.count >= 4 && Array(data[$0..<$0 + 4]) == separator }) else {
            throw Failure.malformed("no end of head in \(data.count) bytes")
        }
        let lines = String(decoding: data[..<end], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw Failure.malformed(lines[0]) }
        var headers: [(String, String)] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        var body = Array(data[(end + 4)...])
        if let cl = headers.first(where: { $0.0.lowercased() == "content-length" }).flatMap({ Int($0.1) }), cl <= body.count {
            body = Array(body[..<cl])
        }
        return Reply(status: status, headers: headers, body: body)
    }

    static func poll(timeout: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return true }
            usleep(10_000)
        }
        return condition()
    }
}

/// A value behind a lock, in a class so that escaping closures can share it.
final class SinkTestLocked<T: Sendable>: Sendable {
    private let mutex: Mutex<T>
    init(_ value: T) { mutex = Mutex(value) }
    func withLock<R: Sendable>(_ body: (inout T) -> R) -> R { mutex.withLock { body(&$0) } }
    var value: T { withLock { $0 } }
}

/// Keeps the answer a request got from `Sink.handle` (in-process, no sockets).
final class SinkTestResponder: HTTPResponder {
    private let box = SinkTestLocked<HTTPResponse?>(nil)
    func respond(_ response: HTTPResponse) { box.withLock { $0 = response } }
    var response: HTTPResponse? { box.value }
}

// MARK: - The relay executable as a child process

final class SinkTestProcess: @unchecked Sendable {
    let process: Process
    /// What the child wrote, and whether the pipe reached its end.
    private let out = SinkTestLocked<(bytes: [UInt8], eof: Bool)>(([], false))
    private let err = SinkTestLocked<(bytes: [UInt8], eof: Bool)>(([], false))

    /// The `relay` executable beside the test bundle (`RELAY_BINARY` first).
    static func binary() throws -> String {
        let fm = FileManager.default
        if let given = ProcessInfo.processInfo.environment["RELAY_BINARY"], !given.isEmpty { return given }
        var starts: [URL] = []
        if let exe = try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe") { starts.append(URL(fileURLWithPath: exe)) }
        if let exe = Bundle.main.executableURL { starts.append(exe) }
        starts.append(Bundle.main.bundleURL.appendingPathComponent("x"))
        for start in starts {
            var dir = start.deletingLastPathComponent()
            for _ in 0..<4 {
                let candidate = dir.appendingPathComponent("relay").path
                var isDir: ObjCBool = false
                if fm.fileExists(atPath: candidate, isDirectory: &isDir), !isDir.boolValue, fm.isExecutableFile(atPath: candidate) {
                    return candidate
                }
                dir = dir.deletingLastPathComponent()
            }
        }
        throw SinkTestWire.Failure.connect("the relay executable was not found beside the test bundle (set RELAY_BINARY)")
    }

    init(_ arguments: [String]) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: try Self.binary())
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("RELAY_") }
        env["RELAY_LOG_LEVEL"] = "info"
        process.environment = env
        let outPipe = Pipe(), errPipe = Pipe()
        process.standardOutput = outPipe
        process.standardError = errPipe
        for (pipe, box) in [(outPipe, out), (errPipe, err)] {
            pipe.fileHandleForReading.readabilityHandler = { h in
                let d = h.availableData
                if d.isEmpty { h.readabilityHandler = nil }
                box.withLock { $0.bytes += d; if d.isEmpty { $0.eof = true } }
            }
        }
        try process.run()
        // The child has its own copies of the write ends: the pipes end when it exits.
        try? outPipe.fileHandleForWriting.close()
        try? errPipe.fileHandleForWriting.close()
    }

    var stdout: String { String(decoding: out.value.bytes, as: UTF8.self) }
    var stderr: String { String(decoding: err.value.bytes, as: UTF8.self) }

    /// The first log line with this message (and passing `where`), waiting for it.
    func waitForLog(_ msg: String, timeout: Double = 10, where accept: (JSONValue) -> Bool = { _ in true }) throws -> JSONValue {
        var found: JSONValue?
        _ = SinkTestWire.poll(timeout: timeout) {
            for line in stderr.split(separator: "\n") {
                if let v = try? JSONValue.parse(Array(line.utf8)), v["msg"]?.stringValue == msg, accept(v) {
                    found = v
                    return true
                }
            }
            return !process.isRunning
        }
        guard let found else { throw SinkTestWire.Failure.malformed("no \"\(msg)\" log line; stderr:\n\(stderr)") }
        return found
    }

    func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }

    func killIfRunning() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    /// The exit status (-1 when it did not exit in time, or died of a signal).
    func waitForExit(timeout: Double = 10) throws -> Int32 {
        guard SinkTestWire.poll(timeout: timeout, { !process.isRunning }) else { return -1 }
        process.waitUntilExit()
        // Let the readers drain what was written last.
        _ = SinkTestWire.poll(timeout: 2) { out.value.eof && err.value.eof }
        return process.terminationReason == .exit ? process.terminationStatus : -1
    }

    /// Runs to the end: exit status, stdout, stderr.
    static func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let p = try SinkTestProcess(arguments)
        let status = try p.waitForExit()
        return (status, p.stdout, p.stderr)
    }
}
