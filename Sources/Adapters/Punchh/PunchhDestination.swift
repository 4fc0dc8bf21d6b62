import Foundation
import Relay

/// `adapter: "punchh"` as a destination: marks a Punchh redemption code processed or voided.
///
/// `PUT {baseURL}/api/v1/redemption_codes/{code}`, form-encoded: `process=true` (with `amount=` when the event
/// has one) for `processed`, `void=true` for `cancelled`; other statuses are skipped.
///
/// ```json5
/// "punchh-pos": { adapter: "punchh", baseURL: "https://sandbox.punchh.com",     // per business; legacy https://punchh.com
///                 headers: { Authorization: "Token token=\"${env:PUNCHH_LOCATION_KEY}\"" },
///                 code: "${subject.redemptionCode}",        // the code in the path (percent-encoded)
///                 statusMap: { processed: "process", cancelled: "void" },   // values: "process" or "void"
///                 amount: "${attributes.amount?}",          // sent as amount=... with a process, when not empty
///                 responses: [ ... ] }                      // optional rules read before the adapter's own
/// ```
///
/// Punchh answers 200 `{"status": "<text>", "category": "...", "redemption_amount": n}` even when nothing was done:
/// the category decides (see `outcome`).
public struct PunchhDestination: DestinationAdapter {
    public enum Action: String, Sendable { case process, void }

    public var basics: DestinationBasics
    public var code: Template
    public var amount: Template?
    /// Canonical status -> `process` or `void`.
    public var statusMap: StatusMap
    /// Data-driven rules read before the adapter's own reading (for a partner whose Punchh answers differ).
    public var responses: ResponseRules

    public static let defaultCode = "${subject.redemptionCode}"
    public static let defaultAmount = "${attributes.amount?}"
    public static let defaultStatusMap: [CanonicalStatus: String] = [.processed: "process", .cancelled: "void"]

    public init(basics: DestinationBasics, code: Template, amount: Template?, statusMap: StatusMap,
                responses: ResponseRules = ResponseRules()) {
        self.basics = basics
        self.code = code
        self.amount = amount
        self.statusMap = statusMap
        self.responses = responses
    }

    func action(for event: CanonicalEvent) throws(TranslateError) -> Action {
        let value = try statusMap.value(for: event)
        guard let action = Action(rawValue: value) else {
            throw TranslateError("statusMap gives \"\(value)\" for status \"\(event.status?.rawValue ?? "")\": Punchh knows only process and void")
        }
        return action
    }

    /// The redemption code for `event`; a missing or empty one is terminal, naming the template.
    func redemptionCode(_ scope: TemplateScope) throws(TranslateError) -> String {
        let id = try code.render(scope)
        guard !id.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw TranslateError("the redemption code is empty (code: \"\(code.shown)\")")
        }
        return id
    }

    public func translate(_ event: CanonicalEvent, context: DeliveryContext) throws(TranslateError) -> OutboundRequest {
        let action = try self.action(for: event)
        let scope = TemplateScope(event: event, context: context, values: ["mappedStatus": .string(action.rawValue)])
        let id = try redemptionCode(scope)
        let url = basics.baseURL + "/api/v1/redemption_codes/" + Template.escape(id, .url)
        var fields: [(String, String)]
        switch action {
        case .process:
            fields = [("process", "true")]
            if let amount {
                let text = try amount.render(scope).trimmingCharacters(in: .whitespaces)
                if !text.isEmpty {
                    guard let n = Double(text), n.isFinite else {
                        throw TranslateError("amount \"\(text)\" (from \"\(amount.shown)\") is not a number")
                    }
                    fields.append(("amount", text))
                }
            }
        case .void:
            fields = [("void", "true")]
        }
        return Wire.form("PUT", url, headers: try basics.renderedHeaders(scope), fields: fields)
    }

    /// Non-2xx: the default reading by status (401/403/404 terminal, 408/429/5xx retried), with Punchh's error text.
    /// 2xx: the `category` decides. After `process`: `processed` is delivered; `invalid` and `expired` are terminal
    /// (the code is unknown or past its date); anything else (`redeemable`, `unassigned`...) is terminal too: the
    /// code was not processed. After `void`: `invalid` and `expired` are terminal, anything else delivered. A 2xx
    /// without a category is delivered.
    public func outcome(_ response: OutboundResponse, event: CanonicalEvent, context: DeliveryContext) -> StepOutcome {
        if let c = responses.classify(response) { return StepOutcome(c) }
        let json = Wire.json(response)
        guard (200..<300).contains(response.status) else {
            return StepOutcome(Self.detailed(Self.classifyByStatus(response), json))
        }
        guard let category = json?["category"]?.scalarText?.lowercased(), !category.isEmpty else {
            return StepOutcome(.delivered)
        }
        let text = json?["status"]?.scalarText.map { ": " + $0 } ?? ""
        let scope = TemplateScope(event: event, context: context)
        let id = (try? code.render(scope)) ?? "?"
        let action = (try? self.action(for: event)) ?? .process
        switch (action, category) {
        case (_, "invalid"), (_, "expired"):
            return StepOutcome(.terminal(reason: "redemption code \(id) is \(category)\(text)"))
        case (.process, "processed"):
            return StepOutcome(.delivered)
        case (.process, _):
            return StepOutcome(.terminal(reason: "redemption code \(id) not processed: category \(category)\(text)"))
        case (.void, _):
            return StepOutcome(.delivered)
        }
    }

    /// The default classification's reason with Punchh's own error text (`error`, `errors` or `status`) added.
    static func detailed(_ c: Classification, _ json: JSONValue?) -> Classification {
        guard let json else { return c }
        var detail = json["error"]?.scalarText ?? json["status"]?.scalarText
        if detail == nil, let errors = json["errors"], !errors.isNull { detail = errors.scalarText ?? errors.jsonString() }
        guard let detail, !detail.isEmpty else { return c }
        let short = detail.count > 200 ? String(detail.prefix(200)) + "..." : detail
        switch c {
        case .delivered: return c
        case .retry(let reason, let after): return .retry(reason: "\(reason): \(short)", after: after)
        case .terminal(let reason): return .terminal(reason: "\(reason): \(short)")
        }
    }
}

public struct PunchhDestinationFactory: DestinationAdapterFactory {
    public init() {}
    public var name: String { "punchh" }
    public var destinationKeys: [String] { DestinationBasics.keys + ["code", "statusMap", "amount", "responses"] }

    public func makeDestination(name: String, config: [String: JSONValue], path: String,
                                reader r: ConfigReader) -> (any DestinationAdapter)? {
        // No default: the server name is per business (https://{server}.punchh.com; legacy https://punchh.com).
        let basics = DestinationBasics(r, config, path, defaultBaseURL: nil)
        let code = config["code"] == nil ? try? Template(PunchhDestination.defaultCode)
            : r.template(config, "code", path, required: true)
        if let code, code.text.trimmingCharacters(in: .whitespaces).isEmpty {
            r.problem(ConfigReader.join(path, "code"), "must not be empty: it names the redemption code in the URL")
        }
        var amount: Template?
        if config["amount"] == nil {
            amount = try? Template(PunchhDestination.defaultAmount)
        } else if config["amount"]?.isNull == false {
            amount = r.template(config, "amount", path)
        }
        let statusMap = r.outboundStatusMap(config, "statusMap", path, defaults: PunchhDestination.defaultStatusMap,
                                            required: true) { value in
            PunchhDestination.Action(rawValue: value) == nil ? "\"\(value)\" is not a Punchh action: use \"process\" or \"void\"" : nil
        }
        let responses = r.responseRules(config["responses"], ConfigReader.join(path, "responses"))
        guard let basics, let code else { return nil }
        return PunchhDestination(basics: basics, code: code, amount: amount, statusMap: statusMap, responses: responses)
    }
}
