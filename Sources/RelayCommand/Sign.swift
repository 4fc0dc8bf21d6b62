import Crypto
import Adapters
import Foundation
import Relay

/// `relay sign SCHEME ...`: computes the credentials the relay would attach to one request and prints them, for
/// debugging a provider's refusals (compare with what its own tools compute) and for the interop tests.
enum Sign {
    static let usage = """
        relay sign mastercard-oauth1: the Authorization header the relay sends to Mastercard for one request

        usage:
          relay sign mastercard-oauth1 --consumer-key K --key FILE [--password P | --password-env NAME]
                     [--alias A] --method M --url U [--body-file F] [--nonce N --timestamp T] [--base-string]

          --consumer-key K              the consumer key from Mastercard Developers
          --key FILE                    the signing key: a PKCS#12 archive (.p12/.pfx) or a PEM private key
          --password P                  its password (visible to other users in the process list: prefer
                                        --password-env)
          --password-env NAME           read the password from environment variable NAME
          --alias A                     the PKCS#12 entry's alias (friendlyName), checked when given
          --method M --url U            the request: method and absolute URL, query included
          --body-file F                 the exact body bytes (- for stdin); none: an empty body
          --nonce N --timestamp T       fixed values (default: 16 random alphanumerics, the current Unix time)
          --base-string                 also print the signature base string on stderr

        Prints the header's value (OAuth oauth_consumer_key="...",...,oauth_signature="...") on stdout. Exit codes:
        0 signed, 2 bad arguments or a key that cannot sign.
        """

    static let overview = """
        relay sign: print the credentials the relay would attach to one request, to compare with what a
        provider's own tools compute (debugging its refusals)

        usage:
          relay sign SCHEME OPTIONS...

        schemes:
          mastercard-oauth1             Mastercard's OAuth 1.0a Authorization header (RSA-SHA256 with a body hash);
                                        relay sign mastercard-oauth1 --help lists its options

        exit codes: 0 signed, 2 bad arguments or a key that cannot sign
        """

    /// Each scheme's usage (`relay sign SCHEME --help`); a new scheme adds its entry here and a case in `run`.
    static let usages: [String: String] = ["mastercard-oauth1": usage]

    static func run(_ args: [String]) -> Int32 {
        let schemes = usages.keys.sorted().joined(separator: ", ")
        guard let scheme = args.first else {
            Command.fail("relay sign: which scheme? (there is: \(schemes))\n\n\(overview)")
            return 2
        }
        switch scheme {
        case "mastercard-oauth1":
            return mastercardOAuth1(Array(args.dropFirst()))
        default:
            let what = scheme.hasPrefix("-") ? "unknown option \"\(scheme)\" (give the scheme first)" : "unknown scheme \"\(scheme)\""
            Command.fail("relay sign: \(what) (there is: \(schemes))\n\n\(overview)")
            return 2
        }
    }

    static func mastercardOAuth1(_ args: [String]) -> Int32 {
        let valued: Set = ["--consumer-key", "--key", "--password", "--password-env", "--alias", "--method", "--url",
                           "--body-file", "--nonce", "--timestamp"]
        var options: [String: String] = [:]
        var showBase = false
        var i = 0
        while i < args.count {
            var a = args[i]
            var value: String?
            if let eq = a.firstIndex(of: "="), a.hasPrefix("--") {
                value = String(a[a.index(after: eq)...])
                a = String(a[..<eq])
            }
            if a == "--base-string" && value == nil {
                showBase = true
                i += 1
                continue
            }
            guard valued.contains(a) else { return usageError("unknown option \(args[i])") }
            if value == nil {
                guard i + 1 < args.count else { return usageError("\(a) needs a value") }
                value = args[i + 1]
                i += 1
            }
            if options[a] != nil { return usageError("\(a) given twice") }
            options[a] = value
            i += 1
        }
        for required in ["--consumer-key", "--key", "--method", "--url"] where options[required] == nil {
            return usageError("\(required) is required")
        }
        if options["--password"] != nil && options["--password-env"] != nil {
            return usageError("give --password or --password-env, not both")
        }
        var password = options["--password"]
        if let name = options["--password-env"] {
            guard let p = ProcessInfo.processInfo.environment[name] else {
                return usageError("--password-env: environment variable \(name) is not set")
            }
            password = p
        }
        let consumerKey = options["--consumer-key"]!, method = options["--method"]!, url = options["--url"]!
        guard !consumerKey.isEmpty, !consumerKey.unicodeScalars.contains(where: { $0 == "\"" || $0.value < 0x20 }) else {
            return usageError("--consumer-key must be non-empty, without quotes or control characters")
        }
        guard !method.isEmpty, method.allSatisfy({ $0.isASCII && ($0.isLetter || $0 == "-" || $0 == "_") }) else {
            return usageError("--method \"\(method)\" is not an HTTP method")
        }
        guard let base = MastercardOAuth1.baseURI(url), base.hasPrefix("http://") || base.hasPrefix("https://") else {
            return usageError("--url \"\(url)\" is not an absolute http(s) URL")
        }
        let nonce = options["--nonce"] ?? SecureRandom.nonce(length: 16)
        guard !nonce.isEmpty, !nonce.unicodeScalars.contains(where: { $0 == "\"" || $0.value < 0x20 }) else {
            return usageError("--nonce must be non-empty, without quotes or control characters")
        }
        var timestamp = Int64(Date().timeIntervalSince1970.rounded(.down))
        if let t = options["--timestamp"] {
            guard let v = Int64(t), v >= 0 else { return usageError("--timestamp \"\(t)\" is not Unix seconds") }
            timestamp = v
        }
        var body: [UInt8] = []
        if let file = options["--body-file"] {
            if file == "-" {
                body = [UInt8](FileHandle.standardInput.readDataToEndOfFile())
            } else {
                guard let data = FileManager.default.contents(atPath: file) else {
                    Command.fail("relay sign: --body-file: cannot read \(file)")
                    return 2
                }
                body = [UInt8](data)
            }
        }
        let loaded: MastercardSigningKey.Loaded
        switch MastercardSigningKey.load(file: options["--key"]!, password: password, alias: options["--alias"],
                                         passwordName: options["--password-env"] != nil ? "--password-env" : "--password") {
        case .success(let k): loaded = k
        case .failure(let why):
            Command.fail("relay sign: --key: \(why)")
            return 2
        }
        if let expired = MastercardSigningKey.expiry(loaded.certificate, now: Date()) {
            Command.fail("relay sign: warning: \(expired) (signing anyway)")
        }
        do {
            let header = try MastercardOAuth1.authorizationHeader(method: method, url: url, body: body,
                                                                  consumerKey: consumerKey, key: loaded.key,
                                                                  nonce: nonce, timestamp: timestamp)
            if showBase {
                let params = MastercardOAuth1.oauthParameters(consumerKey: consumerKey, nonce: nonce,
                                                              timestamp: timestamp, body: body)
                Command.fail(MastercardOAuth1.baseString(method: method, url: url, oauth: params) ?? "")
            }
            print(header)
            return 0
        } catch {
            Command.fail("relay sign: \(error.reason)")
            return 2
        }
    }

    static func usageError(_ message: String) -> Int32 {
        Command.fail("relay sign mastercard-oauth1: \(message)\n\n\(usage)")
        return 2
    }
}
