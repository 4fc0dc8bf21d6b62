import COpenSSL

/// An error reported by a cryptographic operation, usually carrying details from the OpenSSL error queue.
public struct CryptoError: Error, CustomStringConvertible, Sendable {
    /// The operation that failed, e.g. `"PKCS12_parse"` or `"EVP_DigestSign"`.
    public let operation: String
    /// The first (root-cause) code from `ERR_get_error()`, or 0 when OpenSSL reported none.
    public let code: UInt
    /// A human-readable reason: our own explanation and/or OpenSSL's `ERR_error_string_n` text.
    public let message: String

    /// Creates an error with explicit values.
    public init(operation: String, code: UInt, message: String) {
        self.operation = operation
        self.code = code
        self.message = message
    }

    /// `"<operation> failed: <message>"`.
    public var description: String {
        "\(operation) failed: \(message)"
    }

    /// Builds an error from the current thread's OpenSSL error queue, draining it.
    ///
    /// - Parameters:
    ///   - operation: the OpenSSL function or high-level step that failed.
    ///   - reason: our own explanation; OpenSSL's text (if any) is appended in parentheses.
    static func fromOpenSSL(_ operation: String, reason: String? = nil) -> CryptoError {
        let (code, details) = OpenSSLErrors.drain()
        let message: String
        switch (reason, details) {
        case let (reason?, details?): message = "\(reason) (\(details))"
        case let (reason?, nil): message = reason
        case let (nil, details?): message = details
        case (nil, nil): message = "unknown OpenSSL error"
        }
        return CryptoError(operation: operation, code: code, message: message)
    }

    /// The same error with `context` prefixed to its message (used to name a file path).
    func prefixed(_ context: String) -> CryptoError {
        CryptoError(operation: operation, code: code, message: "\(context): \(message)")
    }
}

/// Helpers for the thread-local OpenSSL error queue.
enum OpenSSLErrors {
    /// Discards anything left in the queue so that later failures are not misattributed.
    static func clear() {
        ERR_clear_error()
    }

    /// Empties the queue, returning the first error code (0 if none) and the distinct error strings joined by "; ".
    static func drain() -> (code: UInt, text: String?) {
        var first: UInt = 0
        var texts: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            if first == 0 { first = code }
            let text = errorString(code)
            if !texts.contains(text) { texts.append(text) }
        }
        return (first, texts.isEmpty ? nil : texts.joined(separator: "; "))
    }

    /// `ERR_error_string_n` for one code.
    static func errorString(_ code: UInt) -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        let length = buffer.withUnsafeMutableBufferPointer { buf -> Int in
            ERR_error_string_n(code, buf.baseAddress, buf.count)
            return strnlen(buf.baseAddress!, buf.count)
        }
        return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
