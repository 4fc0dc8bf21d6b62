import Foundation

/// `auth: { oauth2: { ... } }` (to be built).
public struct OAuth2Factory: OutboundAuthFactory {
    public init() {}
    public var name: String { "oauth2" }
    public func make(_ value: JSONValue, path: String, reader: ConfigReader) -> (any OutboundAuth)? {
        reader.problem(path, "the oauth2 scheme is not built yet")
        return nil
    }
}
