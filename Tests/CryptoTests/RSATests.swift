import Crypto
import Foundation
import Testing

@Suite("RSA")
struct RSATests {
    let keys: KeyFixture
    let message = utf8("POST /webhooks/relay\n{\"event\":\"delivery\",\"id\":42}")

    init() throws {
        keys = try KeyFixture.shared()
    }

    @Test("Swift signature equals openssl dgst -sign and verifies with openssl")
    func signatureMatchesOpenSSL() throws {
        let key = try RSAPrivateKey(pem: keys.pkcs8PEM)
        #expect(key.bits == 2048)
        let signature = try key.signSHA256(message)
        #expect(signature.count == 256)
        try withTemporaryDirectory { dir in
            let keyFile = try dir.write(keys.pkcs8PEM, to: "key.pem")
            let messageFile = try dir.write(message, to: "message.bin")
            try openssl(["dgst", "-sha256", "-sign", keyFile.path, "-out", "openssl.sig", messageFile.path], in: dir)
            #expect(try dir.read("openssl.sig") == signature)  // PKCS#1 v1.5 is deterministic

            // openssl verifies our signature against the public key PEM we export.
            let publicFile = try dir.write(try key.publicKey.pem(), to: "pub.pem")
            let signatureFile = try dir.write(signature, to: "swift.sig")
            let verified = try openssl(
                ["dgst", "-sha256", "-verify", publicFile.path, "-signature", signatureFile.path, messageFile.path], in: dir)
            #expect(verified.contains("Verified OK"))
        }
    }

    @Test("openssl signature verifies with RSAPublicKey; tampering fails")
    func opensslSignatureVerifies() throws {
        let message = SecureRandom.bytes(777)
        let signature = try withTemporaryDirectory { dir in
            let keyFile = try dir.write(keys.pkcs1PEM, to: "key.pem")
            let messageFile = try dir.write(message, to: "message.bin")
            try openssl(["dgst", "-sha256", "-sign", keyFile.path, "-out", "sig.bin", messageFile.path], in: dir)
            return try dir.read("sig.bin")
        }
        for pem in [keys.publicSPKIPEM, keys.publicPKCS1PEM, keys.certificatePEM] {
            let publicKey = try RSAPublicKey(pem: pem)
            #expect(publicKey.verifySHA256(signature: signature, message: message))

            var tamperedMessage = message
            tamperedMessage[100] ^= 0x01
            #expect(!publicKey.verifySHA256(signature: signature, message: tamperedMessage))
            var tamperedSignature = signature
            tamperedSignature[signature.count - 1] ^= 0x01
            #expect(!publicKey.verifySHA256(signature: tamperedSignature, message: message))
            #expect(!publicKey.verifySHA256(signature: [], message: message))
            #expect(!publicKey.verifySHA256(signature: Array(signature.dropLast()), message: message))
        }
    }

    @Test("public key formats (SPKI, PKCS#1, certificate, derived) are the same key")
    func publicKeyFormats() throws {
        let spki = try RSAPublicKey(pem: keys.publicSPKIPEM).pem()
        #expect(spki == keys.publicSPKIPEM)
        #expect(spki.hasPrefix("-----BEGIN PUBLIC KEY-----"))
        #expect(try RSAPublicKey(pem: keys.publicPKCS1PEM).pem() == spki)
        #expect(try RSAPublicKey(pem: keys.certificatePEM).pem() == spki)
        #expect(try RSAPrivateKey(pem: keys.pkcs1PEM).publicKey.pem() == spki)
        #expect(try RSAPublicKey(pem: keys.certificatePEM).bits == 2048)
        // Round trip of our own output.
        #expect(try RSAPublicKey(pem: spki).pem() == spki)
    }

    @Test("PKCS#1, PKCS#8, encrypted PKCS#8/PKCS#1 and PKCS#12 give identical signatures")
    func allFormatsAgree() throws {
        let reference = try RSAPrivateKey(pem: keys.pkcs8PEM).signSHA256(message)
        let loaded: [RSAPrivateKey] = [
            try RSAPrivateKey(pem: keys.pkcs1PEM),
            try RSAPrivateKey(pem: keys.encryptedPKCS8PEM, password: KeyFixture.password),
            try RSAPrivateKey(pem: keys.encryptedPKCS1PEM, password: KeyFixture.password),
            try RSAPrivateKey(pkcs12: keys.pkcs12, password: KeyFixture.password),
            try RSAPrivateKey(pkcs12: keys.pkcs12EmptyPassword, password: ""),
            // A password given for an unencrypted key is ignored.
            try RSAPrivateKey(pem: keys.pkcs8PEM, password: "unused"),
            // Other PEM blocks before the key are skipped.
            try RSAPrivateKey(pem: keys.certificatePEM + keys.pkcs1PEM),
        ]
        for key in loaded {
            #expect(key.bits == 2048)
            #expect(try key.signSHA256(message) == reference)
        }
        #expect(keys.pkcs1PEM.contains("BEGIN RSA PRIVATE KEY"))
        #expect(keys.pkcs8PEM.contains("BEGIN PRIVATE KEY"))
        #expect(keys.encryptedPKCS8PEM.contains("BEGIN ENCRYPTED PRIVATE KEY"))
    }

    @Test("load(path:) reads PEM and PKCS#12 files; errors name the path")
    func loadFromFiles() throws {
        let reference = try RSAPrivateKey(pem: keys.pkcs8PEM).signSHA256(message)
        try withTemporaryDirectory { dir in
            let p12 = try dir.write(keys.pkcs12, to: "client.p12")
            let pem = try dir.write(keys.pkcs1PEM, to: "client.pem")
            let encrypted = try dir.write(keys.encryptedPKCS8PEM, to: "client-enc.pem")
            let emptyP12 = try dir.write(keys.pkcs12EmptyPassword, to: "empty.pfx")
            #expect(try RSAPrivateKey.load(path: p12.path, password: KeyFixture.password).signSHA256(message) == reference)
            #expect(try RSAPrivateKey.load(path: pem.path, password: nil).signSHA256(message) == reference)
            #expect(try RSAPrivateKey.load(path: encrypted.path, password: KeyFixture.password).signSHA256(message) == reference)
            #expect(try RSAPrivateKey.load(path: emptyP12.path, password: nil).signSHA256(message) == reference)

            let wrong = #expect(throws: CryptoError.self) {
                try RSAPrivateKey.load(path: p12.path, password: "nope")
            }
            #expect(wrong?.message.contains(p12.path) == true)
            #expect(wrong?.message.contains("wrong PKCS#12 password") == true)

            let missing = dir.appendingPathComponent("does-not-exist.pem").path
            let notFound = #expect(throws: CryptoError.self) {
                try RSAPrivateKey.load(path: missing, password: nil)
            }
            #expect(notFound?.message.contains(missing) == true)

            let garbage = try dir.write(SecureRandom.bytes(300), to: "garbage.p12")
            let garbageError = #expect(throws: CryptoError.self) {
                try RSAPrivateKey.load(path: garbage.path, password: "x")
            }
            #expect(garbageError?.message.contains(garbage.path) == true)
            #expect(garbageError?.message.contains("not a PKCS#12") == true)
        }
    }

    @Test("wrong PKCS#12 password is reported as such")
    func wrongPKCS12Password() throws {
        let error = #expect(throws: CryptoError.self) {
            try RSAPrivateKey(pkcs12: keys.pkcs12, password: "not-the-password")
        }
        #expect(error?.message == "wrong PKCS#12 password")
        #expect(error?.description.contains("wrong PKCS#12 password") == true)
        #expect(throws: CryptoError.self) { try RSAPrivateKey(pkcs12: keys.pkcs12, password: "") }
        #expect(throws: CryptoError.self) { try RSAPrivateKey(pkcs12: keys.pkcs12EmptyPassword, password: "secret") }
    }

    @Test("garbage input throws")
    func garbageInput() throws {
        let notP12 = #expect(throws: CryptoError.self) {
            try RSAPrivateKey(pkcs12: SecureRandom.bytes(512), password: "secret")
        }
        #expect(notP12?.message.contains("not a PKCS#12") == true)
        #expect(notP12?.operation == "d2i_PKCS12_bio")
        #expect(throws: CryptoError.self) { try RSAPrivateKey(pkcs12: [], password: "secret") }
        #expect(throws: CryptoError.self) { try RSAPrivateKey(pkcs12: utf8(keys.pkcs8PEM), password: "secret") }

        let notPEM = #expect(throws: CryptoError.self) { try RSAPrivateKey(pem: "hello world") }
        #expect(notPEM?.message.contains("not PEM") == true)
        #expect(throws: CryptoError.self) { try RSAPrivateKey(pem: "") }
        // A certificate is not a private key.
        #expect(throws: CryptoError.self) { try RSAPrivateKey(pem: keys.certificatePEM) }
        // Corrupted base64 body inside a valid-looking PEM block.
        var lines = keys.pkcs8PEM.split(separator: "\n").map(String.init)
        lines[3] = String(repeating: "A", count: lines[3].count)
        lines[5] = "!!!!"
        let corrupted = lines.joined(separator: "\n") + "\n"
        let corruptError = #expect(throws: CryptoError.self) { try RSAPrivateKey(pem: corrupted) }
        #expect(corruptError?.operation == "PEM_read_bio_PrivateKey")

        #expect(throws: CryptoError.self) { try RSAPublicKey(pem: "garbage") }
        #expect(throws: CryptoError.self) { try RSAPublicKey(pem: keys.pkcs8PEM) }  // private, not public
        #expect(throws: CryptoError.self) {
            try RSAPublicKey(pem: "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
        }
    }

    @Test("encrypted key without or with the wrong password throws a clear error")
    func encryptedKeyPasswords() throws {
        for pem in [keys.encryptedPKCS8PEM, keys.encryptedPKCS1PEM] {
            let missing = #expect(throws: CryptoError.self) { try RSAPrivateKey(pem: pem) }
            #expect(missing?.message.contains("no password") == true)
            let wrong = #expect(throws: CryptoError.self) { try RSAPrivateKey(pem: pem, password: "wrong") }
            #expect(wrong?.message.contains("wrong password") == true)
        }
        // The error queue was drained: a following successful load is unaffected.
        #expect(try RSAPrivateKey(pem: keys.encryptedPKCS8PEM, password: KeyFixture.password).bits == 2048)
    }

    @Test("EC keys are rejected as not RSA")
    func ecKeyRejected() throws {
        let privateError = #expect(throws: CryptoError.self) { try RSAPrivateKey(pem: keys.ecPrivatePEM) }
        #expect(privateError?.message.contains("not RSA") == true)
        #expect(privateError?.message.contains("EC") == true)
        let publicError = #expect(throws: CryptoError.self) { try RSAPublicKey(pem: keys.ecPublicPEM) }
        #expect(publicError?.message.contains("not RSA") == true)
    }

    @Test("concurrent signing from many tasks is consistent")
    func concurrentSigning() async throws {
        let key = try RSAPrivateKey(pem: keys.pkcs8PEM)
        let publicKey = key.publicKey
        let expected = try key.signSHA256(message)
        let message = self.message
        let results = try await withThrowingTaskGroup(of: Bool.self) { group in
            for i in 0..<16 {
                group.addTask {
                    let signature = try key.signSHA256(message)
                    return signature == expected
                        && publicKey.verifySHA256(signature: signature, message: message)
                        && !publicKey.verifySHA256(signature: signature, message: message + [UInt8(i)])
                }
            }
            return try await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(results.count == 16 && results.allSatisfy { $0 })
    }

    @Test("signing an empty message works and matches openssl")
    func emptyMessage() throws {
        let key = try RSAPrivateKey(pem: keys.pkcs8PEM)
        let signature = try key.signSHA256([])
        #expect(key.publicKey.verifySHA256(signature: signature, message: []))
        try withTemporaryDirectory { dir in
            let keyFile = try dir.write(keys.pkcs8PEM, to: "key.pem")
            let empty = try dir.write([UInt8](), to: "empty.bin")
            try openssl(["dgst", "-sha256", "-sign", keyFile.path, "-out", "sig.bin", empty.path], in: dir)
            #expect(try dir.read("sig.bin") == signature)
        }
    }
}

@Suite("CryptoError")
struct CryptoErrorTests {
    @Test func description() {
        let error = CryptoError(operation: "PKCS12_parse", code: 0, message: "wrong PKCS#12 password")
        #expect(error.description == "PKCS12_parse failed: wrong PKCS#12 password")
    }

    @Test func openSSLCodeIsCaptured() throws {
        let error = #expect(throws: CryptoError.self) {
            try RSAPrivateKey(pkcs12: [0x30, 0x03, 0x02, 0x01, 0x00], password: "x")
        }
        #expect(error?.code != 0)
        #expect(error?.message.contains("error:") == true)  // ERR_error_string_n text is included
    }

    @Test("a PKCS#12 in the legacy format (RC2-40, 3DES: old Java keytool, openssl -legacy) loads, and signs as the PEM key does")
    func legacyPKCS12() throws {
        try withTemporaryDirectory { dir in
            try openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem", "-out", "c.pem", "-days", "2",
                         "-subj", "/CN=legacy"], in: dir)
            try openssl(["pkcs12", "-export", "-legacy", "-in", "c.pem", "-inkey", "k.pem", "-passout", "pass:pw",
                         "-out", "legacy.p12"], in: dir)
            let p12 = Array(try Data(contentsOf: dir.appendingPathComponent("legacy.p12")))
            let fromP12 = try RSAPrivateKey(pkcs12: p12, password: "pw")
            let fromPEM = try RSAPrivateKey(pem: String(contentsOf: dir.appendingPathComponent("k.pem"), encoding: .utf8))
            let message = Array("legacy".utf8)
            #expect(try fromP12.signSHA256(message) == fromPEM.signSHA256(message))   // PKCS#1 v1.5 is deterministic
            let identity = try PKCS12Identity(pkcs12: p12, password: "pw")
            #expect(identity.certificate?.subject == "/CN=legacy")
            #expect(throws: (any Error).self) { try RSAPrivateKey(pkcs12: p12, password: "not-it") }
        }
    }
}
