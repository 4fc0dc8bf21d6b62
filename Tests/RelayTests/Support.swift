import Adapters
import Crypto
import Foundation
import Relay
import RelayPostgres
import RelaySQLite
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Shared helpers of the relay tests: temporary directories, a raw-socket HTTP/1.1 client, an in-process relay
// (`RelayService` on 127.0.0.1:0 over a real SQLite file) and the `relay` executable run as a child process.

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func errnoText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

// MARK: - Temporary directories

/// A fresh directory under the system temp dir; each test makes its own and removes it when done.
final class TempDir: Sendable {
    let path: String

    init(_ label: String = "relay-test") throws {
        var template = Array("\(FileManager.default.temporaryDirectory.path)/\(label)-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { buf -> String? in
            guard let p = mkdtemp(buf.baseAddress!) else { return nil }
            return String(cString: p)
        }
        guard let made else { throw TestFailure("mkdtemp: \(errnoText())") }
        path = made
    }

    func file(_ name: String) -> String { path + "/" + name }

    @discardableResult
    func write(_ name: String, _ text: String) throws -> String {
        let p = file(name)
        try text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

func readText(_ path: String) -> String {
    FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) } ?? ""
}

func fileSize(_ path: String) -> Int {
    ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue ?? -1
}

/// A random printable secret (the HMAC key is its UTF-8 text).
func randomSecret(_ prefix: String = "sk_") -> String { prefix + ByteEncoding.hex(SecureRandom.bytes(16)) }

// MARK: - Raw HTTP/1.1 over POSIX sockets

private func sysClose(_ fd: Int32) { _ = close(fd) }

private func sysSend(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int {
    #if os(Linux)
    return send(fd, p, n, Int32(MSG_NOSIGNAL))
    #else
    return send(fd, p, n, 0)
    #endif
}

private func sysRecv(_ fd: Int32, _ p: UnsafeMutableRawPointer, _ n: Int) -> Int { recv(fd, p, n, 0) }

/// A response as read off the wire.
struct Response: Sendable, CustomStringConvertible {
    var status: Int
    var headers: [(String, String)]
    var body: [UInt8]

    func header(_ name: String) -> String? {
        headers.first(where: { $0.0.caseInsensitiveCompare(name) == .orderedSame })?.1
    }

    var text: String { String(decoding: body, as: UTF8.self) }
    var json: JSONValue? { try? JSONValue.parse(Data(body)) }
    /// A top-level string field of a JSON body.
    subscript(field: String) -> String? { json?[field]?.stringValue }

    var description: String { "HTTP \(status) \(text)" }
}

/// One client connection. Blocking I/O with timeouts, so a test never hangs.
final class Connection {
    let fd: Int32
    private var buffer: [UInt8] = []
    private var isClosed = false

    private static let ignoreSIGPIPE: Void = { _ = signal(SIGPIPE, SIG_IGN) }()

    init(port: UInt16, timeout: Double = 10) throws {
        _ = Connection.ignoreSIGPIPE
        #if os(Linux)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw TestFailure("socket: \(errnoText())") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 {
            let e = errno
            sysClose(fd)
            throw TestFailure("connect 127.0.0.1:\(port): \(errnoText(e))")
        }
        self.fd = fd
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        setTimeout(timeout)
    }

    deinit { close() }

    /// Whether anything accepts connections on the port.
    static func canConnect(port: UInt16) -> Bool { (try? Connection(port: port, timeout: 1)) != nil }

    func setTimeout(_ seconds: Double) {
        var tv = timeval()
        tv.tv_sec = .init(Int(seconds))
        tv.tv_usec = .init(Int((seconds - Double(Int(seconds))) * 1e6))
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    func close() {
        if !isClosed {
            isClosed = true
            sysClose(fd)
        }
    }

    func send(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { sysSend(fd, $0.baseAddress! + off, bytes.count - off) }
            if n < 0 {
                if errno == EINTR { continue }
                throw TestFailure("send: \(errnoText())")
            }
            off += n
        }
    }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// Reads more bytes into the buffer; false at end of stream. Throws on a timeout or an error.
    private func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { sysRecv(fd, $0.baseAddress!, $0.count) }
            if n > 0 {
                buffer.append(contentsOf: chunk[0..<n])
                return true
            }
            if n == 0 { return false }
            let e = errno
            if e == EINTR { continue }
            if e == ECONNRESET { return false }
            if e == EAGAIN || e == EWOULDBLOCK { throw TestFailure("timed out waiting for the server") }
            throw TestFailure("recv: \(errnoText(e))")
        }
    }

    /// Reads one response (skipping `100 Continue`). A HEAD response has no body whatever its Content-Length.
    func readResponse(head: Bool = false) throws -> Response {
        while true {
            let marker: [UInt8] = Array("\r\n\r\n".utf8)
            var end: Int?
            while end == nil {
                end = find(marker, in: buffer)
                if end == nil, try !fill() {
                    throw TestFailure("connection closed before a response (got \(buffer.count) bytes: \(String(decoding: buffer, as: UTF8.self)))")
                }
            }
            let headText = String(decoding: buffer[0..<end!], as: UTF8.self)
            buffer.removeFirst(end! + marker.count)
            var lines = headText.components(separatedBy: "\r\n")
            let statusLine = lines.removeFirst().split(separator: " ")
            guard statusLine.count >= 2, let status = Int(statusLine[1]) else {
                throw TestFailure("bad status line in \(headText)")
            }
            var headers: [(String, String)] = []
            for line in lines {
                guard let colon = line.firstIndex(of: ":") else { continue }
                headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
            }
            if status == 100 { continue }
            var response = Response(status: status, headers: headers, body: [])
            if head { return response }
            if let cl = response.header("Content-Length").flatMap({ Int($0) }) {
                while buffer.count < cl {
                    if try !fill() { throw TestFailure("connection closed inside a response body") }
                }
                response.body = Array(buffer[0..<cl])
                buffer.removeFirst(cl)
            } else {
                while try fill() {}
                response.body = buffer
                buffer = []
            }
            return response
        }
    }

    /// Waits for the server to close the connection. Returns whatever it sent first (nil when it did not close in
    /// time).
    func waitForClose(timeout: Double) -> [UInt8]? {
        setTimeout(timeout)
        do {
            while try fill() {}
            return buffer
        } catch {
            return nil
        }
    }

    private func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] {
            if Array(haystack[i..<(i + needle.count)]) == needle { return i }
        }
        return nil
    }
}

/// The bytes of a request. `contentLength` overrides the announced length; `chunked` sends the body in
/// chunked transfer encoding instead.
func requestBytes(_ method: String, _ target: String, port: UInt16, headers: [(String, String)] = [],
                  body: [UInt8]? = nil, contentLength: Int? = nil, chunked: Bool = false,
                  keepAlive: Bool = false) -> [UInt8] {
    var head = "\(method) \(target) HTTP/1.1\r\n"
    if !headers.contains(where: { $0.0.lowercased() == "host" }) { head += "Host: 127.0.0.1:\(port)\r\n" }
    for (k, v) in headers { head += "\(k): \(v)\r\n" }
    if !keepAlive { head += "Connection: close\r\n" }
    var out: [UInt8] = []
    if chunked {
        head += "Transfer-Encoding: chunked\r\n\r\n"
        out = Array(head.utf8)
        var rest = body ?? []
        while !rest.isEmpty {
            let n = min(rest.count, 1000)
            out += Array((String(n, radix: 16) + "\r\n").utf8) + rest[0..<n] + Array("\r\n".utf8)
            rest.removeFirst(n)
        }
        out += Array("0\r\n\r\n".utf8)
        return out
    }
    if let length = contentLength ?? body?.count { head += "Content-Length: \(length)\r\n" }
    head += "\r\n"
    return Array(head.utf8) + (body ?? [])
}

/// One request per connection against 127.0.0.1:port.
struct Client: Sendable {
    let port: UInt16

    func request(_ method: String, _ target: String, headers: [(String, String)] = [], body: [UInt8]? = nil,
                 chunked: Bool = false) throws -> Response {
        let c = try Connection(port: port)
        try c.send(requestBytes(method, target, port: port, headers: headers, body: body, chunked: chunked))
        return try c.readResponse(head: method == "HEAD")
    }

    func post(_ target: String, _ body: [UInt8], headers: [(String, String)] = [],
              contentType: String? = "application/json") throws -> Response {
        var h = headers
        if let contentType { h.append(("Content-Type", contentType)) }
        return try request("POST", target, headers: h, body: body)
    }

    func post(_ target: String, json: String, headers: [(String, String)] = []) throws -> Response {
        try post(target, Array(json.utf8), headers: headers)
    }

    func get(_ target: String, headers: [(String, String)] = []) throws -> Response {
        try request("GET", target, headers: headers)
    }
}

// MARK: - An in-process relay

/// The store `store:` names, as `relay serve` opens it.
func openStore(_ settings: StoreSettings, log: Logger? = nil) throws -> any RelayStore {
    switch settings {
    case .sqlite(let o): return try SQLiteStore(options: o, log: log)
    case .postgres(let o): return try PostgresStore(options: o, log: log)
    }
}

/// The JSON5 configuration of a test relay: loopback, port 0, its own SQLite file, debug logs. `sources` is the
/// text inside `sources: { ... }`; `server`, `store` add keys to those blocks; `extra` adds top-level keys.
func relayConfigText(dbPath: String, sources: String, server: String = "", store: String = "",
                     extra: String = "", shutdownTimeout: String = "3s") -> String {
    """
    // written by the relay tests
    {
      server: { listen: "127.0.0.1:0", threads: 2, shutdownTimeout: "\(shutdownTimeout)", \(server) },
      \(extra.contains("admin:") ? "" : #"admin: { listen: "127.0.0.1:0" },"#)
      store: { sqlite: "\(dbPath)", \(store) },
      log: { level: "debug" },
      sources: {
        \(sources)
      },
      \(extra)
    }
    """
}

/// A `RelayService` listening on 127.0.0.1 (a port of its own), storing into a fresh SQLite file in a temp dir,
/// logging into a file there. Call `stop()` when done (it removes the directory). Given a directory (`in:`), it
/// uses that directory's `relay.db` and leaves the directory in place, so that a second relay can be started on
/// the same store.
final class RunningRelay {
    let dir: TempDir
    let service: RelayService
    let logPath: String
    private let logFD: Int32
    private let ownsDir: Bool
    private var stopped = false

    init(sources: String, server: String = "", store: String = "", extra: String = "",
         environment: [String: String] = [:], in shared: TempDir? = nil, logName: String = "relay.log",
         shutdownTimeout: String = "3s") throws {
        dir = try shared ?? TempDir("relay-inproc")
        ownsDir = shared == nil
        let text = relayConfigText(dbPath: dir.file("relay.db"), sources: sources, server: server, store: store,
                                   extra: extra, shutdownTimeout: shutdownTimeout)
        do {
            let config = try RelayConfig.parse(Data(text.utf8), registry: BuiltinAdapters.registry,
                                               environment: environment)
            logPath = dir.file(logName)
            logFD = open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
            guard logFD >= 0 else { throw TestFailure("open \(logPath): \(errnoText())") }
            do {
                let log = Logger(level: .debug, fd: logFD)
                service = try RelayService(config: config, log: log, store: try openStore(config.store, log: log))
                try service.start()
            } catch {
                _ = close(logFD)
                throw error
            }
        } catch {
            if ownsDir { dir.remove() }
            throw error
        }
    }

    var port: UInt16 { service.port }
    var client: Client { Client(port: port) }
    var store: any RelayStore { service.store }
    /// The embedded store (these relays run on SQLite unless a test says otherwise).
    var sqlite: SQLiteStore { service.store as! SQLiteStore }
    var log: String { readText(logPath) }

    func stop() {
        guard !stopped else { return }
        stopped = true
        service.shutdown()
        _ = close(logFD)
        if ownsDir { dir.remove() }
    }

    deinit { stop() }
}

// MARK: - The relay executable

enum RelayBinary {
    /// The `relay` executable `swift test` built beside the test bundle (any scratch path), `RELAY_BINARY` first.
    static let path: Result<String, TestFailure> = locate()

    static func require() throws -> String { try path.get() }

    private static func isExecutableFile(_ p: String) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: p, isDirectory: &isDir) && !isDir.boolValue
            && FileManager.default.isExecutableFile(atPath: p)
    }

    private static func locate() -> Result<String, TestFailure> {
        let fm = FileManager.default
        if let given = ProcessInfo.processInfo.environment["RELAY_BINARY"], !given.isEmpty {
            return isExecutableFile(given) ? .success(given)
                : .failure(TestFailure("RELAY_BINARY=\(given) is not an executable file"))
        }
        // The test bundle lives in <scratch>/<config>/ (Linux: RelayPackageTests.xctest is the executable;
        // macOS: RelayPackageTests.xctest/Contents/MacOS/...); the relay executable is its sibling.
        var starts: [URL] = []
        #if os(Linux)
        if let exe = try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe") { starts.append(URL(fileURLWithPath: exe)) }
        #endif
        if let exe = Bundle.main.executableURL { starts.append(exe) }
        starts.append(Bundle.main.bundleURL.appendingPathComponent("x"))
        if let arg0 = CommandLine.arguments.first, arg0.contains("/") {
            starts.append(URL(fileURLWithPath: arg0).standardizedFileURL)
        }
        var tried: [String] = []
        for start in starts {
            var dir = start.deletingLastPathComponent()
            for _ in 0..<4 {
                let candidate = dir.appendingPathComponent("relay").path
                tried.append(candidate)
                if isExecutableFile(candidate) { return .success(candidate) }
                dir = dir.deletingLastPathComponent()
            }
        }
        // Last resort: the default scratch path of the package this file belongs to.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        for config in ["debug", "release"] {
            let candidate = root.appendingPathComponent(".build/\(config)/relay").path
            tried.append(candidate)
            if isExecutableFile(candidate) { return .success(candidate) }
        }
        return .failure(TestFailure("the relay executable was not found (build it with `swift build --product relay` or set RELAY_BINARY); tried: \(tried.joined(separator: ", "))"))
    }
}

/// The environment for a child relay: this process's, without RELAY_* settings, plus `extra`.
func childEnvironment(_ extra: [String: String]) -> [String: String] {
    var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("RELAY_") }
    for (k, v) in extra { env[k] = v }
    return env
}

/// The `relay` executable run as a child process, its stdout and stderr going to files in `dir`.
final class RelayProcess {
    let process = Process()
    let stdoutPath: String
    let stderrPath: String
    private(set) var port: UInt16 = 0

    init(_ arguments: [String], environment: [String: String] = [:], dir: TempDir, label: String = "relay",
         currentDirectory: String? = nil) throws {
        stdoutPath = dir.file("\(label).stdout")
        stderrPath = dir.file("\(label).stderr")
        _ = FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: try RelayBinary.require())
        process.arguments = arguments
        process.environment = childEnvironment(environment)
        process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory ?? dir.path)
        process.standardInput = FileHandle.nullDevice
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: stdoutPath))
        let err = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
        process.standardOutput = out
        process.standardError = err
        try process.run()
        try? out.close()
        try? err.close()
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    var stdout: String { readText(stdoutPath) }
    var stderr: String { readText(stderrPath) }
    var client: Client { Client(port: port) }

    /// Polls `condition` every 10 ms until it holds or `timeout` passes.
    static func poll(timeout: Double, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if try condition() { return true }
            if Date() > deadline { return false }
            usleep(10_000)
        }
    }

    /// The first stderr log line (JSON) whose `msg` is `message`.
    func logLine(_ message: String) -> JSONValue? {
        for line in stderr.split(separator: "\n") {
            if let v = try? JSONValue.parse(Data(line.utf8)), v["msg"]?.stringValue == message { return v }
        }
        return nil
    }

    @discardableResult
    func waitForLog(_ message: String, timeout: Double = 10) throws -> JSONValue {
        var found: JSONValue?
        _ = RelayProcess.poll(timeout: timeout) {
            found = logLine(message)
            return found != nil || !process.isRunning
        }
        if found == nil { found = logLine(message) }
        guard let found else {
            throw TestFailure("no \"\(message)\" log line from the relay within \(timeout)s; stderr:\n\(stderr)")
        }
        return found
    }

    /// Waits for `relay listening`, reads the port from its address, then for `GET /healthz` to answer 200.
    @discardableResult
    func waitUntilReady(timeout: Double = 10) throws -> UInt16 {
        let line = try waitForLog("relay listening", timeout: timeout)
        guard let address = line["address"]?.stringValue, let colon = address.lastIndex(of: ":"),
              let port = UInt16(address[address.index(after: colon)...]), port != 0 else {
            throw TestFailure("cannot read the port from \(line.jsonString())")
        }
        self.port = port
        let healthy = RelayProcess.poll(timeout: timeout) {
            (try? Client(port: port).get("/healthz").status) == 200
        }
        guard healthy else { throw TestFailure("GET /healthz never answered 200; stderr:\n\(stderr)") }
        return port
    }

    func signal(_ sig: Int32) { kill(process.processIdentifier, sig) }

    /// Kills the process if it is still running (a failed test must not leave it writing into a removed dir).
    func killIfRunning() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// Waits for the process to end; kills it and throws when it outlives `timeout`.
    func waitForExit(timeout: Double = 10) throws -> (reason: Process.TerminationReason, status: Int32) {
        if !RelayProcess.poll(timeout: timeout, { !process.isRunning }) {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw TestFailure("the relay did not exit within \(timeout)s; stderr:\n\(stderr)")
        }
        process.waitUntilExit()
        return (process.terminationReason, process.terminationStatus)
    }

    /// Runs the relay to completion (e.g. `relay check`).
    static func run(_ arguments: [String], environment: [String: String] = [:], dir: TempDir,
                    label: String = "run", currentDirectory: String? = nil,
                    timeout: Double = 20) throws -> (status: Int32, stdout: String, stderr: String) {
        let p = try RelayProcess(arguments, environment: environment, dir: dir, label: label,
                                 currentDirectory: currentDirectory)
        let (reason, status) = try p.waitForExit(timeout: timeout)
        guard reason == .exit else { throw TestFailure("relay \(arguments) died of signal \(status)") }
        return (status, p.stdout, p.stderr)
    }
}

/// Runs a store operation that answers through a completion (`commit`, `finish`, `release`, `saveProgress`) and
/// waits for its result.
func awaitCompletion<T: Sendable>(_ start: (@escaping @Sendable (Result<T, StoreError>) -> Void) -> Void) throws -> T {
    let box = Mutex<Result<T, StoreError>?>(nil)
    let done = DispatchSemaphore(value: 0)
    start { r in
        box.withLock { $0 = r }
        done.signal()
    }
    done.wait()
    return try box.withLock { $0! }.get()
}
