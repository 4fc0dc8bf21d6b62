import COpenSSL

/// What a certificate says about itself: who it names, when it is valid, and its PKCS#12 alias.
public struct CertificateInfo: Sendable, Equatable {
    /// The subject in OpenSSL's one-line form, e.g. `/C=US/O=Acme/CN=acme-mc-signing`.
    public let subject: String
    /// Start of validity, Unix seconds (nil when unreadable).
    public let notBefore: Int64?
    /// End of validity, Unix seconds (nil when unreadable).
    public let notAfter: Int64?
    /// The PKCS#12 `friendlyName` of the entry (what Java's keystores call its alias), when there is one.
    public let alias: String?

    public init(subject: String, notBefore: Int64?, notAfter: Int64?, alias: String?) {
        self.subject = subject
        self.notBefore = notBefore
        self.notAfter = notAfter
        self.alias = alias
    }
}

/// Why a PKCS#12 archive did not yield an RSA private key.
public struct PKCS12Error: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// The bytes are not a PKCS#12 archive.
        case notPKCS12
        /// The archive's integrity MAC does not verify with the password.
        case wrongPassword
        /// The contents could not be decrypted (a wrong password on an archive without a MAC, or corrupt data).
        case undecryptable
        /// The archive holds certificates but no private key.
        case noPrivateKey
        /// The private key is not RSA.
        case notRSA
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}

/// The private key of a PKCS#12 (`.p12`/`.pfx`) archive with the certificate that goes with it (OpenSSL's
/// `PKCS12_parse`: the first private key, and the certificate whose `localKeyID` matches it).
public struct PKCS12Identity: Sendable {
    public let key: RSAPrivateKey
    /// The key's certificate, when the archive holds one.
    public let certificate: CertificateInfo?

    /// Opens `data` with `password` (an empty password also tries "no password", as `PKCS12_parse` does).
    public init(pkcs12 data: [UInt8], password: String) throws(PKCS12Error) {
        OpenSSLErrors.clear()
        defer { OpenSSLErrors.clear() }
        guard let bio = try? MemoryBIO(data, operation: "d2i_PKCS12_bio"),
              let p12 = d2i_PKCS12_bio(bio.pointer, nil)
        else { throw PKCS12Error(.notPKCS12, "not a PKCS#12 (.p12/.pfx) archive") }
        defer { PKCS12_free(p12) }

        let hasMAC = PKCS12_mac_present(p12) == 1
        if hasMAC {
            let macOK = password.isEmpty
                ? PKCS12_verify_mac(p12, nil, 0) == 1 || PKCS12_verify_mac(p12, "", 0) == 1
                : PKCS12_verify_mac(p12, password, -1) == 1
            guard macOK else {
                throw PKCS12Error(.wrongPassword, password.isEmpty
                    ? "the PKCS#12 archive is protected by a password and none was given"
                    : "wrong PKCS#12 password")
            }
        }

        var pkey: OpaquePointer? = nil
        var x509: OpaquePointer? = nil
        let parsed: Int32 = parsePKCS12(p12, password, &pkey, &x509) ? 1 : 0
        defer { if let x509 { X509_free(x509) } }
        guard parsed == 1 else {
            if let pkey { EVP_PKEY_free(pkey) }
            let detail = OpenSSLErrors.drain().text.map { " (\($0))" } ?? ""
            throw PKCS12Error(.undecryptable, (hasMAC
                ? "could not decrypt the PKCS#12 contents"
                : "could not decrypt the PKCS#12 contents (wrong PKCS#12 password?)") + detail)
        }
        guard let pkey else {
            throw PKCS12Error(.noPrivateKey, "the PKCS#12 archive holds no private key")
        }
        do {
            key = try RSAPrivateKey(owning: pkey, operation: "PKCS12_parse")
        } catch {
            throw PKCS12Error(.notRSA, (error as? CryptoError)?.message ?? "\(error)")
        }
        certificate = x509.map(certificateInfo)
    }
}

/// Subject, validity and alias of a certificate.
func certificateInfo(_ x509: OpaquePointer) -> CertificateInfo {
    var subject = ""
    if let name = X509_get_subject_name(x509), let line = X509_NAME_oneline(name, nil, 0) {
        subject = String(cString: line)
        CRYPTO_free(line, #fileID, #line)
    }
    var alias: String?
    var length: Int32 = 0
    if let bytes = X509_alias_get0(x509, &length), length > 0 {
        alias = String(decoding: UnsafeBufferPointer(start: bytes, count: Int(length)), as: UTF8.self)
    }
    return CertificateInfo(subject: subject, notBefore: unixSeconds(X509_get0_notBefore(x509)),
                           notAfter: unixSeconds(X509_get0_notAfter(x509)), alias: alias)
}

/// An ASN.1 time as Unix seconds (UTC).
private func unixSeconds(_ time: UnsafePointer<ASN1_TIME>?) -> Int64? {
    guard let time else { return nil }
    var t = tm()
    guard ASN1_TIME_to_tm(time, &t) == 1 else { return nil }
    // Days from 1970-01-01 to the civil date (Howard Hinnant's days_from_civil), then the time of day.
    let y = Int64(t.tm_year) + 1900 - (t.tm_mon < 2 ? 1 : 0)
    let m = Int64(t.tm_mon) + 1
    let era = (y >= 0 ? y : y - 399) / 400
    let yoe = y - era * 400
    let doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + Int64(t.tm_mday) - 1
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
    let days = era * 146097 + doe - 719468
    return days * 86400 + Int64(t.tm_hour) * 3600 + Int64(t.tm_min) * 60 + Int64(t.tm_sec)
}

/// `PKCS12_parse`, and once more with OpenSSL's legacy provider loaded when the archive uses the algorithms OpenSSL 3
/// keeps there (RC2-40, 3DES: what Java's keytool before 8u301 and `openssl pkcs12 -legacy` write, and what
/// Mastercard's own signer libraries still read).
func parsePKCS12(_ p12: OpaquePointer, _ password: String, _ pkey: inout OpaquePointer?,
                 _ x509: inout OpaquePointer?) -> Bool {
    if PKCS12_parse(p12, password, &pkey, &x509, nil) == 1 { return true }
    guard legacyProviderLoaded else { return false }
    OpenSSLErrors.clear()
    return PKCS12_parse(p12, password, &pkey, &x509, nil) == 1
}

/// Loads the `default` and `legacy` providers into the default library context, once (the default one too:
/// loading any provider explicitly stops OpenSSL from loading the default one by itself).
let legacyProviderLoaded: Bool = {
    _ = OSSL_PROVIDER_load(nil, "default")
    return OSSL_PROVIDER_load(nil, "legacy") != nil
}()
