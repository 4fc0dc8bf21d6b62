import Foundation
import FuzzSupport
@testable import Relay

// Every signature-header parser (Sources/Relay/Verify): Standard Webhooks' `v1,<sig>` lists, Stripe's
// `t=,v1=` (and keyed lists under other names and separators), GitHub's `sha256=`, Slack's `v0=` with its
// timestamp, Shopify's base64, Punchh's `hmac ` over the URI, a separated list with a prefix, base64url, and the
// static credentials (Basic, Bearer, an API key, Token). The input is NUL-separated: selector bytes, then the
// signature header's value, the timestamp header's, the id header's, the request target, and the body.
// - made-up headers never verify (the secrets are random): anything else is a verification hole;
// - selector bit 0 set: the request is signed as `relay send` signs it (`senderHeaders`), then changed as the
//   scheme allows (other signatures beside it, another prefix case, spaces): it must verify; with one byte of the
//   body changed it must not;
// - nothing traps, whatever the header (huge or odd timestamps, empty items, bad base64, odd UTF-8).
let now = Date(timeIntervalSince1970: 1_767_225_600)   // 2026-01-01: seeds carry timestamps near it
let sources = FuzzSources.signed.map { FuzzSources.config.sources[$0]! }

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = fuzzBytes(data, size)
    let f = FuzzFields(input, count: 6)
    let selector = f[0]
    func sel(_ i: Int) -> Int { i < selector.count ? Int(selector[i]) : 0 }
    let source = sources[sel(0) % sources.count]
    let verifier = source.verifier
    var target = f.text(4)
    if !target.hasPrefix("/") { target = "/v1/hooks/\(source.name)" + (target.isEmpty ? "" : "?" + target) }
    let body = f[5]
    _ = HMACVerifier.unixTimestamp(Substring(f.text(2)))

    if sel(1) & 1 == 0 {
        var headers = HTTPHeaders()
        for (name, value) in madeUpHeaders(verifier, f, pick: sel(2)) { headers.add(name, value) }
        let request = HTTPRequest(method: "POST", target: target, headers: headers, body: body, remoteAddress: "127.0.0.1")
        if case .verified = verifier.verify(request, now: now) {
            fuzzFailure("made-up headers verified for \(source.name)", input)
        }
        return 0
    }

    let url = "http://relay.example" + target
    let given = f[3].isEmpty ? [] : [(idHeader(verifier) ?? "X-None", f.text(3))]
    guard let signed = verifier.senderHeaders(body: body, url: url, now: now, given: given) else {
        fuzzFailure("\(source.name) cannot sign", input)
    }
    var headers = HTTPHeaders([("Host", "relay.example")] + given)
    for (name, value) in signed {
        headers.add(name, isSignatureHeader(verifier, name) ? allowedChange(verifier, value, sel(2), f.text(1)) : value)
    }
    let request = HTTPRequest(method: "POST", target: target, headers: headers, body: body, remoteAddress: "127.0.0.1")
    if case .rejected(let reason) = verifier.verify(request, now: now) {
        fuzzFailure("a request signed for \(source.name) (\(headers.fields)) was refused: \(reason)", input)
    }
    if !body.isEmpty, !(verifier is StaticCredentialVerifier) {
        var tampered = request
        let i = sel(3) % body.count
        tampered.body[i] ^= UInt8(1 << (sel(4) % 8))
        if case .verified = verifier.verify(tampered, now: now) {
            fuzzFailure("a request for \(source.name) verified with byte \(i) of its body changed", input)
        }
    }
    return 0
}

func idHeader(_ v: any Verifier) -> String? { (v as? HMACVerifier)?.idHeaders.first }

func isSignatureHeader(_ v: any Verifier, _ name: String) -> Bool {
    if let h = v as? HMACVerifier { return h.headers.contains(name) }
    if let s = v as? StaticCredentialVerifier { return s.header == name }
    return false
}

/// The scheme's headers with the fuzzer's values: the signature header (one of its names), the timestamp's and
/// the id's.
func madeUpHeaders(_ v: any Verifier, _ f: FuzzFields, pick: Int) -> [(String, String)] {
    var out: [(String, String)] = []
    if let h = v as? HMACVerifier {
        if !h.headers.isEmpty { out.append((h.headers[pick % h.headers.count], f.text(1))) }
        if let t = h.timestampHeaders.first { out.append((t, f.text(2))) }
        if let i = h.idHeaders.first { out.append((i, f.text(3))) }
    } else if let s = v as? StaticCredentialVerifier {
        out.append((s.header, f.text(1)))
    }
    if pick & 0x80 != 0 { out.append(("X-Forwarded-Proto", f.text(2))); out.append(("Host", f.text(3))) }
    return out
}

/// The signed header's value changed only as its scheme allows: `how` picks the change, `junk` is the fuzzer's.
func allowedChange(_ v: any Verifier, _ value: String, _ how: Int, _ junk: String) -> String {
    // Junk without the characters that would make it part of the real signature's item.
    let noise = String(junk.unicodeScalars.filter { $0.isASCII && $0.value > 0x20 && !",; =".unicodeScalars.contains($0) }.prefix(40))
    switch how % 4 {
    case 1:   // spaces around the value
        return " " + value + " "
    case 2:   // another (wrong) signature before the right one
        guard let h = v as? HMACVerifier else { return value }
        if let keyed = h.keyed {
            return "\(keyed.signatureKey)=\(noise.isEmpty ? "00" : noise)\(keyed.separator)x=\(noise)\(keyed.separator)" + value
        }
        if let sep = h.separator { return h.prefix + (noise.isEmpty ? "AAAA" : noise) + String(sep) + value }
        return value
    case 3:   // the prefix in another case (prefixes match without regard to case)
        guard let h = v as? HMACVerifier, !h.prefix.isEmpty, value.hasPrefix(h.prefix) else {
            if let s = v as? StaticCredentialVerifier, !s.prefix.isEmpty, value.hasPrefix(s.prefix) {
                return s.prefix.uppercased() + value.dropFirst(s.prefix.count)
            }
            return value
        }
        return h.prefix.uppercased() + value.dropFirst(h.prefix.count)
    default:
        return value
    }
}

runFuzzer(fuzzOne)
