import Adapters
import Foundation
@testable import Relay
import Testing

/// Every onboarding example in config/partners/ is a complete configuration that `relay check` accepts, with only
/// its `${env:...}` references set.
@Suite("Partner examples")
struct PartnerConfigTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path
    static let dir = root + "/config/partners"

    static func files() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".json5") }.sorted()
    }

    /// Every `${env:NAME}` in `text`, set to a value each kind of secret accepts (a Standard Webhooks secret too).
    static func environment(for text: String) -> [String: String] {
        var env: [String: String] = [:]
        var rest = Substring(text)
        while let r = rest.range(of: "${env:") {
            let tail = rest[r.upperBound...]
            guard let end = tail.firstIndex(of: "}") else { break }
            env[String(tail[..<end])] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
            rest = tail[end...]
        }
        return env
    }

    @Test("there is one example per provider adapter")
    func onePerProvider() {
        let names = Set(Self.files().map { String($0.dropLast(".json5".count)) })
        #expect(names.isSuperset(of: ["generic", "mastercard-digital-redemptions", "mastercard-fulfillment", "punchh",
                                      "returning-ai", "capillary"]), "\(names.sorted())")
    }

    @Test("each example passes the configuration check and uses only secret references", arguments: files())
    func checks(_ file: String) throws {
        let path = Self.dir + "/" + file
        // A vendor redemption file the example points to takes its ${env:...} from the same environment.
        let redemptions = ((try? FileManager.default.contentsOfDirectory(atPath: Self.dir)) ?? [])
            .filter { $0.hasSuffix(".json") }.map { readText(Self.dir + "/" + $0) }.joined()
        let text = readText(path)
        do {
            let config = try RelayConfig.load(path: path, registry: BuiltinAdapters.registry,
                                              environment: Self.environment(for: text + redemptions))
            #expect(!config.sources.isEmpty && !config.destinations.isEmpty && !config.routes.isEmpty, "\(file)")
        } catch let error as ConfigError {
            Issue.record("\(file): \(error.problems.map(\.description).joined(separator: "; "))")
        }
        #expect(!text.contains("${file:"), "\(file): examples take secrets from the environment")
        #expect(!redemptions.contains("${file:"))
        // Without its environment the check names each missing variable.
        if !Self.environment(for: text).isEmpty {
            #expect(throws: ConfigError.self) {
                try RelayConfig.load(path: path, registry: BuiltinAdapters.registry, environment: [:])
            }
        }
    }
}
