import Foundation
import Relay

/// A Capillary vendor redemption exactly as Capillary holds it (the body of `POST .../vendor/redemption/create`
/// or `PUT .../vendor/redemption/{id}/brand/{brandId}`), run by the relay as a generic destination's actions:
///
/// ```json5
/// "acme-vouchers": { adapter: "generic", vendorRedemption: "config/partners/acme-redemption.json" }  // or inline
/// ```
///
/// | Capillary key              | meaning here                                                                     |
/// |----------------------------|----------------------------------------------------------------------------------|
/// | `actions[]`                | the steps, run in `execOrder` (then list order)                                  |
/// | `name`, `actionId`         | the step's name in reasons and logs (`actionId` only when there is no name)      |
/// | `apiType`, `apiUrl`        | method and URL (a template; placeholders URL-encoded)                            |
/// | `apiHeaders`               | headers (templates); an inline credential is refused: `${env:...}`/`${file:...}` |
/// | `apiBody` / `apiBodyField` | the body, a text template escaped for the Content-Type (JSON by default)         |
/// | `contextKeys`              | values taken from the response (`response.coupon.code`, `...get(0).id`)          |
/// | `retryAction: false`       | a failure of that step is not retried: the delivery is dead-lettered at once     |
/// | `enabled: false`           | the step is left out; at the top: every delivery is skipped                      |
/// | `responseKeys`             | context values the chain must yield; recorded with the delivered delivery        |
/// | `vendorId`, `brandId`, `redemptionType`, `id` | Capillary's bookkeeping: accepted, not used               |
///
/// Capillary's variables resolve from the canonical event: `${rewardTransactionId}` = `subject.transactionId`
/// (required), `${customerId}`, `${rewardId}` = `subject.*`, `${fulfillmentStatus}` = the mapped status (the
/// destination's `statusMap`, else the canonical status), `${mobile}` = `attributes.mobile`,
/// `${customfield_<Name>}` = `attributes.customFields.<Name>`; all but the first give empty text when absent.
/// The destination's `variables: { email: "${attributes.email?}" }` adds or replaces names.
enum CapillaryRedemption {
    static let topKeys = ["actions", "responseKeys", "vendorId", "brandId", "name", "redemptionType", "enabled", "id",
                          "description"]
    static let actionKeys = ["name", "execOrder", "apiType", "apiUrl", "apiBody", "apiBodyField", "apiHeaders",
                             "contextKeys", "retryAction", "actionId", "enabled"]

    /// Capillary variable -> the canonical placeholder it stands for.
    static let variables: [String: String] = [
        "rewardTransactionId": "subject.transactionId",
        "customerId": "subject.customerId?",
        "rewardId": "subject.rewardId?",
        "fulfillmentStatus": "mappedStatus?",
        "mobile": "attributes.mobile?",
    ]
    static let customFieldPrefix = "customfield_"

    struct Loaded {
        var steps: [GenericDestination.Step]
        var responseKeys: [String]
        /// Set when the redemption says `enabled: false`.
        var disabled: String?
    }

    /// Reads `vendorRedemption` (an object, or the path of a JSON file holding one) of the destination at `path`.
    /// Messages name the key path inside the redemption and never quote a value from it.
    static func read(_ value: JSONValue, destination path: String, variables extra: [String: String],
                     reader r: ConfigReader) -> Loaded? {
        var base = ConfigReader.join(path, "vendorRedemption")
        let tree: JSONValue
        switch value {
        case .object:
            tree = value
        case .string(let file):
            guard let data = FileManager.default.contents(atPath: file) else {
                r.problem(base, "cannot read \(file)\(FileManager.default.fileExists(atPath: file) ? "" : ": no such file") (a path relative to the directory the relay runs in)")
                return nil
            }
            base += "<\(file)>"
            do {
                // Where, never the line itself: the pasted file may hold what must not reach a log.
                tree = try JSON5.parse(data, showLines: false)
            } catch {
                r.problem(base, "is not valid JSON: \(error.summary)")
                return nil
            }
        default:
            r.problem(base, "expected Capillary's vendor redemption (an object with actions[]) or the path of a JSON file holding it, found \(value.kindName)")
            return nil
        }
        guard let o = r.object(tree, base, keys: topKeys) else { return nil }
        var out = Loaded(steps: [], responseKeys: [], disabled: nil)
        if r.bool(o, "enabled", base) == false {
            let name = o["name"]?.scalarText.map { "\"\(String($0.prefix(80)))\" " } ?? ""
            out.disabled = "the vendor redemption \(name)is disabled (enabled: false)"
        }
        let ap = ConfigReader.join(base, "actions")
        guard let list = o["actions"]?.arrayValue, !list.isEmpty else {
            r.problem(ap, o["actions"] == nil ? "is required: the redemption's actions [{ name, execOrder, apiType, apiUrl, apiHeaders, apiBody, contextKeys }]"
                                              : "expected a non-empty list of actions")
            return nil
        }
        var ordered: [(GenericDestination.Step, Int, Int)] = []
        var names = Set<String>()
        for (i, a) in list.enumerated() {
            let p = ConfigReader.join(ap, i)
            guard let action = r.object(a, p, keys: actionKeys) else { continue }
            let enabled = r.bool(action, "enabled", p) ?? true
            let order = r.int(action, "execOrder", p) ?? (i + 1)
            let actionId = action["actionId"]?.scalarText
            let name = r.string(action, "name", p) ?? actionId.map { "action \($0)" } ?? "action \(i + 1)"
            guard enabled else { continue }
            if !names.insert(name).inserted { r.problem(ConfigReader.join(p, "name"), "\"\(name)\" names two enabled actions") }
            if let step = step(action, p, name: name, variables: extra, reader: r) { ordered.append((step, order, i)) }
        }
        ordered.sort { ($0.1, $0.2) < ($1.1, $1.2) }
        out.steps = ordered.map(\.0)
        if ordered.isEmpty && out.disabled == nil { r.problem(ap, "has no enabled action: nothing would ever be sent") }
        let rp = ConfigReader.join(base, "responseKeys")
        if let keys = r.strings(o, "responseKeys", base) {
            let extracted = Set(out.steps.flatMap { $0.contextKeys.map(\.0) })
            for (i, k) in keys.enumerated() where !extracted.contains(k) {
                r.problem(ConfigReader.join(rp, i), "\"\(k)\" is not one of the enabled actions' contextKeys (\(extracted.sorted().joined(separator: ", ")))")
            }
            out.responseKeys = keys
        }
        return out
    }

    private static func step(_ a: [String: JSONValue], _ p: String, name: String, variables extra: [String: String],
                             reader r: ConfigReader) -> GenericDestination.Step? {
        func template(_ key: String, required: Bool = false) -> Template? {
            let kp = ConfigReader.join(p, key)
            guard let v = a[key], !v.isNull else {
                if required { r.problem(kp, "is required") }
                return nil
            }
            guard case .string(let text) = v else {
                r.problem(kp, "expected a string, found \(v.kindName)")
                return nil
            }
            return make(text, kp, variables: extra, reader: r)
        }
        let method = (r.string(a, "apiType", p) ?? "POST").uppercased()
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(method) {
            r.problem(ConfigReader.join(p, "apiType"), "must be GET, POST, PUT, PATCH or DELETE")
        }
        let url = template("apiUrl", required: true)
        if let url {
            let up = ConfigReader.join(p, "apiUrl")
            if !(url.text.hasPrefix("http://") || url.text.hasPrefix("https://")) {
                r.problem(up, "must be an http:// or https:// URL")
            } else if let why = credentialInURL(url.text) {
                r.problem(up, why)
            }
        }
        var headers: [(String, Template)] = []
        var contentType: String?
        let hp = ConfigReader.join(p, "apiHeaders")
        for (k, v) in (r.map(a["apiHeaders"], hp) ?? [:]).sorted(by: { $0.key.lowercased() < $1.key.lowercased() }) {
            let kp = ConfigReader.join(hp, k)
            guard case .string(let text) = v else {
                r.problem(kp, "expected a string, found \(v.kindName)")
                continue
            }
            if isCredentialHeader(k) && hasInlineText(text) {
                r.problem(kp, "holds an inline credential, which the relay refuses to keep in configuration: write it as a reference, e.g. \"Basic ${env:ACME_BASIC_CREDENTIALS}\" or \"Bearer ${file:/run/secrets/acme-token}\", or remove the header and give the destination auth: { basic: { username: \"...\", password: \"${env:ACME_PASSWORD}\" } } (docs/configuration.md, secrets)")
                continue
            }
            if k.lowercased() == "content-type" { contentType = text }
            if let t = make(text, kp, variables: extra, reader: r) { headers.append((k, t)) }
        }
        var body: GenericDestination.Body = ["GET", "DELETE"].contains(method) ? .none : .canonical
        let given = (a["apiBody"]?.isNull == false ? a["apiBody"] : nil, a["apiBodyField"]?.isNull == false ? a["apiBodyField"] : nil)
        if let b = given.0, let f = given.1, b != f {
            r.problem(ConfigReader.join(p, "apiBodyField"), "differs from apiBody: give one, or the same text in both")
        }
        if given.0 != nil || given.1 != nil {
            if let t = template(given.0 != nil ? "apiBody" : "apiBodyField") { body = .text(t) }
        } else if !["GET", "DELETE"].contains(method) {
            body = .none
        }
        var contextKeys: [(String, String)] = []
        let cp = ConfigReader.join(p, "contextKeys")
        for (k, v) in (r.map(a["contextKeys"], cp) ?? [:]).sorted(by: { $0.key < $1.key }) {
            if let path = r.jsonPath(v, ConfigReader.join(cp, k), form: .response) { contextKeys.append((k, path)) }
        }
        let retry = r.bool(a, "retryAction", p) ?? true
        guard let url else { return nil }
        return GenericDestination.Step(name: name, method: method, url: url, headers: headers, body: body,
                                       contentType: contentType, contextKeys: contextKeys, responses: ResponseRules(),
                                       retry: retry)
    }

    /// A template from Capillary's text: its variables rewritten to canonical placeholders, `${env:}`/`${file:}`
    /// resolved; messages show the key path, not the text.
    static func make(_ text: String, _ path: String, variables extra: [String: String], reader r: ConfigReader) -> Template? {
        r.template(.string(rewrite(text, extra: extra)), path,
                   shown: "<\(path.split(separator: ".").last.map(String.init) ?? path)>")
    }

    /// `${rewardTransactionId}` -> `${subject.transactionId}` and the like; other placeholders are kept.
    static func rewrite(_ text: String, extra: [String: String]) -> String {
        guard text.contains("${") else { return text }
        var out = ""
        var rest = Substring(text)
        while let start = rest.range(of: "${") {
            out += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else {
                out += rest
                return out
            }
            let inner = rest[start.upperBound..<end].trimmingCharacters(in: .whitespaces)
            if let v = extra[inner] {
                out += v
            } else if let v = variables[inner] {
                out += "${\(v)}"
            } else if inner.hasPrefix(customFieldPrefix), inner.count > customFieldPrefix.count {
                out += "${attributes.customFields.\(inner.dropFirst(customFieldPrefix.count))?}"
            } else {
                out += rest[start.lowerBound...end]
            }
            rest = rest[rest.index(after: end)...]
        }
        return out + rest
    }

    /// Headers that carry credentials.
    static func isCredentialHeader(_ name: String) -> Bool {
        let n = name.lowercased()
        if ["authorization", "proxy-authorization", "cookie", "x-cap-api-oauth-token"].contains(n) { return true }
        return ["token", "secret", "password", "passwd", "apikey", "api-key", "api_key", "signature", "auth", "session"]
            .contains { n.contains($0) }
    }

    /// Whether a header value holds literal text beyond its placeholders and an auth scheme word
    /// (`Basic ${env:X}` is a reference; `Basic dXNlcjpwYXNz` is a credential).
    static func hasInlineText(_ value: String) -> Bool {
        var literal = ""
        var rest = Substring(value)
        while let start = rest.range(of: "${") {
            literal += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else { return true }
            rest = rest[rest.index(after: end)...]
        }
        literal += rest
        var words = literal.split(separator: " ").map { $0.lowercased() }
        if let first = words.first, ["basic", "bearer", "token", "oauth", "digest", "apikey"].contains(first) { words.removeFirst() }
        return !words.joined().isEmpty
    }

    /// A password in the URL's user-info, or a credential-named query parameter with a literal value.
    static func credentialInURL(_ url: String) -> String? {
        let afterScheme = url.components(separatedBy: "://").dropFirst().first ?? ""
        let authority = afterScheme.split(separator: "/", maxSplits: 1).first.map(String.init) ?? ""
        if authority.contains("@") && !authority.contains("${") {
            return "holds credentials in the URL (user:password@): give them as the destination's auth instead"
        }
        guard let q = url.firstIndex(of: "?") else { return nil }
        for pair in url[url.index(after: q)...].split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, isCredentialHeader(parts[0]), hasInlineText(parts[1]) else { continue }
            return "the query parameter \(parts[0]) holds an inline credential: write it as \"${env:NAME}\" or \"${file:PATH}\""
        }
        return nil
    }
}
