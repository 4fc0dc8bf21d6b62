import Foundation
import Relay
import Simulator
import Synchronization

/// Stand-in for Returning.AI's `PUT /v1/redemption-transactions/status` (`relay simulate returning-ai`, port 9104).
///
/// Checks what the documentation asks for and answers in Returning.AI's shapes:
/// - `PUT` on a path ending `/v1/redemption-transactions/status` (any prefix, e.g. `/apis`); other paths 404,
///   other methods 405;
/// - `Authorization: Bearer <API key>` (the form only: any non-empty key), else 401;
/// - a JSON object body with `transactionId` (non-empty string), `statusId` (24 hexadecimal characters) and, when
///   present, `refundCoins` (boolean), else 400; a body with `statusID` instead of `statusId` gets a 400 that says
///   the documentation spells it `statusId`;
/// - a transaction id starting `UNKNOWN` is a transaction the community does not have: 404;
/// - refunding the coins of a transaction whose coins were already refunded: 409 (conflicting state);
/// - otherwise 200 `{"status":"success","message":"...","data":{"transactionId","statusId","status":{...}}}`, and
///   the transaction's status is remembered (`statusId(of:)`).
/// Errors are `{"status":"error","message":"..."}`, the error answers of `--fault` rules too.
public struct ReturningAISimulator: SinkResponder {
    final class State: Sendable {
        struct Transaction { var statusId: String; var refunded: Bool }
        let transactions = Mutex<[String: Transaction]>([:])
    }
    let state = State()

    public init() {}

    /// The status id last set on `transactionId`, if any.
    public func statusId(of transactionId: String) -> String? {
        state.transactions.withLock { $0[transactionId]?.statusId }
    }

    static func error(_ status: Int, _ message: String) -> HTTPResponse {
        Wire.answer(status, errorEnvelope(message))
    }

    static func errorEnvelope(_ message: String) -> JSONValue {
        .object(["status": .string("error"), "message": .string(message)])
    }

    public func errorBody(status: Int, message: String) -> JSONValue? { Self.errorEnvelope(message) }

    public func answer(_ request: HTTPRequest) -> HTTPResponse {
        guard request.path.hasSuffix(ReturningAIDestination.path) else {
            return Self.error(404, "Route \(request.method) \(request.path) not found (PUT .../v1/redemption-transactions/status)")
        }
        guard request.method == "PUT" else {
            return Self.error(405, "Method \(request.method) not allowed: use PUT").adding(headers: [("Allow", "PUT")])
        }
        let auth = request.headers["Authorization"] ?? ""
        let parts = auth.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer",
              !parts[1].trimmingCharacters(in: .whitespaces).isEmpty else {
            return Self.error(401, auth.isEmpty ? "Unauthorized: missing Authorization header (Authorization: Bearer <API key>)"
                                                : "Unauthorized: expected Authorization: Bearer <API key>")
        }
        guard Wire.mediaType(request) == "application/json" else {
            return Self.error(400, "Content-Type must be application/json")
        }
        guard let body = Wire.json(request), let o = body.objectValue else {
            return Self.error(400, "Request body must be a JSON object")
        }
        guard let transactionId = o["transactionId"]?.stringValue, !transactionId.isEmpty else {
            return Self.error(400, "transactionId is required (a non-empty string)")
        }
        guard let statusValue = o["statusId"] else {
            if o["statusID"] != nil {
                return Self.error(400, "statusId is required: this body has \"statusID\", the API documentation spells it \"statusId\"")
            }
            return Self.error(400, "statusId is required (the 24-hex id of a community redemption status)")
        }
        guard let statusId = statusValue.stringValue, ReturningAIDestination.isStatusId(statusId) else {
            return Self.error(400, "statusId must be a 24 character hexadecimal id, found \(statusValue.jsonString())")
        }
        var refund = false
        if let r = o["refundCoins"] {
            guard let b = r.boolValue else {
                return Self.error(400, "refundCoins must be a boolean, found \(r.jsonString())")
            }
            refund = b
        }
        if transactionId.hasPrefix("UNKNOWN") {
            return Self.error(404, "Redemption transaction \(transactionId) not found in this community")
        }
        let conflict: Bool = state.transactions.withLock { t in
            if refund && t[transactionId]?.refunded == true { return true }
            let wasRefunded = t[transactionId]?.refunded ?? false
            t[transactionId] = State.Transaction(statusId: statusId, refunded: wasRefunded || refund)
            return false
        }
        if conflict {
            return Self.error(409, "Coins of redemption transaction \(transactionId) were already refunded")
        }
        let status: JSONValue = .object(["_id": .string(statusId), "name": .string("Status \(statusId.suffix(6))"),
                                         "category": .string(refund ? "refunded" : "incomplete"),
                                         "color": .string("#3EA1FD")])
        return Wire.answer(200, .object([
            "status": .string("success"),
            "message": .string("Redemption transaction status updated successfully"),
            "data": .object(["transactionId": .string(transactionId), "statusId": .string(statusId), "status": status]),
        ]))
    }
}
