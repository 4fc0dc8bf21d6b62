import COpenSSL
import Synchronization

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

    static func fillBuffer(_ buffer: UnsafeMutableRawBufferPointer) { fill(buffer) }

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

/// Random 64-bit values for identifiers that must be unpredictable but are drawn on hot paths (trace and span ids):
/// one `RAND_bytes` call fills a pool of 256 values, handed out one at a time under a lock, so a webhook's ids
/// cost a locked load instead of a call into OpenSSL each.
public final class RandomPool: Sendable {
    private static let size = 256
    private struct State {
        var values = [UInt64](repeating: 0, count: RandomPool.size)
        var next = RandomPool.size
    }
    private let state = Mutex(State())

    public init() {}

    /// One process-wide pool.
    public static let shared = RandomPool()

    /// A uniformly random value, never 0 (0 is the invalid id in W3C Trace Context and OTLP).
    public func nonZero() -> UInt64 {
        while true {
            let v = state.withLock { s -> UInt64 in
                if s.next == RandomPool.size {
                    s.values.withUnsafeMutableBytes { SecureRandom.fillBuffer($0) }
                    s.next = 0
                }
                defer { s.next += 1 }
                return s.values[s.next]
            }
            if v != 0 { return v }
        }
    }
}
