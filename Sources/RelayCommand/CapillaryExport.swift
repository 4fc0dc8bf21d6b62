import Adapters
import Foundation
import Relay

/// `relay capillary export`: the vendor redemption Capillary should hold so that its action calls a relay source,
/// printed, or PUT to Capillary's `vendor/redemption/{id}/brand/{brandId}` with a Capillary destination's auth.
enum CapillaryExport {
    static let usage = """
        relay capillary export: the vendor redemption Capillary should hold so that its action calls a relay source

        usage:
          relay capillary export --config FILE --source NAME [--url URL] [--vendor-id ID] [--name NAME]
                                 [--redemption-type TYPE] [--custom-field NAME]... [--with-secrets]
          relay capillary export --config FILE --source NAME --put --redemption-id ID --brand-id ID
                                 [--destination NAME] [the options above]

          --source NAME                 a source with adapter "capillary" (sources.NAME)
          --url URL                     the public URL Capillary calls (default <server.publicURL or
                                        http://server.listen>/v1/hooks/NAME)
          --vendor-id ID                Capillary's vendor id (required by Capillary when creating)
          --name NAME                   the redemption's name (default "relay NAME")
          --redemption-type TYPE        default VENDOR_ONLY_REWARD
          --custom-field NAME           also send ${customfield_NAME} (repeatable): the source keeps it as
                                        attributes.customFields.NAME
          --with-secrets                print the source's credential itself in apiHeaders (default: its reference,
                                        e.g. Bearer ${env:CAPILLARY_ACTION_TOKEN}, which Capillary cannot resolve)
          --put                         PUT it to {baseURL}/api_gateway/rewards/core/v1/vendor/redemption/{ID}/brand/
                                        {BRAND} with the auth of a Capillary destination (--destination, default the
                                        only destination with adapter "capillary"); the credential is sent, not printed

        The action posts the fields the source reads (its map, or the defaults: rewardTransactionId, customerId,
        rewardId, fulfillmentStatus, mobile) with Capillary's variables, with the source's verify credential in
        apiHeaders (Bearer, Basic or a header token: Capillary sends fixed headers, so an HMAC source cannot be
        called by it), and keeps the relay's event id as the response key relayEventId. Exit codes: 0 printed or
        accepted, 1 Capillary refused it or could not be reached, 2 bad arguments or configuration.
        """

    static func run(_ args: [String]) -> Int32 {
        guard args.first == "export" else {
            Command.fail("relay capillary: \(args.first.map { "unknown command \"\($0)\"" } ?? "which command?") (there is: export)\n\n\(usage)")
            return 2
        }
        return runCommand("relay capillary export", usage: usage) {
            let o = try Options(Array(args.dropFirst()),
                                valued: ["--config", "--source", "--url", "--vendor-id", "--name", "--redemption-type",
                                         "--custom-field", "--redemption-id", "--brand-id", "--destination"],
                                flags: ["--with-secrets", "--put"], aliases: ["-c": "--config"])
            let path = try o.required("--config", "FILE")
            let name = try o.required("--source", "NAME")
            guard let config = Command.loadConfig(path) else { return 2 }
            guard let settings = config.sources[name] else {
                throw Options.Failure(description: "no source \"\(name)\" in \(path) (there is: \(config.sources.keys.sorted().joined(separator: ", ")))")
            }
            guard let source = settings.adapter as? CapillarySource else {
                throw Options.Failure(description: "source \"\(name)\" has adapter \"\(settings.adapterName)\": Capillary's actions call a source with adapter \"capillary\"")
            }
            let base = config.server.publicURL.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
                ?? "http://\(Try.reachable(config.server.http.host)):\(config.server.http.port)"
            let url = o.value("--url") ?? "\(base)/v1/hooks/\(Try.pathSegment(name))"
            let put = o.has("--put")
            let (header, shown, secret) = try credential(settings.verifier, source: name)
            var headers: [String: JSONValue] = ["Content-Type": .string("application/json")]
            if let header { headers[header] = .string(put || o.has("--with-secrets") ? secret : shown) }
            var action: [String: JSONValue] = [
                "name": .string("relay \(name)"), "execOrder": .number(1), "apiType": .string("POST"),
                "apiUrl": .string(url), "apiHeaders": .object(headers),
                "apiBody": .string(try body(source, customFields: o.all("--custom-field"))),
                "contextKeys": .object(["relayEventId": .string("response.eventId")]),
                "retryAction": .bool(true), "enabled": .bool(true),
            ]
            action["apiBodyField"] = action["apiBody"]
            var redemption: [String: JSONValue] = [
                "name": .string(o.value("--name") ?? "relay \(name)"),
                "redemptionType": .string(o.value("--redemption-type") ?? "VENDOR_ONLY_REWARD"),
                "actions": .array([.object(action)]), "responseKeys": .array([.string("relayEventId")]),
                "enabled": .bool(true),
            ]
            if let v = o.value("--vendor-id") { redemption["vendorId"] = .string(v) }
            let document = JSONValue.object(redemption)
            guard put else {
                print(pretty(document))
                if header != nil && !o.has("--with-secrets") {
                    Command.fail("note: apiHeaders.\(header!) is a placeholder: Capillary needs the credential itself (--with-secrets prints it, --put sends it)")
                }
                return 0
            }
            return try upload(document, config: config, options: o)
        }
    }

    /// The header Capillary's action must send for the source's verify block: name, what to print, the value.
    static func credential(_ verifier: any Verifier, source: String) throws(Options.Failure) -> (String?, String, String) {
        if verifier is NoVerifier { return (nil, "", "") }
        guard let v = verifier as? StaticCredentialVerifier,
              let signed = verifier.senderHeaders(body: [], url: "", now: Date()), let (name, value) = signed.first else {
            throw Options.Failure(description: "source \"\(source)\" verifies with \(verifier.scheme): Capillary's actions send fixed headers, so verify it with bearer, basic or a header token")
        }
        return (name, v.prefix + "<the \(v.scheme) credential of sources.\(source).verify>", value)
    }

    /// The apiBody template: the fields the source reads, each a Capillary variable.
    static func body(_ source: CapillarySource, customFields: [String]) throws(Options.Failure) -> String {
        var fields: [(path: String, variable: String)] = []
        let variables = ["transactionId": "rewardTransactionId", "customerId": "customerId", "rewardId": "rewardId"]
        for (key, path) in source.subject.sorted(by: { $0.key < $1.key }) {
            guard let variable = variables[key] else { continue }   // not a value Capillary has
            fields.append((path, variable))
        }
        fields.append((source.statusPath, "fulfillmentStatus"))
        if let mobile = source.attributes["mobile"] { fields.append((mobile, "mobile")) }
        for name in customFields {
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                throw Options.Failure(description: "--custom-field \(name): a custom field name is letters, digits and _")
            }
            fields.append(("$.\(CapillarySource.customFieldPrefix)\(name)", "\(CapillarySource.customFieldPrefix)\(name)"))
        }
        // Nested paths become nested objects; every value is a quoted variable (the source reads text or numbers).
        var tree: [String: JSONValue] = [:]
        for f in fields {
            guard f.path.hasPrefix("$."), case let keys = f.path.dropFirst(2).split(separator: ".").map(String.init),
                  !keys.isEmpty, keys.allSatisfy({ !$0.isEmpty && !$0.contains("[") }) else {
                throw Options.Failure(description: "the source reads \(f.variable) from \(f.path), which is not a plain $.a.b path the export can write")
            }
            insert(&tree, keys[...], "${\(f.variable)}")
        }
        return JSONValue.object(tree).jsonString()
    }

    static func insert(_ tree: inout [String: JSONValue], _ keys: ArraySlice<String>, _ value: String) {
        guard let first = keys.first else { return }
        if keys.count == 1 {
            tree[first] = .string(value)
            return
        }
        var inner = tree[first]?.objectValue ?? [:]
        insert(&inner, keys.dropFirst(), value)
        tree[first] = .object(inner)
    }

    static func pretty(_ value: JSONValue) -> String {
        guard let data = try? JSONSerialization.data(withJSONObject: try JSONSerialization.jsonObject(with: value.jsonData()),
                                                     options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]) else {
            return value.jsonString()
        }
        return String(decoding: data, as: UTF8.self)
    }

    static func upload(_ document: JSONValue, config: RelayConfig, options o: Options) throws -> Int32 {
        let id = try o.required("--redemption-id", "ID")
        let brand = try o.required("--brand-id", "ID")
        guard Int(id) != nil, Int(brand) != nil else { throw Options.Failure(description: "--redemption-id and --brand-id are numbers") }
        let candidates = config.destinations.values.filter { $0.adapter is CapillaryDestination }
        let destination: DestinationSettings
        if let name = o.value("--destination") {
            guard let d = config.destinations[name], d.adapter is CapillaryDestination else {
                throw Options.Failure(description: "--destination \(name): not a destination with adapter \"capillary\"")
            }
            destination = d
        } else {
            guard candidates.count == 1 else {
                throw Options.Failure(description: candidates.isEmpty ? "--put needs a destination with adapter \"capillary\" (its baseURL and auth)"
                                      : "several Capillary destinations: name one with --destination (\(candidates.map(\.name).sorted().joined(separator: ", ")))")
            }
            destination = candidates[0]
        }
        let adapter = destination.adapter as! CapillaryDestination
        let url = "\(adapter.basics.baseURL)/api_gateway/rewards/core/v1/vendor/redemption/\(id)/brand/\(brand)"
        let client = try HTTPClient(options: config.client)
        defer { client.shutdown(timeout: 1) }
        var request = OutboundRequest(method: "PUT", url: url, headers: [("Content-Type", "application/json"), ("Accept", "application/json")],
                                      body: Array(document.jsonString().utf8))
        request.clientTLS = destination.clientTLS
        if let auth = destination.auth {
            let box = Handoff<Result<OutboundRequest, AuthError>>()
            auth.authorize(request, context: AuthContext(client: client, deliveryID: "capillary-export")) { box.put($0) }
            switch box.take(timeout: 60) {
            case .success(let signed)?: request = signed
            case .failure(let e)?:
                Command.fail("relay capillary export: cannot authorize with \(destination.name)'s auth (\(auth.scheme)): \(e.reason)")
                return 1
            case nil:
                Command.fail("relay capillary export: \(destination.name)'s auth (\(auth.scheme)) did not answer within 60 s")
                return 1
            }
        }
        Command.fail("PUT \(url)")
        switch client.sendAndWait(request) {
        case .success(let r):
            let text = destination.auth.map { $0.redact(String(decoding: r.body, as: UTF8.self)) } ?? String(decoding: r.body, as: UTF8.self)
            let envelope = Wire.json(r)?["status"]
            let ok = (200..<300).contains(r.status) && envelope?["success"] != .bool(false)
            print("HTTP \(r.status)\(envelope?["message"]?.stringValue.map { ": " + $0 } ?? "")")
            if !ok { Command.fail(text) }
            return ok ? 0 : 1
        case .failure(let e):
            Command.fail("relay capillary export: no answer from \(url): \(e)")
            return 1
        }
    }
}
