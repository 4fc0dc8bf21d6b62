import CFuzzer
import Foundation

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
