import Foundation

/// One thing wrong with a configuration, at the key path where it is.
public struct ConfigProblem: Sendable, CustomStringConvertible, Equatable {
    public let path: String
    public let message: String
    public init(path: String, message: String) {
        self.path = path
        self.message = message
    }
    public var description: String { path.isEmpty ? message : "\(path): \(message)" }
}

/// A configuration that cannot be used, with every problem found.
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public let problems: [ConfigProblem]
    public var description: String { problems.map(\.description).joined(separator: "\n") }
    public init(problems: [ConfigProblem]) { self.problems = problems }
}

/// A secret from a `${env:NAME}` or `${file:PATH}` reference. Printing it shows `***`, never the value.
public struct Secret: Sendable, CustomStringConvertible, CustomDebugStringConvertible, Equatable {
    public let value: String
    /// The reference it came from, e.g. `${env:PUNCHH_SECRET}` (safe to show).
    public let reference: String
    public init(value: String, reference: String) {
        self.value = value
        self.reference = reference
    }
    public var description: String { "***" }
    public var debugDescription: String { "Secret(\(reference))" }
}

/// Walks the configuration tree, converting values to typed settings and collecting every problem with its key
/// path instead of stopping at the first.
public final class ConfigReader {
    public private(set) var problems: [ConfigProblem] = []
    public let environment: [String: String]
    /// The status names this configuration knows (`statuses:`, read before any source or destination).
    public var statuses = StatusVocabulary()

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.environment = environment
    }

    public func problem(_ path: String, _ message: String) {
        problems.append(ConfigProblem(path: path, message: message))
    }

    public static func join(_ path: String, _ key: String) -> String {
        let safe = key.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }
        let part = safe ? key : "[\"\(key)\"]"
        if path.isEmpty { return part }
        return safe ? "\(path).\(part)" : "\(path)\(part)"
    }

    public static func join(_ path: String, _ index: Int) -> String { "\(path)[\(index)]" }

    /// An object whose keys must all be in `keys`; reports unknown keys and a wrong type.
    public func object(_ value: JSONValue?, _ path: String, keys: [String]) -> [String: JSONValue]? {
        guard let value else { return nil }
        guard case .object(let o) = value else {
            problem(path, "expected an object, found \(value.kindName)")
            return nil
        }
        for key in o.keys.sorted() where !keys.contains(key) {
            problem(Self.join(path, key), "unknown key (expected one of: \(keys.joined(separator: ", ")))")
        }
        return o
    }

    /// An object with arbitrary keys (a map of names).
    public func map(_ value: JSONValue?, _ path: String) -> [String: JSONValue]? {
        guard let value else { return nil }
        guard case .object(let o) = value else {
            problem(path, "expected an object, found \(value.kindName)")
            return nil
        }
        return o
    }

    public func string(_ o: [String: JSONValue], _ key: String, _ path: String, required: Bool = false) -> String? {
        let p = Self.join(path, key)
        guard let v = o[key], !v.isNull else {
            if required { problem(p, "is required") }
            return nil
        }
        guard case .string(let s) = v else {
            problem(p, "expected a string, found \(v.kindName)")
            return nil
        }
        return substitute(s, p)
    }

    /// A string that must be one of `allowed`.
    public func choice(_ o: [String: JSONValue], _ key: String, _ path: String, _ allowed: [String]) -> String? {
        guard let s = string(o, key, path) else { return nil }
        guard allowed.contains(s) else {
            problem(Self.join(path, key), "\(shown(o[key], s)) is not one of: \(allowed.joined(separator: ", "))")
            return nil
        }
        return s
    }

    /// A string or an array of strings, as an array.
    public func strings(_ o: [String: JSONValue], _ key: String, _ path: String) -> [String]? {
        let p = Self.join(path, key)
        guard let v = o[key], !v.isNull else { return nil }
        switch v {
        case .string(let s): return substitute(s, p).map { [$0] }
        case .array(let a):
            var out: [String] = []
            for (i, item) in a.enumerated() {
                guard case .string(let s) = item else {
                    problem(Self.join(p, i), "expected a string, found \(item.kindName)")
                    continue
                }
                if let r = substitute(s, Self.join(p, i)) { out.append(r) }
            }
            return out
        default:
            problem(p, "expected a string or an array of strings, found \(v.kindName)")
            return nil
        }
    }

    public func int(_ o: [String: JSONValue], _ key: String, _ path: String, min: Int? = nil, max: Int? = nil) -> Int? {
        let p = Self.join(path, key)
        guard let v = o[key], !v.isNull else { return nil }
        guard case .number(let n) = v, n.rounded() == n, abs(n) < 9e15 else {
            problem(p, "expected a whole number, found \(v.kindName)")
            return nil
        }
        let i = Int(n)
        if let min, i < min { problem(p, "must be at least \(min)"); return nil }
        if let max, i > max { problem(p, "must be at most \(max)"); return nil }
        return i
    }

    public func bool(_ o: [String: JSONValue], _ key: String, _ path: String) -> Bool? {
        guard let v = o[key], !v.isNull else { return nil }
        guard case .bool(let b) = v else {
            problem(Self.join(path, key), "expected true or false, found \(v.kindName)")
            return nil
        }
        return b
    }

    /// A duration: a number of seconds, or text such as "300ms", "5s", "2m", "1h", "1d".
    public func duration(_ o: [String: JSONValue], _ key: String, _ path: String) -> Double? {
        guard let v = o[key], !v.isNull else { return nil }
        return duration(v, Self.join(path, key))
    }

    /// A duration value found at `path` (e.g. an item of a list).
    public func duration(_ v: JSONValue, _ p: String) -> Double? {
        switch v {
        case .number(let n) where n >= 0 && n <= 10 * 365 * 86400: return n
        case .string(let raw):
            guard let s = substitute(raw, p) else { return nil }
            if let d = Self.parseDuration(s) { return d }
            problem(p, "\(shown(v, s)) is not a duration (e.g. \"500ms\", \"5s\", \"2m\", \"1h\")")
            return nil
        default:
            problem(p, "expected a duration such as \"5s\", found \(v.kindName)")
            return nil
        }
    }

    public static func parseDuration(_ text: String) -> Double? {
        let s = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [("us", 0.000001), ("µs", 0.000001), ("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
        // Plain decimal numbers only (no exponents, inf or nan), and at most ten years.
        func number(_ t: Substring) -> Double? {
            guard !t.isEmpty, t.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2E }), let n = Double(t) else { return nil }
            return n
        }
        let limit = 10 * 365 * 86400.0
        for (suffix, factor) in units where s.hasSuffix(suffix) {
            if let n = number(Substring(s.dropLast(suffix.count))), n * factor <= limit { return n * factor }
        }
        if let n = number(Substring(s)), n <= limit { return n }
        return nil
    }

    /// How a value appears in a message: as written in the file when it held a `${...}` reference (whose
    /// resolved value may be a secret put in the wrong place), else the value itself.
    public func shown(_ raw: JSONValue?, _ resolved: String) -> String {
        if let written = raw?.stringValue, written.contains("${") { return written }
        return "\"\(resolved)\""
    }

    /// A secret: must be a `${env:NAME}` or `${file:PATH}` reference, never inline text.
    public func secret(_ value: JSONValue?, _ path: String) -> Secret? {
        guard let value, !value.isNull else {
            problem(path, "is required")
            return nil
        }
        guard case .string(let s) = value else {
            problem(path, "expected a secret reference such as \"${env:NAME}\", found \(value.kindName)")
            return nil
        }
        let trimmed = s.trimmingCharacters(in: .whitespaces)
        guard trimmed.hasPrefix("${"), trimmed.hasSuffix("}"),
              trimmed.dropFirst(2).firstIndex(of: "}") == trimmed.index(before: trimmed.endIndex) else {
            problem(path, "secrets must be a reference, \"${env:NAME}\" or \"${file:PATH}\", not inline text")
            return nil
        }
        guard let resolved = resolve(trimmed, path) else { return nil }
        if resolved.isEmpty {
            problem(path, "\(trimmed) is empty")
            return nil
        }
        return Secret(value: resolved, reference: trimmed)
    }

    /// One secret or a list of them (for rotation) under `key`.
    public func secrets(_ o: [String: JSONValue], _ key: String, _ path: String, required: Bool = true) -> [Secret] {
        let p = Self.join(path, key)
        guard let v = o[key], !v.isNull else {
            if required { problem(p, "is required") }
            return []
        }
        if case .array(let a) = v {
            if a.isEmpty && required { problem(p, "needs at least one secret") }
            return a.enumerated().compactMap { secret($0.element, Self.join(p, $0.offset)) }
        }
        return secret(v, p).map { [$0] } ?? []
    }

    /// Replaces every `${env:NAME}` and `${file:PATH}` in `s`; nil (with a problem) when one cannot be resolved.
    public func substitute(_ s: String, _ path: String) -> String? {
        guard s.contains("${") else { return s }
        var out = ""
        var rest = Substring(s)
        var ok = true
        while let start = rest.range(of: "${") {
            out += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else {
                problem(path, "unterminated ${...} reference")
                return nil
            }
            let ref = String(rest[start.lowerBound...end])
            if let v = resolve(ref, path) { out += v } else { ok = false }
            rest = rest[rest.index(after: end)...]
        }
        out += rest
        return ok ? out : nil
    }

    private func resolve(_ ref: String, _ path: String) -> String? {
        let inner = ref.dropFirst(2).dropLast()
        if inner.hasPrefix("env:") {
            let name = String(inner.dropFirst(4))
            guard let v = environment[name] else {
                problem(path, "environment variable \(name) is not set (\(ref))")
                return nil
            }
            return v
        }
        if inner.hasPrefix("file:") {
            let file = String(inner.dropFirst(5))
            do {
                var text = try String(contentsOfFile: file, encoding: .utf8).unicodeScalars
                // Trailing line ends (\n, \r\n, \r) are the file's, not the secret's. ("\r\n" is one Character in
                // Swift, so this works on scalars.)
                while let last = text.last, last == "\n" || last == "\r" { text.removeLast() }
                return String(text)
            } catch {
                let reason = (error as NSError).localizedFailureReason ?? "unreadable"
                problem(path, "cannot read file \(file) (\(ref)): \(FileManager.default.fileExists(atPath: file) ? reason : "no such file")")
                return nil
            }
        }
        problem(path, "unknown reference \(ref) (use ${env:NAME} or ${file:PATH})")
        return nil
    }
}
