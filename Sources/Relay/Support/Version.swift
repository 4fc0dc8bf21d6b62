/// The relay's version: `relay version` prints it, every outbound request carries it (`User-Agent: relay/<version>`)
/// and exported spans name it (`service.version`).
public enum RelayVersion {
    public static let current = "0.1.0"
    /// The default `User-Agent` of outbound requests.
    public static let userAgent = "relay/" + current
}
