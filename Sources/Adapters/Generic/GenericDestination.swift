import Foundation
import Relay

/// `adapter: "generic"` as a destination: any JSON or form HTTP API, described as data.
///
/// One call per delivery:
/// ```json5
/// "acme": { adapter: "generic",
///           method: "PUT", url: "https://api.acme.example/orders/${subject.orderId}/status",   // placeholders URL-encoded
///           headers: { Authorization: "Bearer ${env:ACME_TOKEN}" },
///           statusMap: { shipped: "SHIPPED", cancelled: "CANCELLED" },    // ${mappedStatus}; unmapped -> skipped
///           body: { state: "${mappedStatus}", tracking: "${attributes.trackingNumber?}" },  // or a string template,
///                                                   // "canonical" (default), "raw", or form: { k: "${...}" }
///           responses: [ { status: 200, body: { "$.ok": false }, result: "terminal" } ],
///           contextKeys: { vendorOrderId: "response.order.id" },  // values taken from the response...
///           correlate: ["vendorOrderId"] }                        // ...and linked to the event's subject
/// ```
/// Several calls per delivery (Capillary's vendor-redemption actions): `actions: [{ name, method, url, headers,
/// body | form, contentType, contextKeys, responses, enabled }]`, run in order; a value a step extracts is
/// `${name}` in later steps; a failed step stops the chain, named in the reason, and a retry resumes at it.
public struct GenericDestination: DestinationAdapter {
    public enum Body: Sendable {
        case none
        case canonical
        case raw
        /// A text template; placeholders escaped for `contentType` (JSON-escaped in JSON, form-encoded in forms).
        case text(Template)
        case json(JSONTemplate)
        case form([(String, Template)])
    }

    public struct Step: Sendable {
        public var name: String
        public var method: String
        public var url: Template
        public var headers: [(String, Template)]
        public var body: Body
        public var contentType: String?
        /// Name -> where in the response: `response.a.b` / `$.a.b` (body), `response.headers.Name`.
        public var contextKeys: [(String, String)]
        public var responses: ResponseRules
        /// False (Capillary's `retryAction: false`): a failure of this step is not retried but dead-lettered.
        public var retry: Bool = true
    }

    public var steps: [Step]
    public var statusMap: StatusMap?
    /// Context keys stored as identifiers of the event's subject once learned.
    public var correlate: [String]
    /// Context values the chain must yield, recorded with the delivery once delivered (Capillary's `responseKeys`).
    public var responseKeys: [String] = []
    /// Why every delivery is skipped (a vendor redemption with `enabled: false`), if so.
    public var disabled: String?

    func scope(_ event: CanonicalEvent, _ context: DeliveryContext) throws(TranslateError) -> TemplateScope {
        var values: [String: JSONValue] = [:]
        if let statusMap {
            values["mappedStatus"] = .string(try statusMap.value(for: event))
        } else if let s = event.status {
            values["mappedStatus"] = .string(s.rawValue)
        }
        return TemplateScope(event: event, context: context, values: values)
    }

    public func translate(_ event: CanonicalEvent, context: DeliveryContext) throws(TranslateError) -> OutboundRequest {
        if let disabled { throw .skip(disabled) }
        guard context.step < steps.count else {
            throw TranslateError("step \(context.step + 1) does not exist (the destination has \(steps.count))")
        }
        let step = steps[context.step]
        let scope = try self.scope(event, context)
        do {
            return try build(step, event: event, scope: scope)
        } catch {
            throw TranslateError(prefix(step) + error.reason, kind: error.kind)
        }
    }

    private func prefix(_ step: Step) -> String {
        steps.count > 1 ? "step \"\(step.name)\" (\(steps.firstIndex { $0.name == step.name }.map { $0 + 1 } ?? 0) of \(steps.count)): " : ""
    }

    private func build(_ step: Step, event: CanonicalEvent, scope: TemplateScope) throws(TranslateError) -> OutboundRequest {
        let url = try step.url.render(scope, escaping: .url)
        var headers: [(String, String)] = []
        for (k, t) in step.headers {
            let v = try t.render(scope)
            var clean = String.UnicodeScalarView()
            for u in v.unicodeScalars { clean.append(u == "\r" || u == "\n" ? " " : u) }
            headers.append((k, String(clean)))
        }
        var bytes: [UInt8] = []
        var contentType = step.contentType
        switch step.body {
        case .none:
            break
        case .canonical:
            bytes = Array(event.jsonText(includeRaw: true).utf8)
            contentType = contentType ?? "application/json"
        case .raw:
            bytes = event.raw?.bytes ?? []
            contentType = contentType ?? event.raw?.contentType ?? "application/octet-stream"
        case .text(let t):
            let ct = (contentType ?? "application/json").lowercased()
            let escaping: Template.Escaping = ct.contains("json") ? .json : ct.contains("x-www-form-urlencoded") ? .form : .none
            bytes = Array(try t.render(scope, escaping: escaping).utf8)
            contentType = contentType ?? "application/json"
        case .json(let t):
            bytes = Array(try t.render(scope).jsonString().utf8)
            contentType = contentType ?? "application/json"
        case .form(let fields):
            var pairs: [(String, String)] = []
            for (k, t) in fields {
                let v = try t.value(scope)
                if v.isNull { continue }
                pairs.append((k, v.stringValue ?? v.scalarText ?? v.jsonString()))
            }
            bytes = Array(Wire.formEncode(pairs).utf8)
            contentType = contentType ?? "application/x-www-form-urlencoded"
        }
        if let contentType, !headers.contains(where: { $0.0.lowercased() == "content-type" }) {
            headers.append(("Content-Type", contentType))
        }
        return OutboundRequest(method: step.method, url: url, headers: headers, body: bytes)
    }

    public func outcome(_ response: OutboundResponse, event: CanonicalEvent, context: DeliveryContext) -> StepOutcome {
        guard context.step < steps.count else { return StepOutcome(.terminal(reason: "no such step")) }
        let step = steps[context.step]
        var classification = step.responses.classify(response) ?? Self.classifyByStatus(response)
        switch classification {
        case .delivered: break
        case .retry(let reason, _) where !step.retry:
            classification = .terminal(reason: prefix(step) + reason + " (retryAction: false, so not retried)")
        case .retry(let reason, let after): classification = .retry(reason: prefix(step) + reason, after: after)
        case .terminal(let reason): classification = .terminal(reason: prefix(step) + reason)
        }
        guard classification == .delivered else { return StepOutcome(classification) }
        var values: [String: String] = [:]
        if !step.contextKeys.isEmpty {
            let json = Wire.json(response)
            for (name, path) in step.contextKeys {
                guard let v = Self.extract(path, response: response, json: json) else {
                    return StepOutcome(.terminal(reason: prefix(step) + "the response has no \(path) (contextKeys.\(name))"))
                }
                values[name] = v
            }
        }
        var correlation: [String: String] = [:]
        for key in correlate {
            if let v = values[key] ?? context.values[key] { correlation[key] = v }
        }
        let next = context.step + 1 < steps.count
        if !next && !responseKeys.isEmpty {
            // The chain is done: what it must yield is recorded with the delivery. (Every responseKey is a contextKey
            // of a step, checked with the configuration, and a step whose response lacks one has failed above.)
            let recorded = context.values.merging(values) { _, new in new }.filter { responseKeys.contains($0.key) }
            return StepOutcome(.delivered, values: recorded, correlation: correlation, next: false)
        }
        return StepOutcome(.delivered, values: values, correlation: correlation, next: next)
    }

    public func retries(step: Int) -> Bool { step < steps.count ? steps[step].retry : true }

    static func extract(_ path: String, response: OutboundResponse, json: JSONValue?) -> String? {
        var p = path
        if p.hasPrefix("response.headers.") {
            return response.headers[String(p.dropFirst("response.headers.".count))]
        }
        if p.hasPrefix("response.") { p = "$." + p.dropFirst("response.".count) }
        guard let v = json?.value(atPath: p), !v.isNull else { return nil }
        return v.stringValue ?? v.scalarText ?? v.jsonString()
    }
}

public struct GenericDestinationFactory: DestinationAdapterFactory {
    public init() {}
    public var name: String { "generic" }
    static let stepKeys = ["method", "url", "headers", "body", "form", "contentType", "contextKeys", "responses"]
    public var destinationKeys: [String] { Self.stepKeys + ["statusMap", "correlate", "actions", "vendorRedemption", "variables"] }

    public func makeDestination(name: String, config: [String: JSONValue], path: String,
                                reader r: ConfigReader) -> (any DestinationAdapter)? {
        var steps: [Ordered] = []
        var responseKeys: [String] = []
        var disabled: String?
        let redemption = config["vendorRedemption"].flatMap { $0.isNull ? nil : $0 }
        var variables: [String: String] = [:]
        let vp = ConfigReader.join(path, "variables")
        for (k, v) in r.map(config["variables"], vp) ?? [:] {
            if let t = v.stringValue { variables[k] = t } else {
                r.problem(ConfigReader.join(vp, k), "expected a template such as \"${attributes.email?}\", found \(v.kindName)")
            }
        }
        if config["variables"] != nil && redemption == nil {
            r.problem(vp, "names Capillary variables: it needs vendorRedemption")
        }
        if let redemption {
            for k in Self.stepKeys + ["actions"] where config[k] != nil {
                r.problem(ConfigReader.join(path, k), "is given by vendorRedemption (its actions' apiUrl, apiType, apiHeaders, apiBody, contextKeys)")
            }
            guard let loaded = CapillaryRedemption.read(redemption, destination: path, variables: variables, reader: r) else { return nil }
            steps = loaded.steps.enumerated().map { ($0.element, $0.offset) }
            responseKeys = loaded.responseKeys
            disabled = loaded.disabled
        } else if let actions = config["actions"], !actions.isNull {
            let ap = ConfigReader.join(path, "actions")
            for k in Self.stepKeys where config[k] != nil {
                r.problem(ConfigReader.join(path, k), "belongs inside each of actions[] when actions are given")
            }
            guard let list = actions.arrayValue, !list.isEmpty else {
                r.problem(ap, "expected a non-empty list of steps [{ name, method, url, body, contextKeys }]")
                return nil
            }
            var names = Set<String>()
            for (i, a) in list.enumerated() {
                let p = ConfigReader.join(ap, i)
                guard let o = r.object(a, p, keys: Self.stepKeys + ["name", "enabled", "execOrder"]) else { continue }
                if r.bool(o, "enabled", p) == false { continue }
                let stepName = r.string(o, "name", p) ?? "step \(i + 1)"
                if !names.insert(stepName).inserted { r.problem(ConfigReader.join(p, "name"), "\"\(stepName)\" is used twice") }
                if let s = step(o, p, name: stepName, r) { steps.append((s, r.int(o, "execOrder", p) ?? i)) }
            }
            steps.sort { $0.1 < $1.1 }
        } else if let s = step(config, path, name: "request", r) {
            steps.append((s, 0))
        }
        let chain = steps.map(\.0)
        // Values a step extracts must exist before a later step uses them.
        var known = Set<String>(["mappedStatus"])
        for (i, s) in chain.enumerated() {
            let placeholders = s.url.placeholders + s.headers.flatMap { $0.1.placeholders } + Self.placeholders(s.body)
            for ph in placeholders {
                let root = String(ph.split(separator: ".").first ?? "").replacingOccurrences(of: "?", with: "")
                if Template.isEventField(root) || ph.hasSuffix("?") { continue }
                let name = root == "context" ? String(ph.split(separator: ".").dropFirst().first ?? "") : root
                if !known.contains(name) {
                    if redemption != nil {
                        r.problem(ConfigReader.join(path, "vendorRedemption") + ".actions[name=\"\(s.name)\"]",
                                  "${\(ph)} is not a Capillary variable the relay knows (\(CapillaryRedemption.variables.keys.sorted().joined(separator: ", ")), customfield_<Name>), an event field, nor a value an earlier action extracts (contextKeys); name it in the destination's variables: { \(ph): \"${attributes....}\" }")
                        continue
                    }
                    let where_ = config["actions"] != nil ? ConfigReader.join(ConfigReader.join(path, "actions"), i) : path
                    r.problem(where_, "${\(ph)} is not an event field nor a value an earlier step extracts (contextKeys)")
                }
            }
            for (k, _) in s.contextKeys { known.insert(k) }
        }
        var statusMap: StatusMap?
        if config["statusMap"] != nil {
            statusMap = r.outboundStatusMap(config, "statusMap", path, required: true)
        }
        let correlate = r.strings(config, "correlate", path) ?? []
        for (i, key) in correlate.enumerated() where !known.contains(key) {
            r.problem(ConfigReader.join(ConfigReader.join(path, "correlate"), i), "\"\(key)\" is not one of the contextKeys")
        }
        guard !chain.isEmpty || disabled != nil else { return nil }
        return GenericDestination(steps: chain, statusMap: statusMap, correlate: correlate, responseKeys: responseKeys,
                                  disabled: disabled)
    }

    private typealias Ordered = (GenericDestination.Step, Int)

    static func placeholders(_ body: GenericDestination.Body) -> [String] {
        switch body {
        case .text(let t): return t.placeholders
        case .form(let fields): return fields.flatMap { $0.1.placeholders }
        case .json(let t): return t.placeholders
        default: return []
        }
    }

    private func step(_ o: [String: JSONValue], _ path: String, name: String, _ r: ConfigReader) -> GenericDestination.Step? {
        guard let url = r.template(o, "url", path, required: true) else { return nil }
        if !(url.text.hasPrefix("http://") || url.text.hasPrefix("https://")) {
            r.problem(ConfigReader.join(path, "url"), "must be an http:// or https:// URL")
        }
        let method = (r.string(o, "method", path) ?? "POST").uppercased()
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(method) {
            r.problem(ConfigReader.join(path, "method"), "must be GET, POST, PUT, PATCH or DELETE")
        }
        var headers: [(String, Template)] = []
        let hp = ConfigReader.join(path, "headers")
        if let h = r.map(o["headers"], hp) {
            for k in h.keys.sorted() {
                if let t = r.template(h[k]!, ConfigReader.join(hp, k)) { headers.append((k, t)) }
            }
        }
        var body: GenericDestination.Body = ["GET", "DELETE"].contains(method) ? .none : .canonical
        let bp = ConfigReader.join(path, "body")
        if o["body"] != nil && o["form"] != nil {
            r.problem(ConfigReader.join(path, "form"), "give body or form, not both")
        }
        switch o["body"] {
        case nil, .null?: break
        case .string("canonical")?: body = .canonical
        case .string("raw")?: body = .raw
        case .string("none")?: body = .none
        case .string?:
            if let t = r.template(o["body"]!, bp) { body = .text(t) }
        case .object?, .array?:
            if let t = r.jsonTemplate(o["body"]!, bp) { body = .json(t) }
        case let other?:
            r.problem(bp, "expected \"canonical\", \"raw\", \"none\", a template string or a JSON object, found \(other.kindName)")
        }
        if let f = o["form"], !f.isNull {
            let fp = ConfigReader.join(path, "form")
            var fields: [(String, Template)] = []
            for (k, v) in (r.map(f, fp) ?? [:]).sorted(by: { $0.key < $1.key }) {
                if let t = r.template(v.stringValue.map(JSONValue.string) ?? .string(v.scalarText ?? ""), ConfigReader.join(fp, k)) {
                    fields.append((k, t))
                }
            }
            body = .form(fields)
        }
        var contextKeys: [(String, String)] = []
        let cp = ConfigReader.join(path, "contextKeys")
        for (k, v) in (r.map(o["contextKeys"], cp) ?? [:]).sorted(by: { $0.key < $1.key }) {
            if let p = r.jsonPath(v, ConfigReader.join(cp, k), form: .response) { contextKeys.append((k, p)) }
        }
        return GenericDestination.Step(name: name, method: method, url: url, headers: headers, body: body,
                                       contentType: r.string(o, "contentType", path), contextKeys: contextKeys,
                                       responses: r.responseRules(o["responses"], ConfigReader.join(path, "responses")))
    }
}
