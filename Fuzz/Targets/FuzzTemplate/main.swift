import Foundation
import FuzzSupport
@testable import Relay

// Templates (`Template`, `JSONTemplate`: destination URLs, headers, bodies) and JSON paths (`JSONPath.validate`,
// `JSONValue.value(atPath:)`: source maps, idempotency fields, route conditions) on arbitrary text, over an event
// made from an arbitrary JSON body. The input is NUL-separated: a selector byte, the template, the path, the body.
// - nothing traps, whatever the placeholders, brackets, quotes and indexes;
// - escaping keeps its promise for a value that is the whole template: `.json` gives JSON string content that
//   parses back to the value, `.url` only unreserved characters and %XX that decode back, `.form` a value that
//   `Ingest.parseForm` reads back;
// - a rendered JSON template is JSON that parses.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = fuzzBytes(data, size)
    let f = FuzzFields(input, count: 4)
    let templateText = f.text(1), pathText = f.text(2), bodyBytes = f[3]

    for form in [JSONPath.Form.body, .field, .response] { _ = JSONPath.validate(pathText, form: form) }
    let body = (try? JSONParser.parse(bodyBytes)) ?? .string(String(decoding: bodyBytes, as: UTF8.self))
    _ = body.value(atPath: pathText)
    _ = JSONPath.getIndex(Substring(pathText))

    // The configuration's way in: references resolved (environment only: a ${file:} would read the machine's
    // files), then checked, problems collected.
    if !templateText.contains("file:") && !pathText.contains("file:") {
        let reader = ConfigReader(environment: ["A": "a}${b", "EMPTY": ""])
        _ = reader.template(.string(templateText), "t")
        _ = reader.jsonPath(.string(pathText), "p", form: f.byte(0) & 1 == 0 ? .body : .field)
        _ = reader.substituteReferences(templateText, "t")
    }

    let scope = makeScope(body, raw: bodyBytes, pathText: pathText)
    if let template = try? Template(templateText) {
        _ = template.placeholders
        var rendered: [Template.Escaping: String] = [:]
        for escaping in [Template.Escaping.none, .json, .url, .form] {
            rendered[escaping] = try? template.render(scope, escaping: escaping)
        }
        _ = try? template.value(scope)
        _ = try? template.renderIdentifier(scope, field: "id", escaping: .url)
        if template.isSinglePlaceholder, let plain = rendered[.none] {
            if let json = rendered[.json] {
                guard case .string(let back)? = try? JSONParser.parse(Array(("\"" + json + "\"").utf8)), back == plain else {
                    fuzzFailure("json escaping of \(plain.debugDescription) gave \(json.debugDescription)", input)
                }
            }
            if let url = rendered[.url] {
                let unreserved = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%".utf8)
                guard url.utf8.allSatisfy(unreserved.contains), url.removingPercentEncoding == plain,
                      !(url == "." || url == "..") else {
                    fuzzFailure("url escaping of \(plain.debugDescription) gave \(url.debugDescription)", input)
                }
            }
            if let form = rendered[.form] {
                guard let back = Ingest.parseForm(Array(("k=" + form).utf8)), back.count == 1, back[0].1 == plain else {
                    fuzzFailure("form escaping of \(plain.debugDescription) gave \(form.debugDescription)", input)
                }
            }
        }
    }
    if let template = try? JSONTemplate(body) {
        _ = template.placeholders
        if let value = try? template.render(scope) {
            let text = value.jsonString()
            if (try? JSONParser.parse(Array(text.utf8))) == nil {
                fuzzFailure("a rendered JSON template is not JSON: \(text.prefix(300))", input)
            }
        }
    }
    return 0
}

/// An event whose every field comes from the body: its strings as the subject, the body as its attributes and raw
/// payload, the path's text as the provider's status.
func makeScope(_ body: JSONValue, raw: [UInt8], pathText: String) -> TemplateScope {
    var subject: [String: String] = [:]
    for (k, v) in body.objectValue ?? [:] { if let s = v.scalarText { subject[k] = s } }
    let event = CanonicalEvent(
        id: "evt_01", source: "fuzz", type: body["type"]?.scalarText ?? "t", subject: subject,
        status: .shipped, providerStatus: ProviderStatus(code: pathText, label: body["label"]?.stringValue),
        occurredAt: body["at"]?.scalarText, receivedAt: "2026-01-01T00:00:00.000Z",
        attributes: body.objectValue ?? ["value": body], idempotencyKey: "k", raw: RawPayload(contentType: "application/json", bytes: raw))
    let context = DeliveryContext(deliveryID: "dlv_1", destination: "d", attempt: 1, step: 0,
                                  values: ["voucher": pathText])
    return TemplateScope(event: event, context: context, values: ["mappedStatus": .string("S"), "body": body])
}

runFuzzer(fuzzOne)
