import Foundation
import Testing
import Crypto

/// Runs `/usr/bin/openssl` with `arguments`, returning stdout; throws with stderr text on a non-zero exit.
@discardableResult
func openssl(_ arguments: [String], in directory: URL? = nil) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = directory }
    let stdout = Pipe()
    let stderr = Pipe()
    process.standardOutput = stdout
    process.standardError = stderr
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let output = stdout.fileHandleForReading.readDataToEndOfFile()
    let errors = stderr.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw CommandFailed(
            command: "openssl " + arguments.joined(separator: " "),
            status: process.terminationStatus,
            stderr: String(decoding: errors, as: UTF8.self))
    }
    return String(decoding: output, as: UTF8.self)
}

struct CommandFailed: Error, CustomStringConvertible {
    let command: String
    let status: Int32
    let stderr: String
    var description: String { "\(command) exited with \(status): \(stderr)" }
}

/// Creates a fresh temporary directory, passes it to `body`, and removes it afterwards.
func withTemporaryDirectory<R>(_ body: (URL) throws -> R) throws -> R {
    let directory = FileManager.default.temporaryDirectory
        .appendingPathComponent("relay-crypto-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    return try body(directory)
}

extension URL {
    func write(_ bytes: [UInt8], to name: String) throws -> URL {
        let url = appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url
    }

    func write(_ text: String, to name: String) throws -> URL {
        try write(Array(text.utf8), to: name)
    }

    func read(_ name: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: appendingPathComponent(name)))
    }

    func readText(_ name: String) throws -> String {
        String(decoding: try read(name), as: UTF8.self)
    }
}

/// Keys generated once per test run with the openssl command line, held in memory (the files are deleted).
struct KeyFixture: Sendable {
    static let password = "secret"

    let pkcs8PEM: String
    let pkcs1PEM: String
    let encryptedPKCS8PEM: String
    let encryptedPKCS1PEM: String
    let publicSPKIPEM: String
    let publicPKCS1PEM: String
    let certificatePEM: String
    let pkcs12: [UInt8]
    let pkcs12EmptyPassword: [UInt8]
    let ecPrivatePEM: String
    let ecPublicPEM: String

    private static let cached = Result { try KeyFixture() }

    /// The shared fixture (generated lazily, once, thread-safely).
    static func shared() throws -> KeyFixture {
        try cached.get()
    }

    private init() throws {
        let pass = "pass:\(Self.password)"
        (pkcs8PEM, pkcs1PEM, encryptedPKCS8PEM, encryptedPKCS1PEM, publicSPKIPEM, publicPKCS1PEM,
         certificatePEM, pkcs12, pkcs12EmptyPassword, ecPrivatePEM, ecPublicPEM) = try withTemporaryDirectory { dir in
            func run(_ args: String...) throws { try openssl(args, in: dir) }
            try run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "key8.pem")
            try run("pkey", "-in", "key8.pem", "-traditional", "-out", "key1.pem")
            try run("pkcs8", "-topk8", "-in", "key8.pem", "-v2", "aes-256-cbc", "-passout", pass, "-out", "key8enc.pem")
            try run("rsa", "-in", "key8.pem", "-traditional", "-aes256", "-passout", pass, "-out", "key1enc.pem")
            try run("pkey", "-in", "key8.pem", "-pubout", "-out", "pub.pem")
            try run("rsa", "-in", "key8.pem", "-RSAPublicKey_out", "-out", "pub1.pem")
            try run("req", "-x509", "-new", "-key", "key8.pem", "-subj", "/CN=relay-test", "-days", "2", "-sha256", "-out", "cert.pem")
            try run("pkcs12", "-export", "-inkey", "key8.pem", "-in", "cert.pem", "-passout", pass, "-out", "key.p12")
            try run("pkcs12", "-export", "-inkey", "key8.pem", "-in", "cert.pem", "-passout", "pass:", "-out", "empty.p12")
            try run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec.pem")
            try run("pkey", "-in", "ec.pem", "-pubout", "-out", "ecpub.pem")
            return (
                try dir.readText("key8.pem"), try dir.readText("key1.pem"), try dir.readText("key8enc.pem"),
                try dir.readText("key1enc.pem"), try dir.readText("pub.pem"), try dir.readText("pub1.pem"),
                try dir.readText("cert.pem"), try dir.read("key.p12"), try dir.read("empty.p12"),
                try dir.readText("ec.pem"), try dir.readText("ecpub.pem"))
        }
    }
}

/// Bytes of a UTF-8 string.
func utf8(_ s: String) -> [UInt8] { Array(s.utf8) }

/// Hex-decodes a literal in a test (fails the test on bad input).
func hexBytes(_ s: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [UInt8] {
    try #require(ByteEncoding.fromHex(s), sourceLocation: sourceLocation)
}
