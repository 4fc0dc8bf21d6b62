import COpenSSL
import Foundation

/// Why a mutual-TLS client certificate and key cannot be used, and which of the two is at fault.
public struct ClientCertificateError: Error, Sendable, CustomStringConvertible, Equatable {
    public enum Part: Sendable, Equatable { case certificate, key, keyPassword }
    public var part: Part
    public var description: String
    public init(_ part: Part, _ description: String) {
        self.part = part
        self.description = description
    }
}

/// Checks a client certificate and its key (PEM) the way a TLS handshake would need them, before any is attempted:
/// the certificate parses, the key loads (with `password` when encrypted), they belong together, and the
/// certificate is valid at `now` (Unix seconds). Returns the certificate's subject and validity.
public func checkClientCertificate(certificatePEM: [UInt8], keyPEM: String, password: String?,
                                   now: Int64) throws(ClientCertificateError) -> CertificateInfo {
    OpenSSLErrors.clear()
    guard let bio = try? MemoryBIO(certificatePEM, operation: "PEM_read_bio_X509"),
          let x509 = PEM_read_bio_X509(bio.pointer, nil, nil, nil) else {
        OpenSSLErrors.clear()
        throw ClientCertificateError(.certificate, "not a PEM certificate (expected BEGIN CERTIFICATE)")
    }
    defer { X509_free(x509) }
    let pkey: OpaquePointer
    do {
        pkey = try readPEMPrivateKey(keyPEM, password: password,
                                     expected: "BEGIN PRIVATE KEY, BEGIN RSA PRIVATE KEY, BEGIN EC PRIVATE KEY or BEGIN ENCRYPTED PRIVATE KEY")
    } catch {
        let message = (error as? CryptoError)?.message ?? "\(error)"
        let passwordProblem = message.contains("password")
        throw ClientCertificateError(passwordProblem ? .keyPassword : .key, message)
    }
    defer { EVP_PKEY_free(pkey) }
    guard X509_check_private_key(x509, pkey) == 1 else {
        OpenSSLErrors.clear()
        throw ClientCertificateError(.key, "the key does not belong to the certificate")
    }
    let info = certificateInfo(x509)
    if let notAfter = info.notAfter, notAfter < now {
        throw ClientCertificateError(.certificate, "the certificate (\(info.subject)) expired on \(isoDate(notAfter))")
    }
    if let notBefore = info.notBefore, notBefore > now {
        throw ClientCertificateError(.certificate, "the certificate (\(info.subject)) is not valid before \(isoDate(notBefore))")
    }
    return info
}

private func isoDate(_ seconds: Int64) -> String {
    let f = ISO8601DateFormatter()
    f.formatOptions = [.withInternetDateTime]
    return f.string(from: Date(timeIntervalSince1970: TimeInterval(seconds)))
}
