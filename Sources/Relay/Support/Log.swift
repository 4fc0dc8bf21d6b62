import Foundation
import Synchronization

/// Log levels, lowest first.
public enum LogLevel: Int, Sendable, Comparable, CaseIterable {
    case debug, info, warn, error
    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }
    public var name: String { ["debug", "info", "warn", "error"][rawValue] }
    public init?(name: String) {
        switch name.lowercased() {
        case "debug", "trace": self = .debug
        case "info": self = .info
        case "warn", "warning": self = .warn
        case "error": self = .error
        default: return nil
        }
    }
}

/// A log field's value as the log line writes it: a JSON string, number, boolean or null.
public enum LogValue: Sendable, Equatable {
    case string(String)
    case int(Int)
    case double(Double)
    case bool(Bool)
    case null

    /// Appends the value as JSON (a non-finite double as null).
    public func write(to out: inout String) {
        switch self {
        case .string(let s): JSONValue.appendQuoted(s, to: &out)
        case .int(let n): out += String(n)
        case .double(let d): out += d.isFinite ? String(d) : "null"
        case .bool(let b): out += b ? "true" : "false"
        case .null: out += "null"
        }
    }
}

/// What a log field may hold: text, and numbers and booleans, which are written as JSON numbers and booleans
/// (`"status":502`, not `"status":"502"`). Nothing else converts implicitly, so a `Secret` cannot be logged by
/// mistake: callers pass redacted text only.
public protocol LogValueConvertible {
    var logValue: LogValue { get }
}

extension LogValue: LogValueConvertible { public var logValue: LogValue { self } }
extension String: LogValueConvertible { public var logValue: LogValue { .string(self) } }
extension Substring: LogValueConvertible { public var logValue: LogValue { .string(String(self)) } }
extension Bool: LogValueConvertible { public var logValue: LogValue { .bool(self) } }
extension Double: LogValueConvertible { public var logValue: LogValue { .double(self) } }
extension Int: LogValueConvertible { public var logValue: LogValue { .int(self) } }
extension Int64: LogValueConvertible { public var logValue: LogValue { .int(Int(self)) } }
extension Int32: LogValueConvertible { public var logValue: LogValue { .int(Int(self)) } }
extension UInt16: LogValueConvertible { public var logValue: LogValue { .int(Int(self)) } }
extension UInt32: LogValueConvertible { public var logValue: LogValue { .int(Int(self)) } }
extension UInt64: LogValueConvertible { public var logValue: LogValue { .int(Int(clamping: self)) } }
/// nil is written as JSON null.
extension Optional: LogValueConvertible where Wrapped: LogValueConvertible {
    public var logValue: LogValue { self?.logValue ?? .null }
}

/// The fields of one log line, in order: `["status": 502, "destination": name]`.
public typealias LogFields = KeyValuePairs<String, any LogValueConvertible>

/// One JSON object per line on standard error (or any file descriptor): time, level, msg, then fields (strings,
/// numbers, booleans: see `LogValueConvertible`). Values are never secrets: callers pass redacted text only.
public final class Logger: Sendable {
    private let fd: Int32
    private let minimum: Atomic<Int>
    private let lock = Mutex(())

    public init(level: LogLevel = .info, fd: Int32 = 2) {
        self.fd = fd
        self.minimum = Atomic(level.rawValue)
    }

    public var level: LogLevel {
        get { LogLevel(rawValue: minimum.load(ordering: .relaxed)) ?? .info }
        set { minimum.store(newValue.rawValue, ordering: .relaxed) }
    }

    public func enabled(_ level: LogLevel) -> Bool { level.rawValue >= minimum.load(ordering: .relaxed) }

    public func debug(_ msg: String, _ fields: LogFields = [:]) { log(.debug, msg, fields) }
    public func info(_ msg: String, _ fields: LogFields = [:]) { log(.info, msg, fields) }
    public func warn(_ msg: String, _ fields: LogFields = [:]) { log(.warn, msg, fields) }
    public func error(_ msg: String, _ fields: LogFields = [:]) { log(.error, msg, fields) }

    public func log(_ level: LogLevel, _ msg: String, _ fields: LogFields) {
        guard enabled(level) else { return }
        emit(Logger.line(level, msg, fields, at: Date()))
    }

    /// One log line, newline included: `{"time":...,"level":...,"msg":...,<fields>}`.
    public static func line(_ level: LogLevel, _ msg: String, _ fields: LogFields, at date: Date) -> String {
        var line = "{\"time\":\"\(Timestamp.iso8601(date))\",\"level\":\"\(level.name)\",\"msg\":"
        Logger.appendQuoted(msg, to: &line)
        for (k, v) in fields {
            line += ","
            Logger.appendQuoted(k, to: &line)
            line += ":"
            v.logValue.write(to: &line)
        }
        line += "}\n"
        return line
    }

    private func emit(_ line: String) {
        lock.withLock { _ in
            line.utf8CString.withUnsafeBufferPointer { buf in
                var off = 0
                let n = buf.count - 1
                while off < n {
                    let w = write(fd, buf.baseAddress! + off, n - off)
                    if w <= 0 { break }
                    off += w
                }
            }
        }
    }

    /// Appends `s` as a JSON string literal.
    public static func appendQuoted(_ s: String, to out: inout String) { JSONValue.appendQuoted(s, to: &out) }
}

public enum Timestamp {
    /// RFC 3339 UTC with milliseconds, e.g. 2026-11-20T10:00:00.123Z.
    public static func iso8601(_ date: Date) -> String {
        // Round to microseconds first (as Python's datetime does), then truncate to milliseconds.
        let micros = Int64((date.timeIntervalSince1970 * 1_000_000).rounded())
        let millis = micros >= 0 ? micros / 1000 : (micros - 999) / 1000
        var t = time_t(millis >= 0 ? millis / 1000 : (millis - 999) / 1000)
        let ms = Int(millis - Int64(t) * 1000)
        var tmv = tm()
        gmtime_r(&t, &tmv)
        return String(unsafeUninitializedCapacity: 24) { buf in
            func put(_ v: Int, _ width: Int, at i: Int) {
                var v = v
                for k in stride(from: i + width - 1, through: i, by: -1) {
                    buf[k] = UInt8(ascii: "0") + UInt8(v % 10)
                    v /= 10
                }
            }
            put(Int(tmv.tm_year) + 1900, 4, at: 0); buf[4] = UInt8(ascii: "-")
            put(Int(tmv.tm_mon) + 1, 2, at: 5); buf[7] = UInt8(ascii: "-")
            put(Int(tmv.tm_mday), 2, at: 8); buf[10] = UInt8(ascii: "T")
            put(Int(tmv.tm_hour), 2, at: 11); buf[13] = UInt8(ascii: ":")
            put(Int(tmv.tm_min), 2, at: 14); buf[16] = UInt8(ascii: ":")
            put(Int(tmv.tm_sec), 2, at: 17); buf[19] = UInt8(ascii: ".")
            put(ms, 3, at: 20); buf[23] = UInt8(ascii: "Z")
            return 24
        }
    }
}

/// Names the calling thread as `top -H`, `ps -L` and profilers show it (Linux: /proc/thread-self/comm, 15 bytes).
public func nameThisThread(_ name: String) {
    let fd = open("/proc/thread-self/comm", O_WRONLY)
    guard fd >= 0 else { return }
    let bytes = Array(name.utf8.prefix(15))
    _ = bytes.withUnsafeBufferPointer { write(fd, $0.baseAddress, $0.count) }
    close(fd)
}
