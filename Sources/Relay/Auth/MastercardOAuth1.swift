import Foundation

/// `auth: { mastercardOAuth1: { ... } }` (to be built).
public struct MastercardOAuth1Factory: OutboundAuthFactory {
    public init() {}
    public var name: String { "mastercardOAuth1" }
    public func make(_ value: JSONValue, path: String, reader: ConfigReader) -> (any OutboundAuth)? {
        reader.problem(path, "the mastercardOAuth1 scheme is not built yet")
        return nil
    }
}
