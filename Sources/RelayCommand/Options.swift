import Foundation

/// A command's `--name value` options: repeatable ones kept in order, flags without values, and an error naming
/// the first option the command does not take.
struct Options {
    private(set) var values: [String: [String]] = [:]
    private(set) var flags: Set<String> = []
    private(set) var positional: [String] = []

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// `valued`: options that take a value (`--config FILE` or `--config=FILE`); `flags`: options that do not.
    init(_ args: [String], valued: Set<String>, flags allowed: Set<String> = []) throws(Failure) {
        var i = 0
        while i < args.count {
            let a = args[i]
            i += 1
            guard a.hasPrefix("-"), a != "-" else {
                positional.append(a)
                continue
            }
            var name = a, inline: String?
            if let eq = a.firstIndex(of: "=") {
                name = String(a[..<eq])
                inline = String(a[a.index(after: eq)...])
            }
            if name == "-c" { name = "--config" }
            if allowed.contains(name) && inline == nil {
                flags.insert(name)
            } else if valued.contains(name) {
                if let inline {
                    values[name, default: []].append(inline)
                } else {
                    guard i < args.count else { throw Failure(description: "\(name) needs a value") }
                    values[name, default: []].append(args[i])
                    i += 1
                }
            } else {
                let known = (valued.union(allowed)).sorted().joined(separator: ", ")
                throw Failure(description: "unknown option \(name) (this command takes: \(known))")
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
