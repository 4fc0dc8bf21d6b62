import COpenSSL

/// HMAC message authentication codes (libcrypto `HMAC()`).
public enum HMAC {
    /// HMAC of `message` under `key` using `algorithm`; returns the full-length tag.
    public static func authenticate(_ algorithm: DigestAlgorithm, key: [UInt8], message: [UInt8]) -> [UInt8] {
        message.withUnsafeBytes { authenticate(algorithm, key: key, message: $0) }
    }

    /// HMAC of the bytes in `message` under `key` using `algorithm`; returns the full-length tag.
    public static func authenticate(_ algorithm: DigestAlgorithm, key: [UInt8], message: UnsafeRawBufferPointer) -> [UInt8] {
        precondition(key.count <= Int(Int32.max), "HMAC key too long")
        var output = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let result = key.withUnsafeBytes { keyBuffer in
            withNonNullBase(keyBuffer) { keyBase in
                withNonNullBase(message) { messageBase in
                    output.withUnsafeMutableBufferPointer { out in
                        COpenSSL.HMAC(
                            algorithm.evpMD, keyBase, Int32(key.count),
                            messageBase.assumingMemoryBound(to: UInt8.self), message.count,
                            out.baseAddress, &length) != nil
                    }
                }
            }
        }
        guard result else {
            let error = CryptoError.fromOpenSSL("HMAC")
            fatalError("\(error)")  // cannot fail for built-in digests short of memory exhaustion
        }
        output.removeSubrange(Int(length)...)
        return output
    }
}

/// Timing-safe comparison.
public enum ConstantTime {
    /// `true` when `a` and `b` have the same length and contents. The contents are compared with
    /// `CRYPTO_memcmp`, whose running time does not depend on where the first difference is;
    /// a length mismatch returns `false` immediately (lengths are not secret).
    public static func equals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        if a.isEmpty { return true }
        return a.withUnsafeBytes { pa in
            b.withUnsafeBytes { pb in
                CRYPTO_memcmp(pa.baseAddress, pb.baseAddress, a.count) == 0
            }
        }
    }
}
