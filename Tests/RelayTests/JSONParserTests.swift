import Foundation
import Testing
@testable import Relay

/// The ingest path's JSON parser, checked against Foundation's JSONSerialization (code we did not write).
@Suite struct JSONParserTests {
    static let valid: [String] = [
        #"{}"#, #"[]"#, #"0"#, #"-0.5e-3"#, #"1E+2"#, #"true"#, #"null"#, #""""#,
        #"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#,
        #"  { "order" : { "id" : "O-1", "items" : [ 1 , 2.5 , -3 ] } }  "#,
        #"{"esc":"q\"b\\s\/n\n\r\t\b\f u\u00e9\ud83d\ude00"}"#,
        #"{"unicode":"héllo wörld ✓ 😀"}"#,
        #"{"dup":1,"dup":2}"#,
        #"[1.7976931348623157e308, 5e-324, 12345678901234]"#,
    ]

    static let invalid: [String] = [
        "", " ", "{", "[", "[1,]", "{\"a\":1,}", "{a:1}", "'x'", "01", "1.", ".5", "-", "1e", "+1",
        "tru", "nul", "\"unterminated", "\"bad \\x escape\"", "\"\\ud800\"", "\"\\udc00x\"", "{\"a\" 1}",
        "[1 2]", "1 2", "\"tab\there\"", "NaN", "Infinity", "1e999", "{\"a\":1}}", "[\"\\u12\"]",
    ]

    @Test(arguments: valid)
    func agreesWithJSONSerializationOnValidInput(_ text: String) throws {
        let ours = try JSONParser.parse(Array(text.utf8))
        let theirs = JSONValue(foundation: try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]))
        #expect(ours == theirs)
    }

    @Test(arguments: invalid)
    func refusesInvalidInput(_ text: String) {
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array(text.utf8)) }
    }

    /// Strings are scanned eight bytes at a time: a quote, a backslash, a control character or a non-ASCII byte at
    /// every offset of a long string, and at every distance from its closing quote (the scan stops inside a word,
    /// at the first special byte of it), in validation and in parsing, is judged as JSONSerialization judges it.
    @Test func longStringsAgreeAtEveryOffset() throws {
        let specials: [[UInt8]] = [Array(#"\""#.utf8), Array(#"\\"#.utf8), Array(#"\n"#.utf8), Array(#"\u00e9"#.utf8),
                                   [0x09], [0x0a], [0x1f], [0x00], Array("é".utf8), Array("😀".utf8), [0x7f], [0x20],
                                   [0x22], [0xff], [0xc3]]
        for special in specials {
            for offset in 0..<20 { for tail in Set([19 - offset] + Array(0..<9)) {
                let text = Array("{\"k\":\"".utf8) + Array(repeating: UInt8(ascii: "a"), count: offset) + special
                    + Array(repeating: UInt8(ascii: "b"), count: tail) + Array("\"}".utf8)
                let theirs = try? JSONSerialization.jsonObject(with: Data(text), options: [])
                let parsed = try? JSONParser.parse(text)
                let validated: Bool = (try? JSONParser.validate(text)) != nil
                #expect((theirs != nil) == (parsed != nil), "parse \(special) at \(offset)")
                #expect((theirs != nil) == validated, "validate \(special) at \(offset)")
                if let theirs, let parsed { #expect(parsed == JSONValue(foundation: theirs), "value \(special) at \(offset)") }
            } }
        }
    }

    @Test func refusesInvalidUTF8() {
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0xff, 0xfe, 0x22]) }
    }

    @Test func refusesExcessiveNesting() {
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array(deep.utf8)) }
        let ok = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: Never.self) { try JSONParser.parse(Array(ok.utf8)) }
    }

    @Test func errorNamesTheOffset() {
        do {
            _ = try JSONParser.parse(Array(#"{"a": tru}"#.utf8))
            Issue.record("expected an error")
        } catch {
            #expect(error.offset == 6)
        }
    }

    @Test func writesWhatItReads() throws {
        let text = #"{"a":[1,2.5,"x\"y\n"],"b":{"c":null,"d":true}}"#
        let v = try JSONParser.parse(Array(text.utf8))
        #expect(v.jsonString() == text)
        #expect(try JSONParser.parse(Array(v.jsonString().utf8)) == v)
    }

    @Test func escapedStringsRoundTripThroughJSONSerialization() throws {
        let controls = String((0..<0x20).map { Character(Unicode.Scalar(UInt8($0))) })
        let tricky = controls + #"quote" back\slash /slash é 😀 "# + "\u{2028}" + #" {"a":[1,"b"]}"#
        var text = ""
        JSONValue.appendQuoted(tricky, to: &text)
        let back = try JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]) as? String
        #expect(back == tricky)
        #expect(try JSONParser.parse(Array(text.utf8)) == .string(tricky))
        var plain = ""
        JSONValue.appendQuoted("plain é 😀", to: &plain)
        #expect(plain == "\"plain é 😀\"")
    }

    @Test func canonicalEventTextMatchesJSONEncoder() throws {
        let event = CanonicalEvent(id: "evt_1", source: "s", type: "t", subject: ["orderId": "O\"1", "b": "2"],
                                   status: .shipped, providerStatus: ProviderStatus(code: "S", label: "Ship"),
                                   occurredAt: "2026-01-01T00:00:00Z", receivedAt: "2026-01-01T00:00:01.000Z",
                                   attributes: ["amount": .number(10), "note": .string("a/b")],
                                   idempotencyKey: "k", raw: RawPayload(contentType: "application/json", body: "{}"))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let reference = String(decoding: try encoder.encode(event), as: UTF8.self)
        #expect(event.jsonText() == reference)
        let decoded = try JSONDecoder().decode(CanonicalEvent.self, from: Data(event.jsonText().utf8))
        #expect(decoded == event)
    }
}
