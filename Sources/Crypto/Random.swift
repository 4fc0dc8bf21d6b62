import COpenSSL

/// Cryptographically secure random values from OpenSSL's CSPRNG (`RAND_bytes`).
public enum SecureRandom {
    /// `count` random bytes. Terminates the process only if the CSPRNG itself fails.
    public static func bytes(_ count: Int) -> [UInt8] {
        precondition(count >= 0, "negative byte count")
        var output = [UInt8](repeating: 0, count: count)
        output.withUnsafeMutableBytes { fill($0) }
        return output
    }

    /// A random string of `length` characters from `[A-Za-z0-9]`, each uniformly distributed
    /// (rejection sampling: bytes >= 248 are discarded so that `byte % 62` is unbiased).
    public static func nonce(length: Int = 16) -> String {
        precondition(length >= 0, "negative nonce length")
        var result: [UInt8] = []
        result.reserveCapacity(length)
        while result.count < length {
            // 248/256 of bytes are accepted; ask for a little extra to usually finish in one round.
            let needed = length - result.count
            for byte in bytes(needed + needed / 8 + 4) where byte < 248 {
                result.append(nonceAlphabet[Int(byte % 62)])
                if result.count == length { break }
            }
        }
        return String(decoding: result, as: UTF8.self)
    }

    /// A uniformly random 64-bit unsigned integer.
    public static func uint64() -> UInt64 {
        var value: UInt64 = 0
        withUnsafeMutableBytes(of: &value) { fill($0) }
        return value
    }

    private static let nonceAlphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".utf8)

    private static func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        guard var pointer = buffer.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        var remaining = buffer.count
        while remaining > 0 {
            let chunk = min(remaining, Int(Int32.max))
            guard RAND_bytes(pointer, Int32(chunk)) == 1 else {
                let error = CryptoError.fromOpenSSL("RAND_bytes")
                fatalError("CSPRNG failure: \(error)")
            }
            pointer += chunk
            remaining -= chunk
        }
    }
}
