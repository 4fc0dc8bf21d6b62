import Crypto
import Foundation

/// How a destination's deliveries are retried.
public struct RetryPolicy: Sendable, Equatable {
    public enum Delays: Sendable, Equatable {
        /// Delay before retry n is `schedule[n-1]`; attempts = schedule.count + 1.
        case schedule([Double])
        /// Delay before retry n is min(max, initial × 2^(n-1)).
        case exponential(initial: Double, max: Double, attempts: Int)
    }

    public var delays: Delays = .schedule([1, 5, 30, 120, 600, 1800, 3600, 7200])
    /// Full jitter: the delay is drawn uniformly from [0, delay]. Off: exactly the delay.
    public var jitter = true
    /// A `Retry-After` longer than this is cut to it (it never shortens the schedule's own delay).
    public var retryAfterMax: Double = 3600
    /// A 429 waits at least this long, whatever Retry-After says.
    public var floor429: Double = 1

    public init() {}

    /// How many attempts in all, the first included.
    public var maxAttempts: Int {
        switch delays {
        case .schedule(let s): return s.count + 1
        case .exponential(_, _, let attempts): return attempts
        }
    }

    /// The wait before the next attempt after `attempts` attempts, or nil when none is left. `retryAfter` (seconds)
    /// is the destination's own wish, honoured up to `retryAfterMax`.
    public func delay(afterAttempts attempts: Int, retryAfter: Double?, status: Int?, random: () -> Double = { Double(SecureRandom.uint64() >> 11) / Double(1 << 53) }) -> Double? {
        guard attempts < maxAttempts else { return nil }
        var d: Double
        switch delays {
        case .schedule(let s): d = s[attempts - 1]
        case .exponential(let initial, let max, _): d = min(max, initial * pow(2, Double(attempts - 1)))
        }
        if jitter { d *= random() }
        // The destination may ask for a longer wait (up to retryAfterMax), never shorten the schedule's own.
        if let retryAfter { d = Swift.max(d, min(retryAfterMax, retryAfter)) }
        if status == 429 { d = Swift.max(d, floor429) }
        return d
    }

    /// `Retry-After` as seconds from now: delta-seconds or an HTTP date (RFC 9110); nil when absent or unreadable.
    public static func retryAfter(_ value: String?, now: Date = Date()) -> Double? {
        guard let value = value?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
        if let seconds = Double(value), seconds >= 0 { return seconds }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "GMT")
        for format in ["EEE, dd MMM yyyy HH:mm:ss zzz", "EEEE, dd-MMM-yy HH:mm:ss zzz", "EEE MMM d HH:mm:ss yyyy"] {
            f.dateFormat = format
            if let date = f.date(from: value) { return max(0, date.timeIntervalSince(now)) }
        }
        return nil
    }
}

/// Everything about sending to one destination that does not depend on its dialect.
public struct DeliveryPolicy: Sendable {
    public var retry = RetryPolicy()
    public var connectTimeout: Double = 5
    public var timeout: Double = 30
    /// Attempts in flight at once to this destination.
    public var maxInFlight = 16
    /// Attempts started per second at most; nil for no limit.
    public var rateLimit: Double?
    /// A later status for a subject is never sent before an earlier one has finished.
    public var perSubjectOrder = false
    /// With per-subject order: an older queued status is marked superseded when a newer one waits.
    public var coalesce = false
    /// Consecutive failed attempts that open the circuit; 0 disables the breaker.
    public var breakerThreshold = 5
    /// How long an open circuit waits before one probe.
    public var breakerCooldown: Double = 30

    public init() {}

    /// How the store queues this destination's deliveries.
    public var discipline: QueueDiscipline { QueueDiscipline(perSubject: perSubjectOrder, coalesce: coalesce) }

    /// The keys this policy reads from a destination block.
    public static let keys = ["timeout", "connectTimeout", "maxInFlight", "rateLimit", "ordering", "coalesce", "retry",
                              "circuitBreaker"]
}

extension ConfigReader {
    /// Reads the delivery keys of a destination block.
    public func deliveryPolicy(_ o: [String: JSONValue], _ path: String) -> DeliveryPolicy {
        var p = DeliveryPolicy()
        if let v = duration(o, "timeout", path) { p.timeout = max(0.001, v) }
        if let v = duration(o, "connectTimeout", path) { p.connectTimeout = max(0.001, v) }
        if let v = int(o, "maxInFlight", path, min: 1, max: 10_000) { p.maxInFlight = v }
        if let v = o["rateLimit"] {
            if let n = v.numberValue, n > 0 { p.rateLimit = n } else {
                problem(Self.join(path, "rateLimit"), "expected attempts per second (a number above 0)")
            }
        }
        if let v = choice(o, "ordering", path, ["none", "per-subject"]) { p.perSubjectOrder = v == "per-subject" }
        if let v = bool(o, "coalesce", path) {
            p.coalesce = v
            if v && !p.perSubjectOrder { problem(Self.join(path, "coalesce"), "needs ordering: \"per-subject\"") }
        }
        if let r = object(o["retry"], Self.join(path, "retry"),
                          keys: ["schedule", "exponential", "jitter", "retryAfterMax", "floor429"]) {
            let rp = Self.join(path, "retry")
            if r["schedule"] != nil && r["exponential"] != nil {
                problem(rp, "has both schedule and exponential: choose one")
            }
            if let list = r["schedule"] {
                let sp = Self.join(rp, "schedule")
                if case .array(let items) = list {
                    var delays: [Double] = []
                    for (i, item) in items.enumerated() {
                        if let d = duration(item, Self.join(sp, i)) { delays.append(d) }
                    }
                    p.retry.delays = .schedule(delays)
                } else {
                    problem(sp, "expected a list of delays such as [\"5s\", \"30s\", \"5m\"]")
                }
            }
            if let e = object(r["exponential"], Self.join(rp, "exponential"), keys: ["initial", "max", "attempts"]) {
                let ep = Self.join(rp, "exponential")
                p.retry.delays = .exponential(initial: duration(e, "initial", ep) ?? 1, max: duration(e, "max", ep) ?? 3600,
                                              attempts: int(e, "attempts", ep, min: 1, max: 1000) ?? 10)
            }
            if let j = choice(r, "jitter", rp, ["full", "none"]) { p.retry.jitter = j == "full" }
            if let v = duration(r, "retryAfterMax", rp) { p.retry.retryAfterMax = v }
            if let v = duration(r, "floor429", rp) { p.retry.floor429 = v }
        }
        if let b = object(o["circuitBreaker"], Self.join(path, "circuitBreaker"), keys: ["failures", "cooldown"]) {
            let bp = Self.join(path, "circuitBreaker")
            if let v = int(b, "failures", bp, min: 0) { p.breakerThreshold = v }
            if let v = duration(b, "cooldown", bp) { p.breakerCooldown = v }
        }
        return p
    }
}

/// A circuit breaker: closed (all attempts), open (none, until the cooldown ends), half-open (one probe).
public struct CircuitBreaker: Sendable, Equatable {
    public enum State: String, Sendable { case closed, open, halfOpen = "half-open" }
    public private(set) var state: State = .closed
    public private(set) var consecutiveFailures = 0
    private var openedAt: Double = 0
    private var probing = false
    let threshold: Int
    let cooldown: Double

    public init(threshold: Int, cooldown: Double) {
        self.threshold = threshold
        self.cooldown = cooldown
    }

    /// May an attempt start now? In half-open state only one (the probe) may.
    public mutating func allow(now: Double) -> Bool {
        switch state {
        case .closed: return true
        case .open:
            guard now - openedAt >= cooldown else { return false }
            state = .halfOpen
            probing = true
            return true
        case .halfOpen:
            if probing { return false }
            probing = true
            return true
        }
    }

    /// A probe was allowed but nothing was sent after all: let the next look probe again.
    public mutating func cancelProbe() { probing = false }

    /// When an open circuit lets its probe through.
    public var reopensAt: Double? { state == .open ? openedAt + cooldown : nil }

    /// The state to store: the monotonic `now` and wall-clock `wallMillis` of the same instant translate the
    /// cooldown's end into wall-clock time, which another process can read.
    public func snapshot(now: Double, wallMillis: Int64) -> CircuitSnapshot {
        CircuitSnapshot(state: state == .halfOpen ? .open : state, consecutiveFailures: consecutiveFailures,
                        reopensAtMillis: state == .closed ? nil
                            : wallMillis + Int64(max(0, (state == .open ? openedAt + cooldown - now : 0)) * 1000))
    }

    /// Takes up a stored state (after a restart, or from the relay that dispatched the destination before). A
    /// circuit stored half-open (its probe's outcome unknown) is open until its stored reopening time.
    public mutating func restore(_ s: CircuitSnapshot, now: Double, wallMillis: Int64) {
        consecutiveFailures = s.consecutiveFailures
        probing = false
        switch s.state {
        case .closed:
            state = .closed
        case .open, .halfOpen:
            state = .open
            let remaining = Double(max(0, (s.reopensAtMillis ?? wallMillis) - wallMillis)) / 1000
            openedAt = now + min(remaining, cooldown) - cooldown
        }
    }

    public mutating func record(success: Bool, now: Double) {
        if success {
            state = .closed
            consecutiveFailures = 0
            probing = false
            return
        }
        consecutiveFailures += 1
        if state == .halfOpen || (threshold > 0 && consecutiveFailures >= threshold) {
            state = .open
            openedAt = now
            probing = false
        }
    }
}
