import Adapters
import Crypto
import Foundation
import Relay

/// The sources the signature and HTTP targets run against: one per verification preset, HMAC variants (keyed
/// `k=v` lists under other names, a separated list with a prefix, base64url), the static credentials, and unsigned
/// sources on every source adapter (generic with a map, Punchh, Capillary) so that hostile bodies reach
/// `normalize`. Secrets are drawn at random when the process starts: a request the fuzzer makes up can never carry
/// a valid signature or credential, so any that verifies is a hole.
public enum FuzzSources {
    public static let signed = ["sw", "stripe", "gh", "slack", "shopify", "punchh-signed", "keyed", "list", "b64url",
                                "basic", "bearer", "apikey", "token"]
    public static let unsigned = ["open", "mapped", "punchh", "capillary", "refuse"]

    static let environment: [String: String] = {
        func hex(_ n: Int) -> String { ByteEncoding.hex(SecureRandom.bytes(n)) }
        return ["WHSEC": "whsec_" + ByteEncoding.base64(SecureRandom.bytes(24)), "S1": hex(16), "S2": hex(16),
                "S3": hex(16), "S4": hex(16), "S5": hex(16), "S6": hex(16), "S7": hex(16), "S8": hex(16),
                "PW": hex(8), "TOK": hex(12), "KEY": hex(12), "TOK2": hex(12)]
    }()

    public static let configText = """
        {
          server: { listen: "127.0.0.1:0", threads: 1, maxBodyBytes: 8192, connectionLimit: 64,
                    idleTimeout: "2s", requestTimeout: "2s" },
          store: { sqlite: "/nonexistent/fuzz.db" },
          statuses: { packed: { fallback: "placed" } },
          sources: {
            sw: { adapter: "generic", verify: { preset: "standard-webhooks", secrets: ["${env:WHSEC}"] } },
            stripe: { adapter: "generic", verify: { preset: "stripe", secrets: ["${env:S1}"] } },
            gh: { adapter: "generic", verify: { preset: "github", secrets: ["${env:S2}", "${env:S8}"] } },
            slack: { adapter: "generic", verify: { preset: "slack", secrets: ["${env:S3}"] } },
            shopify: { adapter: "generic", verify: { preset: "shopify", secrets: ["${env:S4}"] } },
            "punchh-signed": { adapter: "punchh", verify: { preset: "punchh", secrets: ["${env:S5}"] } },
            keyed: { adapter: "generic", verify: { hmac: { header: ["X-Sig", "X-Sig-2"], encoding: "base64url",
                     keyed: { signature: "sig", timestamp: "ts", separator: ";" }, signedContent: "{timestamp}:{path}:{body}",
                     algorithm: "sha512", tolerance: "10m", secrets: ["${env:S6}"] } } },
            list: { adapter: "generic", verify: { hmac: { header: "X-Sigs", prefix: "v1=", separator: ",",
                    signedContent: "{id}|{timestamp}|{uri}|{body}", idHeader: "X-Id", timestampHeader: "X-Ts",
                    algorithm: "sha1", secrets: ["${env:S7}"] } } },
            b64url: { adapter: "generic", verify: { hmac: { header: "X-B64", encoding: "base64url", prefix: "sig ",
                      secretEncoding: "hex", secrets: ["${env:S8}"] } } },
            basic: { adapter: "generic", verify: { basic: { username: "relay", password: "${env:PW}" } } },
            bearer: { adapter: "generic", verify: { bearer: { tokens: ["${env:TOK}", "${env:TOK2}"] } } },
            apikey: { adapter: "generic", verify: { apiKey: { header: "X-Api-Key", tokens: ["${env:KEY}"] } } },
            token: { adapter: "generic", verify: { token: { scheme: "Token", tokens: ["${env:TOK}"] } } },
            open: { adapter: "generic", verify: { none: true } },
            mapped: { adapter: "generic", verify: { none: true }, type: "order.status_changed",
                      idempotency: { field: "$.id" },
                      map: { type: "$.type", subject: { orderId: "$.order.id", vendorId: "$['vendor id']", first: "$.items[0].sku" },
                             status: "$.order.state", occurredAt: "$.at",
                             attributes: { items: "$.items", city: "$.order.address.get(0).city" } },
                      statusMap: { "SHIPPED": "shipped", "BACK": "backordered", "PACKED": "packed" } },
            punchh: { adapter: "punchh", verify: { none: true } },
            capillary: { adapter: "capillary", verify: { none: true } },
            refuse: { adapter: "generic", verify: { none: true }, unmappedStatus: "refuse",
                      map: { status: "$.state" }, statusMap: { "OK": "delivered" }, idempotency: { header: "X-Key" } },
          },
        }
        """

    /// The configuration read as `relay serve` reads it.
    public static let config: RelayConfig = {
        do {
            return try RelayConfig.parse(Data(configText.utf8), registry: BuiltinAdapters.registry, environment: environment)
        } catch {
            fatalError("the fuzz targets' configuration does not read: \(error)")
        }
    }()
}
