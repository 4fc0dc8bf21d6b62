import COpenSSL

/// The JWS signature algorithms (RFC 7518 §3) used for `private_key_jwt` client assertions.
public enum JWSAlgorithm: String, Sendable, CaseIterable {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    case rs256 = "RS256"
    /// RSASSA-PSS with SHA-256, MGF1 with SHA-256 and a 32-byte salt.
    case ps256 = "PS256"
    /// ECDSA on P-256 with SHA-256; the signature is the 64-byte `r || s` (not DER).
    case es256 = "ES256"

    /// The kind of key the algorithm needs.
    public var keyKind: JWSKeyKind { self == .es256 ? .ecP256 : .rsa }
}

/// The key types JWS signing supports.
public enum JWSKeyKind: String, Sendable {
    case rsa = "RSA"
    case ecP256 = "EC P-256"

    /// The algorithm used when none is configured: RS256 for RSA, ES256 for P-256.
    public var defaultAlgorithm: JWSAlgorithm { self == .rsa ? .rs256 : .es256 }
}

/// A private key for JWS signatures (wraps an `EVP_PKEY*`, freed in `deinit`): RSA of at least 2048 bits (RS256,
/// PS256) or EC on P-256 (ES256). Immutable; each signature uses a fresh `EVP_MD_CTX`, so it is thread-safe.
public final class JWSSigningKey: @unchecked Sendable {
    let pkey: OpaquePointer
    public let kind: JWSKeyKind

    private init(owning pkey: OpaquePointer) throws {
        do {
            kind = try jwsKeyKind(pkey, operation: "PEM_read_bio_PrivateKey")
        } catch {
            EVP_PKEY_free(pkey)
            throw error
        }
        self.pkey = pkey
    }

    deinit {
        EVP_PKEY_free(pkey)
    }

    /// Loads a PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`, or `BEGIN ENCRYPTED PRIVATE KEY` with `password`),
    /// PKCS#1 (`BEGIN RSA PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`). Other blocks (`EC PARAMETERS`, certificates)
    /// are skipped. Never prompts for a password.
    public convenience init(pem: String, password: String? = nil) throws {
        let key = try readPEMPrivateKey(pem, password: password,
                                        expected: "BEGIN PRIVATE KEY, BEGIN RSA PRIVATE KEY, BEGIN EC PRIVATE KEY or BEGIN ENCRYPTED PRIVATE KEY")
        try self.init(owning: key)
    }

    /// Loads a PEM private key file (see `init(pem:password:)`); error messages are prefixed with `path`.
    public static func load(path: String, password: String? = nil) throws -> JWSSigningKey {
        do {
            let bytes = try readWholeFile(path)
            return try JWSSigningKey(pem: String(decoding: bytes, as: UTF8.self), password: password)
        } catch let error as CryptoError {
            throw error.prefixed(path)
        }
    }

    /// Whether this key can sign with `algorithm`.
    public func supports(_ algorithm: JWSAlgorithm) -> Bool { algorithm.keyKind == kind }

    /// The JWS signature of `message` (RFC 7518 §3): PKCS#1 v1.5 or PSS for RSA, `r || s` (32 bytes each) for ES256.
    public func sign(_ algorithm: JWSAlgorithm, _ message: [UInt8]) throws -> [UInt8] {
        guard supports(algorithm) else {
            throw CryptoError(operation: "EVP_DigestSignInit", code: 0,
                              message: "\(algorithm.rawValue) needs an \(algorithm.keyKind.rawValue) key; this key is \(kind.rawValue)")
        }
        OpenSSLErrors.clear()
        guard let context = EVP_MD_CTX_new() else { throw CryptoError.fromOpenSSL("EVP_MD_CTX_new") }
        defer { EVP_MD_CTX_free(context) }
        var keyContext: OpaquePointer? = nil
        guard EVP_DigestSignInit(context, &keyContext, DigestAlgorithm.sha256.evpMD, nil, pkey) == 1, let keyContext else {
            throw CryptoError.fromOpenSSL("EVP_DigestSignInit")
        }
        try configurePadding(keyContext, algorithm)
        let signature: [UInt8] = try message.withUnsafeBytes { messageBuffer in
            try withNonNullBase(messageBuffer) { messageBase in
                let tbs = messageBase.assumingMemoryBound(to: UInt8.self)
                var length = 0
                guard EVP_DigestSign(context, nil, &length, tbs, messageBuffer.count) == 1 else {
                    throw CryptoError.fromOpenSSL("EVP_DigestSign")
                }
                var out = [UInt8](repeating: 0, count: length)
                let ok = out.withUnsafeMutableBufferPointer { EVP_DigestSign(context, $0.baseAddress, &length, tbs, messageBuffer.count) }
                guard ok == 1 else { throw CryptoError.fromOpenSSL("EVP_DigestSign") }
                out.removeSubrange(length...)
                return out
            }
        }
        return algorithm == .es256 ? try ECDSASignature.joseFromDER(signature) : signature
    }

    /// The matching public key.
    public var publicKey: JWSVerifyingKey { JWSVerifyingKey(sharing: pkey, kind: kind) }
}

/// A public key that checks JWS signatures (RS256, PS256, ES256). Immutable and thread-safe.
public final class JWSVerifyingKey: @unchecked Sendable {
    let pkey: OpaquePointer
    public let kind: JWSKeyKind

    init(sharing pkey: OpaquePointer, kind: JWSKeyKind) {
        EVP_PKEY_up_ref(pkey)
        self.pkey = pkey
        self.kind = kind
    }

    deinit {
        EVP_PKEY_free(pkey)
    }

    /// Loads `BEGIN PUBLIC KEY` (SubjectPublicKeyInfo) or `BEGIN CERTIFICATE` (the certificate's key) PEM.
    public convenience init(pem: String) throws {
        OpenSSLErrors.clear()
        guard let block = firstPEMBlock(pem, where: { $0 == "PUBLIC KEY" || $0 == "CERTIFICATE" }) else {
            throw CryptoError(operation: "PEM_read_bio_PUBKEY", code: 0,
                              message: "no public key PEM block (expected BEGIN PUBLIC KEY or BEGIN CERTIFICATE)")
        }
        let bio = try MemoryBIO(Array(block.text.utf8), operation: "PEM_read_bio_PUBKEY")
        let key: OpaquePointer
        if block.label == "PUBLIC KEY" {
            guard let k = PEM_read_bio_PUBKEY(bio.pointer, nil, nil, nil) else {
                throw CryptoError.fromOpenSSL("PEM_read_bio_PUBKEY", reason: "could not parse the 'PUBLIC KEY' PEM block")
            }
            key = k
        } else {
            guard let certificate = PEM_read_bio_X509(bio.pointer, nil, nil, nil) else {
                throw CryptoError.fromOpenSSL("PEM_read_bio_X509", reason: "could not parse the 'CERTIFICATE' PEM block")
            }
            defer { X509_free(certificate) }
            guard let k = X509_get_pubkey(certificate) else {
                throw CryptoError.fromOpenSSL("X509_get_pubkey", reason: "could not extract the certificate's public key")
            }
            key = k
        }
        let kind: JWSKeyKind
        do {
            kind = try jwsKeyKind(key, operation: "PEM_read_bio_PUBKEY")
        } catch {
            EVP_PKEY_free(key)
            throw error
        }
        self.init(sharing: key, kind: kind)
        EVP_PKEY_free(key)  // `sharing` took its own reference
        OpenSSLErrors.clear()
    }

    /// Loads a PEM public key file (see `init(pem:)`).
    public static func load(path: String) throws -> JWSVerifyingKey {
        do {
            return try JWSVerifyingKey(pem: String(decoding: try readWholeFile(path), as: UTF8.self))
        } catch let error as CryptoError {
            throw error.prefixed(path)
        }
    }

    /// True iff `signature` (JWS form: `r || s` for ES256) is a valid `algorithm` signature of `message`.
    public func verify(_ algorithm: JWSAlgorithm, signature: [UInt8], message: [UInt8]) -> Bool {
        guard algorithm.keyKind == kind else { return false }
        OpenSSLErrors.clear()
        defer { OpenSSLErrors.clear() }
        var signature = signature
        if algorithm == .es256 {
            guard let der = try? ECDSASignature.derFromJOSE(signature) else { return false }
            signature = der
        }
        guard let context = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(context) }
        var keyContext: OpaquePointer? = nil
        guard EVP_DigestVerifyInit(context, &keyContext, DigestAlgorithm.sha256.evpMD, nil, pkey) == 1, let keyContext,
              (try? configurePadding(keyContext, algorithm)) != nil
        else { return false }
        return signature.withUnsafeBytes { s in
            withNonNullBase(s) { sBase in
                message.withUnsafeBytes { m in
                    withNonNullBase(m) { mBase in
                        EVP_DigestVerify(context, sBase.assumingMemoryBound(to: UInt8.self), s.count,
                                         mBase.assumingMemoryBound(to: UInt8.self), m.count) == 1
                    }
                }
            }
        }
    }

    /// The key as SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).
    public func pem() throws -> String {
        OpenSSLErrors.clear()
        let bio = try MemoryBIO(operation: "BIO_new")
        guard PEM_write_bio_PUBKEY(bio.pointer, pkey) == 1 else { throw CryptoError.fromOpenSSL("PEM_write_bio_PUBKEY") }
        return String(decoding: bio.contents(), as: UTF8.self)
    }
}

/// ECDSA P-256 signatures between the DER `ECDSA-Sig-Value` OpenSSL produces and the JWS `r || s` form.
public enum ECDSASignature {
    /// P-256 scalars are 32 bytes.
    static let scalarBytes = 32

    /// DER `SEQUENCE { r INTEGER, s INTEGER }` -> 64 bytes `r || s`, each left-padded to 32 bytes.
    public static func joseFromDER(_ der: [UInt8]) throws -> [UInt8] {
        OpenSSLErrors.clear()
        let parsed: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
            var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
            return d2i_ECDSA_SIG(nil, &cursor, buffer.count)
        }
        guard let sig = parsed else { throw CryptoError.fromOpenSSL("d2i_ECDSA_SIG", reason: "not a DER ECDSA signature") }
        defer { ECDSA_SIG_free(sig) }
        var r: OpaquePointer? = nil
        var s: OpaquePointer? = nil
        ECDSA_SIG_get0(sig, &r, &s)
        guard let r, let s else { throw CryptoError(operation: "ECDSA_SIG_get0", code: 0, message: "missing r or s") }
        var out = [UInt8](repeating: 0, count: 2 * scalarBytes)
        let ok = out.withUnsafeMutableBufferPointer { buffer -> Bool in
            guard let base = buffer.baseAddress else { return false }
            return BN_bn2binpad(r, base, Int32(scalarBytes)) == Int32(scalarBytes)
                && BN_bn2binpad(s, base + scalarBytes, Int32(scalarBytes)) == Int32(scalarBytes)
        }
        guard ok else { throw CryptoError.fromOpenSSL("BN_bn2binpad", reason: "r or s longer than 32 bytes") }
        return out
    }

    /// 64 bytes `r || s` -> DER `ECDSA-Sig-Value`.
    public static func derFromJOSE(_ jose: [UInt8]) throws -> [UInt8] {
        guard jose.count == 2 * scalarBytes else {
            throw CryptoError(operation: "ECDSA_SIG_set0", code: 0, message: "an ES256 signature is 64 bytes, not \(jose.count)")
        }
        OpenSSLErrors.clear()
        guard let sig = ECDSA_SIG_new() else { throw CryptoError.fromOpenSSL("ECDSA_SIG_new") }
        defer { ECDSA_SIG_free(sig) }
        let (r, s) = jose.withUnsafeBufferPointer { b in
            (BN_bin2bn(b.baseAddress, Int32(scalarBytes), nil), BN_bin2bn(b.baseAddress! + scalarBytes, Int32(scalarBytes), nil))
        }
        guard let r, let s, ECDSA_SIG_set0(sig, r, s) == 1 else {
            if let r { BN_free(r) }
            if let s { BN_free(s) }
            throw CryptoError.fromOpenSSL("ECDSA_SIG_set0")
        }
        let length = i2d_ECDSA_SIG(sig, nil)
        guard length > 0 else { throw CryptoError.fromOpenSSL("i2d_ECDSA_SIG") }
        var out = [UInt8](repeating: 0, count: Int(length))
        let written = out.withUnsafeMutableBufferPointer { buffer -> Int32 in
            var cursor: UnsafeMutablePointer<UInt8>? = buffer.baseAddress
            return i2d_ECDSA_SIG(sig, &cursor)
        }
        guard written == length else { throw CryptoError.fromOpenSSL("i2d_ECDSA_SIG") }
        return out
    }
}

// MARK: - Helpers

/// PKCS#1 v1.5 for RS256; PSS with SHA-256 MGF1 and a 32-byte salt for PS256; nothing for ECDSA.
private func configurePadding(_ keyContext: OpaquePointer, _ algorithm: JWSAlgorithm) throws {
    switch algorithm {
    case .rs256:
        guard EVP_PKEY_CTX_set_rsa_padding(keyContext, RSA_PKCS1_PADDING) > 0 else {
            throw CryptoError.fromOpenSSL("EVP_PKEY_CTX_set_rsa_padding")
        }
    case .ps256:
        guard EVP_PKEY_CTX_set_rsa_padding(keyContext, RSA_PKCS1_PSS_PADDING) > 0,
              EVP_PKEY_CTX_set_rsa_mgf1_md(keyContext, DigestAlgorithm.sha256.evpMD) > 0,
              EVP_PKEY_CTX_set_rsa_pss_saltlen(keyContext, 32) > 0
        else { throw CryptoError.fromOpenSSL("EVP_PKEY_CTX_set_rsa_pss_saltlen") }
    case .es256:
        break
    }
}

/// RSA (at least 2048 bits) or EC on P-256; anything else throws.
private func jwsKeyKind(_ pkey: OpaquePointer, operation: String) throws -> JWSKeyKind {
    let id = EVP_PKEY_get_base_id(pkey)
    if id == EVP_PKEY_RSA {
        let bits = Int(EVP_PKEY_get_bits(pkey))
        guard bits >= 2048 else {
            throw CryptoError(operation: operation, code: 0, message: "the RSA key has \(bits) bits; JWS needs at least 2048")
        }
        return .rsa
    }
    if id == EVP_PKEY_EC {
        var name = [CChar](repeating: 0, count: 64)
        var length = 0
        let ok = name.withUnsafeMutableBufferPointer {
            EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, $0.baseAddress, $0.count, &length)
        }
        let group = ok == 1 ? String(decoding: name[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "unknown"
        OpenSSLErrors.clear()
        guard group == "prime256v1" || group == "P-256" else {
            throw CryptoError(operation: operation, code: 0, message: "the EC key is on curve \(group); ES256 needs P-256 (prime256v1)")
        }
        return .ecP256
    }
    let name = EVP_PKEY_get0_type_name(pkey).map { String(cString: $0) } ?? "unknown (id \(id))"
    throw CryptoError(operation: operation, code: 0, message: "key type is \(name); JWS signing supports RSA and EC P-256 keys")
}

/// The first complete PEM block whose label satisfies `accept`: its label and text (BEGIN through END line).
private func firstPEMBlock(_ text: String, where accept: (String) -> Bool) -> (label: String, text: String)? {
    var label: String?
    var collected: [Substring] = []
    for raw in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
        var line = raw
        while let c = line.first, c.isWhitespace { line.removeFirst() }
        while let c = line.last, c.isWhitespace { line.removeLast() }
        if let current = label {
            collected.append(line)
            if line == "-----END \(current)-----" { return (current, collected.joined(separator: "\n") + "\n") }
        } else if line.hasPrefix("-----BEGIN "), line.hasSuffix("-----"), line.count > 16 {
            let name = String(line.dropFirst(11).dropLast(5))
            if accept(name) {
                label = name
                collected = [line]
            }
        }
    }
    return nil
}

/// A whole file, read through a file `BIO`.
private func readWholeFile(_ path: String) throws -> [UInt8] {
    OpenSSLErrors.clear()
    guard let bio = BIO_new_file(path, "rb") else { throw CryptoError.fromOpenSSL("BIO_new_file", reason: "cannot open file") }
    defer { BIO_free(bio) }
    var contents: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16384)
    while true {
        let count = chunk.withUnsafeMutableBytes { BIO_read(bio, $0.baseAddress, Int32($0.count)) }
        if count < 0 { throw CryptoError.fromOpenSSL("BIO_read", reason: "cannot read file") }
        if count == 0 { break }
        contents.append(contentsOf: chunk[..<Int(count)])
    }
    OpenSSLErrors.clear()
    return contents
}
