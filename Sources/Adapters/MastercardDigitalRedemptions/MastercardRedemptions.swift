import Foundation
import Relay

public struct MastercardRedemptionsDestinationFactory: DestinationAdapterFactory {
    public init() {}
    public var name: String { "mastercard-digital-redemptions" }
    public var destinationKeys: [String] { [] }
    public func makeDestination(name: String, config: [String: JSONValue], path: String, reader: ConfigReader) -> (any DestinationAdapter)? {
        reader.problem(path, "the mastercard-digital-redemptions adapter is not built yet")
        return nil
    }
}

/// Stand-in (to be written).
public struct MastercardRedemptionsSimulator: SinkResponder {
    public init() {}
    public func answer(_ request: HTTPRequest) -> HTTPResponse { .error(501, "not built yet") }
}
