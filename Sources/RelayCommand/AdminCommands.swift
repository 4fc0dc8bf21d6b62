import Foundation
import Relay

/// `relay events`, `relay deliveries`, `relay replay`: the admin API from the command line. Human tables by default,
/// `--json` for scripts. Exit codes: 0 ok, 1 the relay could not be reached or refused, 2 usage.
enum AdminCommands {
    static let usage = """
        relay events [list] [--source S] [--status S] [--subject KEY:VALUE] [--limit N] [--cursor C] [--json]
        relay events show EVENT_ID [--json]
        relay deliveries [--state dead|pending|...] [--destination D] [--limit N] [--cursor C] [--json]
        relay replay DELIVERY_ID [--json]
        relay replay --state dead [--destination D] [--since T] [--until T] [--yes] [--json]
                                        bulk: a dry run (a count) unless --yes

        common options:
          --admin URL                   the admin API (default http://127.0.0.1:9090, or admin.listen of --config FILE)
          --config FILE                 read admin.listen from this configuration
          RELAY_ADMIN_TOKEN             the admin token (environment; --config does not read admin.token)
        """

    struct Options {
        var positional: [String] = []
        var flags: [String: String] = [:]
        var json = false
        var yes = false
    }

    static func parse(_ args: [String]) -> Options? {
        let valued: Set<String> = ["--source", "--status", "--subject", "--limit", "--cursor", "--state", "--destination",
                                   "--since", "--until", "--admin", "--config", "--type"]
        do {
            let p = try RelayCommand.Options(args, valued: valued, flags: ["--json", "--yes"])
            return Options(positional: p.positional, flags: p.values.compactMapValues(\.last), json: p.has("--json"),
                           yes: p.has("--yes"))
        } catch {
            if case .unknown(let arg) = error.kind {
                Command.fail("relay: unknown option \(arg)\n\n\(usage)")
            } else {
                Command.fail("relay: \(error)")
            }
            return nil
        }
    }

    /// The admin API's base URL: `--admin`, else `admin.listen` of `--config`, else the default.
    static func baseURL(_ o: Options) -> String? {
        if let a = o.flags["--admin"] { return a.hasSuffix("/") ? String(a.dropLast()) : a }
        if let path = o.flags["--config"] {
            guard let config = Command.loadConfig(path) else { return nil }
            guard let admin = config.admin else {
                Command.fail("\(path): has no admin block (admin: { listen: \"127.0.0.1:9090\" })")
                return nil
            }
            let host = admin.http.host.contains(":") ? "[\(admin.http.host)]" : admin.http.host
            return "http://\(host == "0.0.0.0" ? "127.0.0.1" : host):\(admin.http.port)"
        }
        return "http://127.0.0.1:9090"
    }

    /// Calls the admin API; nil (after saying why on stderr) when it cannot be reached or answers an error.
    static func call(_ o: Options, _ method: String, _ path: String, body: JSONValue? = nil) -> (Int, JSONValue)? {
        guard let base = baseURL(o) else { return nil }
        var headers: [(String, String)] = [("Accept", "application/json")]
        if let token = ProcessInfo.processInfo.environment["RELAY_ADMIN_TOKEN"], !token.isEmpty {
            headers.append(("Authorization", "Bearer \(token)"))
        }
        var request = OutboundRequest(method: method, url: base + path, headers: headers)
        if let body {
            request.body = Array(body.jsonString().utf8)
            request.headers.append(("Content-Type", "application/json"))
        }
        request.totalTimeout = 30
        let client: HTTPClient
        do { client = try HTTPClient() } catch {
            Command.fail("relay: cannot start the HTTP client: \(error)")
            return nil
        }
        defer { client.shutdown(timeout: 1) }
        switch client.sendAndWait(request) {
        case .failure(let e):
            Command.fail("relay: cannot reach the admin API at \(base): \(e)")
            return nil
        case .success(let r):
            let json = (try? JSONParser.parse(r.body)) ?? .null
            if r.status >= 400 {
                let reason = json["error"]?.stringValue ?? "HTTP \(r.status)"
                let detail = json["reason"]?.stringValue.map { ": \($0)" } ?? ""
                Command.fail("relay: the admin API answered \(r.status): \(reason)\(detail)")
                return nil
            }
            return (r.status, json)
        }
    }

    static func query(_ o: Options, _ keys: [(String, String)]) -> String {
        let pairs = keys.compactMap { flag, name in
            o.flags[flag].map { "\(name)=\(Template.escape($0, .url))" }
        }
        return pairs.isEmpty ? "" : "?" + pairs.joined(separator: "&")
    }

    static func printJSON(_ v: JSONValue) { print(v.jsonString()) }

    /// Column-aligned text.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ")
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }

    static func events(_ args: [String]) -> Int32 {
        guard let o = parse(args) else { return 2 }
        if o.positional.first == "show" {
            guard o.positional.count == 2 else { Command.fail("relay events show EVENT_ID"); return 2 }
            guard let (_, v) = call(o, "GET", "/v1/events/\(Template.escape(o.positional[1], .url))") else { return 1 }
            if o.json { printJSON(v); return 0 }
            let e = v["event"] ?? .null
            print("event    \(e["id"]?.stringValue ?? "")  \(e["type"]?.stringValue ?? "")  \(statusText(e))")
            print("source   \(e["source"]?.stringValue ?? "")  received \(e["receivedAt"]?.stringValue ?? "")")
            print("subject  \(e["subject"]?.jsonString() ?? "{}")")
            var rows: [[String]] = []
            for d in v["deliveries"]?.arrayValue ?? [] {
                for a in d["attemptLog"]?.arrayValue ?? [] {
                    rows.append([d["id"]?.stringValue ?? "", d["destination"]?.stringValue ?? "", d["state"]?.stringValue ?? "",
                                 a["n"]?.scalarText ?? "", a["status"]?.scalarText ?? "-", (a["latencyMs"]?.scalarText ?? "") + " ms",
                                 a["error"]?.stringValue ?? ""])
                }
                if (d["attemptLog"]?.arrayValue ?? []).isEmpty {
                    rows.append([d["id"]?.stringValue ?? "", d["destination"]?.stringValue ?? "", d["state"]?.stringValue ?? "",
                                 "-", "-", "-", d["lastError"]?.stringValue ?? ""])
                }
            }
            print("")
            print(table(["DELIVERY", "DESTINATION", "STATE", "ATTEMPT", "STATUS", "LATENCY", "ERROR"], rows))
            return 0
        }
        guard o.positional.isEmpty || o.positional == ["list"] else { Command.fail(usage); return 2 }
        let q = query(o, [("--source", "source"), ("--status", "status"), ("--subject", "subject"), ("--type", "type"),
                          ("--since", "since"), ("--until", "until"), ("--limit", "limit"), ("--cursor", "cursor")])
        guard let (_, v) = call(o, "GET", "/v1/events" + q) else { return 1 }
        if o.json { printJSON(v); return 0 }
        let rows = (v["events"]?.arrayValue ?? []).map { e in
            [e["id"]?.stringValue ?? "", e["receivedAt"]?.stringValue ?? "", e["source"]?.stringValue ?? "",
             e["type"]?.stringValue ?? "", statusText(e),
             (e["subject"]?.objectValue ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.scalarText ?? "")" }.joined(separator: " ")]
        }
        print(table(["EVENT", "RECEIVED", "SOURCE", "TYPE", "STATUS", "SUBJECT"], rows))
        if let next = v["nextCursor"]?.stringValue { print("(more: --cursor \(next))") }
        return 0
    }

    /// `shipped`, `packed (placed)` for an added status, `unmapped: LOST` for a provider status no map covers.
    static func statusText(_ e: JSONValue) -> String {
        if let s = e["status"]?.stringValue {
            return e["statusFallback"]?.stringValue.map { "\(s) (\($0))" } ?? s
        }
        if e["statusUnmapped"] == .bool(true) { return "unmapped: \(e["providerStatus"]?["code"]?.stringValue ?? "?")" }
        return "-"
    }

    static func deliveries(_ args: [String]) -> Int32 {
        guard let o = parse(args), o.positional.isEmpty else { Command.fail(usage); return 2 }
        let q = query(o, [("--state", "state"), ("--destination", "destination"), ("--limit", "limit"), ("--cursor", "cursor")])
        guard let (_, v) = call(o, "GET", "/v1/deliveries" + q) else { return 1 }
        if o.json { printJSON(v); return 0 }
        let rows = (v["deliveries"]?.arrayValue ?? []).map { d in
            [d["id"]?.stringValue ?? "", d["eventId"]?.stringValue ?? "", d["destination"]?.stringValue ?? "",
             d["state"]?.stringValue ?? "", d["attempts"]?.scalarText ?? "",
             (d["values"]?.objectValue ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.stringValue ?? "")" }.joined(separator: " "),
             d["lastError"]?.stringValue ?? ""]
        }
        print(table(["DELIVERY", "EVENT", "DESTINATION", "STATE", "ATTEMPTS", "VALUES", "LAST ERROR"], rows))
        if let next = v["nextCursor"]?.stringValue { print("(more: --cursor \(next))") }
        return 0
    }

    static func replay(_ args: [String]) -> Int32 {
        guard let o = parse(args) else { return 2 }
        if let id = o.positional.first {
            guard o.positional.count == 1 else { Command.fail(usage); return 2 }
            guard let (_, v) = call(o, "POST", "/v1/deliveries/\(Template.escape(id, .url))/replay") else { return 1 }
            if o.json { printJSON(v) } else { print("\(id): queued again (was \(v["previousState"]?.stringValue ?? "?"))") }
            return 0
        }
        guard o.flags["--state"] != nil || o.flags["--destination"] != nil else {
            Command.fail("relay replay: a DELIVERY_ID, or a filter (--state dead, --destination D)\n\n\(usage)")
            return 2
        }
        var body: [String: JSONValue] = ["dryRun": .bool(!o.yes)]
        for (flag, key) in [("--state", "state"), ("--destination", "destination"), ("--since", "since"), ("--until", "until")] {
            if let v = o.flags[flag] { body[key] = .string(v) }
        }
        guard let (_, v) = call(o, "POST", "/v1/replay", body: .object(body)) else { return 1 }
        if o.json { printJSON(v); return 0 }
        let n = v["matched"]?.scalarText ?? "0"
        print(o.yes ? "\(v["replayed"]?.scalarText ?? "0") deliveries queued again" : "\(n) deliveries match (a dry run: add --yes to replay them)")
        return 0
    }
}
