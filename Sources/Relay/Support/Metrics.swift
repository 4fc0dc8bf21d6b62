import Foundation
import Synchronization

/// The relay's counters and histograms, written in Prometheus text format by the admin API's `GET /metrics`.
/// Names follow Prometheus conventions: `relay_` prefix, `_total` for counters, `_seconds` for durations.
/// Thread-safe; one process-wide instance per service (`RelayService.metrics`).
public final class Metrics: Sendable {
    struct Key: Hashable, Sendable {
        let name: String
        let labels: [String]   // "k=v" pairs, sorted
    }

    struct Histogram: Sendable {
        var buckets: [Int]     // counts per upper bound in `Metrics.latencyBuckets`, not cumulative
        var sum: Double = 0
        var count: Int = 0
    }

    /// A counter looked up once and then incremented without a lock or a lookup (hot paths: per webhook).
    public final class Counter: Sendable {
        let count = Atomic<Int>(0)
        public func increment() { count.add(1, ordering: .relaxed) }
        var value: Double { Double(count.load(ordering: .relaxed)) }
    }

    struct State: Sendable {
        var handles: [Key: Counter] = [:]
        var counters: [Key: Double] = [:]
        var gauges: [Key: Double] = [:]
        var histograms: [Key: Histogram] = [:]
    }

    /// Upper bounds (seconds) of the attempt latency histogram.
    public static let latencyBuckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

    /// What each metric means (`# HELP`), and its type.
    static let help: [String: (type: String, text: String)] = [
        "relay_webhooks_received_total": ("counter", "Webhooks received on /v1/hooks/{source}, by source"),
        "relay_webhooks_rejected_total": ("counter", "Webhooks refused, by source and reason (unauthorized, unparsable, unsupported, unnormalizable)"),
        "relay_webhooks_duplicate_total": ("counter", "Webhooks already recorded (answered 200 with the first event id), by source"),
        "relay_events_committed_total": ("counter", "Events durably stored (answered 202), by source"),
        "relay_store_failures_total": ("counter", "Webhooks answered 503 because the store could not commit, by source"),
        "relay_deliveries_total": ("counter", "Finished attempts of deliveries, by destination and outcome (delivered, retry, dead, skipped)"),
        "relay_attempt_duration_seconds": ("histogram", "Time from sending a request to its answer (or failure), by destination"),
        "relay_circuit_open": ("gauge", "1 while a destination's circuit breaker is open or half-open, by destination"),
        "relay_queue_depth": ("gauge", "Deliveries waiting (pending or in flight), by destination"),
        "relay_queue_oldest_age_seconds": ("gauge", "Age of the oldest waiting delivery, by destination"),
        "relay_token_fetches_total": ("counter", "Token requests made by token auth schemes (OAuth2, an adapter's token flow), by destination"),
        "relay_deliveries_dead": ("gauge", "Dead-lettered deliveries in the store, by destination"),
        "relay_store_transactions_total": ("counter", "Write transactions committed by the store (group commit: many events per transaction)"),
        "relay_store_events_written_total": ("counter", "New events written by the store (events / transactions = the mean group-commit batch)"),
        "relay_store_flushes_total": ("counter", "fdatasync calls on the WAL (synchronous: full); each answers every event written before it"),
        "relay_store_flush_seconds_total": ("counter", "Time spent in those fdatasync calls"),
        "relay_trace_spans_exported_total": ("counter", "Spans the OTLP endpoint accepted (tracing.otlp)"),
        "relay_trace_spans_dropped_total": ("counter", "Spans not exported, by reason (queue_full: the export queue was full; export_failed: the endpoint did not take them after retries, or the relay stopped first)"),
    ]

    private let state = Mutex(State())

    public init() {}

    static func key(_ name: String, _ labels: [String: String]) -> Key {
        Key(name: name, labels: labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" })
    }

    /// The counter `name` with `labels`, the same object for the same name and labels (its value adds to any
    /// `increment` of that name and labels).
    public func counter(_ name: String, _ labels: [String: String] = [:]) -> Counter {
        let k = Self.key(name, labels)
        return state.withLock { s in
            if let c = s.handles[k] { return c }
            let c = Counter()
            s.handles[k] = c
            return c
        }
    }

    public func increment(_ name: String, _ labels: [String: String] = [:], by amount: Double = 1) {
        let k = Self.key(name, labels)
        state.withLock { $0.counters[k, default: 0] += amount }
    }

    public func set(_ name: String, _ labels: [String: String] = [:], _ value: Double) {
        let k = Self.key(name, labels)
        state.withLock { $0.gauges[k] = value }
    }

    public func observe(_ name: String, _ labels: [String: String] = [:], seconds: Double) {
        let k = Self.key(name, labels)
        let i = Self.latencyBuckets.firstIndex { seconds <= $0 } ?? Self.latencyBuckets.count
        state.withLock { s in
            var h = s.histograms[k] ?? Histogram(buckets: Array(repeating: 0, count: Self.latencyBuckets.count + 1))
            h.buckets[i] += 1
            h.sum += seconds
            h.count += 1
            s.histograms[k] = h
        }
    }

    /// A counter's current value (tests).
    public func value(_ name: String, _ labels: [String: String] = [:]) -> Double {
        let k = Self.key(name, labels)
        return state.withLock { s in
            if let h = s.handles[k] { return h.value + (s.counters[k] ?? 0) }
            return s.counters[k] ?? s.gauges[k] ?? 0
        }
    }

    /// Everything in Prometheus text exposition format (version 0.0.4), plus `extraGauges` computed at scrape time.
    public func prometheusText(extraGauges: [(name: String, labels: [String: String], value: Double)] = []) -> String {
        var s = state.withLock { $0 }
        for (k, h) in s.handles { s.counters[k, default: 0] += h.value }
        for g in extraGauges { s.gauges[Self.key(g.name, g.labels)] = g.value }
        var byName: [String: [String]] = [:]
        func labelText(_ labels: [String], extra: String? = nil) -> String {
            var parts = labels.map { pair -> String in
                let eq = pair.firstIndex(of: "=")!
                return "\(pair[..<eq])=\"\(Self.escape(String(pair[pair.index(after: eq)...])))\""
            }
            if let extra { parts.append(extra) }
            return parts.isEmpty ? "" : "{" + parts.joined(separator: ",") + "}"
        }
        func number(_ v: Double) -> String { v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : String(v) }
        for (k, v) in s.counters { byName[k.name, default: []].append("\(k.name)\(labelText(k.labels)) \(number(v))") }
        for (k, v) in s.gauges { byName[k.name, default: []].append("\(k.name)\(labelText(k.labels)) \(number(v))") }
        for (k, h) in s.histograms {
            var cumulative = 0
            var lines: [String] = []
            for (i, bound) in Self.latencyBuckets.enumerated() {
                cumulative += h.buckets[i]
                lines.append("\(k.name)_bucket\(labelText(k.labels, extra: "le=\"\(number(bound))\"")) \(cumulative)")
            }
            lines.append("\(k.name)_bucket\(labelText(k.labels, extra: "le=\"+Inf\"")) \(h.count)")
            lines.append("\(k.name)_sum\(labelText(k.labels)) \(h.sum)")
            lines.append("\(k.name)_count\(labelText(k.labels)) \(h.count)")
            byName[k.name, default: []].append(lines.joined(separator: "\n"))
        }
        var out = ""
        for name in Set(byName.keys).union(Self.help.keys).sorted() {
            if let h = Self.help[name] {
                out += "# HELP \(name) \(h.text)\n# TYPE \(name) \(h.type)\n"
            }
            for line in (byName[name] ?? []).sorted() { out += line + "\n" }
        }
        return out
    }

    static func escape(_ v: String) -> String {
        v.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }
}
