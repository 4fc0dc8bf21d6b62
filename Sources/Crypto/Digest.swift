import COpenSSL

/// The message digest algorithms supported for hashing, HMAC and signatures.
public enum DigestAlgorithm: String, Sendable, CaseIterable, Codable {
    /// SHA-1 (20 bytes). Only for legacy HMAC-SHA1 webhook signatures.
    case sha1
    /// SHA-256 (32 bytes).
    case sha256
    /// SHA-512 (64 bytes).
    case sha512

    /// Digest length in bytes.
    public var byteCount: Int {
        switch self {
        case .sha1: 20
        case .sha256: 32
        case .sha512: 64
        }
    }

    /// The OpenSSL `EVP_MD` for this algorithm (fetched once and shared; `EVP_MD` objects are immutable).
    var evpMD: OpaquePointer {
        switch self {
        case .sha1: FetchedDigests.shared.sha1
        case .sha256: FetchedDigests.shared.sha256
        case .sha512: FetchedDigests.shared.sha512
        }
    }
}

/// Explicitly fetched `EVP_MD`s, so each call avoids OpenSSL 3's implicit per-call fetch.
/// The objects are never freed (process lifetime) and are read-only, hence safe to share across threads.
private final class FetchedDigests: @unchecked Sendable {
    static let shared = FetchedDigests()

    let sha1: OpaquePointer
    let sha256: OpaquePointer
    let sha512: OpaquePointer

    private init() {
        sha1 = EVP_MD_fetch(nil, "SHA1", nil) ?? EVP_sha1()
        sha256 = EVP_MD_fetch(nil, "SHA256", nil) ?? EVP_sha256()
        sha512 = EVP_MD_fetch(nil, "SHA512", nil) ?? EVP_sha512()
        OpenSSLErrors.clear()
    }
}

/// One-shot message digests (libcrypto `EVP_Digest`).
public enum Digest {
    /// Hashes `data` with `algorithm`.
    public static func hash(_ algorithm: DigestAlgorithm, _ data: [UInt8]) -> [UInt8] {
        data.withUnsafeBytes { hash(algorithm, $0) }
    }

    /// Hashes the bytes in `data` with `algorithm`.
    public static func hash(_ algorithm: DigestAlgorithm, _ data: UnsafeRawBufferPointer) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = withNonNullBase(data) { base in
            output.withUnsafeMutableBufferPointer { out in
                EVP_Digest(base, data.count, out.baseAddress, &length, algorithm.evpMD, nil)
            }
        }
        guard ok == 1 else {
            let error = CryptoError.fromOpenSSL("EVP_Digest")
            fatalError("\(error)")  // cannot fail for built-in digests short of memory exhaustion
        }
        output.removeSubrange(Int(length)...)
        return output
    }

    /// SHA-256 of `data`.
    public static func sha256(_ data: [UInt8]) -> [UInt8] {
        hash(.sha256, data)
    }
}

/// Calls `body` with `buffer`'s base address, or with a pointer to a dummy byte when the buffer is empty
/// (some OpenSSL entry points treat a NULL pointer specially even when the length is 0).
func withNonNullBase<R>(_ buffer: UnsafeRawBufferPointer, _ body: (UnsafeRawPointer) throws -> R) rethrows -> R {
    if let base = buffer.baseAddress {
        return try body(base)
    }
    var dummy: UInt8 = 0
    return try withUnsafeBytes(of: &dummy) { try body($0.baseAddress!) }
}
