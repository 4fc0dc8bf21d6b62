import Adapters
import Foundation
import Relay
import Testing

/// Retry delays, Retry-After, the circuit breaker and the delivery policy's configuration.
@Suite("Delivery policy")
struct PolicyTests {
    @Test("a schedule gives its delays in order, then no more attempts")
    func schedule() {
        var p = RetryPolicy()
        p.delays = .schedule([5, 30, 300])
        p.jitter = false
        #expect(p.maxAttempts == 4)
        #expect(p.delay(afterAttempts: 1, retryAfter: nil, status: 503) == 5)
        #expect(p.delay(afterAttempts: 2, retryAfter: nil, status: 503) == 30)
        #expect(p.delay(afterAttempts: 3, retryAfter: nil, status: 503) == 300)
        #expect(p.delay(afterAttempts: 4, retryAfter: nil, status: 503) == nil)
    }

    @Test("exponential doubles up to its cap; full jitter stays within [0, delay]")
    func exponential() {
        var p = RetryPolicy()
        p.delays = .exponential(initial: 1, max: 10, attempts: 8)
        p.jitter = false
        #expect((1...7).map { p.delay(afterAttempts: $0, retryAfter: nil, status: nil)! } == [1, 2, 4, 8, 10, 10, 10])
        #expect(p.delay(afterAttempts: 8, retryAfter: nil, status: nil) == nil)
        p.jitter = true
        let draws = (0..<500).map { _ in p.delay(afterAttempts: 4, retryAfter: nil, status: nil)! }
        #expect(draws.allSatisfy { $0 >= 0 && $0 <= 8 })
        #expect(Set(draws.map { Int($0) }).count > 4, "jitter should spread the delays")
        #expect(p.delay(afterAttempts: 4, retryAfter: nil, status: nil, random: { 0.5 }) == 4)
    }

    @Test("Retry-After is honoured up to its cap, and a 429 waits at least the floor")
    func retryAfter() {
        var p = RetryPolicy()
        p.delays = .schedule([1, 1, 1])
        p.jitter = false
        p.retryAfterMax = 60
        p.floor429 = 2
        #expect(p.delay(afterAttempts: 1, retryAfter: 30, status: 503) == 30)
        #expect(p.delay(afterAttempts: 1, retryAfter: 3600, status: 503) == 60)
        #expect(p.delay(afterAttempts: 1, retryAfter: nil, status: 429) == 2)
        #expect(p.delay(afterAttempts: 1, retryAfter: 0, status: 429) == 2)
    }

    @Test("Retry-After as seconds or an HTTP date")
    func retryAfterForms() {
        let now = Date(timeIntervalSince1970: 1_445_412_480)   // Wed, 21 Oct 2015 07:28:00 GMT (RFC 9110's example)
        #expect(RetryPolicy.retryAfter("120", now: now) == 120)
        #expect(RetryPolicy.retryAfter("Wed, 21 Oct 2015 07:30:00 GMT", now: now) == 120)
        #expect(RetryPolicy.retryAfter("Wed, 21 Oct 2015 07:20:00 GMT", now: now) == 0)
        #expect(RetryPolicy.retryAfter("soon", now: now) == nil)
        #expect(RetryPolicy.retryAfter(nil, now: now) == nil)
        #expect(RetryPolicy.retryAfter("-5", now: now) == nil)
    }

    @Test("the breaker opens after consecutive failures, probes once after the cooldown, closes on success")
    func breaker() {
        var b = CircuitBreaker(threshold: 3, cooldown: 10)
        for t in 0..<2 { b.record(success: false, now: Double(t)) }
        var allowed = b.allow(now: 2)
        #expect(b.state == .closed && allowed)
        b.record(success: true, now: 2)
        for t in 3..<6 { b.record(success: false, now: Double(t)) }
        #expect(b.state == .open)
        allowed = b.allow(now: 10)
        #expect(!allowed)
        allowed = b.allow(now: 15.5)
        #expect(allowed, "the probe after the cooldown")
        #expect(b.state == .halfOpen)
        allowed = b.allow(now: 15.6)
        #expect(!allowed, "one probe at a time")
        b.record(success: false, now: 16)
        allowed = b.allow(now: 20)
        #expect(b.state == .open && !allowed)
        allowed = b.allow(now: 26.1)
        #expect(allowed)
        b.record(success: true, now: 26.2)
        allowed = b.allow(now: 26.3)
        #expect(b.state == .closed && allowed && b.consecutiveFailures == 0)
    }

    @Test("destination policy keys are read and checked with their key paths")
    func config() throws {
        let good = """
            { store: { sqlite: "/tmp/unused.db" }, sources: { s: { adapter: "generic", verify: { none: true } } },
              destinations: { d: { adapter: "generic", url: "https://example.com/x", timeout: "3s", connectTimeout: "500ms",
                maxInFlight: 4, rateLimit: 20, ordering: "per-subject", coalesce: true,
                retry: { exponential: { initial: "2s", max: "1m", attempts: 5 }, jitter: "none", retryAfterMax: "10m", floor429: "3s" },
                circuitBreaker: { failures: 7, cooldown: "45s" } } },
              routes: [ { from: "s", to: ["d"] } ] }
            """
        let config = try RelayConfig.parse(Data(good.utf8), registry: BuiltinAdapters.registry, environment: [:])
        let p = try #require(config.destinations["d"]).policy
        #expect(p.timeout == 3 && p.connectTimeout == 0.5 && p.maxInFlight == 4 && p.rateLimit == 20)
        #expect(p.perSubjectOrder && p.coalesce && p.breakerThreshold == 7 && p.breakerCooldown == 45)
        #expect(p.retry.delays == .exponential(initial: 2, max: 60, attempts: 5) && !p.retry.jitter)
        #expect(p.retry.retryAfterMax == 600 && p.retry.floor429 == 3)

        let bad = """
            { store: { sqlite: "/tmp/unused.db" }, sources: { s: { adapter: "generic", verify: { none: true } } },
              destinations: { d: { adapter: "generic", url: "ftp://x", coalesce: true, maxInFlight: 0, color: 1,
                                   retry: { schedule: ["5s", "often"] } },
                              e: { adapter: "mastercard-unknown" } },
              routes: [] }
            """
        do {
            _ = try RelayConfig.parse(Data(bad.utf8), registry: BuiltinAdapters.registry, environment: [:])
            Issue.record("expected problems")
        } catch let error as ConfigError {
            let paths = Set(error.problems.map(\.path))
            for p in ["destinations.d.url", "destinations.d.coalesce", "destinations.d.maxInFlight", "destinations.d.color",
                      "destinations.d.retry.schedule[1]", "destinations.e.adapter"] {
                #expect(paths.contains(p), "\(p) missing from \(error)")
            }
        }
    }
}
