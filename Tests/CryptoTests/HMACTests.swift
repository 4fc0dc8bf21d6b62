import Crypto
import Foundation
import Testing

@Suite("HMAC")
struct HMACTests {
    struct Vector: Sendable, CustomTestStringConvertible {
        let name: String
        let key: [UInt8]
        let data: [UInt8]
        let sha256: String
        let sha512: String
        var testDescription: String { name }
    }

    static let largeKey = [UInt8](repeating: 0xaa, count: 131)

    /// RFC 4231 §4 test cases (case 5 is in `truncation`).
    static let rfc4231Vectors: [Vector] = [
        Vector(
            name: "RFC 4231 case 1", key: [UInt8](repeating: 0x0b, count: 20), data: utf8("Hi There"),
            sha256: "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            sha512: "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"),
        Vector(
            name: "RFC 4231 case 2", key: utf8("Jefe"), data: utf8("what do ya want for nothing?"),
            sha256: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            sha512: "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"),
        Vector(
            name: "RFC 4231 case 3", key: [UInt8](repeating: 0xaa, count: 20), data: [UInt8](repeating: 0xdd, count: 50),
            sha256: "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            sha512: "fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb"),
        Vector(
            name: "RFC 4231 case 4", key: Array(1...25), data: [UInt8](repeating: 0xcd, count: 50),
            sha256: "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            sha512: "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3dba91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd"),
        Vector(
            name: "RFC 4231 case 6", key: largeKey, data: utf8("Test Using Larger Than Block-Size Key - Hash Key First"),
            sha256: "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            sha512: "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f3526b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598"),
        Vector(
            name: "RFC 4231 case 7", key: largeKey,
            data: utf8("This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm."),
            sha256: "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            sha512: "e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58"),
    ]

    @Test(arguments: rfc4231Vectors)
    func rfc4231(_ vector: Vector) {
        let tag256 = HMAC.authenticate(.sha256, key: vector.key, message: vector.data)
        let tag512 = HMAC.authenticate(.sha512, key: vector.key, message: vector.data)
        #expect(ByteEncoding.hex(tag256) == vector.sha256)
        #expect(ByteEncoding.hex(tag512) == vector.sha512)
        let viaBuffer = vector.data.withUnsafeBytes { HMAC.authenticate(.sha256, key: vector.key, message: $0) }
        #expect(viaBuffer == tag256)
    }

    @Test("RFC 4231 case 5 (truncated to 128 bits)")
    func truncation() {
        let key = [UInt8](repeating: 0x0c, count: 20)
        let data = utf8("Test With Truncation")
        let tag256 = HMAC.authenticate(.sha256, key: key, message: data)
        let tag512 = HMAC.authenticate(.sha512, key: key, message: data)
        #expect(tag256.count == 32 && tag512.count == 64)
        #expect(ByteEncoding.hex(Array(tag256.prefix(16))) == "a3b6167473100ee06e0c796c2955552b")
        #expect(ByteEncoding.hex(Array(tag512.prefix(16))) == "415fad6271580a531d4179bc891d87a6")
    }

    @Test("RFC 2202 HMAC-SHA1 cases 1-3")
    func rfc2202() {
        #expect(ByteEncoding.hex(HMAC.authenticate(.sha1, key: [UInt8](repeating: 0x0b, count: 20), message: utf8("Hi There")))
            == "b617318655057264e28bc0b6fb378c8ef146be00")
        #expect(ByteEncoding.hex(HMAC.authenticate(.sha1, key: utf8("Jefe"), message: utf8("what do ya want for nothing?")))
            == "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
        #expect(ByteEncoding.hex(HMAC.authenticate(.sha1, key: [UInt8](repeating: 0xaa, count: 20), message: [UInt8](repeating: 0xdd, count: 50)))
            == "125d7342b9ac11cd91a39af48aa17b4f63f175d3")
    }

    @Test("empty key and empty message")
    func emptyInputs() {
        // Well-known value: HMAC-SHA256 with empty key over empty message.
        #expect(ByteEncoding.hex(HMAC.authenticate(.sha256, key: [], message: []))
            == "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad")
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        #expect(HMAC.authenticate(.sha256, key: [], message: empty) == HMAC.authenticate(.sha256, key: [], message: []))
    }

    @Test("matches openssl dgst -hmac for a random message")
    func crossCheckWithOpenSSL() throws {
        let key = "relay-" + SecureRandom.nonce(length: 24)
        let message = SecureRandom.bytes(4096)
        let binaryKey = SecureRandom.bytes(40)
        try withTemporaryDirectory { dir in
            let file = try dir.write(message, to: "message.bin")
            let output = try openssl(["dgst", "-sha256", "-hmac", key, "-r", file.path])
            let expected = try #require(output.split(separator: " ").first.map(String.init))
            #expect(ByteEncoding.hex(HMAC.authenticate(.sha256, key: utf8(key), message: message)) == expected)

            // Binary key through `openssl mac` (prints uppercase hex).
            let macOutput = try openssl([
                "mac", "-digest", "SHA512", "-macopt", "hexkey:" + ByteEncoding.hex(binaryKey), "-in", file.path, "HMAC",
            ])
            let tag = HMAC.authenticate(.sha512, key: binaryKey, message: message)
            #expect(ByteEncoding.hex(tag) == macOutput.trimmingCharacters(in: .whitespacesAndNewlines).lowercased())
        }
    }
}

@Suite("ConstantTime")
struct ConstantTimeTests {
    @Test func equalArrays() {
        let a = SecureRandom.bytes(32)
        #expect(ConstantTime.equals(a, a))
        #expect(ConstantTime.equals(a, Array(a)))
        #expect(ConstantTime.equals([], []))
    }

    @Test func differsInLastByte() {
        let a = SecureRandom.bytes(32)
        var b = a
        b[31] ^= 0x01
        #expect(!ConstantTime.equals(a, b))
        var c = a
        c[0] ^= 0x80
        #expect(!ConstantTime.equals(a, c))
    }

    @Test func differentLengths() {
        let a: [UInt8] = [1, 2, 3, 4]
        #expect(!ConstantTime.equals(a, [1, 2, 3]))
        #expect(!ConstantTime.equals(a, [1, 2, 3, 4, 0]))
        #expect(!ConstantTime.equals([], [0]))
    }
}

@Suite("HMACKey")
struct HMACKeyTests {
    @Test("a prepared key gives the RFC 4231 tags", arguments: HMACTests.rfc4231Vectors)
    func vectors(_ v: HMACTests.Vector) {
        #expect(ByteEncoding.hex(HMACKey(.sha256, key: v.key).authenticate(v.data)) == v.sha256)
        #expect(ByteEncoding.hex(HMACKey(.sha512, key: v.key).authenticate(v.data)) == v.sha512)
    }

    @Test("a prepared key is reusable and agrees with the one-shot HMAC for every algorithm")
    func reuse() {
        for algorithm in DigestAlgorithm.allCases {
            let key = HMACKey(algorithm, key: Array("rotation-secret".utf8))
            for n in [0, 1, 64, 1000] {
                let message = [UInt8](repeating: UInt8(n % 251), count: n)
                #expect(key.authenticate(message) == HMAC.authenticate(algorithm, key: Array("rotation-secret".utf8), message: message))
                #expect(key.authenticate(message) == key.authenticate(message))
            }
        }
    }

    @Test("concurrent use of one prepared key: contexts used again start each MAC afresh")
    func concurrent() async {
        let key = HMACKey(.sha256, key: Array("k".utf8))
        await withTaskGroup(of: Bool.self) { group in
            for t in 0..<16 {
                group.addTask {
                    (0..<200).allSatisfy { i in
                        let message = Array("m-\(t)-\(i)".utf8) + [UInt8](repeating: UInt8(i % 256), count: i)
                        return key.authenticate(message) == HMAC.authenticate(.sha256, key: Array("k".utf8), message: message)
                    }
                }
            }
            for await ok in group { #expect(ok) }
        }
    }
}
