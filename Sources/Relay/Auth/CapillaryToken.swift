import Foundation

/// `auth: { capillaryToken: { ... } }` (to be built).
public struct CapillaryTokenFactory: OutboundAuthFactory {
    public init() {}
    public var name: String { "capillaryToken" }
    public func make(_ value: JSONValue, path: String, reader: ConfigReader) -> (any OutboundAuth)? {
        reader.problem(path, "the capillaryToken scheme is not built yet")
        return nil
    }
}
