import Relay

/// Every adapter this build of the relay knows, by its configuration name.
public enum BuiltinAdapters {
    public static let registry = AdapterRegistry(sources: [GenericSourceFactory()],
                                                 destinations: [GenericDestinationFactory()])
}
