import Foundation
import Relay

public struct CapillarySourceFactory: SourceAdapterFactory {
    public init() {}
    public var name: String { "capillary" }
    public var sourceKeys: [String] { [] }
    public func makeSource(name: String, config: [String: JSONValue], path: String, reader: ConfigReader) -> (any SourceAdapter)? {
        reader.problem(path, "the capillary adapter is not built yet")
        return nil
    }
}

public struct CapillaryDestinationFactory: DestinationAdapterFactory {
    public init() {}
    public var name: String { "capillary" }
    public var destinationKeys: [String] { [] }
    public func makeDestination(name: String, config: [String: JSONValue], path: String, reader: ConfigReader) -> (any DestinationAdapter)? {
        reader.problem(path, "the capillary adapter is not built yet")
        return nil
    }
}

/// Stand-in (to be written).
public struct CapillarySimulator: SinkResponder {
    public init() {}
    public func answer(_ request: HTTPRequest) -> HTTPResponse { .error(501, "not built yet") }
}
