import Crypto
import Testing

@Suite("Digest")
struct DigestTests {
    static let abc = "abc"
    static let twoBlock = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"

    /// FIPS 180-2 / NIST example vectors: (algorithm, message, expected hex).
    static let vectors: [(DigestAlgorithm, String, String)] = [
        (.sha1, abc, "a9993e364706816aba3e25717850c26c9cd0d89d"),
        (.sha1, "", "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
        (.sha1, twoBlock, "84983e441c3bd26ebaae4aa1f95129e5e54670f1"),
        (.sha256, abc, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (.sha256, "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        (.sha256, twoBlock, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
        (.sha512, abc,
         "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"),
        (.sha512, "",
         "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"),
        (.sha512, twoBlock,
         "204a8fc6dda82f0a0ced7beb8e08a41657c16ef468b228a8279be331a703c33596fd15c13b1b07f9aa1d3bea57789ca031ad85c7a71dd70354ec631238ca3445"),
    ]

    @Test("FIPS 180 vectors", arguments: 0..<vectors.count)
    func fipsVector(_ index: Int) {
        let (algorithm, message, expected) = Self.vectors[index]
        #expect(ByteEncoding.hex(Digest.hash(algorithm, utf8(message))) == expected)
        // The raw-buffer overload must agree.
        let viaBuffer = utf8(message).withUnsafeBytes { Digest.hash(algorithm, $0) }
        #expect(ByteEncoding.hex(viaBuffer) == expected)
        #expect(viaBuffer.count == algorithm.byteCount)
    }

    @Test("one million 'a'")
    func millionA() {
        let message = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        #expect(ByteEncoding.hex(Digest.hash(.sha1, message)) == "34aa973cd4c4daa4f61eeb2bdbad27316534016f")
        #expect(ByteEncoding.hex(Digest.sha256(message)) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        #expect(ByteEncoding.hex(Digest.hash(.sha512, message))
            == "e718483d0ce769644e2e42c7bc15b4638e1f98b13b2044285632a803afa973ebde0ff244877ea60a4cb0432ce577c31beb009c5c2c49aa2e4eadb217ad8cc09b")
    }

    @Test("sha256 convenience equals hash(.sha256)")
    func sha256Convenience() {
        let data = SecureRandom.bytes(100)
        #expect(Digest.sha256(data) == Digest.hash(.sha256, data))
    }

    @Test("empty raw buffer with nil base address")
    func emptyBuffer() {
        let empty = UnsafeRawBufferPointer(start: nil, count: 0)
        #expect(ByteEncoding.hex(Digest.hash(.sha256, empty))
            == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    }

    @Test("algorithm raw values are stable (used in configuration)")
    func rawValues() throws {
        #expect(DigestAlgorithm.allCases.map(\.rawValue) == ["sha1", "sha256", "sha512"])
        #expect(DigestAlgorithm(rawValue: "sha256") == .sha256)
        #expect(DigestAlgorithm(rawValue: "md5") == nil)
    }
}
