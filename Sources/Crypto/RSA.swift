import COpenSSL

// MARK: - Private key

/// An RSA private key (wraps an OpenSSL `EVP_PKEY*`, freed in `deinit`).
///
/// The key is immutable after initialisation and every signature uses a fresh `EVP_MD_CTX`,
/// so one instance may be used from many threads concurrently.
public final class RSAPrivateKey: @unchecked Sendable {
    let pkey: OpaquePointer

    /// Takes ownership of `pkey`; frees it and throws if it is not an RSA key.
    init(owning pkey: OpaquePointer, operation: String) throws {
        if let error = rsaKeyTypeError(pkey, operation: operation) {
            EVP_PKEY_free(pkey)
            throw error
        }
        self.pkey = pkey
    }

    deinit {
        EVP_PKEY_free(pkey)
    }

    /// Loads a PEM private key: PKCS#1 (`BEGIN RSA PRIVATE KEY`, optionally with legacy PEM encryption),
    /// PKCS#8 (`BEGIN PRIVATE KEY`) or encrypted PKCS#8 (`BEGIN ENCRYPTED PRIVATE KEY`, needs `password`).
    /// Other PEM blocks (e.g. certificates) in the same text are skipped. Never prompts on a terminal.
    public convenience init(pem: String, password: String? = nil) throws {
        let key = try readPEMPrivateKey(pem, password: password,
                                        expected: "BEGIN PRIVATE KEY, BEGIN RSA PRIVATE KEY or BEGIN ENCRYPTED PRIVATE KEY")
        try self.init(owning: key, operation: "PEM_read_bio_PrivateKey")
    }

    /// Loads the private key from a PKCS#12 (`.p12`/`.pfx`) archive.
    ///
    /// Throws a `CryptoError` with message "wrong PKCS#12 password" when the archive's MAC does not verify
    /// with `password`, and one saying the input is not PKCS#12 when it cannot be parsed at all.
    public convenience init(pkcs12 data: [UInt8], password: String) throws {
        OpenSSLErrors.clear()
        let bio = try MemoryBIO(data, operation: "d2i_PKCS12_bio")
        guard let p12 = d2i_PKCS12_bio(bio.pointer, nil) else {
            throw CryptoError.fromOpenSSL("d2i_PKCS12_bio", reason: "input is not a PKCS#12 (.p12/.pfx) archive")
        }
        defer { PKCS12_free(p12) }

        if PKCS12_mac_present(p12) == 1 {
            let macOK: Bool
            if password.isEmpty {
                // PKCS12_parse accepts either an absent or an empty password in this case; so do we.
                macOK = PKCS12_verify_mac(p12, nil, 0) == 1 || PKCS12_verify_mac(p12, "", 0) == 1
            } else {
                macOK = PKCS12_verify_mac(p12, password, -1) == 1
            }
            guard macOK else {
                let (code, _) = OpenSSLErrors.drain()
                throw CryptoError(operation: "PKCS12_verify_mac", code: code, message: "wrong PKCS#12 password")
            }
        }

        var key: OpaquePointer? = nil
        var certificate: OpaquePointer? = nil
        let parsed: Int32 = parsePKCS12(p12, password, &key, &certificate) ? 1 : 0
        if let certificate { X509_free(certificate) }
        guard parsed == 1 else {
            if let key { EVP_PKEY_free(key) }
            let reason = PKCS12_mac_present(p12) == 1
                ? "could not decrypt the PKCS#12 contents"
                : "could not decrypt the PKCS#12 contents (wrong PKCS#12 password?)"
            throw CryptoError.fromOpenSSL("PKCS12_parse", reason: reason)
        }
        guard let key else {
            throw CryptoError.fromOpenSSL("PKCS12_parse", reason: "the PKCS#12 archive contains no private key")
        }
        OpenSSLErrors.clear()
        try self.init(owning: key, operation: "PKCS12_parse")
    }

    /// Loads a private key file: PEM (see `init(pem:password:)`) if the content contains a PEM header,
    /// otherwise PKCS#12 (`.p12`/`.pfx`, using `password ?? ""`). Error messages are prefixed with `path`.
    public static func load(path: String, password: String?) throws -> RSAPrivateKey {
        do {
            let contents = try readFile(path)
            if containsPEMHeader(contents) {
                return try RSAPrivateKey(pem: String(decoding: contents, as: UTF8.self), password: password)
            }
            return try RSAPrivateKey(pkcs12: contents, password: password ?? "")
        } catch let error as CryptoError {
            throw error.prefixed(path)
        }
    }

    /// RSASSA-PKCS1-v1_5 signature over SHA-256(`message`) (`EVP_DigestSign`). Deterministic.
    public func signSHA256(_ message: [UInt8]) throws -> [UInt8] {
        OpenSSLErrors.clear()
        guard let context = EVP_MD_CTX_new() else {
            throw CryptoError.fromOpenSSL("EVP_MD_CTX_new")
        }
        defer { EVP_MD_CTX_free(context) }
        var keyContext: OpaquePointer? = nil
        guard EVP_DigestSignInit(context, &keyContext, DigestAlgorithm.sha256.evpMD, nil, pkey) == 1 else {
            throw CryptoError.fromOpenSSL("EVP_DigestSignInit")
        }
        guard let keyContext, relay_evp_pkey_ctx_set_rsa_pkcs1_padding(keyContext) > 0 else {
            throw CryptoError.fromOpenSSL("EVP_PKEY_CTX_set_rsa_padding")
        }
        return try message.withUnsafeBytes { messageBuffer in
            try withNonNullBase(messageBuffer) { messageBase in
                let tbs = messageBase.assumingMemoryBound(to: UInt8.self)
                var length = 0
                guard EVP_DigestSign(context, nil, &length, tbs, messageBuffer.count) == 1 else {
                    throw CryptoError.fromOpenSSL("EVP_DigestSign")
                }
                var signature = [UInt8](repeating: 0, count: length)
                let ok = signature.withUnsafeMutableBufferPointer { out in
                    EVP_DigestSign(context, out.baseAddress, &length, tbs, messageBuffer.count)
                }
                guard ok == 1 else {
                    throw CryptoError.fromOpenSSL("EVP_DigestSign")
                }
                signature.removeSubrange(length...)
                return signature
            }
        }
    }

    /// The matching public key (shares the underlying `EVP_PKEY` by reference count; only public operations are exposed).
    public var publicKey: RSAPublicKey {
        RSAPublicKey(sharing: pkey)
    }

    /// Modulus size in bits, e.g. 2048.
    public var bits: Int {
        Int(EVP_PKEY_get_bits(pkey))
    }
}

// MARK: - Public key

/// An RSA public key (wraps an OpenSSL `EVP_PKEY*`, freed in `deinit`). Immutable and thread-safe.
public final class RSAPublicKey: @unchecked Sendable {
    let pkey: OpaquePointer

    /// Takes ownership of `pkey`; frees it and throws if it is not an RSA key.
    init(owning pkey: OpaquePointer, operation: String) throws {
        if let error = rsaKeyTypeError(pkey, operation: operation) {
            EVP_PKEY_free(pkey)
            throw error
        }
        self.pkey = pkey
    }

    /// Shares an already-validated RSA key, taking an extra reference.
    init(sharing pkey: OpaquePointer) {
        EVP_PKEY_up_ref(pkey)
        self.pkey = pkey
    }

    deinit {
        EVP_PKEY_free(pkey)
    }

    /// Loads a public key from PEM: `BEGIN PUBLIC KEY` (SubjectPublicKeyInfo), `BEGIN RSA PUBLIC KEY` (PKCS#1)
    /// or `BEGIN CERTIFICATE` (the certificate's subject key). The first such block in the text is used.
    public convenience init(pem: String) throws {
        OpenSSLErrors.clear()
        let labels = pemLabels(pem)
        guard let label = labels.first(where: { ["PUBLIC KEY", "RSA PUBLIC KEY", "CERTIFICATE"].contains($0) }) else {
            let found = labels.isEmpty ? "input is not PEM" : "found only " + labels.map { "'\($0)'" }.joined(separator: ", ")
            throw CryptoError(
                operation: "PEM_read_bio_PUBKEY", code: 0,
                message: "no public key PEM block (expected BEGIN PUBLIC KEY, BEGIN RSA PUBLIC KEY or BEGIN CERTIFICATE); \(found)")
        }
        let bio = try MemoryBIO(Array((pemBlock(pem, label: label) ?? pem).utf8), operation: "BIO_write")
        switch label {
        case "PUBLIC KEY":
            guard let key = PEM_read_bio_PUBKEY(bio.pointer, nil, nil, nil) else {
                throw CryptoError.fromOpenSSL("PEM_read_bio_PUBKEY", reason: "could not parse the 'PUBLIC KEY' PEM block")
            }
            try self.init(owning: key, operation: "PEM_read_bio_PUBKEY")
        case "RSA PUBLIC KEY":
            let key = try readPKCS1PublicKey(bio)
            try self.init(owning: key, operation: "d2i_PublicKey")
        default:
            guard let certificate = PEM_read_bio_X509(bio.pointer, nil, nil, nil) else {
                throw CryptoError.fromOpenSSL("PEM_read_bio_X509", reason: "could not parse the 'CERTIFICATE' PEM block")
            }
            defer { X509_free(certificate) }
            guard let key = X509_get_pubkey(certificate) else {
                throw CryptoError.fromOpenSSL("X509_get_pubkey", reason: "could not extract the certificate's public key")
            }
            try self.init(owning: key, operation: "X509_get_pubkey")
        }
        OpenSSLErrors.clear()
    }

    /// `true` iff `signature` is a valid RSASSA-PKCS1-v1_5 SHA-256 signature of `message` under this key.
    public func verifySHA256(signature: [UInt8], message: [UInt8]) -> Bool {
        OpenSSLErrors.clear()
        defer { OpenSSLErrors.clear() }  // a failed verification leaves errors on the queue
        guard let context = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(context) }
        var keyContext: OpaquePointer? = nil
        guard EVP_DigestVerifyInit(context, &keyContext, DigestAlgorithm.sha256.evpMD, nil, pkey) == 1,
              let keyContext, relay_evp_pkey_ctx_set_rsa_pkcs1_padding(keyContext) > 0
        else { return false }
        return signature.withUnsafeBytes { signatureBuffer in
            withNonNullBase(signatureBuffer) { signatureBase in
                message.withUnsafeBytes { messageBuffer in
                    withNonNullBase(messageBuffer) { messageBase in
                        EVP_DigestVerify(
                            context,
                            signatureBase.assumingMemoryBound(to: UInt8.self), signatureBuffer.count,
                            messageBase.assumingMemoryBound(to: UInt8.self), messageBuffer.count) == 1
                    }
                }
            }
        }
    }

    /// The key as SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`).
    public func pem() throws -> String {
        OpenSSLErrors.clear()
        let bio = try MemoryBIO(operation: "BIO_new")
        guard PEM_write_bio_PUBKEY(bio.pointer, pkey) == 1 else {
            throw CryptoError.fromOpenSSL("PEM_write_bio_PUBKEY")
        }
        return String(decoding: bio.contents(), as: UTF8.self)
    }

    /// Modulus size in bits, e.g. 2048.
    public var bits: Int {
        Int(EVP_PKEY_get_bits(pkey))
    }
}

// MARK: - Helpers

/// State shared with the PEM password callback.
private struct PasswordContext {
    var password: [UInt8]?
    var requested = false
}

/// Reads the first private-key PEM block of `pem` (PKCS#1, SEC1, PKCS#8, or encrypted PKCS#8 with `password`) into
/// an `EVP_PKEY` the caller owns. Other blocks (certificates, EC parameters) are skipped, so they cannot get in the
/// way. Never prompts on a terminal. `expected` lists the accepted blocks, for the error when there is none.
func readPEMPrivateKey(_ pem: String, password: String?, expected: String) throws -> OpaquePointer {
    let operation = "PEM_read_bio_PrivateKey"
    OpenSSLErrors.clear()
    let labels = pemLabels(pem)
    guard let keyLabel = labels.first(where: { $0.hasSuffix("PRIVATE KEY") }) else {
        let found = labels.isEmpty ? "input is not PEM" : "found only " + labels.map { "'\($0)'" }.joined(separator: ", ")
        throw CryptoError(operation: operation, code: 0, message: "no private key PEM block (expected \(expected)); \(found)")
    }
    let block = pemBlock(pem, label: keyLabel) ?? pem
    let bio = try MemoryBIO(Array(block.utf8), operation: operation)
    var context = PasswordContext(password: password.map { Array($0.utf8) })
    let key = withUnsafeMutablePointer(to: &context) { contextPointer in
        PEM_read_bio_PrivateKey(bio.pointer, nil, { buffer, size, _, userData in
            guard let buffer, let userData else { return -1 }
            let context = userData.assumingMemoryBound(to: PasswordContext.self)
            context.pointee.requested = true
            guard let password = context.pointee.password, password.count <= Int(size) else { return -1 }
            password.withUnsafeBytes { source in
                if let base = source.baseAddress { UnsafeMutableRawPointer(buffer).copyMemory(from: base, byteCount: source.count) }
            }
            return Int32(password.count)
        }, contextPointer)
    }
    guard let key else {
        let reason: String
        if context.requested && password == nil {
            reason = "the private key is encrypted and no password was given"
        } else if context.requested {
            reason = "wrong password for the encrypted private key (or the key is corrupt)"
        } else {
            reason = "could not parse the '\(keyLabel)' PEM block"
        }
        throw CryptoError.fromOpenSSL(operation, reason: reason)
    }
    OpenSSLErrors.clear()  // decoders may leave benign errors from formats they tried and rejected
    return key
}

/// An error if `pkey` is not a plain RSA (rsaEncryption) key, else `nil`.
private func rsaKeyTypeError(_ pkey: OpaquePointer, operation: String) -> CryptoError? {
    let id = EVP_PKEY_get_base_id(pkey)
    if id == EVP_PKEY_RSA { return nil }
    let name = EVP_PKEY_get0_type_name(pkey).map { String(cString: $0) } ?? "unknown (id \(id))"
    return CryptoError(operation: operation, code: 0, message: "key type is \(name), not RSA; only RSA keys are supported")
}

/// Decodes the first `BEGIN RSA PUBLIC KEY` (PKCS#1 RSAPublicKey) block from `bio`.
private func readPKCS1PublicKey(_ bio: MemoryBIO) throws -> OpaquePointer {
    var data: UnsafeMutablePointer<UInt8>? = nil
    var length = 0
    var name: UnsafeMutablePointer<CChar>? = nil
    guard PEM_bytes_read_bio(&data, &length, &name, "RSA PUBLIC KEY", bio.pointer, nil, nil) == 1, let data else {
        throw CryptoError.fromOpenSSL("PEM_bytes_read_bio", reason: "could not parse the 'RSA PUBLIC KEY' PEM block")
    }
    defer {
        CRYPTO_free(data, #fileID, #line)
        if let name { CRYPTO_free(name, #fileID, #line) }
    }
    var cursor: UnsafePointer<UInt8>? = UnsafePointer(data)
    guard let key = d2i_PublicKey(EVP_PKEY_RSA, nil, &cursor, length) else {
        throw CryptoError.fromOpenSSL("d2i_PublicKey", reason: "invalid PKCS#1 RSAPublicKey")
    }
    return key
}

/// A memory `BIO*`, freed in `deinit`.
final class MemoryBIO {
    let pointer: OpaquePointer

    init(operation: String) throws {
        guard let bio = BIO_new(BIO_s_mem()) else {
            throw CryptoError.fromOpenSSL(operation, reason: "BIO_new failed")
        }
        pointer = bio
    }

    /// A memory BIO holding a copy of `bytes`.
    convenience init(_ bytes: [UInt8], operation: String) throws {
        try self.init(operation: operation)
        guard !bytes.isEmpty else { return }
        var written = 0
        let ok = bytes.withUnsafeBytes { BIO_write_ex(pointer, $0.baseAddress, $0.count, &written) }
        guard ok == 1, written == bytes.count else {
            throw CryptoError.fromOpenSSL(operation, reason: "BIO_write failed")
        }
    }

    deinit {
        BIO_free(pointer)
    }

    /// Everything written to the BIO so far.
    func contents() -> [UInt8] {
        var base: UnsafeMutablePointer<CChar>? = nil
        let length = relay_bio_get_mem_data(pointer, &base)
        guard let base, length > 0 else { return [] }
        return Array(UnsafeRawBufferPointer(start: base, count: length))
    }
}

/// Reads a whole file through a file `BIO`.
private func readFile(_ path: String) throws -> [UInt8] {
    OpenSSLErrors.clear()
    guard let bio = BIO_new_file(path, "rb") else {
        throw CryptoError.fromOpenSSL("BIO_new_file", reason: "cannot open file")
    }
    defer { BIO_free(bio) }
    var contents: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16384)
    while true {
        let count = chunk.withUnsafeMutableBytes { BIO_read(bio, $0.baseAddress, Int32($0.count)) }
        if count < 0 {
            throw CryptoError.fromOpenSSL("BIO_read", reason: "cannot read file")
        }
        if count == 0 { break }
        contents.append(contentsOf: chunk[..<Int(count)])
    }
    OpenSSLErrors.clear()
    return contents
}

private let pemBeginPrefix = "-----BEGIN "
private let pemDashes = "-----"

/// Whether `bytes` contains `-----BEGIN `.
private func containsPEMHeader(_ bytes: [UInt8]) -> Bool {
    let needle = Array(pemBeginPrefix.utf8)
    guard bytes.count >= needle.count else { return false }
    for start in 0...(bytes.count - needle.count) where bytes[start] == needle[0] {
        if bytes[start..<start + needle.count].elementsEqual(needle) { return true }
    }
    return false
}

/// The labels of all `-----BEGIN <label>-----` lines, in order.
private func pemLabels(_ text: String) -> [String] {
    var labels: [String] = []
    for line in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
        let trimmed = line.trimmingWhitespace()
        guard trimmed.hasPrefix(pemBeginPrefix), trimmed.hasSuffix(pemDashes),
              trimmed.count > pemBeginPrefix.count + pemDashes.count
        else { continue }
        labels.append(String(trimmed.dropFirst(pemBeginPrefix.count).dropLast(pemDashes.count)))
    }
    return labels
}

/// The text of the first complete PEM block with `label` (BEGIN line through END line), if any.
private func pemBlock(_ text: String, label: String) -> String? {
    let begin = "\(pemBeginPrefix)\(label)\(pemDashes)"
    let end = "-----END \(label)\(pemDashes)"
    var collected: [Substring] = []
    var inside = false
    for line in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
        let trimmed = line.trimmingWhitespace()
        if !inside {
            if trimmed == begin { inside = true; collected.append(trimmed) }
        } else {
            collected.append(trimmed)
            if trimmed == end { return collected.joined(separator: "\n") + "\n" }
        }
    }
    return nil
}

extension Substring {
    fileprivate func trimmingWhitespace() -> Substring {
        var s = self
        while let first = s.first, first.isWhitespace { s.removeFirst() }
        while let last = s.last, last.isWhitespace { s.removeLast() }
        return s
    }
}
