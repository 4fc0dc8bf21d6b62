import Adapters
import Crypto
import Foundation
@testable import Relay
import Synchronization
import Testing

/// Keys made once per run with the openssl command line (held in memory; the files are deleted at once): an RSA key
/// with a self-signed certificate valid for 2 days, as a PKCS#12 archive (password, alias `keyalias`) and as PEM;
/// and an archive holding the certificate only.
struct MastercardKeys: Sendable {
    static let password = "p12-pw-77c1"
    static let shared: Result<MastercardKeys, TestFailure> = Result { try MastercardKeys() }.mapError { TestFailure("\($0)") }

    let keyPEM: String
    let certificatePEM: String
    let pkcs12: [UInt8]
    let certificateOnlyPKCS12: [UInt8]

    static func get() throws -> MastercardKeys { try shared.get() }

    private init() throws {
        let dir = try TempDir("relay-mc-keys")
        defer { dir.remove() }
        try mcOpenSSL(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem", "-out", "c.pem",
                        "-days", "2", "-subj", "/CN=relay-mc-signing"], in: dir.path)
        try mcOpenSSL(["pkcs12", "-export", "-inkey", "k.pem", "-in", "c.pem", "-name", "keyalias",
                        "-passout", "pass:\(Self.password)", "-out", "k.p12"], in: dir.path)
        try mcOpenSSL(["pkcs12", "-export", "-nokeys", "-in", "c.pem", "-passout", "pass:\(Self.password)",
                        "-out", "certs.p12"], in: dir.path)
        keyPEM = readText(dir.file("k.pem"))
        certificatePEM = readText(dir.file("c.pem"))
        pkcs12 = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir.file("k.p12"))))
        certificateOnlyPKCS12 = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir.file("certs.p12"))))
    }

    var publicKey: RSAPublicKey { get throws { try RSAPublicKey(pem: certificatePEM) } }
}

/// `/usr/bin/openssl arguments...` in `directory`; throws with its stderr on failure.
func mcOpenSSL(_ arguments: [String], in directory: String) throws {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
    p.arguments = arguments
    p.currentDirectoryURL = URL(fileURLWithPath: directory)
    let err = Pipe()
    p.standardError = err
    p.standardOutput = FileHandle.nullDevice
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let text = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else {
        throw TestFailure("openssl \(arguments.joined(separator: " ")): \(String(decoding: text, as: UTF8.self))")
    }
}

@Suite("Mastercard OAuth 1.0a")
struct MastercardOAuth1Tests {
    /// A 2048-bit test key (made for these tests only). The vectors below were computed with PyPI's
    /// `mastercard-oauth1-signer` 1.9.2 (`OAuth.get_authorization_header`, nonce and timestamp fixed).
    static let katKeyPEM = """
        -----BEGIN PRIVATE KEY-----
        MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCK/AcVUvP7o7a/
        EKsVuAYvNV3m9u5QTs9oopwnlf5IuqPrOjwWaBKTYYdNbxPBq+YIpziedsREmIFb
        UPghgPW/MpBIdFjwI/3fv6zfy/lN4dRwhnKcaTkc2aMiO/n20UNtej0D2Ben6dMh
        6pwbKloJ7Ueh0WGi0Wv9dikNJSuvSVp6DDsh8fqaJLmZxpRorc/ujDh53vRBob51
        lpAiEYZ8LE2BOLIxBdqF2Or1EEylpPoMdzq0KNBvmY8ynk/Pxo0RtKN3Rh15zryb
        5gt74fJRULv//Ywpwg6CfdQ+uxjaZCyB5joeYxVf7GXWXO8Y0JYo5k4gahRzeUks
        Q415vR8NAgMBAAECggEAAc0OxXC3/yqJr3Oml+c0009Ienn4MBu5VdSHm/62Vxhu
        D9oHFc4+8WB56Z+3HJMe7b1G/0ywMehdAsMrl/mNFa9wzbOORHxe6ZOZCKRixGbZ
        AyVG3m6BojVSxxqKXG+tRUGogUB/W/psdTvOTo7PsGG+BCOLtZmrodLyaLxy0rhm
        exBeidcVZfzIsSz/AGnineo5ZUTCu1G3v/OrfgjH3v7S8zGdNn3SfdmstGGkndlT
        APp0q0zQWeFokW1fc4KsY8lx9MHzQ5+BdEFw+dlbubBTeGSk9g2QCYGJFjPiGjWk
        8zn1vKzIPF5gM2Wi1gU9sUfP3pdJ8u9DLUhls1jf4QKBgQDBrtSKDcB/uy63bauy
        oVoDhyk1XTNxfKRq/KSe8leziI//5TsOiXaKOmLKIZgPPRW+tiqywEhxMM2cspLU
        Q+/S5vVPD54CZOUaXPuZ2ngrJvLOT5nYSEBrnJ1J92vM+COcVM6KhGYwnh8BhTM6
        limTMLzioL+zVB4+/wF1vBaUbQKBgQC3s9NbGsnJhqiiZq3IG51XWoxKoaJkYAWF
        AjNyhOBcoKey9sfvb3sfQiRYbN/cf0LI/8wSdrUlFWu6LhIAELzCBDZmzqCjdlkR
        oBZPLbWRfprFm0EBXhIABeIrjcfuon+EO5bBRUbZaFDMwo3wmdcaUx7mSlZ9sTCn
        Sj/pi+PRIQKBgBJeyrntY/y5fEzZkhd3RlpfT4FIPcDd2ZpsLBEHW1oj8cSLsXZH
        g37I2uXhGdMYMB/Ol24s3rIdtuLN7S9E4lJWpZ3CFXKUr0Y424RUPGGbaBw5YJYr
        BDEwwZpqZUcjof0J7i0lMawa00YJpDpCU98qGEBGjugralL/TNwl4t5hAoGBAKSW
        q4Fu6Oh0i9alpIIrq7c+W3/qfbLtDUT0id/LCbI0BsyjqtLt0SRagHHxakkGhHHO
        LatFTFtja9etu1bvqA808wD9lJOgT4EpK5PZYlpvUoBF7+InxHzcyJ05NK6sTQ/O
        y+1yAl57xhkPH1k4nK7rVj4C0KdhADSCo+y992nBAoGAXso6Hh4PwYtKnUeR7FbK
        k28Uup/jpMCAlYzUDq4r6ozUqOf8O7Oy9CfEflMJ4zK7fexqimVrlKPy/zKJBo9O
        sW9BclPVyVxus0NI/gT1/aXR0XgrIMviZ5i0BJJQ8L1dHe2oOELOJYSUrSRsRCFR
        BTay1qX+9abtmxkwBEB/DAo=
        -----END PRIVATE KEY-----
        """
    static let katConsumerKey = "kat-consumer-key!4d2f"
    static let katNonce = "kat0nce1234ABCDe"
    static let katTimestamp: Int64 = 1763632800

    struct Vector {
        var method: String, url: String, body: String, baseString: String, signature: String
    }

    static let vectors: [Vector] = [
        Vector(method: "PUT", url: "https://sandbox.api.mastercard.com/loyalty/redemptions",
               body: #"{"redemptionId":"R-1","statusCode":"S"}"#,
               baseString: "PUT&https%3A%2F%2Fsandbox.api.mastercard.com%2Floyalty%2Fredemptions&oauth_body_hash%3DuFPVcNqs9P%2BR1wHNzEVsB3y4%2F2RxQYRFjsw1XZ2VwGc%3D%26oauth_consumer_key%3Dkat-consumer-key%214d2f%26oauth_nonce%3Dkat0nce1234ABCDe%26oauth_signature_method%3DRSA-SHA256%26oauth_timestamp%3D1763632800%26oauth_version%3D1.0",
               signature: "TRQ81dO7Wa%2Fb2g6ZPfrh8wA118T70nGGAqCGOCVCrVNZatsHj3qu35We4%2FvHX8xWyAro%2FAyIdDIN6yDONrQAkUO0ZptsS%2FlANk1fA6c%2Fp4W%2Bora%2Br8Hx%2FfCDBW%2Bq7JVfMOaBKU%2FmqlwO4k4DSTRU4VatFw%2FeBjnT9eKMB96Z5xLAXy6JY1tv4PMQlC%2F%2FhFr9eJBNQDXl719vsWQxMZ%2FgfQ48IUqiZfY0IdAJYN9lt5rEzFSjTeFVxpURcUcm%2BBA9EVJyyI2VZ2NagC3eJzE%2Bct6hJQ6w1jeNw9%2FKGT%2F7NYkW%2BBbW9xjmdKW%2B0OugCEK3cDPPjqaQ6XN49OxvSLZaZQ%3D%3D"),
        Vector(method: "GET", url: "https://sandbox.api.mastercard.com/loyalty/rewards/vendors/V1/orders/status?limit=10&offset=0",
               body: "",
               baseString: "GET&https%3A%2F%2Fsandbox.api.mastercard.com%2Floyalty%2Frewards%2Fvendors%2FV1%2Forders%2Fstatus&limit%3D10%26oauth_body_hash%3D47DEQpj8HBSa%2B%2FTImW%2B5JCeuQeRkm5NMpJWZG3hSuFU%3D%26oauth_consumer_key%3Dkat-consumer-key%214d2f%26oauth_nonce%3Dkat0nce1234ABCDe%26oauth_signature_method%3DRSA-SHA256%26oauth_timestamp%3D1763632800%26oauth_version%3D1.0%26offset%3D0",
               signature: "eThauDXmG04QOaTOf3%2Btv7PE0iv7XU6Xo89ZTw2LJaG6IkDnl7g3cDySLzVa47hkreCRoyRIXNTxMwJZlueZWBlAbXBOJSPi%2BU1UltrU2qANj14UzbEd0%2FvSq1UOM8i8pPkTymrzHGX66FxS8Vs5i8NyK9ViWwXXUfXN2j75gO5BRRksqjQFcfgSWy65o6VFFrqf57XcOtQXbuRYQ63YnG8eMxkSMi7vqCy7jYS%2BEoP3hxmTndvQFAwlYhEFp2r801hasj2%2FXdsTo67jy93IkO%2FCbQ8mb5x0m2hBxtmYJSSN7QQ21gDbLd5KDxavUMoAxOwsNa1YKOueSFXXWAmOBw%3D%3D"),
        Vector(method: "POST", url: "HTTPS://API.Mastercard.com:443/loyalty/rewards/vendors/V%2042/orders/status?b=2&a=1&a=%C3%A9",
               body: #"{"city":"Zürich"}"#,
               baseString: "POST&https%3A%2F%2Fapi.mastercard.com%2Floyalty%2Frewards%2Fvendors%2FV%252042%2Forders%2Fstatus&a%3D%25C3%25A9%26a%3D1%26b%3D2%26oauth_body_hash%3Dx9E0MJXwHSmmotOJ2qeUcX9do0wyJ4qiRCUf4tT8oxQ%3D%26oauth_consumer_key%3Dkat-consumer-key%214d2f%26oauth_nonce%3Dkat0nce1234ABCDe%26oauth_signature_method%3DRSA-SHA256%26oauth_timestamp%3D1763632800%26oauth_version%3D1.0",
               signature: "BCCURTpLI6%2BKwcswHDhEKi7RdzfT8I3ZwXozd%2FhyVMlIKh1RSHvluCzk4bGJfxQzIyFc6kIDQvJeuOhXg3Moapd4fU1itZNhXvY3TfPg4uUEBEgE1LvmzIrBLn%2Bx8xYrXcEb79eF87a0NgGElY%2B1CDx6OzKoXAFDR%2BYXO9BlQUeNqIM%2FA7LNViw5vwGcbD5WbQR5wB9K30V8SpBr%2BJAk0NZcfXUk2HIT9foFUU%2FhKxrtRroCUfq3b5EV9suHf14AoJcgw%2BZGFn3awL26lkcQFJmBdijL0FE3Hvm9Car%2FUVpZLyXkvauxGysZfIhkd3YWF6nrB2xpsda2memiuYto8g%3D%3D"),
        Vector(method: "delete", url: "http://example.com:8080?x=a+b&x=a", body: "",
               baseString: "DELETE&http%3A%2F%2Fexample.com%3A8080%2F&oauth_body_hash%3D47DEQpj8HBSa%2B%2FTImW%2B5JCeuQeRkm5NMpJWZG3hSuFU%3D%26oauth_consumer_key%3Dkat-consumer-key%214d2f%26oauth_nonce%3Dkat0nce1234ABCDe%26oauth_signature_method%3DRSA-SHA256%26oauth_timestamp%3D1763632800%26oauth_version%3D1.0%26x%3Da%26x%3Da%2Bb",
               signature: "ZMPY%2Bm%2FaQVbT2ndGCHIcBR5%2BtBHeEd7FJ0Ds%2FB7Zhd0nWb%2Fp93%2FA9HrVD2ZSdPvd5sioB3n0X13OVIDvjrhDHvSMj9uCBpGjuLa9WFsIp2MhQYt%2Bbd2cyLYm0N7bokG5ZHfJiF9lyRqyvu%2Bp0PiQwq%2BU8i8bmLJEB2oR7WFwZyR1W5UXWbjgkRrCWNEiEofuKT%2B8Mp6De5pgMXVGFdFkjMfZx27AAk9MR0mNgzzMGT6h3j6nYZHLrYdWx1dCWfz9alIRPR0yCjOunZ%2BTyfjztT7SrEqS0II7AZUbJbo%2FXCa0dtLLHGoxjZD5%2BUkEQtgnfMwF1qjlAZwl%2Bp7rjVKQyg%3D%3D"),
    ]

    static func katKey() throws -> RSAPrivateKey { try RSAPrivateKey(pem: katKeyPEM) }

    @Test("known-answer vectors: base string and header byte for byte as Mastercard's Python signer computes them")
    func knownAnswers() throws {
        let key = try Self.katKey()
        for v in Self.vectors {
            let body = Array(v.body.utf8)
            let params = MastercardOAuth1.oauthParameters(consumerKey: Self.katConsumerKey, nonce: Self.katNonce,
                                                          timestamp: Self.katTimestamp, body: body)
            #expect(MastercardOAuth1.baseString(method: v.method, url: v.url, oauth: params) == v.baseString, "\(v.url)")
            let header = try MastercardOAuth1.authorizationHeader(
                method: v.method, url: v.url, body: body, consumerKey: Self.katConsumerKey, key: key,
                nonce: Self.katNonce, timestamp: Self.katTimestamp)
            let expected = "OAuth oauth_consumer_key=\"\(Self.katConsumerKey)\",oauth_nonce=\"\(Self.katNonce)\","
                + "oauth_timestamp=\"\(Self.katTimestamp)\",oauth_signature_method=\"RSA-SHA256\",oauth_version=\"1.0\","
                + "oauth_body_hash=\"\(MastercardOAuth1.bodyHash(body))\",oauth_signature=\"\(v.signature)\""
            #expect(header == expected, "\(v.method) \(v.url)")
        }
    }

    @Test("body hash: base64 SHA-256, the empty-string hash for an empty body")
    func bodyHash() {
        #expect(MastercardOAuth1.emptyBodyHash == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
        #expect(MastercardOAuth1.bodyHash([]) == "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
        #expect(MastercardOAuth1.bodyHash(Array(#"{"redemptionId":"R-1","statusCode":"S"}"#.utf8))
                == "uFPVcNqs9P+R1wHNzEVsB3y4/2RxQYRFjsw1XZ2VwGc=")
    }

    @Test("base URI and parameter string normalisation (values from the reference's normalize_url/normalize_params)")
    func normalisation() {
        let uris: [(String, String)] = [
            ("HTTPS://API.Mastercard.COM:443/Loyalty/Redemptions?x=1", "https://api.mastercard.com/Loyalty/Redemptions"),
            ("http://example.com:80", "http://example.com/"),
            ("http://example.com:443/x", "http://example.com:443/x"),
            ("https://example.com:8443?y=1#f", "https://example.com:8443/"),
            ("https://example.com/a%2fb/%7Euser", "https://example.com/a%2fb/%7Euser"),
            ("http://[::1]:8080/v6", "http://[::1]:8080/v6"),
        ]
        for (url, want) in uris { #expect(MastercardOAuth1.baseURI(url) == want, "\(url)") }
        #expect(MastercardOAuth1.baseURI("/relative/path") == nil)

        let queries: [(String, String)] = [
            // Nothing encoded: kept as written ('+' stays '+').
            ("q=a+b&list=1,2&star=*", "list=1,2&q=a+b&star=*"),
            // Any %XX: everything decoded ('+' is a space) and encoded again (RFC 3986).
            ("q=caf%C3%A9&sp=a%20b&plus=a+b&star=*&t=%7e", "plus=a%20b&q=caf%C3%A9&sp=a%20b&star=%2A&t=~"),
            // Repeated keys kept; sorted as whole k=v strings ("a1=" before "a=", '1' < '=').
            ("a=2&a=1&a=1&a1=0&b=&c", "a1=0&a=1&a=1&a=2&b=&c="),
            // Stray percent signs are text; bytes that are not UTF-8 become U+FFFD.
            ("p=100%&r=%41&bad=%FF", "bad=%EF%BF%BD&p=100%25&r=A"),
            ("&&flag&&", "flag="),
        ]
        for (query, want) in queries {
            #expect(MastercardOAuth1.parameterString(query: query, oauth: []) == want, "\(query)")
        }
        #expect(MastercardOAuth1.percentEncode("a b+*~!é/") == "a%20b%2B%2A~%21%C3%A9%2F")
    }

    @Test("authorize: every call a fresh nonce, the context's time, the request's own body; Authorization replaced")
    func authorize() throws {
        let key = try Self.katKey()
        let auth = MastercardOAuth1Auth(consumerKey: Secret(value: Self.katConsumerKey, reference: "${env:K}"), key: key)
        let request = OutboundRequest(method: "PUT", url: Self.vectors[0].url,
                                      headers: [("Authorization", "stale"), ("Content-Type", "application/json")],
                                      body: Array(Self.vectors[0].body.utf8))
        var nonces: Set<String> = []
        for _ in 0..<20 {
            let signed = try authorized(auth, request).get()
            #expect(signed.headers.filter { $0.0 == "Authorization" }.count == 1)
            #expect(signed.headers.first?.0 == "Content-Type")
            let header = try #require(signed.header("Authorization"))
            let params = try #require(MastercardOAuth1.parseHeader(header))
            let p = Dictionary(params, uniquingKeysWith: { a, _ in a })
            let nonce = try #require(p["oauth_nonce"])
            #expect(nonce.count == 16 && nonce.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) })
            nonces.insert(nonce)
            #expect(p["oauth_body_hash"] == "uFPVcNqs9P+R1wHNzEVsB3y4/2RxQYRFjsw1XZ2VwGc=")
            #expect(MastercardOAuth1.verify(method: "PUT", url: request.url, body: request.body,
                                            authorization: header, publicKey: key.publicKey) == nil)
        }
        #expect(nonces.count == 20)

        // The timestamp is the context's clock, in whole seconds; a fixed nonce gives the known answer.
        let fixed = MastercardOAuth1Auth(consumerKey: Secret(value: Self.katConsumerKey, reference: "${env:K}"), key: key,
                                         nonce: { Self.katNonce })
        let box = Mutex<Result<OutboundRequest, AuthError>?>(nil)
        fixed.authorize(request, context: AuthContext(client: nil, deliveryID: "d",
                                                      now: Date(timeIntervalSince1970: Double(Self.katTimestamp) + 0.9))) { r in
            box.withLock { $0 = r }
        }
        let signed = try #require(box.withLock { $0 }).get()
        #expect(signed.header("Authorization")?.hasSuffix("oauth_signature=\"\(Self.vectors[0].signature)\"") == true)

        let relative = authorized(auth, OutboundRequest(method: "GET", url: "/no/host"))
        #expect(relative.mcFailureReason?.contains("not an absolute http(s) URL") == true)
    }

    // MARK: Configuration

    static let env = ["MC_CONSUMER_KEY": "ck-1f0e!abc", "MC_KEY_PASSWORD": MastercardKeys.password, "MC_WRONG": "nope"]

    /// Reads `auth: { mastercardOAuth1: { <fields> } }` at `now`.
    static func make(_ fields: String, now: Date = Date()) -> (auth: (any OutboundAuth)?, problems: [String]) {
        let r = ConfigReader(environment: env)
        let value = try? JSONValue.parse(Data("{ mastercardOAuth1: { \(fields) } }".utf8), json5: true)
        let auth = r.outboundAuth(value, "destinations.mc.auth", factories: [MastercardOAuth1Factory(now: { now })])
        return (auth, r.problems.map(\.description))
    }

    @Test("configuration: PKCS#12 with password and alias, or PEM; key problems at the key's path with the reason")
    func configuration() throws {
        let keys = try MastercardKeys.get()
        let dir = try TempDir("relay-mc-config")
        defer { dir.remove() }
        let p12 = dir.file("mc.p12"), pem = try dir.write("mc-key.pem", keys.keyPEM)
        try Data(keys.pkcs12).write(to: URL(fileURLWithPath: p12))
        let certOnly = dir.file("certs.p12")
        try Data(keys.certificateOnlyPKCS12).write(to: URL(fileURLWithPath: certOnly))
        let certPEM = try dir.write("cert.pem", keys.certificatePEM)
        let ck = #"consumerKey: "${env:MC_CONSUMER_KEY}""#, pw = #"keyPassword: "${env:MC_KEY_PASSWORD}""#
        let at = "destinations.mc.auth.mastercardOAuth1"

        for good in [#"\#(ck), keyFile: "\#(p12)", \#(pw)"#, #"\#(ck), keyFile: "\#(p12)", \#(pw), keyAlias: "keyalias""#,
                     #"\#(ck), keyFile: "\#(pem)""#, #"\#(ck), keyPem: "${file:\#(pem)}""#] {
            let (auth, problems) = Self.make(good)
            #expect(problems.isEmpty, "\(good): \(problems)")
            #expect(auth?.scheme == "mastercard-oauth1")
        }

        let cases: [(String, String)] = [
            (#"\#(ck), keyFile: "\#(dir.file("nowhere.p12"))", \#(pw)"#,
             "\(at).keyFile: cannot read \(dir.file("nowhere.p12")): no such file"),
            (#"\#(ck), keyFile: "\#(dir.path)", \#(pw)"#, "\(at).keyFile: cannot read \(dir.path): it is a directory"),
            (#"\#(ck), keyFile: "\#(p12)", keyPassword: "${env:MC_WRONG}""#,
             "\(at).keyFile: \(p12): wrong PKCS#12 password (the archive does not open with keyPassword ${env:MC_WRONG})"),
            (#"\#(ck), keyFile: "\#(p12)""#,
             "\(at).keyFile: \(p12): the PKCS#12 archive is protected by a password: set keyPassword"),
            (#"\#(ck), keyFile: "\#(p12)", \#(pw), keyAlias: "other""#,
             "\(at).keyFile: \(p12) holds no key with alias \"other\" (its key's alias is \"keyalias\")"),
            (#"\#(ck), keyFile: "\#(certOnly)", \#(pw)"#,
             "\(at).keyFile: \(certOnly) holds no private key (a PKCS#12 archive of certificates only: export the key together with its certificate)"),
            (#"\#(ck), keyFile: "\#(certPEM)""#, "\(at).keyFile: \(certPEM) holds no private key (it holds: CERTIFICATE)"),
            (#"\#(ck), keyPem: "${file:\#(certPEM)}""#,
             "\(at).keyPem: ${file:\(certPEM)} holds no private key (it holds: CERTIFICATE)"),
            (ck, "\(at): needs the signing key: keyFile (a PKCS#12 or PEM file) or keyPem (\"${file:...}\")"),
            (#"\#(ck), keyFile: "\#(pem)", keyPem: "${file:\#(pem)}""#, "\(at): give keyFile or keyPem, not both"),
            (#"consumerKey: "ck-inline", keyFile: "\#(pem)""#,
             "\(at).consumerKey: secrets must be a reference, \"${env:NAME}\" or \"${file:PATH}\", not inline text"),
            (#"keyFile: "\#(pem)""#, "\(at).consumerKey: is required"),
            (#"\#(ck), keyFile: "\#(pem)", keyPasword: "x""#,
             "\(at).keyPasword: unknown key (expected one of: consumerKey, keyFile, keyPem, keyPassword, keyAlias)"),
        ]
        for (fields, want) in cases {
            #expect(Self.make(fields).problems == [want], "\(fields)")
        }

        // Expired: the certificate (valid 2 days from now) three days from now.
        let later = Date().addingTimeInterval(3 * 86400)
        let (auth, problems) = Self.make(#"\#(ck), keyFile: "\#(p12)", \#(pw)"#, now: later)
        #expect(auth == nil)
        let problem = try #require(problems.first)
        #expect(problems.count == 1)
        #expect(problem.hasPrefix("\(at).keyFile: \(p12): the certificate (/CN=relay-mc-signing) expired on 20"), "\(problem)")
        #expect(problem.contains("Z: Mastercard refuses requests signed with an expired key"), "\(problem)")

        // No problem shows a secret.
        for (fields, _) in cases {
            for p in Self.make(fields).problems {
                #expect(!p.contains(MastercardKeys.password) && !p.contains("ck-1f0e!abc") && !p.contains("nope"), "\(p)")
            }
        }
    }

    // MARK: Stand-ins

    @Test("the stand-ins verify the signature with the public key and the body hash; without a key, the form only")
    func standIns() throws {
        let keys = try MastercardKeys.get()
        let key = try RSAPrivateKey(pem: keys.keyPEM)
        let body = Array(#"{"redemptionId":"R-1","statusCode":"S"}"#.utf8)
        func request(_ method: String, _ target: String, _ body: [UInt8], signedAs signer: RSAPrivateKey? = nil,
                     url: String? = nil, signedBody: [UInt8]? = nil, header: String? = nil) throws -> HTTPRequest {
            let (path, query) = target.firstIndex(of: "?").map { (String(target[..<$0]), String(target[target.index(after: $0)...])) }
                ?? (target, "")
            var headers = HTTPHeaders([("Host", "127.0.0.1:9101"), ("Content-Type", "application/json")])
            if let header { headers.add("Authorization", header) }
            if let signer {
                headers.add("Authorization", try MastercardOAuth1.authorizationHeader(
                    method: method, url: url ?? "http://127.0.0.1:9101" + target, body: signedBody ?? body,
                    consumerKey: "ck", key: signer, nonce: SecureRandom.nonce(), timestamp: 1763632800))
            }
            return HTTPRequest(method: method, path: path, query: query, headers: headers, body: body)
        }
        func description(_ r: HTTPResponse) -> String {
            MastercardErrors.parse(r.body)?.first.map { "\($0.source) \($0.reasonCode): \($0.description)" } ?? "(none)"
        }
        let verifying = MastercardRedemptionsSimulator(publicKey: try keys.publicKey)
        #expect(verifying.answer(try request("PUT", "/loyalty/redemptions", body, signedAs: key)).status == 200)
        #expect(verifying.answer(try request("PUT", "/loyalty/redemptions?a=1&a=%20", body, signedAs: key)).status == 200)
        // Signed with the URL's upper-case host and default port: the same base URI.
        #expect(verifying.answer(try request("PUT", "/loyalty/redemptions", body, signedAs: key,
                                             url: "HTTP://127.0.0.1:9101/loyalty/redemptions")).status == 200)

        let refusals: [(HTTPRequest, String)] = [
            (try request("PUT", "/loyalty/redemptions", body, signedAs: try Self.katKey()),
             "Gateway AUTHENTICATION_FAILED: OAuth signature check failed: the signature does not verify with the consumer's public key"),
            (try request("PUT", "/loyalty/redemptions", body, signedAs: key, signedBody: Array("{}".utf8)),
             "Gateway AUTHENTICATION_FAILED: OAuth signature check failed: oauth_body_hash does not match the body (the body received hashes to uFPVcNqs9P+R1wHNzEVsB3y4/2RxQYRFjsw1XZ2VwGc=)"),
            (try request("PUT", "/loyalty/redemptions?extra=1", body, signedAs: key, url: "http://127.0.0.1:9101/loyalty/redemptions"),
             "Gateway AUTHENTICATION_FAILED: OAuth signature check failed: the signature does not verify with the consumer's public key"),
            (try request("PUT", "/loyalty/redemptions", body, header: #"OAuth oauth_consumer_key="ck",oauth_nonce="n""#),
             "Gateway AUTHENTICATION_FAILED: OAuth signature check failed: oauth_timestamp is missing from the Authorization header"),
            (try request("PUT", "/loyalty/redemptions", body, header: "OAuth stand-in"),
             "Gateway AUTHENTICATION_FAILED: OAuth signature check failed: the Authorization header is not an OAuth 1.0a header (OAuth k=\"v\",...)"),
            (try request("PUT", "/loyalty/redemptions", body), "Gateway AUTHENTICATION_FAILED: the Authorization header is missing"),
        ]
        for (r, want) in refusals {
            let answer = verifying.answer(r)
            #expect(answer.status == 401)
            #expect(description(answer) == want)
            #expect(MastercardErrors.parse(answer.body)?.first?.recoverable == false)
        }

        // The fulfilment stand-in checks the same way (here a signed GET with a body, as Mastercard's page has it).
        let fulfilment = MastercardFulfillmentSimulator(publicKey: try keys.publicKey)
        let items = Array(#"{"OrderStatusArray":[{"orderId":"O-1","status":"SHIPPED"}]}"#.utf8)
        #expect(fulfilment.answer(try request("GET", "/rewards/vendors/V1/orders/status", items, signedAs: key)).status == 200)
        let wrong = fulfilment.answer(try request("POST", "/rewards/vendors/V1/orders/status", items, signedAs: try Self.katKey()))
        #expect(wrong.status == 401 && description(wrong).hasPrefix("Gateway AUTHENTICATION_FAILED: OAuth signature check failed"))

        // Without a key: the form only (any signature passes).
        #expect(MastercardRedemptionsSimulator(publicKey: nil)
            .answer(try request("PUT", "/loyalty/redemptions", body, signedAs: try Self.katKey())).status == 200)
        // The environment picks the key (a certificate or a public key PEM); a bad path answers 500 saying so.
        let dir = try TempDir("relay-mc-standin")
        defer { dir.remove() }
        let cert = try dir.write("cert.pem", keys.certificatePEM)
        let fromEnv = MastercardRedemptionsSimulator(auth: .fromEnvironment([MastercardStandInAuth.environmentVariable: cert]))
        #expect(fromEnv.answer(try request("PUT", "/loyalty/redemptions", body, signedAs: key)).status == 200)
        #expect(fromEnv.answer(try request("PUT", "/loyalty/redemptions", body, signedAs: try Self.katKey())).status == 401)
        guard case .formOnly = MastercardStandInAuth.fromEnvironment([:]) else { Issue.record("unset: form only"); return }
        let broken = MastercardRedemptionsSimulator(auth: .misconfigured("RELAY_SIM_MASTERCARD_PUBLIC_KEY: cannot read /x"))
        #expect(broken.answer(try request("PUT", "/loyalty/redemptions", body, signedAs: key)).status == 500)
    }

    // MARK: End to end

    @Test("end to end: signed deliveries reach the verifying stand-in; a different key gets a 401 and a Gateway dead letter")
    func endToEnd() throws {
        let keys = try MastercardKeys.get()
        let standIn = try startStandIn(MastercardRedemptionsSimulator(publicKey: try keys.publicKey))
        defer { standIn.stop() }
        let dir = try TempDir("relay-mc-e2e")
        defer { dir.remove() }
        let p12 = dir.file("mc.p12")
        try Data(keys.pkcs12).write(to: URL(fileURLWithPath: p12))
        let otherKey = try dir.write("other.pem", Self.katKeyPEM)
        let consumerKey = "ck-" + ByteEncoding.hex(SecureRandom.bytes(12)) + "!e2e"
        let relay = try RunningRelay(sources: """
            "vendor": { adapter: "generic", verify: { none: true }, type: "redemption.status_changed",
                        map: { subject: { redemptionId: "$.redemption" }, status: "$.state" },
                        statusMap: { "SHIPPED": "shipped" } },
            """, extra: """
            destinations: {
              "mc": { adapter: "mastercard-digital-redemptions", baseURL: "\(standIn.baseURL)/loyalty",
                      auth: { mastercardOAuth1: { consumerKey: "${env:MC_CONSUMER_KEY}", keyFile: "\(p12)",
                                                  keyPassword: "${env:MC_KEY_PASSWORD}", keyAlias: "keyalias" } } },
              "mc-other-key": { adapter: "mastercard-digital-redemptions", baseURL: "\(standIn.baseURL)/other/loyalty",
                                auth: { mastercardOAuth1: { consumerKey: "${env:MC_CONSUMER_KEY}", keyPem: "${file:\(otherKey)}" } } },
            },
            routes: [ { from: "vendor", to: ["mc", "mc-other-key"] } ],
            """, environment: ["MC_CONSUMER_KEY": consumerKey, "MC_KEY_PASSWORD": MastercardKeys.password])
        defer { relay.stop() }

        let event = try expectAccepted(try relay.client.post("/v1/hooks/vendor", json: #"{"redemption":"R-7","state":"SHIPPED"}"#))
        try DeliveryTests.waitForState(relay, event, "mc", "delivered")
        let dead = try DeliveryTests.waitForState(relay, event, "mc-other-key", "dead")

        let good = try #require(standIn.requests(path: "/loyalty/redemptions").first)
        #expect(good.status == 200 && good.bodyText == #"{"redemptionId":"R-7","statusCode":"S"}"#)
        let header = try #require(good.headers["Authorization"])
        #expect(header.hasPrefix("OAuth oauth_consumer_key=\"\(consumerKey)\",oauth_nonce=\""))
        #expect(MastercardOAuth1.parseHeader(header)?.first { $0.0 == "oauth_body_hash" }?.1
                == MastercardOAuth1.bodyHash(good.body))

        // Refused once (a signature is not resent after a 401), dead with the Gateway's reason.
        let refused = standIn.requests(path: "/other/loyalty/redemptions")
        #expect(refused.map(\.status) == [401])
        let row = try DeliveryTests.deliveryRow(relay.store, dead.id)
        #expect(row.lastStatus == 401)
        #expect(row.lastError?.contains("Gateway AUTHENTICATION_FAILED: OAuth signature check failed: the signature does not verify with the consumer's public key") == true,
                "\(row.lastError ?? "nil")")

        // Neither the consumer key nor the password is in the log or the stored attempts.
        let attempts = try DeliveryTests.attempts(relay.store, dead.id) + DeliveryTests.attempts(
            relay.store, try #require(try relay.store.deliveries(eventID: event).first { $0.destination == "mc" }).id)
        let stored = attempts.map { "\($0)" }.joined(separator: "\n") + (row.lastError ?? "")
        for secret in [consumerKey, MastercardKeys.password] {
            #expect(!relay.log.contains(secret) && !stored.contains(secret))
        }
    }
}

extension Result where Failure == AuthError {
    var mcFailureReason: String? {
        if case .failure(let e) = self { return e.reason }
        return nil
    }
}

@Suite("Mastercard signing keys")
struct MastercardSigningKeyTests {
    @Test("a signing key under 2048 bits is refused by the check, naming the key path")
    func smallKey() throws {
        let dir = try TempDir("relay-mc-small-key")
        defer { dir.remove() }
        try mcOpenSSL(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", "small.pem"], in: dir.path)
        let r = ConfigReader(environment: ["MC_CONSUMER_KEY": "ck"])
        let block = try JSONValue.parse(Data(#"{ consumerKey: "${env:MC_CONSUMER_KEY}", keyFile: "\#(dir.file("small.pem"))" }"#.utf8), json5: true)
        #expect(MastercardOAuth1Factory().make(block, path: "destinations.mc.auth.mastercardOAuth1", reader: r) == nil)
        #expect(r.problems.map(\.description).contains { $0.hasPrefix("destinations.mc.auth.mastercardOAuth1.keyFile: ") && $0.hasSuffix("an RSA key of 1024 bits; Mastercard signing keys are 2048 bits or more") },
                "\(r.problems)")
    }
}
