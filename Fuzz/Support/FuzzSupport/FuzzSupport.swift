import CFuzzer
import Foundation
import Relay

/// libFuzzer's C callback: one input, its bytes and their count.
public typealias FuzzCallback = @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt

/// Runs libFuzzer over `callback` with this process's command line (corpus directories, `-max_total_time=`, files
/// to replay, ...) and exits with its status. SwiftPM links every executable with its own `main`, which would
/// replace libFuzzer's: so each target's main.swift calls this instead.
public func runFuzzer(_ callback: FuzzCallback) -> Never {
    var argc = CommandLine.argc
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, callback))
}

/// The input as Swift bytes.
public func fuzzBytes(_ data: UnsafePointer<UInt8>?, _ size: Int) -> [UInt8] {
    guard let data, size > 0 else { return [] }
    return Array(UnsafeBufferPointer(start: data, count: size))
}

/// A property the code under test broke: printed with the input's beginning, then a trap, which libFuzzer reports
/// as a crash and saves the input of (its path is printed).
public func fuzzFailure(_ what: String, _ input: [UInt8], file: StaticString = #fileID, line: UInt = #line) -> Never {
    let shown = String(decoding: input.prefix(300), as: UTF8.self).debugDescription
    FileHandle.standardError.write(Data("FUZZ PROPERTY FAILED: \(what)\ninput (\(input.count) bytes): \(shown)\n".utf8))
    fatalError(what, file: file, line: line)
}

/// Splits an input into fields at NUL bytes (seeds are written that way): field `i`, or empty when there are
/// fewer. The last field takes the rest, NULs and all.
public struct FuzzFields {
    public let fields: [[UInt8]]

    public init(_ bytes: [UInt8], count: Int) {
        var out: [[UInt8]] = []
        var rest = bytes[...]
        while out.count < count - 1, let nul = rest.firstIndex(of: 0) {
            out.append(Array(rest[..<nul]))
            rest = rest[(nul + 1)...]
        }
        out.append(Array(rest))
        while out.count < count { out.append([]) }
        fields = out
    }

    public subscript(i: Int) -> [UInt8] { fields[i] }
    public func text(_ i: Int) -> String { String(decoding: fields[i], as: UTF8.self) }
    /// The first byte of field `i` (0 when it is empty): a selector.
    public func byte(_ i: Int) -> UInt8 { fields[i].first ?? 0 }
}

/// Equal values; a number kept as digits (`.integer`) and a Double are the same when the digits are the number the
/// Double stands for (its shortest text: `1e+30` is 10^30; 1.2345678901234567e+19 is not 12345678901234567890).
public func sameJSON(_ a: JSONValue, _ b: JSONValue) -> Bool {
    func exact(_ digits: String, _ d: Double) -> Bool {
        guard let x = Decimal(string: digits), let y = Decimal(string: "\(d)") else { return false }
        return x == y
    }
    switch (a, b) {
    case (.integer(let x), .number(let y)): return exact(x, y)
    case (.number(let x), .integer(let y)): return exact(y, x)
    case (.array(let x), .array(let y)): return x.count == y.count && zip(x, y).allSatisfy(sameJSON)
    case (.object(let x), .object(let y)):
        return x.count == y.count && x.allSatisfy { k, v in y[k].map { sameJSON(v, $0) } ?? false }
    default: return a == b
    }
}
