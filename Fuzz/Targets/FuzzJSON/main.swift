import Foundation
import FuzzSupport
import Relay

// The ingest path's JSON parser (Sources/Relay/Support/JSONParser.swift) on arbitrary bytes:
// - `validate` (what Ingest runs on every body) and `parse` (what adapters run) accept exactly the same texts;
// - a parsed value written back as JSON (`jsonString`, what the store and destinations get) parses to the same value,
//   and reads back through JSONDecoder (what the stores read events with) as the same value;
// - neither traps, overflows its stack (512 levels at most) or reads out of bounds (ASan).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    let parsed = try? JSONParser.parse(bytes)
    let valid: Bool
    do {
        try JSONParser.validate(bytes)
        valid = true
    } catch {
        valid = false
        _ = error.description
    }
    if valid != (parsed != nil) {
        fuzzFailure("validate says \(valid ? "valid" : "invalid") but parse \(parsed == nil ? "fails" : "succeeds")", bytes)
    }
    if let parsed {
        let text = parsed.jsonString()
        guard let again = try? JSONParser.parse(Array(text.utf8)) else {
            fuzzFailure("the value written back does not parse: \(text.prefix(300))", bytes)
        }
        if again != parsed { fuzzFailure("the value written back parses to another value: \(text.prefix(300))", bytes) }
        guard let decoded = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) else {
            fuzzFailure("the value written back does not decode with JSONDecoder: \(text.prefix(300))", bytes)
        }
        if !sameJSON(decoded, parsed) {
            fuzzFailure("the value written back decodes to another value: \(decoded.jsonString().prefix(300))", bytes)
        }
        _ = parsed.scalarText
    }
    return 0
}

runFuzzer(fuzzOne)
