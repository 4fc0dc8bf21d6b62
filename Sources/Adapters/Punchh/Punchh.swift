import Foundation
import Relay

public struct PunchhSourceFactory: SourceAdapterFactory {
    public init() {}
    public var name: String { "punchh" }
    public var sourceKeys: [String] { [] }
    public func makeSource(name: String, config: [String: JSONValue], path: String, reader: ConfigReader) -> (any SourceAdapter)? {
        reader.problem(path, "the punchh adapter is not built yet")
        return nil
    }
}

public struct PunchhDestinationFactory: DestinationAdapterFactory {
    public init() {}
    public var name: String { "punchh" }
    public var destinationKeys: [String] { [] }
    public func makeDestination(name: String, config: [String: JSONValue], path: String, reader: ConfigReader) -> (any DestinationAdapter)? {
        reader.problem(path, "the punchh adapter is not built yet")
        return nil
    }
}

/// Stand-in (to be written).
public struct PunchhSimulator: SinkResponder {
    public init() {}
    public func answer(_ request: HTTPRequest) -> HTTPResponse { .error(501, "not built yet") }
}
