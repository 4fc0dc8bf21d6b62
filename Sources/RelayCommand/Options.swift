import Foundation

/// A command's `--name value` options: repeatable ones kept in order, flags without values, positional arguments,
/// and an error naming the first option the command does not take. Every command parses its arguments here.
struct Options {
    private(set) var values: [String: [String]] = [:]
    private(set) var flags: Set<String> = []
    private(set) var positional: [String] = []
    /// The first option given more than once, as written (for commands that take each option once).
    private(set) var repeated: String?

    struct Failure: Error, CustomStringConvertible {
        enum Kind: Equatable {
            /// An option the command does not take: the argument as written (`--bogus`, `--bogus=1`).
            case unknown(String)
            /// An option that takes a value, last on the line.
            case missingValue(String)
            case other
        }
        var kind: Kind = .other
        let description: String

        init(description: String) { self.description = description }

        init(_ kind: Kind, description: String) {
            self.kind = kind
            self.description = description
        }
    }

    /// `valued`: options that take a value (`--config FILE` or `--config=FILE`); `flags`: options that do not;
    /// `aliases`: other spellings of those (`-c` for `--config`), under whose name they are kept.
    init(_ args: [String], valued: Set<String>, flags allowed: Set<String> = [],
         aliases: [String: String] = [:]) throws(Failure) {
        var i = 0
        while i < args.count {
            let a = args[i]
            i += 1
            guard a.hasPrefix("-"), a != "-" else {
                positional.append(a)
                continue
            }
            var written = a, inline: String?
            if let eq = a.firstIndex(of: "=") {
                written = String(a[..<eq])
                inline = String(a[a.index(after: eq)...])
            }
            let name = aliases[written] ?? written
            if allowed.contains(name) && inline == nil {
                if flags.contains(name) && repeated == nil { repeated = written }
                flags.insert(name)
            } else if valued.contains(name) {
                if values[name] != nil && repeated == nil { repeated = written }
                if let inline {
                    values[name, default: []].append(inline)
                } else {
                    guard i < args.count else { throw Failure(.missingValue(written), description: "\(written) needs a value") }
                    values[name, default: []].append(args[i])
                    i += 1
                }
            } else {
                let known = (valued.union(allowed)).sorted().joined(separator: ", ")
                throw Failure(.unknown(a), description: "unknown option \(written) (this command takes: \(known))")
            }
        }
    }

    func value(_ name: String) -> String? { values[name]?.last }
    func all(_ name: String) -> [String] { values[name] ?? [] }
    func has(_ name: String) -> Bool { flags.contains(name) }

    func required(_ name: String, _ what: String) throws(Failure) -> String {
        guard let v = value(name), !v.isEmpty else { throw Failure(description: "\(name) \(what) is required") }
        return v
    }
}

/// The bytes of FILE, or of standard input for `-`.
func readInput(_ path: String) throws(Options.Failure) -> [UInt8] {
    if path == "-" { return Array(FileHandle.standardInput.readDataToEndOfFile()) }
    guard let handle = FileHandle(forReadingAtPath: path), let data = try? handle.readToEnd() ?? Data() else {
        throw Options.Failure(description: "cannot read \(path)\(FileManager.default.fileExists(atPath: path) ? "" : ": no such file")")
    }
    return Array(data)
}

/// Runs a command's body: an `Options.Failure` (bad arguments) prints the message and the usage and exits 2, any
/// other error prints the message and exits 1.
func runCommand(_ name: String, usage: String, _ body: () throws -> Int32) -> Int32 {
    do {
        return try body()
    } catch let e as Options.Failure {
        Command.fail("\(name): \(e)\n\n\(usage)")
        return 2
    } catch {
        Command.fail("\(name): \(error)")
        return 1
    }
}
