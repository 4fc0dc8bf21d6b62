import Foundation
import Relay

public struct ReturningAIDestinationFactory: DestinationAdapterFactory {
    public init() {}
    public var name: String { "returning-ai" }
    public var destinationKeys: [String] { [] }
    public func makeDestination(name: String, config: [String: JSONValue], path: String, reader: ConfigReader) -> (any DestinationAdapter)? {
        reader.problem(path, "the returning-ai adapter is not built yet")
        return nil
    }
}

/// Stand-in (to be written).
public struct ReturningAISimulator: SinkResponder {
    public init() {}
    public func answer(_ request: HTTPRequest) -> HTTPResponse { .error(501, "not built yet") }
}
