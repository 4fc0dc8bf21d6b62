import COpenSSL
import Synchronization

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

/// An HMAC key prepared once (libcrypto `EVP_MAC` with the key schedule already computed), for keys used on
/// every request: each `authenticate` takes a keyed context (one used before and restarted, or a copy of the
/// template: `EVP_MAC_CTX_dup`) instead of fetching the algorithm and hashing the key again, which the one-shot
/// `HMAC()` does on each call in OpenSSL 3.
public final class HMACKey: @unchecked Sendable {
    // The template is never updated after init; `EVP_MAC_CTX_dup` only reads it, so concurrent use is safe.
    private let template: OpaquePointer
    public let algorithm: DigestAlgorithm

    public init(_ algorithm: DigestAlgorithm, key: [UInt8]) {
        self.algorithm = algorithm
        guard let mac = EVP_MAC_fetch(nil, "HMAC", nil) else {
            fatalError("\(CryptoError.fromOpenSSL("EVP_MAC_fetch"))")
        }
        defer { EVP_MAC_free(mac) }
        guard let ctx = EVP_MAC_CTX_new(mac) else { fatalError("\(CryptoError.fromOpenSSL("EVP_MAC_CTX_new"))") }
        let digestName: String
        switch algorithm {
        case .sha1: digestName = "SHA1"
        case .sha256: digestName = "SHA256"
        case .sha512: digestName = "SHA512"
        }
        let ok = digestName.withCString { name in
            "digest".withCString { keyName in
                var params = [
                    OSSL_PARAM_construct_utf8_string(keyName, UnsafeMutablePointer(mutating: name), 0),
                    OSSL_PARAM_construct_end(),
                ]
                return key.withUnsafeBytes { k in
                    withNonNullBase(k) { base in
                        EVP_MAC_init(ctx, base.assumingMemoryBound(to: UInt8.self), key.count, &params) == 1
                    }
                }
            }
        }
        guard ok else { fatalError("\(CryptoError.fromOpenSSL("EVP_MAC_init"))") }
        template = ctx
    }

    /// Keyed contexts that finished a MAC, to be used again: `EVP_MAC_init` with no key starts a new MAC under the
    /// same key, which costs less than a copy of the template and its free. At most `maxSpare` are kept.
    private let spare = Mutex<[SpareContext]>([])
    private static let maxSpare = 8

    /// A context that no thread is using (it only moves between the pool and one caller at a time).
    private struct SpareContext: @unchecked Sendable { let ctx: OpaquePointer }

    deinit {
        EVP_MAC_CTX_free(template)
        for s in spare.withLock({ $0 }) { EVP_MAC_CTX_free(s.ctx) }
    }

    /// A context ready for a new MAC under this key.
    private func takeContext() -> OpaquePointer {
        if let ctx = spare.withLock({ $0.popLast() })?.ctx {
            if EVP_MAC_init(ctx, nil, 0, nil) == 1 { return ctx }
            EVP_MAC_CTX_free(ctx)
        }
        guard let ctx = EVP_MAC_CTX_dup(template) else { fatalError("\(CryptoError.fromOpenSSL("EVP_MAC_CTX_dup"))") }
        return ctx
    }

    private func giveBack(_ ctx: OpaquePointer) {
        let given = SpareContext(ctx: ctx)
        let kept = spare.withLock { list -> Bool in
            guard list.count < Self.maxSpare else { return false }
            list.append(given)
            return true
        }
        if !kept { EVP_MAC_CTX_free(ctx) }
    }

    public func authenticate(_ message: [UInt8]) -> [UInt8] {
        message.withUnsafeBytes { authenticate($0) }
    }

    public func authenticate(_ message: UnsafeRawBufferPointer) -> [UInt8] {
        let ctx = takeContext()
        defer { giveBack(ctx) }
        var output = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length = 0
        let ok = withNonNullBase(message) { base in
            EVP_MAC_update(ctx, base.assumingMemoryBound(to: UInt8.self), message.count) == 1
        } && output.withUnsafeMutableBufferPointer { out in
            EVP_MAC_final(ctx, out.baseAddress, &length, out.count) == 1
        }
        guard ok else { fatalError("\(CryptoError.fromOpenSSL("EVP_MAC_final"))") }
        output.removeSubrange(length...)
        return output
    }
}
