@testable import Relay
import FuzzSupport

// Form bodies (`Ingest.parseForm`, and `Ingest.parse`, which picks JSON or form by Content-Type) on arbitrary bytes:
// - no trap, whatever the percent-escapes, `+`, `=` and `&` and UTF-8;
// - the fields it returns, written back with the relay's own form escaping (`Template.escape(_, .form)`, what
//   form destinations are sent), parse to the same fields.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = fuzzBytes(data, size)
    if let fields = Ingest.parseForm(bytes) {
        let written = fields.map { Template.escape($0.0, .form) + "=" + Template.escape($0.1, .form) }.joined(separator: "&")
        guard let again = Ingest.parseForm(Array(written.utf8)) else {
            fuzzFailure("the fields written back do not parse: \(written.prefix(300))", bytes)
        }
        if !again.elementsEqual(fields, by: { $0.0 == $1.0 && $0.1 == $1.1 }) {
            fuzzFailure("the fields written back parse to other fields: \(written.prefix(300))", bytes)
        }
    }
    for type in ["application/x-www-form-urlencoded", "application/json", "", "application/vnd.x+json; charset=utf-8", "text/plain"] {
        switch Ingest.parse(bytes, contentType: type) {
        case .success(let payload):
            switch payload.value {
            case .json(let v): _ = v.jsonString()
            case .form(let f): _ = f.count
            }
        case .failure(let e):
            if ![400, 415].contains(e.status) { fuzzFailure("Ingest.parse refused with \(e.status)", bytes) }
        }
    }
    return 0
}

runFuzzer(fuzzOne)
