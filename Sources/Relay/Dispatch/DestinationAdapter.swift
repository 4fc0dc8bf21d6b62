import Foundation

/// What an attempt's answer means for the delivery.
public enum Classification: Sendable, Equatable {
    case delivered
    /// Worth another attempt; `after` is the destination's own wish (Retry-After), in seconds.
    case retry(reason: String, after: Double?)
    /// Retrying cannot help: dead-letter at once.
    case terminal(reason: String)
}

/// One delivery being translated: which attempt, to where.
public struct DeliveryContext: Sendable {
    public var deliveryID: String
    public var destination: String
    /// 1 for the first attempt.
    public var attempt: Int
}

/// A translation that cannot be made (a status with no mapping, a field the destination requires is missing).
public struct TranslateError: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// Turns a canonical event into one provider's HTTP request, and reads that provider's answers.
public protocol DestinationAdapter: Sendable {
    func translate(_ event: CanonicalEvent, context: DeliveryContext) throws(TranslateError) -> OutboundRequest
    func classify(_ response: OutboundResponse) -> Classification
}

extension DestinationAdapter {
    public func classify(_ response: OutboundResponse) -> Classification { Self.classifyByStatus(response) }

    /// The default reading: 2xx delivered; 408, 425, 429 and 5xx retried (honouring Retry-After); any other status
    /// (other 4xx, a redirect, which is not followed) is terminal.
    public static func classifyByStatus(_ response: OutboundResponse) -> Classification {
        let s = response.status
        if (200..<300).contains(s) { return .delivered }
        if s == 408 || s == 425 || s == 429 || (500..<600).contains(s) {
            return .retry(reason: "HTTP \(s)", after: RetryPolicy.retryAfter(response.headers["Retry-After"]))
        }
        return .terminal(reason: "HTTP \(s)")
    }
}

/// Builds a destination adapter from its configuration block.
public protocol DestinationAdapterFactory: Sendable {
    var name: String { get }
    /// Keys this adapter reads from a destination block, beside `adapter` and the delivery policy's keys.
    var destinationKeys: [String] { get }
    func makeDestination(name: String, config: [String: JSONValue], path: String,
                         reader: ConfigReader) -> (any DestinationAdapter)?
}
