import Relay
import Simulator

/// Every adapter this build of the relay knows, by its configuration name.
public enum BuiltinAdapters {
    public static let registry = AdapterRegistry(
        sources: [GenericSourceFactory(), PunchhSourceFactory(), CapillarySourceFactory()],
        destinations: [GenericDestinationFactory(), MastercardRedemptionsDestinationFactory(),
                       MastercardFulfillmentDestinationFactory(), PunchhDestinationFactory(),
                       ReturningAIDestinationFactory(), CapillaryDestinationFactory()],
        auth: [MastercardOAuth1Factory(), CapillaryTokenFactory()],
        verifyPresets: [PunchhSourceFactory.verifyPreset])

    /// The provider stand-ins of `relay simulate <name>`, in the order `relay simulate --help` lists them.
    public static let simulators: [Simulator] = [
        Simulator(name: "mastercard-digital-redemptions",
                  summary: "PUT /redemptions as Mastercard Digital Redemptions (statusCode B/I/N/O/S, Errors envelope)",
                  port: 9101, make: { MastercardRedemptionsSimulator() }),
        Simulator(name: "mastercard-fulfillment",
                  summary: "/vendors/{vendor_id}/orders/status as Mastercard's Traditional Fulfillment Service",
                  port: 9102, make: { MastercardFulfillmentSimulator() }),
        Simulator(name: "punchh", summary: "PUT /api/v1/redemption_codes/{id} (form: process, void, amount) as Punchh",
                  port: 9103, make: { PunchhSimulator() }),
        Simulator(name: "returning-ai", summary: "PUT /v1/redemption-transactions/status as Returning.AI",
                  port: 9104, make: { ReturningAISimulator() }),
        Simulator(name: "capillary",
                  summary: "PUT /api_gateway/rewards/core/v1/management/transactions and POST /v3/oauth/token/generate as Capillary",
                  port: 9105, make: { CapillarySimulator() }),
        Simulator(name: "oauth2",
                  summary: "POST /token (OAuth2 client credentials) and an API that accepts only the tokens it issued",
                  port: 9106, make: { OAuth2TokenEndpoint() }),
    ]
}

/// A provider stand-in that `relay simulate <name>` serves.
public struct Simulator: Sendable {
    public var name: String
    /// One line for the help text.
    public var summary: String
    /// Where it listens unless `--listen` says otherwise (each provider its own, so several run side by side).
    public var port: UInt16
    public var make: @Sendable () -> any SinkResponder

    public init(name: String, summary: String, port: UInt16, make: @escaping @Sendable () -> any SinkResponder) {
        self.name = name
        self.port = port
        self.summary = summary
        self.make = make
    }
}
