#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Hex and Base64 conversions for byte arrays.
public enum ByteEncoding {
    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    /// Lowercase hexadecimal, two characters per byte.
    public static func hex(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(hexDigits[Int(byte >> 4)])
            out.append(hexDigits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Parses hexadecimal (upper- or lowercase). Returns `nil` on odd length or any non-hex character.
    public static func fromHex(_ s: String) -> [UInt8]? {
        var s = s
        return s.withUTF8 { fromHex($0) }
    }

    /// `fromHex` over bytes where they are (a header value inside the request), without a copy.
    public static func fromHex(_ chars: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        guard chars.count % 2 == 0 else { return nil }
        let n = chars.count / 2
        var valid = true
        let out = [UInt8](unsafeUninitializedCapacity: n) { buffer, initialized in
            for i in 0..<n {
                guard let high = hexValue(chars[2 * i]), let low = hexValue(chars[2 * i + 1]) else {
                    valid = false
                    return
                }
                buffer[i] = high << 4 | low
            }
            initialized = n
        }
        return valid ? out : nil
    }

    /// Standard Base64 (RFC 4648 §4) with `=` padding.
    public static func base64(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
    }

    /// Parses standard Base64 (`+` and `/`). Padding is optional; whitespace and other characters are rejected.
    public static func fromBase64(_ s: String) -> [UInt8]? {
        decode(Array(s.utf8), urlAlphabet: false)
    }

    /// Base64url (RFC 4648 §5: `-` and `_`) without padding.
    public static func base64URL(_ bytes: [UInt8]) -> String {
        var out = Array(Data(bytes).base64EncodedString().utf8)
        while out.last == UInt8(ascii: "=") { out.removeLast() }
        for i in out.indices {
            switch out[i] {
            case UInt8(ascii: "+"): out[i] = UInt8(ascii: "-")
            case UInt8(ascii: "/"): out[i] = UInt8(ascii: "_")
            default: break
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Parses base64url (`-` and `_`), with or without padding.
    public static func fromBase64URL(_ s: String) -> [UInt8]? {
        decode(Array(s.utf8), urlAlphabet: true)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// Validates the alphabet and padding, normalises to padded standard Base64 and decodes with Foundation.
    private static func decode(_ input: [UInt8], urlAlphabet: Bool) -> [UInt8]? {
        var body = input
        var padding = 0
        while body.last == UInt8(ascii: "=") {
            body.removeLast()
            padding += 1
        }
        // Unpadded length mod 4 can be 0, 2 or 3; padding, if present, must complete a 4-character group.
        let remainder = body.count % 4
        guard remainder != 1 else { return nil }
        guard padding == 0 || (remainder != 0 && remainder + padding == 4) else { return nil }
        for i in body.indices {
            switch body[i] {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"):
                continue
            case UInt8(ascii: "+"), UInt8(ascii: "/"):
                if urlAlphabet { return nil }
            case UInt8(ascii: "-"):
                if !urlAlphabet { return nil }
                body[i] = UInt8(ascii: "+")
            case UInt8(ascii: "_"):
                if !urlAlphabet { return nil }
                body[i] = UInt8(ascii: "/")
            default:
                return nil
            }
        }
        if remainder != 0 {
            body.append(contentsOf: repeatElement(UInt8(ascii: "="), count: 4 - remainder))
        }
        guard let data = Data(base64Encoded: Data(body)) else { return nil }
        return [UInt8](data)
    }
}
