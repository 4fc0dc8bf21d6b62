import Adapters
import Foundation
import Relay

/// `relay send` and `relay translate`: try a configuration by hand. One posts a test webhook signed with a
/// source's own scheme; the other shows the exact request a destination would be sent for an event.
enum Try {
    static let sendUsage = """
        relay send: sign a test webhook with a source's own scheme and post it to the relay

        usage:
          relay send SOURCE --config FILE (--body FILE | --data TEXT) [--url URL] [--content-type TYPE]
                    [--header 'Name: value']...

          SOURCE                        a source of the configuration (sources.SOURCE)
          --config FILE                 the configuration the relay serves (its secrets come from the environment,
                                        as for relay serve)
          --body FILE                   the body to send, byte for byte (- for standard input)
          --data TEXT                   or the body itself (as curl -d, without a trailing newline)
          --url URL                     where to post (default http://<server.listen>/v1/hooks/SOURCE, 127.0.0.1
                                        for a wildcard address)
          --content-type TYPE           default application/json
          --header 'Name: value'        another header (repeatable); a message id header of the scheme
                                        (webhook-id, X-GitHub-Delivery) given here is the one signed

        Signs as the source's verify block says (Standard Webhooks, Stripe, GitHub, Shopify, Slack, Punchh, any HMAC
        configuration, Bearer, Basic, a header token), with a fresh timestamp and message id; prints the answer's
        status and body. No header value is printed (they are credentials). Exit codes: 0 a 2xx answer, 1 another
        answer or no answer, 2 bad arguments, a configuration with problems, or a scheme that cannot be signed here.
        """

    static let translateUsage = """
        relay translate: show the exact request a destination would be sent for an event, without sending it

        usage:
          relay translate --config FILE --destination NAME --event FILE [--step N] [--value NAME=VALUE]...

          --destination NAME            a destination of the configuration (destinations.NAME)
          --event FILE                  a canonical event as JSON (docs/canonical-event.md; what relay events show ID
                                        --json prints); absent id, source, receivedAt and idempotencyKey are filled in
          --step N                      for a destination with several actions: show step N (default 1)
          --value NAME=VALUE            a value an earlier step would have extracted (contextKeys), for --step > 1

        Prints the method and URL, the headers (credentials masked: the scheme word is kept, the value is ***), and
        the body. Credentials that need a token request (oauth2, capillaryToken) are named, not fetched. A status the
        destination does not map prints the skip and its reason. Exit codes: 0 a request (or a skip) was shown,
        1 the event cannot be translated (the reason is printed), 2 bad arguments or a configuration with problems.
        """

    // MARK: relay send

    static func send(_ args: [String]) -> Int32 {
        runCommand("relay send", usage: sendUsage) {
            let o = try Options(args, valued: ["--config", "--body", "--data", "--url", "--content-type", "--header"],
                                aliases: ["-c": "--config"])
            guard let name = o.positional.first, o.positional.count == 1 else {
                throw Options.Failure(description: "which source? relay send SOURCE --config FILE --body FILE")
            }
            let path = try o.required("--config", "FILE")
            let body: [UInt8]
            switch (o.value("--body"), o.value("--data")) {
            case (let file?, nil): body = try readInput(file)
            case (nil, let text?): body = Array(text.utf8)
            case (nil, nil): throw Options.Failure(description: "--body FILE or --data TEXT is required")
            default: throw Options.Failure(description: "give --body FILE or --data TEXT, not both")
            }
            guard let config = Command.loadConfig(path) else { return 2 }
            guard let source = config.sources[name] else {
                throw Options.Failure(description: "no source \"\(name)\" in \(path) (there is: \(config.sources.keys.sorted().joined(separator: ", ")))")
            }
            let url = o.value("--url") ?? "http://\(Self.reachable(config.server.http.host)):\(config.server.http.port)/v1/hooks/\(Self.pathSegment(name))"
            var headers = [("Content-Type", o.value("--content-type") ?? "application/json")]
            for h in o.all("--header") {
                guard let colon = h.firstIndex(of: ":"), colon > h.startIndex else {
                    throw Options.Failure(description: "--header \(h.prefix(40)): expected 'Name: value'")
                }
                headers.append((String(h[..<colon]).trimmingCharacters(in: .whitespaces),
                                String(h[h.index(after: colon)...]).trimmingCharacters(in: .whitespaces)))
            }
            guard let signed = source.verifier.senderHeaders(body: body, url: url, now: Date(), given: headers) else {
                throw Options.Failure(description: "source \"\(name)\" verifies with \(source.verifier.scheme), which relay send cannot produce")
            }
            headers += signed
            let client = try HTTPClient()
            defer { client.shutdown(timeout: 1) }
            let names = signed.map(\.0)
            Command.fail("POST \(url) (\(body.count) bytes, signed with \(source.verifier.scheme)\(names.isEmpty ? "" : ": " + names.joined(separator: ", ")))")
            switch client.sendAndWait(OutboundRequest(method: "POST", url: url, headers: headers, body: body)) {
            case .success(let r):
                print("HTTP \(r.status)")
                let text = String(decoding: r.body, as: UTF8.self)
                if !text.isEmpty { print(text) }
                return (200..<300).contains(r.status) ? 0 : 1
            case .failure(let e):
                Command.fail("relay send: no answer from \(url): \(e)")
                return 1
            }
        }
    }

    static func reachable(_ host: String) -> String {
        switch host {
        case "0.0.0.0", "": return "127.0.0.1"
        case "::": return "[::1]"
        default: return host.contains(":") ? "[\(host)]" : host
        }
    }

    static func pathSegment(_ name: String) -> String {
        name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))) ?? name
    }

    // MARK: relay translate

    static func translate(_ args: [String]) -> Int32 {
        runCommand("relay translate", usage: translateUsage) {
            let o = try Options(args, valued: ["--config", "--destination", "--event", "--step", "--value"],
                                aliases: ["-c": "--config"])
            if let extra = o.positional.first { throw Options.Failure(description: "unexpected argument \(extra)") }
            let path = try o.required("--config", "FILE")
            let name = try o.required("--destination", "NAME")
            let eventBytes = try readInput(try o.required("--event", "FILE"))
            guard let config = Command.loadConfig(path) else { return 2 }
            guard let destination = config.destinations[name] else {
                throw Options.Failure(description: "no destination \"\(name)\" in \(path) (there is: \(config.destinations.keys.sorted().joined(separator: ", ")))")
            }
            let event = try Self.event(eventBytes)
            var step = 0
            if let s = o.value("--step") {
                guard let n = Int(s), n >= 1 else { throw Options.Failure(description: "--step \(s): expected a step number, 1 first") }
                step = n - 1
            }
            var values: [String: String] = [:]
            for v in o.all("--value") {
                guard let eq = v.firstIndex(of: "="), eq > v.startIndex else {
                    throw Options.Failure(description: "--value \(v.prefix(40)): expected NAME=VALUE")
                }
                values[String(v[..<eq])] = String(v[v.index(after: eq)...])
            }
            let context = DeliveryContext(deliveryID: "dlv_translate", destination: name, attempt: 1, step: step, values: values)
            let request: OutboundRequest
            do throws(TranslateError) {
                request = try destination.adapter.translate(event, context: context)
            } catch {
                switch error.kind {
                case .skip:
                    print("skipped: \(error.reason)")
                    return 0
                case .terminal, .retry:
                    Command.fail("relay translate: cannot translate for \(name): \(error.reason)")
                    return 1
                }
            }
            print(render(request, destination: destination))
            return 0
        }
    }

    /// A canonical event from JSON, with what a hand-written one may leave out filled in.
    static func event(_ bytes: [UInt8]) throws(Options.Failure) -> CanonicalEvent {
        guard let parsed = try? JSONValue.parse(Data(bytes), json5: true), case .object(var o) = parsed else {
            throw Options.Failure(description: "--event: expected a canonical event as a JSON object")
        }
        if case .object(let inner)? = o["event"] { o = inner }   // an admin API answer
        o["id"] = o["id"] ?? .string("evt_translate")
        o["source"] = o["source"] ?? .string("translate")
        o["type"] = o["type"] ?? .string("passthrough")
        o["subject"] = o["subject"] ?? .object([:])
        o["attributes"] = o["attributes"] ?? .object([:])
        o["receivedAt"] = o["receivedAt"] ?? .string(Timestamp.iso8601(Date()))
        o["idempotencyKey"] = o["idempotencyKey"] ?? .string("translate")
        do {
            return try JSONDecoder().decode(CanonicalEvent.self, from: JSONValue.object(o).jsonData())
        } catch {
            throw Options.Failure(description: "--event: not a canonical event: \(error)")
        }
    }

    /// The request as text, with the destination's credentials applied where that needs no network, and masked.
    static func render(_ unsigned: OutboundRequest, destination: DestinationSettings) -> String {
        var request = unsigned
        var note: String?
        var added = Set<String>()
        if let auth = destination.auth {
            let box = Handoff<Result<OutboundRequest, AuthError>>()
            auth.authorize(unsigned, context: AuthContext(client: nil, deliveryID: "dlv_translate")) { box.put($0) }
            switch box.take(timeout: 2) {
            case .success(let signed):
                let before = Set(unsigned.headers.map { "\($0.0.lowercased()):\($0.1)" })
                for (k, v) in signed.headers where !before.contains("\(k.lowercased()):\(v)") { added.insert(k.lowercased()) }
                request = signed
            case .failure(let e):
                note = "auth: \(auth.scheme) adds its credentials when sent (\(e.reason))"
            case nil:
                note = "auth: \(auth.scheme) adds its credentials when sent (a token is fetched then)"
            }
        }
        return RequestPreview(request, credentialHeaders: added, redactions: destination.auth?.redactions ?? [], note: note).text
    }
}
