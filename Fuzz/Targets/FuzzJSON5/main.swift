import FuzzSupport
import Relay

// The configuration reader's JSON5 (`JSON5.parse`, Sources/Relay/Config/JSON5Reader.swift) on arbitrary bytes:
// - no trap, stack overflow or out-of-bounds read, and every error renders (line, column, the caret line);
// - a parsed value written back as JSON parses to the same value;
// - JSON is JSON5: a text the ingest JSON parser accepts is read to the same value (its integers beyond 2^53 as
//   the nearest Double, as JSON5's are), unless it gives a key twice, which JSON5 refuses on purpose.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    let result: Result<JSONValue, JSON5Error>
    do {
        result = .success(try JSON5.parse(bytes))
    } catch {
        result = .failure(error)
        _ = error.description
        _ = error.problem
        do { _ = try JSON5.parse(bytes, showLines: false) } catch { _ = error.description }
    }
    if case .success(let value) = result {
        let text = value.jsonString()
        guard let again = try? JSON5.parse(Array(text.utf8)) else {
            fuzzFailure("the value written back does not parse: \(text.prefix(300))", bytes)
        }
        if again != value { fuzzFailure("the value written back parses to another value: \(text.prefix(300))", bytes) }
    }
    if let json = try? JSONParser.parse(bytes) {
        switch result {
        case .success(let value):
            if value != asJSON5(json) { fuzzFailure("JSON5 reads this JSON text as another value", bytes) }
        case .failure(let e):
            if case .duplicateKey = e.kind { break }
            fuzzFailure("JSON5 refuses a JSON text: \(e.summary)", bytes)
        }
    }
    return 0
}

/// JSON5's reading of a value the JSON parser gave: big integers as the nearest Double.
func asJSON5(_ v: JSONValue) -> JSONValue {
    switch v {
    case .integer(let digits): return .number(Double(digits) ?? .nan)
    case .array(let a): return .array(a.map(asJSON5))
    case .object(let o): return .object(o.mapValues(asJSON5))
    default: return v
    }
}

runFuzzer(fuzzOne)
