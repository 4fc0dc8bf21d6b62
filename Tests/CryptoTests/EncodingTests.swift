import Crypto
import Testing

@Suite("ByteEncoding")
struct EncodingTests {
    /// RFC 4648 §10 test vectors.
    static let base64Vectors: [(String, String)] = [
        ("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy"),
    ]

    @Test func base64RFC4648Vectors() {
        for (plain, encoded) in Self.base64Vectors {
            #expect(ByteEncoding.base64(utf8(plain)) == encoded)
            #expect(ByteEncoding.fromBase64(encoded) == utf8(plain))
            // Missing padding is tolerated.
            let unpadded = String(encoded.filter { $0 != "=" })
            #expect(ByteEncoding.fromBase64(unpadded) == utf8(plain))
            #expect(ByteEncoding.base64URL(utf8(plain)) == unpadded)
            #expect(ByteEncoding.fromBase64URL(unpadded) == utf8(plain))
            #expect(ByteEncoding.fromBase64URL(encoded) == utf8(plain))
        }
    }

    @Test func base64URLAlphabet() {
        let bytes: [UInt8] = [0xfb, 0xff, 0xbf]
        #expect(ByteEncoding.base64(bytes) == "+/+/")
        #expect(ByteEncoding.base64URL(bytes) == "-_-_")
        #expect(ByteEncoding.fromBase64URL("-_-_") == bytes)
        #expect(ByteEncoding.base64([0xfb, 0xff]) == "+/8=")
        #expect(ByteEncoding.base64URL([0xfb, 0xff]) == "-_8")
        #expect(ByteEncoding.fromBase64URL("-_8") == [0xfb, 0xff])
        #expect(ByteEncoding.fromBase64URL("-_8=") == [0xfb, 0xff])
        // Alphabets are not mixed.
        #expect(ByteEncoding.fromBase64("-_8=") == nil)
        #expect(ByteEncoding.fromBase64URL("+/8=") == nil)
    }

    @Test func base64RejectsMalformedInput() {
        #expect(ByteEncoding.fromBase64("Z") == nil)          // impossible length
        #expect(ByteEncoding.fromBase64("Zm9vY") == nil)
        #expect(ByteEncoding.fromBase64("Zg=") == nil)        // incomplete padding
        #expect(ByteEncoding.fromBase64("Zm9v====") == nil)   // padding without data
        #expect(ByteEncoding.fromBase64("Zm 9v") == nil)
        #expect(ByteEncoding.fromBase64("Zm9v!") == nil)
        #expect(ByteEncoding.fromBase64("Zg==Zg==") == nil)   // padding in the middle
        #expect(ByteEncoding.fromBase64URL("Zm9v*") == nil)
    }

    @Test func roundTripsRandomBytesOfEveryShortLength() {
        for length in 0..<70 {
            let bytes = SecureRandom.bytes(length)
            #expect(ByteEncoding.fromBase64(ByteEncoding.base64(bytes)) == bytes)
            let url = ByteEncoding.base64URL(bytes)
            #expect(!url.contains("=") && !url.contains("+") && !url.contains("/"))
            #expect(ByteEncoding.fromBase64URL(url) == bytes)
            #expect(ByteEncoding.fromHex(ByteEncoding.hex(bytes)) == bytes)
        }
    }

    @Test func hex() {
        #expect(ByteEncoding.hex([]) == "")
        #expect(ByteEncoding.hex([0x00]) == "00")
        #expect(ByteEncoding.hex([0xde, 0xad]) == "dead")
        #expect(ByteEncoding.hex([0x01, 0xab, 0xff]) == "01abff")
        #expect(ByteEncoding.hex(Array(0...255)).count == 512)
        #expect(ByteEncoding.fromHex("") == [])
        #expect(ByteEncoding.fromHex("DEADbeef") == [0xde, 0xad, 0xbe, 0xef])
        #expect(ByteEncoding.fromHex("0aF9") == [0x0a, 0xf9])
    }

    @Test func hexRejectsBadInput() {
        #expect(ByteEncoding.fromHex("abc") == nil)   // odd length
        #expect(ByteEncoding.fromHex("zz") == nil)
        #expect(ByteEncoding.fromHex("0g") == nil)
        #expect(ByteEncoding.fromHex(" 0a") == nil)
        #expect(ByteEncoding.fromHex("0x0a") == nil)
        #expect(ByteEncoding.fromHex("éé") == nil)
    }
}

@Suite("SecureRandom")
struct RandomTests {
    @Test func byteCounts() {
        #expect(SecureRandom.bytes(0).isEmpty)
        #expect(SecureRandom.bytes(1).count == 1)
        #expect(SecureRandom.bytes(1000).count == 1000)
        // 32 random bytes being all zero (or two draws being equal) is astronomically unlikely.
        let a = SecureRandom.bytes(32)
        #expect(a != [UInt8](repeating: 0, count: 32))
        #expect(a != SecureRandom.bytes(32))
    }

    @Test func nonceAlphabetAndLength() {
        let allowed = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
        #expect(SecureRandom.nonce().count == 16)
        #expect(SecureRandom.nonce(length: 0) == "")
        for length in [1, 7, 32, 100] {
            let nonce = SecureRandom.nonce(length: length)
            #expect(nonce.count == length)
            #expect(nonce.allSatisfy { allowed.contains($0) })
        }
        // Over many characters every symbol of the alphabet should show up.
        let long = SecureRandom.nonce(length: 20_000)
        #expect(Set(long) == allowed)
    }

    @Test func noncesDiffer() {
        #expect(SecureRandom.nonce() != SecureRandom.nonce())
        #expect(SecureRandom.nonce(length: 32) != SecureRandom.nonce(length: 32))
    }

    @Test func uint64Varies() {
        let values = Set((0..<8).map { _ in SecureRandom.uint64() })
        #expect(values.count == 8)
    }
}
