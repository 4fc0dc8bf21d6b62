import Foundation

/// What an attempt's answer means for the delivery.
public enum Classification: Sendable, Equatable {
    case delivered
    /// Worth another attempt; `after` is the destination's own wish (Retry-After), in seconds.
    case retry(reason: String, after: Double?)
    /// Retrying cannot help: dead-letter at once.
    case terminal(reason: String)
}

/// One delivery being translated: which attempt, to where, and (for a destination that makes several calls per
/// delivery) which step, with what earlier steps learned.
public struct DeliveryContext: Sendable, Equatable {
    public var deliveryID: String
    public var destination: String
    /// 1 for the first attempt.
    public var attempt: Int
    /// The step to send, 0 first. A retried delivery resumes at the step that failed.
    public var step: Int
    /// Values extracted from earlier steps' responses (`contextKeys`), by name.
    public var values: [String: String]

    public init(deliveryID: String, destination: String, attempt: Int, step: Int = 0, values: [String: String] = [:]) {
        self.deliveryID = deliveryID
        self.destination = destination
        self.attempt = attempt
        self.step = step
        self.values = values
    }
}

/// A translation that cannot be made. `skip`: the destination has nothing to say for this event (a status with
/// no mapping), so the delivery ends as `skipped`, never guessed. `terminal`: the event lacks what the destination
/// requires (a back-ordered status without its date), so the delivery is dead-lettered with the reason.
public struct TranslateError: Error, Sendable, CustomStringConvertible, Equatable {
    /// `retry`: not yet: the event lacks a subject identifier that correlation may still supply (a vendor's
    /// status that arrived before the vendor's answer naming its order id was recorded); retried on the
    /// destination's schedule, then dead.
    public enum Kind: Sendable, Equatable { case skip, terminal, retry }
    public var kind: Kind
    public var reason: String

    public init(_ reason: String, kind: Kind = .terminal) {
        self.kind = kind
        self.reason = reason
    }

    public static func skip(_ reason: String) -> TranslateError { TranslateError(reason, kind: .skip) }

    /// The destination has no value for this canonical status (or the event has none).
    public static func noMapping(_ status: CanonicalStatus?, detail: String = "") -> TranslateError {
        let s = status.map { "status \"\($0.rawValue)\"" } ?? "an event without a status"
        return .skip("no mapping: \(s) has no value for this destination\(detail.isEmpty ? "" : " (\(detail))")")
    }

    public var description: String { reason }
}

/// What one response means, with what was learned from it.
public struct StepOutcome: Sendable, Equatable {
    public var classification: Classification
    /// Values extracted from the response (`contextKeys`), handed to later steps and kept with a retried delivery.
    public var values: [String: String]
    /// Identifiers learned from the response (a vendor's order id), stored against the event's subject so that a
    /// later inbound event naming only one of them is matched to the others.
    public var correlation: [String: String]
    /// The step succeeded and there is another: send `step + 1`.
    public var next: Bool

    public init(_ classification: Classification, values: [String: String] = [:], correlation: [String: String] = [:],
                next: Bool = false) {
        self.classification = classification
        self.values = values
        self.correlation = correlation
        self.next = next
    }
}

/// Turns a canonical event into one provider's HTTP request, and reads that provider's answers.
///
/// The simple form implements `translate` and `classify`. A destination that learns from responses or makes
/// several calls per delivery implements `outcome` (called instead of `classify` for single deliveries).
public protocol DestinationAdapter: Sendable {
    func translate(_ event: CanonicalEvent, context: DeliveryContext) throws(TranslateError) -> OutboundRequest
    func classify(_ response: OutboundResponse) -> Classification
    func outcome(_ response: OutboundResponse, event: CanonicalEvent, context: DeliveryContext) -> StepOutcome
    /// Whether a failure of `step` that could be retried (no answer, a 5xx) is retried; false dead-letters it
    /// (Capillary's `retryAction: false`). Default true.
    func retries(step: Int) -> Bool
}

extension DestinationAdapter {
    public func classify(_ response: OutboundResponse) -> Classification { Self.classifyByStatus(response) }

    public func retries(step: Int) -> Bool { true }

    public func outcome(_ response: OutboundResponse, event: CanonicalEvent, context: DeliveryContext) -> StepOutcome {
        StepOutcome(classify(response))
    }

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

/// How a batching destination gathers deliveries: at most `maxItems` per request, waiting up to `wait` seconds
/// after the first is due for others to join.
public struct BatchOptions: Sendable, Equatable {
    public var maxItems: Int
    public var wait: Double
    public init(maxItems: Int, wait: Double) {
        self.maxItems = max(1, maxItems)
        self.wait = max(0, wait)
    }
}

/// One delivery's part of a batched request: the request it belongs to (`key`: deliveries with the same key
/// travel together, e.g. one vendor's URL) and its item.
public struct BatchItem: Sendable, Equatable {
    public var key: String
    public var item: JSONValue
    public init(key: String, item: JSONValue) {
        self.key = key
        self.item = item
    }
}

/// A destination that sends several deliveries in one request (statuses queued together for one vendor).
/// `classify` reads the shared answer, which applies to every delivery of the batch.
public protocol BatchingDestinationAdapter: DestinationAdapter {
    var batching: BatchOptions { get }
    /// The delivery's item, or why it cannot be sent (skip or terminal, for this delivery alone).
    func batchItem(_ event: CanonicalEvent, context: DeliveryContext) throws(TranslateError) -> BatchItem
    /// The request carrying `items` (all with `key`, in queue order).
    func translate(batchKey key: String, items: [JSONValue]) throws(TranslateError) -> OutboundRequest
    /// When the answer names which items failed: one classification per item (in request order). Nil: `classify`'s
    /// one verdict applies to every item.
    func classifyItems(_ response: OutboundResponse, count: Int) -> [Classification]?
}

extension BatchingDestinationAdapter {
    public func classifyItems(_ response: OutboundResponse, count: Int) -> [Classification]? { nil }

    /// A single delivery is a batch of one.
    public func translate(_ event: CanonicalEvent, context: DeliveryContext) throws(TranslateError) -> OutboundRequest {
        let item = try batchItem(event, context: context)
        return try translate(batchKey: item.key, items: [item.item])
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
