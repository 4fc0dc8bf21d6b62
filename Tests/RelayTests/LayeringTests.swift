import Adapters
import Foundation
@testable import Relay
import Testing

/// The engine (Sources/Relay) knows no provider: a provider's auth scheme, verify preset and formats are its
/// adapter's, registered through `AdapterRegistry` (docs/architecture.md).
@Suite("Layering")
struct LayeringTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    @Test("no line of code under Sources/Relay names a provider (comments may)")
    func engineNamesNoProvider() throws {
        let providers = ["mastercard", "capillary", "punchh", "returningai", "returning-ai", "returning.ai"]
        let dir = Self.root + "/Sources/Relay"
        let files = try #require(FileManager.default.subpaths(atPath: dir)).filter { $0.hasSuffix(".swift") }
        #expect(files.count > 20)
        var found: [String] = []
        for file in files {
            let text = try String(contentsOfFile: dir + "/" + file, encoding: .utf8)
            for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let code = line.trimmingCharacters(in: .whitespaces)
                if code.hasPrefix("//") { continue }
                let plain = (code.range(of: " //").map { String(code[..<$0.lowerBound]) } ?? code).lowercased()
                if let p = providers.first(where: { plain.contains($0) }) { found.append("\(file):\(n + 1) (\(p))") }
            }
        }
        #expect(found.isEmpty, "\(found)")
    }

    @Test("provider auth schemes and presets come from the registry; signing schemes run last")
    func registry() {
        let engine = BuiltinAuth.factories.map(\.name)
        #expect(!engine.contains("mastercardOAuth1") && !engine.contains("capillaryToken"))
        let all = BuiltinAdapters.registry.auth.map(\.name)
        #expect(all.contains("mastercardOAuth1") && all.contains("capillaryToken") && all.contains("oauth2"))
        #expect(all.last == "standardWebhooks")
        #expect(!VerifyPreset.builtin.map(\.name).contains("punchh"))
        #expect(BuiltinAdapters.registry.verifyPresets.map(\.name)
                == ["standard-webhooks", "stripe", "github", "shopify", "slack", "punchh"])
        // Without the registry, a provider's scheme is an unknown key.
        let r = ConfigReader(environment: [:])
        let value = try? JSONValue.parse(Data(#"{ capillaryToken: { url: "https://c.example/t", key: "${env:K}", secret: "${env:S}" } }"#.utf8), json5: true)
        #expect(r.outboundAuth(value, "destinations.d.auth") == nil)
        #expect(r.problems.contains { $0.description.hasPrefix("destinations.d.auth.capillaryToken: unknown key") }, "\(r.problems)")
    }
}
