import Crypto
import Foundation
import Relay

/// One item of Mastercard's error envelope, shared by its APIs (Digital Redemptions, the fulfilment service...):
///
/// ```json
/// {"Errors":{"Error":[{"Source":"Gateway","ReasonCode":"AUTHENTICATION_FAILED",
///                      "Description":"...","Recoverable":"false","Details":null}]}}
/// ```
public struct MastercardError: Sendable, Equatable {
    public var source: String
    public var reasonCode: String
    public var description: String
    /// `Recoverable` as sent: `"true"` / `"false"` (any case) or a boolean; nil when absent or unreadable.
    public var recoverable: Bool?
    public var details: String?

    public init(source: String, reasonCode: String, description: String, recoverable: Bool?, details: String? = nil) {
        self.source = source
        self.reasonCode = reasonCode
        self.description = description
        self.recoverable = recoverable
        self.details = details
    }

    /// `Source ReasonCode: Description`, leaving out what is empty.
    public var summary: String {
        let head = [source, reasonCode].filter { !$0.isEmpty }.joined(separator: " ")
        if description.isEmpty { return head.isEmpty ? "(no detail)" : head }
        return head.isEmpty ? description : head + ": " + description
    }
}

/// Reading and writing Mastercard's `Errors` envelope, and classifying a response by it.
public enum MastercardErrors {
    /// The items of an `Errors` envelope in `body`, or nil when the body is not such an envelope.
    ///
    /// Tolerant of what the documentation leaves loose: keys in any case (`Errors`/`errors`, `ReasonCode`/
    /// `reasonCode`), `Error` as one object instead of a list, `Errors` as a bare list of items, `Recoverable` as
    /// a string (`"true"`, `"FALSE"`) or a boolean.
    public static func parse(_ body: [UInt8]) -> [MastercardError]? {
        guard !body.isEmpty, let json = try? JSONParser.parse(body) else { return nil }
        return parse(json)
    }

    public static func parse(_ json: JSONValue) -> [MastercardError]? {
        guard let errors = field(json, "Errors") else { return nil }
        let list: [JSONValue]
        switch errors {
        case .array(let a): list = a
        case .object:
            guard let inner = field(errors, "Error") else { return nil }
            switch inner {
            case .array(let a): list = a
            case .object: list = [inner]
            default: return nil
            }
        default: return nil
        }
        let items = list.compactMap(item)
        return items.isEmpty ? nil : items
    }

    static func item(_ v: JSONValue) -> MastercardError? {
        guard case .object = v else { return nil }
        func text(_ key: String) -> String {
            guard let x = field(v, key), !x.isNull else { return "" }
            if case .string(let s) = x { return s }
            return x.scalarText ?? x.jsonString()
        }
        var recoverable: Bool?
        switch field(v, "Recoverable") {
        case .bool(let b)?: recoverable = b
        case .string(let s)?:
            switch s.trimmingCharacters(in: .whitespaces).lowercased() {
            case "true": recoverable = true
            case "false": recoverable = false
            default: recoverable = nil
            }
        default: recoverable = nil
        }
        let details = field(v, "Details").flatMap { $0.isNull ? nil : ($0.stringValue ?? $0.jsonString()) }
        return MastercardError(source: text("Source"), reasonCode: text("ReasonCode"), description: text("Description"),
                               recoverable: recoverable, details: details)
    }

    /// `key` of an object, exactly or else case-insensitively.
    static func field(_ v: JSONValue, _ key: String) -> JSONValue? {
        guard case .object(let o) = v else { return nil }
        if let x = o[key] { return x }
        let lower = key.lowercased()
        return o.first { $0.key.lowercased() == lower }?.value
    }

    /// How a Mastercard API's answer ends a delivery:
    /// - 2xx: delivered;
    /// - an `Errors` envelope: retried (honouring `Retry-After`) when any item says `Recoverable: true`, terminal
    ///   when every item says `false`; when none says `true` and some say nothing, the status decides as `byStatus`
    ///   does. The reason lists every item as `Source ReasonCode: Description`;
    /// - anything else: `byStatus` (the relay's default reading: 408, 425, 429, 5xx retried, the rest terminal).
    public static func classify(_ response: OutboundResponse,
                                byStatus: (OutboundResponse) -> Classification) -> Classification {
        let status = response.status
        if (200..<300).contains(status) { return .delivered }
        guard let items = parse(response.body) else { return byStatus(response) }
        let reason = "HTTP \(status): " + items.map(\.summary).joined(separator: "; ")
        let after = RetryPolicy.retryAfter(response.headers["Retry-After"])
        if items.contains(where: { $0.recoverable == true }) { return .retry(reason: reason, after: after) }
        if items.allSatisfy({ $0.recoverable == false }) { return .terminal(reason: reason) }
        switch byStatus(response) {
        case .retry: return .retry(reason: reason, after: after)
        case .delivered, .terminal: return .terminal(reason: reason)
        }
    }

    // MARK: Stand-ins

    /// The envelope for `items`, as Mastercard writes it (`Recoverable` as a string, `Details` null).
    public static func envelope(_ items: [MastercardError]) -> JSONValue {
        .object(["Errors": .object(["Error": .array(items.map { e in
            .object(["Source": .string(e.source), "ReasonCode": .string(e.reasonCode),
                     "Description": .string(e.description),
                     "Recoverable": .string(e.recoverable == true ? "true" : "false"),
                     "Details": e.details.map(JSONValue.string) ?? .null])
        })])])
    }

    /// A stand-in's error answer.
    public static func answer(_ status: Int, _ items: [MastercardError], headers: [(String, String)] = []) -> HTTPResponse {
        Wire.answer(status, envelope(items), headers: headers)
    }

    /// The stand-ins' envelope for an error a `--fault` rule injects (`status:503`, `retryAfter`, `hang`'s 504):
    /// one Gateway item whose ReasonCode names the status, Recoverable `true` for what the relay retries (408, 425,
    /// 429, 5xx) and `false` otherwise.
    public static func faultEnvelope(status: Int, message: String) -> JSONValue {
        let codes = [400: "BAD_REQUEST", 401: "AUTHENTICATION_FAILED", 403: "FORBIDDEN", 404: "RESOURCE_NOT_FOUND",
                     408: "REQUEST_TIMEOUT", 409: "CONFLICT", 422: "UNPROCESSABLE_ENTITY", 429: "RATE_LIMIT_EXCEEDED",
                     500: "INTERNAL_SERVER_ERROR", 502: "BAD_GATEWAY", 503: "SERVICE_UNAVAILABLE", 504: "GATEWAY_TIMEOUT"]
        let recoverable = [408, 425, 429].contains(status) || (500..<600).contains(status)
        return envelope([MastercardError(source: "Gateway", reasonCode: codes[status] ?? "HTTP_\(status)",
                                         description: message, recoverable: recoverable)])
    }

    /// A non-recoverable item (what the stand-ins send for a request that is wrong).
    public static func error(_ source: String, _ reasonCode: String, _ description: String) -> MastercardError {
        MastercardError(source: source, reasonCode: reasonCode, description: description, recoverable: false)
    }

    /// The checks both stand-ins make before reading the body: the `Authorization` header (its OAuth form, and
    /// with a public key the signature and body hash, see `MastercardStandInAuth`), then the method. nil when both
    /// pass.
    static func gate(_ request: HTTPRequest, methods: [String], auth: MastercardStandInAuth) -> HTTPResponse? {
        let header = request.headers["Authorization"]?.trimmingCharacters(in: .whitespaces) ?? ""
        func refuse(_ why: String) -> HTTPResponse {
            answer(401, [MastercardError(source: "Gateway", reasonCode: "AUTHENTICATION_FAILED",
                                         description: why, recoverable: false)])
        }
        if header.isEmpty { return refuse("the Authorization header is missing") }
        if !header.hasPrefix("OAuth ") {
            return refuse("the Authorization header is not an OAuth 1.0a header (\"OAuth oauth_consumer_key=...\")")
        }
        switch auth {
        case .formOnly:
            break
        case .misconfigured(let why):
            return answer(500, [error("Gateway", "STAND_IN_MISCONFIGURED", why)])
        case .verify(let key):
            let url = "http://" + (request.headers["Host"] ?? "") + request.target
            if let why = MastercardOAuth1.verify(method: request.method, url: url, body: request.body,
                                                 authorization: header, publicKey: key) {
                return refuse("OAuth signature check failed: " + why)
            }
        }
        if !methods.contains(request.method) {
            return answer(405, [error("Gateway", "METHOD_NOT_ALLOWED",
                                      "\(request.method) is not allowed here (allowed: \(methods.joined(separator: ", ")))")],
                          headers: [("Allow", methods.joined(separator: ", "))])
        }
        return nil
    }

    /// The JSON object body of a request, or the error answer saying why there is none.
    enum Body {
        case object([String: JSONValue])
        case refused(HTTPResponse)
    }

    static func jsonBody(_ request: HTTPRequest) -> Body {
        let media = Wire.mediaType(request)
        guard media == "application/json" || media.hasSuffix("+json") else {
            return .refused(answer(415, [error("Request", "INVALID_CONTENT_TYPE",
                                               "Content-Type must be application/json (was \"\(media)\")")]))
        }
        guard let json = Wire.json(request) else {
            return .refused(answer(400, [error("Request", "INVALID_JSON", "the body is not JSON")]))
        }
        guard case .object(let o) = json else {
            return .refused(answer(400, [error("Request", "INVALID_JSON", "the body must be a JSON object, found \(json.kindName)")]))
        }
        return .object(o)
    }

    /// Whether `s` is a real calendar date written `yyyy-MM-dd`.
    static func isPlainDate(_ s: String) -> Bool { MastercardDates.parse(s).map { $0.plain } == true }
}

/// How a Mastercard stand-in checks a request's OAuth 1.0a `Authorization` header.
public enum MastercardStandInAuth: Sendable {
    /// Its form only (`OAuth k="v",...`), not its signature.
    case formOnly
    /// As Mastercard's gateway does: the RSA-SHA256 signature over the base string rebuilt from the request received
    /// (method, `http://` + `Host` + path and query, the header's oauth parameters), verified with the consumer's
    /// public key, and `oauth_body_hash` against the body. A failure is a 401 `Errors` envelope, Source `Gateway`,
    /// saying which check failed.
    case verify(RSAPublicKey)
    /// `RELAY_SIM_MASTERCARD_PUBLIC_KEY` names no usable key: every request gets a 500 saying so.
    case misconfigured(String)

    /// The variable naming the consumer's public key (a PEM public key or certificate file) for the stand-ins.
    public static let environmentVariable = "RELAY_SIM_MASTERCARD_PUBLIC_KEY"

    /// `verify` with the key `RELAY_SIM_MASTERCARD_PUBLIC_KEY` names, `formOnly` when it is unset or empty.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment)
        -> MastercardStandInAuth {
        guard let path = environment[environmentVariable], !path.isEmpty else { return .formOnly }
        guard let data = FileManager.default.contents(atPath: path) else {
            return reportMisconfigured("\(environmentVariable): cannot read \(path)")
        }
        do {
            return .verify(try RSAPublicKey(pem: String(decoding: data, as: UTF8.self)))
        } catch {
            return reportMisconfigured("\(environmentVariable): \(path): \((error as? CryptoError)?.message ?? "\(error)")")
        }
    }

    /// A publicKey choice: verify with it, or check the form only.
    public init(publicKey: RSAPublicKey?) {
        self = publicKey.map { .verify($0) } ?? .formOnly
    }

    private static func reportMisconfigured(_ why: String) -> MastercardStandInAuth {
        FileHandle.standardError.write(Data("mastercard stand-in: \(why); every request will be answered 500\n".utf8))
        return .misconfigured(why)
    }
}

/// Dates as Mastercard wants them and as events carry them.
enum MastercardDates {
    static let utc = TimeZone(identifier: "UTC")!

    static var calendar: Calendar {
        var c = Calendar(identifier: .gregorian)
        c.timeZone = utc
        return c
    }

    /// `yyyy-MM-dd` (midnight UTC; `plain` true) or an RFC 3339 date-time (`2026-11-20T10:00:00.5+02:00`, also
    /// with a space or a lower-case `t`/`z`).
    static func parse(_ text: String) -> (date: Date, plain: Bool)? {
        let b = Array(text.trimmingCharacters(in: .whitespaces).utf8)
        var i = 0
        func digits(_ n: Int) -> Int? {
            guard i + n <= b.count else { return nil }
            var v = 0
            for k in i..<(i + n) {
                guard b[k] >= 0x30 && b[k] <= 0x39 else { return nil }
                v = v * 10 + Int(b[k] - 0x30)
            }
            i += n
            return v
        }
        func expect(_ c: UInt8) -> Bool {
            guard i < b.count, b[i] == c else { return false }
            i += 1
            return true
        }
        guard let year = digits(4), expect(UInt8(ascii: "-")), let month = digits(2), expect(UInt8(ascii: "-")),
              let day = digits(2) else { return nil }
        var c = DateComponents(calendar: calendar, timeZone: utc, year: year, month: month, day: day,
                               hour: 0, minute: 0, second: 0)
        guard (1...12).contains(month), (1...31).contains(day) else { return nil }
        var offset = 0
        var fraction = 0.0
        let plain = i == b.count
        if !plain {
            guard i < b.count, [UInt8(ascii: "T"), UInt8(ascii: "t"), UInt8(ascii: " ")].contains(b[i]) else { return nil }
            i += 1
            guard let h = digits(2), expect(UInt8(ascii: ":")), let m = digits(2), expect(UInt8(ascii: ":")),
                  let s = digits(2), h < 24, m < 60, s < 61 else { return nil }
            c.hour = h
            c.minute = m
            c.second = min(s, 59)
            if i < b.count, b[i] == UInt8(ascii: ".") {
                i += 1
                let start = i
                var scale = 0.1
                while i < b.count, b[i] >= 0x30 && b[i] <= 0x39 {
                    fraction += Double(b[i] - 0x30) * scale
                    scale /= 10
                    i += 1
                }
                guard i > start else { return nil }
            }
            guard i < b.count else { return nil }
            switch b[i] {
            case UInt8(ascii: "Z"), UInt8(ascii: "z"):
                i += 1
            case UInt8(ascii: "+"), UInt8(ascii: "-"):
                let sign = b[i] == UInt8(ascii: "-") ? -1 : 1
                i += 1
                guard let oh = digits(2), expect(UInt8(ascii: ":")), let om = digits(2), oh < 24, om < 60 else { return nil }
                offset = sign * (oh * 3600 + om * 60)
            default:
                return nil
            }
            guard i == b.count else { return nil }
        }
        // Reject dates that do not exist (2026-02-30): the calendar would roll them over.
        guard let date = calendar.date(from: c) else { return nil }
        let back = calendar.dateComponents([.year, .month, .day], from: date)
        guard back.year == year, back.month == month, back.day == day else { return nil }
        return (date.addingTimeInterval(fraction - Double(offset)), plain)
    }

    /// `date` written with `format` (a `DateFormatter` pattern), in UTC, en_US_POSIX.
    static func format(_ date: Date, _ format: String) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.calendar = calendar
        f.timeZone = utc
        f.dateFormat = format
        return f.string(from: date)
    }
}
