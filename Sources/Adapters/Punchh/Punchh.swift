import Foundation
import Relay
import Simulator
import Synchronization

// The Punchh adapter: `PunchhSource` (inbound webhooks, PunchhSource.swift), `PunchhDestination` (redemption code
// process/void, PunchhDestination.swift), and the stand-in below (`relay simulate punchh`, port 9103).

/// Stand-in for Punchh's redemption code API: `PUT …/api/v1/redemption_codes/{code}` (any prefix before `/api/v1`),
/// with the codes' states kept in memory.
///
/// - Auth: `Authorization: Token token="KEY"` or `Token token=KEY, btoken=BUSINESS_KEY` (values quoted or not);
///   only the form is checked. Anything else: 401 `{"error": "..."}`.
/// - Params come form-encoded in the body (a body of any other type is refused with 400) or in the query:
///   `process=true`, `void=true`, `amount=<number>`. No params: the current status.
/// - Codes: starting `expired` (any case) are expired; starting `invalid` or `unknown` do not exist (`invalid`);
///   every other code starts redeemable. `process` moves redeemable -> processed (processing a processed code
///   answers `processed` again); `void` moves redeemable or processed -> voided.
/// - Answer: 200 `{"status": "<text>", "category": "...", "redemption_amount": n}`. The category of a voided code
///   is not documented; the stand-in answers `unassigned` (its assumption).
public struct PunchhSimulator: SinkResponder {
    let book: PunchhCodeBook

    public init() { book = PunchhCodeBook() }

    public func answer(_ request: HTTPRequest) -> HTTPResponse {
        let marker = "/api/v1/redemption_codes/"
        guard let range = request.path.range(of: marker) else {
            return Self.error(404, "not found: the stand-in serves PUT /api/v1/redemption_codes/{id}")
        }
        let rawID = String(request.path[range.upperBound...])
        guard !rawID.isEmpty, !rawID.contains("/"), let id = rawID.removingPercentEncoding, !id.isEmpty else {
            return Self.error(404, "not found: no redemption code in the path")
        }
        guard request.method == "PUT" else {
            return Self.error(405, "method \(request.method) not allowed: use PUT",
                              headers: [("Allow", "PUT")])
        }
        guard Self.wellFormedAuthorization(request.headers["Authorization"]) else {
            return Self.error(401, "You need to sign in: Authorization must be Token token=\"LOCATION_KEY\" (or Token token=LOCATION_KEY, btoken=BUSINESS_KEY)")
        }
        var params: [(String, String)] = request.query.isEmpty ? [] : (Ingest.parseForm(Array(request.query.utf8)) ?? [])
        if !request.body.isEmpty {
            let media = Wire.mediaType(request)
            guard media == "application/x-www-form-urlencoded" else {
                return Self.error(400, "the body must be application/x-www-form-urlencoded (got \(media.isEmpty ? "no Content-Type" : media))")
            }
            guard let fields = Wire.form(request) else {
                return Self.error(400, "the body is not valid form encoding")
            }
            params += fields
        }
        var process = false, void = false
        var amount: Double?
        for (k, v) in params {
            switch k {
            case "process", "void":
                let value: Bool
                switch v.lowercased() {
                case "true", "1": value = true
                case "false", "0", "": value = false
                default: return Self.error(422, "\(k) must be true or false, not \"\(v)\"")
                }
                if k == "process" { process = value } else { void = value }
            case "amount":
                guard let n = Double(v), n.isFinite, n >= 0 else {
                    return Self.error(422, "amount must be a number, not \"\(v)\"")
                }
                amount = n
            default:
                continue
            }
        }
        if process && void {
            return Self.error(422, "process and void cannot be asked together")
        }
        let (state, redeemed) = book.apply(id, process: process, void: void, amount: amount)
        return Wire.answer(200, .object(["status": .string(state.text(id)), "category": .string(state.category),
                                         "redemption_amount": .number(redeemed)]))
    }

    /// Punchh's error form: `{"error": "..."}`.
    static func error(_ status: Int, _ message: String, headers: [(String, String)] = []) -> HTTPResponse {
        Wire.answer(status, .object(["error": .string(message)]), headers: headers)
    }

    /// `{"error": "..."}`, as its own refusals: the error answers of `--fault` rules.
    public func errorBody(status: Int, message: String) -> JSONValue? { .object(["error": .string(message)]) }

    /// `Token token="KEY"` / `Token token=KEY` alone, or followed by `, btoken=KEY`; values not empty.
    static func wellFormedAuthorization(_ header: String?) -> Bool {
        guard let header, header.hasPrefix("Token ") else { return false }
        let parts = header.dropFirst(6).split(separator: ",", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces) }
        let names = parts.count == 1 ? ["token"] : parts.count == 2 ? ["token", "btoken"] : []
        guard !names.isEmpty else { return false }
        for (part, name) in zip(parts, names) {
            guard part.hasPrefix(name + "=") else { return false }
            var value = Substring(part.dropFirst(name.count + 1))
            if value.hasPrefix("\"") {
                guard value.count >= 2, value.hasSuffix("\"") else { return false }
                value = value.dropFirst().dropLast()
            }
            guard !value.isEmpty, !value.contains("\""), !value.contains(" ") else { return false }
        }
        return true
    }
}

/// What the stand-in knows of each code it has changed (the others are in their initial state).
final class PunchhCodeBook: Sendable {
    enum State: Sendable {
        case redeemable, processed, voided, expired, invalid

        var category: String {
            switch self {
            case .redeemable: return "redeemable"
            case .processed: return "processed"
            case .voided: return "unassigned"   // not documented by Punchh: the stand-in's assumption
            case .expired: return "expired"
            case .invalid: return "invalid"
            }
        }

        func text(_ id: String) -> String {
            switch self {
            case .redeemable: return "Redemption code \(id) is valid and can be honoured"
            case .processed: return "Redemption code \(id) has been processed"
            case .voided: return "Redemption code \(id) has been voided"
            case .expired: return "Redemption code \(id) has expired"
            case .invalid: return "Redemption code \(id) is invalid: no such code"
            }
        }
    }

    struct Entry {
        var state: State
        var amount: Double
    }

    private let codes = Mutex<[String: Entry]>([:])

    static func initial(_ id: String) -> State {
        let lower = id.lowercased()
        if lower.hasPrefix("expired") { return .expired }
        if lower.hasPrefix("invalid") || lower.hasPrefix("unknown") { return .invalid }
        return .redeemable
    }

    /// Applies `process` or `void` (or nothing) to code `id`; returns its state and redemption amount after.
    func apply(_ id: String, process: Bool, void: Bool, amount: Double?) -> (State, Double) {
        codes.withLock { codes in
            var entry = codes[id] ?? Entry(state: Self.initial(id), amount: 0)
            switch entry.state {
            case .redeemable where process:
                entry.state = .processed
                if let amount { entry.amount = amount }
            case .redeemable where void, .processed where void:
                entry.state = .voided
            default:
                break
            }
            if entry.state != .invalid { codes[id] = entry }
            return (entry.state, entry.amount)
        }
    }
}
