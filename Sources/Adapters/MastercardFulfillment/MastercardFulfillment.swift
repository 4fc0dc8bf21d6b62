import Foundation
import Relay

public struct MastercardFulfillmentDestinationFactory: DestinationAdapterFactory {
    public init() {}
    public var name: String { "mastercard-fulfillment" }
    public var destinationKeys: [String] { [] }
    public func makeDestination(name: String, config: [String: JSONValue], path: String, reader: ConfigReader) -> (any DestinationAdapter)? {
        reader.problem(path, "the mastercard-fulfillment adapter is not built yet")
        return nil
    }
}

/// Stand-in (to be written).
public struct MastercardFulfillmentSimulator: SinkResponder {
    public init() {}
    public func answer(_ request: HTTPRequest) -> HTTPResponse { .error(501, "not built yet") }
}
