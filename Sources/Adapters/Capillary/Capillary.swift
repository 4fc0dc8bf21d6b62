import Foundation
import Relay

// Capillary (rewards, vendor redemptions, fulfilment status). Three parts:
// - CapillaryDestination (CapillaryDestination.swift): PUT .../rewards/core/v1/management/transactions, the
//   fulfilment status of an issued reward;
// - CapillarySource (CapillarySource.swift): the call Capillary makes to the relay from a vendor redemption's
//   action (its body is a template the brand writes, so every path is configurable);
// - CapillarySimulator (CapillarySimulator.swift): the stand-in of `relay simulate capillary` (port 9105).

public struct CapillarySourceFactory: SourceAdapterFactory {
    public init() {}
    public var name: String { "capillary" }
    public var sourceKeys: [String] { ["map", "statusMap", "type"] }
    public func makeSource(name: String, config: [String: JSONValue], path: String, reader: ConfigReader) -> (any SourceAdapter)? {
        CapillarySource.make(config: config, path: path, reader: reader)
    }
}

public struct CapillaryDestinationFactory: DestinationAdapterFactory {
    public init() {}
    public var name: String { "capillary" }
    public var destinationKeys: [String] {
        DestinationBasics.keys + ["transactionId", "customerId", "rewardId", "customFields", "statusMap", "skipValidation"]
    }
    public func makeDestination(name: String, config: [String: JSONValue], path: String, reader: ConfigReader) -> (any DestinationAdapter)? {
        CapillaryDestination.make(config: config, path: path, reader: reader)
    }
}

/// Capillary's response envelope: `{"status":{"success":true,"code":200,"message":"..."}}`.
enum CapillaryEnvelope {
    static func read(_ json: JSONValue?) -> (success: Bool, code: String?, message: String?)? {
        guard let status = json?["status"]?.objectValue, let success = status["success"] else { return nil }
        let ok: Bool
        switch success {
        case .bool(let b): ok = b
        case .string(let s) where ["true", "false"].contains(s.lowercased()): ok = s.lowercased() == "true"
        default: return nil
        }
        return (ok, status["code"]?.scalarText, status["message"]?.scalarText)
    }

    static func text(_ code: String?, _ message: String?) -> String? {
        switch (code, message) {
        case (let c?, let m?): return "\(c): \(m)"
        case (let c?, nil): return c
        case (nil, let m?): return m
        default: return nil
        }
    }

    static func answer(_ status: Int, success: Bool, code: Int, _ message: String,
                       extra: [String: JSONValue] = [:]) -> HTTPResponse {
        Wire.answer(status, body(success: success, code: code, message, extra: extra))
    }

    /// `{"status":{"success":...,"code":...,"message":...}}` and `extra`'s keys beside it.
    static func body(success: Bool, code: Int, _ message: String, extra: [String: JSONValue] = [:]) -> JSONValue {
        var body = extra
        body["status"] = .object(["success": .bool(success), "code": .number(Double(code)), "message": .string(message)])
        return .object(body)
    }
}
