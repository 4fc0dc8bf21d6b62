import Foundation
import Synchronization

/// A request body understood: JSON, or form fields in order.
public enum Payload: Sendable, Equatable {
    case json(JSONValue)
    case form([(String, String)])

    public static func == (a: Payload, b: Payload) -> Bool {
        switch (a, b) {
        case (.json(let x), .json(let y)): return x == y
        case (.form(let x), .form(let y)): return x.elementsEqual(y, by: { $0 == $1 })
        default: return false
        }
    }

    /// The payload as one JSON value (form fields become an object of strings; the first value of a repeated
    /// field wins).
    public var json: JSONValue {
        switch self {
        case .json(let v): return v
        case .form(let fields):
            var o: [String: JSONValue] = [:]
            for (k, v) in fields where o[k] == nil { o[k] = .string(v) }
            return .object(o)
        }
    }
}

/// A body already checked to be valid JSON or form encoding, turned into a `Payload` only when someone reads it:
/// a pass-through source stores and relays the bytes without ever building the tree.
public final class LazyPayload: Sendable {
    public enum Kind: Sendable { case json, form }
    public let kind: Kind
    private let bytes: [UInt8]
    private let cache = Mutex<Payload?>(nil)

    /// `bytes` must already have passed `JSONParser.validate` (json) or `Ingest.parseForm` (form).
    public init(kind: Kind, validatedBytes bytes: [UInt8]) {
        self.kind = kind
        self.bytes = bytes
    }

    public init(_ payload: Payload) {
        switch payload {
        case .json: kind = .json
        case .form: kind = .form
        }
        bytes = []
        cache.withLock { $0 = payload }
    }

    public var value: Payload {
        cache.withLock { cached in
            if let cached { return cached }
            let parsed: Payload
            switch kind {
            case .json: parsed = .json((try? JSONParser.parse(bytes)) ?? .null)
            case .form: parsed = .form(Ingest.parseForm(bytes) ?? [])
            }
            cached = parsed
            return parsed
        }
    }
}

/// A verified inbound webhook, handed to the source's adapter.
public struct InboundWebhook: Sendable {
    public var source: String
    public var request: HTTPRequest
    public var contentType: String
    /// The parsed body (parsed on first use).
    public var payload: Payload { lazyPayload.value }
    public let lazyPayload: LazyPayload
    public var receivedAt: Date
    public var verified: VerifiedRequest

    public init(source: String, request: HTTPRequest, contentType: String, payload: LazyPayload, receivedAt: Date,
                verified: VerifiedRequest) {
        self.source = source
        self.request = request
        self.contentType = contentType
        self.lazyPayload = payload
        self.receivedAt = receivedAt
        self.verified = verified
    }
}

/// What an adapter extracts from an inbound webhook; the relay adds id, source, receipt time and raw body.
public struct NormalizedEvent: Sendable, Equatable {
    public var type: String
    public var subject: [String: String]
    public var status: CanonicalStatus?
    public var providerStatus: ProviderStatus?
    public var occurredAt: String?
    public var attributes: [String: JSONValue]
    /// The provider's own event id, when the payload has one: used for deduplication unless the source config
    /// names another key.
    public var idempotencyKey: String?

    public init(type: String, subject: [String: String] = [:], status: CanonicalStatus? = nil,
                providerStatus: ProviderStatus? = nil, occurredAt: String? = nil,
                attributes: [String: JSONValue] = [:], idempotencyKey: String? = nil) {
        self.type = type
        self.subject = subject
        self.status = status
        self.providerStatus = providerStatus
        self.occurredAt = occurredAt
        self.attributes = attributes
        self.idempotencyKey = idempotencyKey
    }
}

/// An adapter refused a webhook it cannot understand: the sender gets a 4xx with this reason.
public struct NormalizeError: Error, Sendable, CustomStringConvertible {
    public var status: Int
    public var reason: String
    public init(status: Int = 422, _ reason: String) {
        self.status = status
        self.reason = reason
    }
    public var description: String { reason }
}

/// Turns one provider's inbound webhook into a canonical event.
public protocol SourceAdapter: Sendable {
    func normalize(_ webhook: InboundWebhook) throws(NormalizeError) -> NormalizedEvent
}

/// Builds a source adapter from its configuration block. Adapters live in the Adapters module; the relay
/// knows them only through this protocol and a registry.
public protocol SourceAdapterFactory: Sendable {
    /// The `adapter:` name in configuration.
    var name: String { get }
    /// Keys this adapter reads from a source block, beside the common `adapter`, `verify`, `idempotency`.
    var sourceKeys: [String] { get }
    func makeSource(name: String, config: [String: JSONValue], path: String, reader: ConfigReader) -> (any SourceAdapter)?
}

/// The adapters a relay knows by name.
public struct AdapterRegistry: Sendable {
    public var sources: [String: any SourceAdapterFactory]
    public var destinations: [String: any DestinationAdapterFactory]
    /// The schemes a destination's `auth` block may name, in the order they are applied: the engine's and the
    /// adapters' credential schemes, then those that sign the request as sent.
    public var auth: [any OutboundAuthFactory]
    /// The presets a source's `verify: { preset: ... }` may name: the engine's and the adapters'.
    public var verifyPresets: [VerifyPreset]

    /// `auth` and `verifyPresets`: a provider's own schemes, added to the engine's (`BuiltinAuth.factories`,
    /// `VerifyPreset.builtin`).
    public init(sources: [any SourceAdapterFactory], destinations: [any DestinationAdapterFactory] = [],
                auth: [any OutboundAuthFactory] = [], verifyPresets: [VerifyPreset] = []) {
        let schemes = BuiltinAuth.factories + auth
        self.auth = schemes.filter { !$0.signsRequest } + schemes.filter(\.signsRequest)
        self.verifyPresets = VerifyPreset.builtin + verifyPresets
        var map: [String: any SourceAdapterFactory] = [:]
        for f in sources { map[f.name] = f }
        self.sources = map
        var dmap: [String: any DestinationAdapterFactory] = [:]
        for f in destinations { dmap[f.name] = f }
        self.destinations = dmap
    }
}
