import Foundation

/// `auth: { standardWebhooks: { ... } }` (to be built).
public struct StandardWebhooksSigningFactory: OutboundAuthFactory {
    public init() {}
    public var name: String { "standardWebhooks" }
    public func make(_ value: JSONValue, path: String, reader: ConfigReader) -> (any OutboundAuth)? {
        reader.problem(path, "the standardWebhooks scheme is not built yet")
        return nil
    }
}
