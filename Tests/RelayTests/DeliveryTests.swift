import Adapters
import Foundation
import Relay
import Simulator
@testable import RelaySQLite
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Delivery end to end: an in-process relay posting over real HTTP to in-process sinks (`Sink`) with injected
/// faults. Short retry schedules without jitter keep it fast; every wait is a poll with a deadline, and timings are
/// only ever asserted as "no sooner than" (or, where the point is isolation, "within a few seconds").
@Suite("Delivery")
struct DeliveryTests {
    /// One generic source: `{"id": subject, "state": status, ...}`.
    static let sources = """
        "shop": { adapter: "generic", verify: { none: true }, type: "order.status_changed",
                  map: { subject: { orderId: "$.id" }, status: "$.state" } },
        """

    // MARK: Helpers

    static func startSink(_ faults: [SinkFault] = []) throws -> Sink {
        let sink = Sink(options: SinkOptions(host: "127.0.0.1", port: 0, faults: faults, shutdownTimeout: 2))
        try sink.start()
        return sink
    }

    /// Posts `{"id": subject, "state": state, "nonce": ...}` to the `shop` source; returns the event id.
    @discardableResult
    static func post(_ relay: RunningRelay, _ subject: String, _ state: String) throws -> String {
        let body = #"{"id":"\#(subject)","state":"\#(state)","nonce":"\#(UUID().uuidString)"}"#
        return try expectAccepted(try relay.client.post("/v1/hooks/shop", json: body))
    }

    /// Polls `condition` every 10 ms; throws when it still does not hold after `timeout` seconds.
    static func eventually(_ what: @autoclosure () -> String, timeout: Double = 5,
                           _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while try !condition() {
            if Date() > deadline { throw TestFailure("timed out after \(timeout) s waiting for \(what())") }
            usleep(10_000)
        }
    }

    /// The one delivery of `eventID` to `destination`.
    static func delivery(_ relay: RunningRelay, _ eventID: String, _ destination: String) throws -> DeliveryInfo {
        try #require(try relay.store.deliveries(eventID: eventID).first { $0.destination == destination },
                     "no delivery of \(eventID) to \(destination)")
    }

    /// Waits until the delivery of `eventID` to `destination` is in `state`; returns it.
    @discardableResult
    static func waitForState(_ relay: RunningRelay, _ eventID: String, _ destination: String, _ state: String,
                             timeout: Double = 5) throws -> DeliveryInfo {
        var last: DeliveryInfo?
        try eventually("\(destination) delivery of \(eventID) to be \(state) (is \(last?.state ?? "?"))", timeout: timeout) {
            last = try relay.store.deliveries(eventID: eventID).first { $0.destination == destination }
            return last?.state == state
        }
        return last!
    }

    typealias AttemptRow = AttemptInfo

    /// The recorded attempts of a delivery, in order.
    static func attempts(_ store: any AdminStore, _ deliveryID: String) throws -> [AttemptInfo] {
        try store.attempts(deliveryID: deliveryID)
    }

    /// A delivery as the dispatcher left it.
    static func deliveryRow(_ store: any AdminStore, _ deliveryID: String) throws -> DeliveryInfo {
        guard let d = try store.delivery(id: deliveryID) else { throw TestFailure("no delivery \(deliveryID)") }
        return d
    }

    static func json(_ r: SinkRequest) throws -> JSONValue { try JSONValue.parse(r.body) }

    /// The relay's log lines with this `msg`, parsed, in order.
    static func logLines(_ relay: RunningRelay, _ msg: String) -> [JSONValue] {
        relay.log.split(separator: "\n").compactMap { try? JSONValue.parse(Data($0.utf8)) }
            .filter { $0["msg"]?.stringValue == msg }
    }

    /// Whether `v` is a JSON number (not a string holding one).
    static func isNumber(_ v: JSONValue?) -> Bool {
        switch v {
        case .number?, .integer?: return true
        default: return false
        }
    }

    /// `subject.orderId/status` of a delivered canonical event.
    static func label(_ r: SinkRequest) -> String {
        guard let v = try? json(r) else { return "?" }
        return "\(v["subject"]?["orderId"]?.stringValue ?? "?")/\(v["status"]?.stringValue ?? "?")"
    }

    static func seconds(_ a: SinkRequest, _ b: SinkRequest) -> Double { b.receivedAt.timeIntervalSince(a.receivedAt) }

    // MARK: Fan-out and bodies

    @Test("fan-out to three destinations: one request each, its own Idempotency-Key, canonical JSON or the raw body")
    func fanOut() throws {
        let sinks = try (0..<3).map { _ in try Self.startSink() }
        defer { sinks.forEach { $0.stop() } }
        let relay = try RunningRelay(sources: Self.sources, extra: """
            destinations: {
              "one":   { adapter: "generic", url: "\(sinks[0].baseURL)/in/one", retry: { schedule: ["100ms"], jitter: "none" } },
              "two":   { adapter: "generic", url: "\(sinks[1].baseURL)/in/two", method: "put", headers: { "X-Tenant": "acme" } },
              "three": { adapter: "generic", url: "\(sinks[2].baseURL)/in/three", body: "raw" },
            },
            routes: [ { from: "shop", to: ["one", "two", "three"] } ],
            """)
        defer { relay.stop() }
        // Odd spacing and a non-ASCII character: the raw body must arrive byte for byte, the canonical one re-encoded.
        let raw = Array("{ \"id\": \"ORD-1\",\n  \"state\": \"shipped\", \"note\": \"wörld\" }\n".utf8)
        let contentType = "application/json; charset=utf-8"
        let eventID = try expectAccepted(try relay.client.post("/v1/hooks/shop", raw, contentType: contentType))
        for name in ["one", "two", "three"] { try Self.waitForState(relay, eventID, name, "delivered") }

        let deliveries = try relay.store.deliveries(eventID: eventID)
        #expect(deliveries.map(\.destination) == ["one", "two", "three"])
        #expect(Set(deliveries.map(\.id)).count == 3)
        #expect(deliveries.allSatisfy { $0.attempts == 1 })
        let event = try #require(try relay.store.event(id: eventID))
        let canonical = event.jsonText(includeRaw: true)

        let got = zip(sinks, ["/in/one", "/in/two", "/in/three"]).map { $0.requests(path: $1) }
        #expect(got.map(\.count) == [1, 1, 1], "each destination gets exactly one request")
        try #require(got.allSatisfy { $0.count == 1 })
        for (i, name) in ["one", "two", "three"].enumerated() {
            let r = got[i][0]
            let d = try #require(deliveries.first { $0.destination == name })
            #expect(r.headers["Idempotency-Key"] == d.id, "\(name)")
            #expect(r.headers.fields.filter { $0.name.lowercased() == "idempotency-key" }.count == 1, "\(name)")
        }
        #expect(got[0][0].method == "POST" && got[1][0].method == "PUT")
        #expect(got[1][0].headers["X-Tenant"] == "acme")

        // Canonical: exactly the stored event's JSON, raw body included; and it reads back as that event.
        for r in [got[0][0], got[1][0]] {
            #expect(r.bodyText == canonical)
            #expect(r.headers["Content-Type"] == "application/json")
            let v = try Self.json(r)
            #expect(v["id"]?.stringValue == eventID)
            #expect(v["source"]?.stringValue == "shop")
            #expect(v["type"]?.stringValue == "order.status_changed")
            #expect(v["status"]?.stringValue == "shipped")
            #expect(v["subject"]?["orderId"]?.stringValue == "ORD-1")
            #expect(v["raw"]?["body"]?.stringValue == String(decoding: raw, as: UTF8.self))
            #expect(v["raw"]?["contentType"]?.stringValue == contentType)
        }
        // Raw: the body as received, with its Content-Type.
        #expect(got[2][0].body == raw)
        #expect(got[2][0].headers["Content-Type"] == contentType)

        for d in deliveries {
            let rows = try Self.attempts(relay.store, d.id)
            #expect(rows.count == 1 && rows[0].n == 1 && rows[0].status == 200 && rows[0].error == nil, "\(rows)")
            #expect(rows.first?.response == #"{"ok":true}"#)
        }
    }

    // MARK: Retries

    @Test("retry then success: 503, 503, 200 — the same Idempotency-Key and body every time, every attempt recorded")
    func retryThenSuccess() throws {
        let sink = try Self.startSink([SinkFault(times: 2, action: .status(503, body: .text("busy")))])
        defer { sink.stop() }
        let relay = try RunningRelay(sources: Self.sources, extra: """
            destinations: {
              "d": { adapter: "generic", url: "\(sink.baseURL)/hook", retry: { schedule: ["100ms", "100ms", "100ms"], jitter: "none" } },
            },
            routes: [ { from: "shop", to: ["d"] } ],
            """)
        defer { relay.stop() }
        let eventID = try Self.post(relay, "ORD-2", "shipped")
        let d = try Self.waitForState(relay, eventID, "d", "delivered")
        #expect(d.attempts == 3)

        let requests = sink.requests(path: "/hook")
        #expect(requests.map(\.status) == [503, 503, 200])
        #expect(requests.allSatisfy { $0.headers["Idempotency-Key"] == d.id })
        #expect(Set(requests.map(\.bodyText)).count == 1, "every attempt sends the same body")
        for i in 1..<requests.count {
            #expect(Self.seconds(requests[i - 1], requests[i]) >= 0.09, "retry \(i) came too soon")
        }
        let rows = try Self.attempts(relay.store, d.id)
        #expect(rows.map(\.n) == [1, 2, 3])
        #expect(rows.map(\.status) == [503, 503, 200])
        #expect(rows.map(\.response) == ["busy", "busy", #"{"ok":true}"#])
        #expect(rows.allSatisfy { $0.latencyMillis >= 0 && $0.startedAt > 0 })
        #expect(zip(rows, rows.dropFirst()).allSatisfy { $0.startedAt <= $1.startedAt })
        let row = try Self.deliveryRow(relay.store, d.id)
        #expect(row.state == "delivered" && row.lastStatus == 200 && row.claimedBy == nil)

        // The log says so with numbers as JSON numbers: each retry (status, attempt, latency, the wait), and the
        // delivered attempt at info level.
        let retries = Self.logLines(relay, "delivery will be retried")
        #expect(retries.count == 2, "\(relay.log)")
        for (i, line) in retries.enumerated() {
            #expect(line["deliveryId"]?.stringValue == d.id && line["destination"]?.stringValue == "d")
            #expect(line["status"]?.numberValue == 503 && line["attempt"]?.numberValue == Double(i + 1), "\(line.jsonString())")
            #expect(Self.isNumber(line["latencyMs"]) && Self.isNumber(line["retryInMs"]), "\(line.jsonString())")
        }
        let delivered = try #require(Self.logLines(relay, "delivered").first, "no delivered line: \(relay.log)")
        #expect(delivered["level"]?.stringValue == "info")
        #expect(delivered["deliveryId"]?.stringValue == d.id && delivered["destination"]?.stringValue == "d")
        #expect(Self.isNumber(delivered["status"]) && delivered["status"]?.numberValue == 200, "\(delivered.jsonString())")
        #expect(Self.isNumber(delivered["latencyMs"]) && (delivered["latencyMs"]?.numberValue ?? -1) >= 0, "\(delivered.jsonString())")
        #expect(delivered["attempt"]?.numberValue == 3, "\(delivered.jsonString())")
        // Raw text too: "status":200, never "status":"200".
        let raw = relay.log.split(separator: "\n").first { $0.contains("\"msg\":\"delivered\"") }.map(String.init) ?? ""
        #expect(raw.contains("\"status\":200,") && !raw.contains("\"status\":\"200\""), "\(raw)")
    }

    @Test("Retry-After (seconds or an HTTP date) delays the retry past the schedule, up to retryAfterMax; a 429 waits its floor")
    func retryAfter() throws {
        let sink = try Self.startSink([
            SinkFault(path: "/seconds", times: 1, action: .retryAfter(status: 503, seconds: 1)),
            SinkFault(path: "/date", times: 1, action: .retryAfter(status: 503, seconds: 2, httpDate: true)),
            SinkFault(path: "/capped", times: 1, action: .retryAfter(status: 503, seconds: 30)),
            SinkFault(path: "/floor", times: 1, action: .status(429)),
        ])
        defer { sink.stop() }
        let retry = #"retry: { schedule: ["100ms", "100ms"], jitter: "none", retryAfterMax: "5s", floor429: "1s" }"#
        let relay = try RunningRelay(sources: Self.sources, extra: """
            destinations: {
              "seconds": { adapter: "generic", url: "\(sink.baseURL)/seconds", \(retry) },
              "date":    { adapter: "generic", url: "\(sink.baseURL)/date", \(retry) },
              "capped":  { adapter: "generic", url: "\(sink.baseURL)/capped",
                           retry: { schedule: ["100ms"], jitter: "none", retryAfterMax: "300ms" } },
              "floor":   { adapter: "generic", url: "\(sink.baseURL)/floor", \(retry) },
            },
            routes: [ { from: "shop", to: ["seconds", "date", "capped", "floor"] } ],
            """)
        defer { relay.stop() }
        let eventID = try Self.post(relay, "ORD-3", "shipped")

        // While the first one waits, the store says when it is due: Retry-After's second from the answer on.
        let first = try Self.delivery(relay, eventID, "seconds")
        try Self.eventually("the first attempt of \"seconds\" to be recorded") {
            try Self.attempts(relay.store, first.id).count == 1
        }
        let row = try Self.deliveryRow(relay.store, first.id)
        let attempt = try #require(try Self.attempts(relay.store, first.id).first)
        #expect(attempt.status == 503)
        if row.state == "pending" {
            let wait = row.nextAttemptAt - (attempt.startedAt + attempt.latencyMillis)
            #expect(wait >= 900, "scheduled \(wait) ms after the answer, Retry-After asked for 1000")
        }

        for name in ["seconds", "date", "capped", "floor"] {
            let d = try Self.waitForState(relay, eventID, name, "delivered", timeout: 8)
            #expect(d.attempts == 2, "\(name)")
        }
        func gap(_ path: String) throws -> Double {
            let r = sink.requests(path: path)
            try #require(r.count == 2, "\(path): \(r.map(\.status))")
            #expect(r[0].headers["Idempotency-Key"] == r[1].headers["Idempotency-Key"])
            return Self.seconds(r[0], r[1])
        }
        let seconds = try gap("/seconds")
        #expect(seconds >= 0.9, "Retry-After: 1 honoured (retried after \(seconds) s, the schedule says 0.1 s)")
        // The date has whole seconds: "2 s from now" is 1 to 2 s away.
        let date = try gap("/date")
        #expect(date >= 0.9, "Retry-After as an HTTP date honoured (retried after \(date) s)")
        let capped = try gap("/capped")
        #expect(capped >= 0.27 && capped < 5, "Retry-After: 30 cut to retryAfterMax 300ms (retried after \(capped) s)")
        let floor = try gap("/floor")
        #expect(floor >= 0.9, "a 429 waits floor429 (retried after \(floor) s)")
    }

    @Test("a Retry-After never shortens the schedule's own delay, even past retryAfterMax")
    func retryAfterNeverShortensSchedule() {
        var p = RetryPolicy()
        p.delays = .schedule([7200, 60])
        p.jitter = false
        p.retryAfterMax = 3600
        #expect(p.delay(afterAttempts: 1, retryAfter: 1, status: 503) == 7200)
        #expect(p.delay(afterAttempts: 1, retryAfter: 5000, status: 503) == 7200)
        #expect(p.delay(afterAttempts: 2, retryAfter: 5000, status: 503) == 3600)
        #expect(p.delay(afterAttempts: 2, retryAfter: 120, status: 503) == 120)
        #expect(p.delay(afterAttempts: 2, retryAfter: 1, status: 503) == 60)
    }

    @Test("dead letter after the schedule: 3 attempts, every one kept with its status, error and response")
    func deadLetter() throws {
        let sink = try Self.startSink([SinkFault(action: .status(503, body: .text("overloaded")))])
        defer { sink.stop() }
        let relay = try RunningRelay(sources: Self.sources, extra: """
            destinations: {
              "d": { adapter: "generic", url: "\(sink.baseURL)/hook", retry: { schedule: ["100ms", "100ms"], jitter: "none" } },
            },
            routes: [ { from: "shop", to: ["d"] } ],
            """)
        defer { relay.stop() }
        let eventID = try Self.post(relay, "ORD-4", "shipped")
        let d = try Self.waitForState(relay, eventID, "d", "dead")
        #expect(d.attempts == 3)
        let rows = try Self.attempts(relay.store, d.id)
        #expect(rows.map(\.n) == [1, 2, 3])
        #expect(rows.map(\.status) == [503, 503, 503])
        #expect(rows.allSatisfy { $0.response == "overloaded" })
        #expect(rows.last?.error?.contains("after 3 attempts") == true, "\(rows.last?.error ?? "nil")")
        let row = try Self.deliveryRow(relay.store, d.id)
        #expect(row.state == "dead" && row.lastStatus == 503 && row.claimedBy == nil)
        #expect(row.lastError?.contains("HTTP 503") == true, "\(row.lastError ?? "nil")")

        let requests = sink.requests(path: "/hook")
        #expect(requests.count == 3)
        #expect(requests.allSatisfy { $0.headers["Idempotency-Key"] == d.id })
        // Dead is final: nothing more is sent (well past another retry's delay).
        usleep(400_000)
        #expect(sink.requests(path: "/hook").count == 3)
        #expect(try Self.delivery(relay, eventID, "d").state == "dead")
    }

    @Test("4xx is terminal: dead after one attempt; a refused connection is retried")
    func terminal4xx() throws {
        let sink = try Self.startSink([
            SinkFault(path: "/unprocessable", action: .status(422, body: .json(.object(["error": .string("bad sku")])))),
            SinkFault(path: "/missing", action: .status(404)),
        ])
        defer { sink.stop() }
        let retry = #"retry: { schedule: ["100ms", "100ms"], jitter: "none" }"#
        let relay = try RunningRelay(sources: Self.sources, extra: """
            destinations: {
              "unprocessable": { adapter: "generic", url: "\(sink.baseURL)/unprocessable", \(retry) },
              "missing":       { adapter: "generic", url: "\(sink.baseURL)/missing", \(retry) },
              "refused":       { adapter: "generic", url: "http://127.0.0.1:9/nobody", connectTimeout: "1s", \(retry) },
            },
            routes: [ { from: "shop", to: ["unprocessable", "missing", "refused"] } ],
            """)
        defer { relay.stop() }
        let eventID = try Self.post(relay, "ORD-5", "shipped")
        for (name, status) in [("unprocessable", 422), ("missing", 404)] {
            let d = try Self.waitForState(relay, eventID, name, "dead")
            #expect(d.attempts == 1, "\(name)")
            let rows = try Self.attempts(relay.store, d.id)
            #expect(rows.map(\.status) == [status], "\(name)")
            #expect(rows.first?.error == "HTTP \(status)", "\(name)")
        }
        #expect(try Self.attempts(relay.store, Self.delivery(relay, eventID, "unprocessable").id).first?.response
                == #"{"error":"bad sku"}"#)
        // No answer at all is worth retrying: the whole schedule is used.
        let refused = try Self.waitForState(relay, eventID, "refused", "dead")
        #expect(refused.attempts == 3)
        let rows = try Self.attempts(relay.store, refused.id)
        #expect(rows.allSatisfy { $0.status == nil && $0.error != nil }, "\(rows)")
        usleep(300_000)
        #expect(sink.requests(path: "/unprocessable").count == 1)
        #expect(sink.requests(path: "/missing").count == 1)
    }

    // MARK: Order and coalescing

    @Test("per-subject order: a subject's later statuses wait while its first is retried; other subjects go on")
    func perSubjectOrder() throws {
        // The first attempt is held 600 ms, then answered 503: the later statuses are queued behind it meanwhile.
        let sink = try Self.startSink([SinkFault(times: 1, action: .hang(seconds: 0.6, status: 503))])
        defer { sink.stop() }
        let relay = try RunningRelay(sources: Self.sources, extra: """
            destinations: {
              "d": { adapter: "generic", url: "\(sink.baseURL)/hook", ordering: "per-subject", maxInFlight: 8,
                     retry: { schedule: ["100ms", "100ms", "100ms"], jitter: "none" } },
            },
            routes: [ { from: "shop", to: ["d"] } ],
            """)
        defer { relay.stop() }
        var ids = [try Self.post(relay, "A", "placed")]
        try Self.eventually("the first attempt to reach the sink") { sink.requests(path: "/hook").count == 1 }
        ids.append(try Self.post(relay, "B", "placed"))
        ids.append(try Self.post(relay, "A", "invoiced"))
        ids.append(try Self.post(relay, "A", "shipped"))
        let postsDone = Date()
        for id in ids { try Self.waitForState(relay, id, "d", "delivered") }

        let requests = sink.requests(path: "/hook")
        let first = requests[0]
        #expect(postsDone < first.receivedAt.addingTimeInterval(0.6),
                "precondition: the later statuses were queued while the first attempt was in flight")
        let a = requests.filter { Self.label($0).hasPrefix("A/") }
        #expect(a.map(Self.label) == ["A/placed", "A/placed", "A/invoiced", "A/shipped"])
        #expect(a.map(\.status) == [503, 200, 200, 200])
        #expect(a[0].headers["Idempotency-Key"] == a[1].headers["Idempotency-Key"])
        // B's subject is not held back by A's retry.
        let b = try #require(requests.first { Self.label($0) == "B/placed" })
        #expect(b.receivedAt < a[1].receivedAt, "B waited for A's retry")
        #expect(try Self.delivery(relay, ids[0], "d").attempts == 2)
        #expect(try ids[1...].allSatisfy { try Self.delivery(relay, $0, "d").attempts == 1 })
    }

    @Test("coalesce: while a subject's status is in flight, a newer queued one supersedes the older queued ones")
    func coalesce() throws {
        let sink = try Self.startSink([SinkFault(times: 1, action: .slow(seconds: 0.6))])
        defer { sink.stop() }
        let relay = try RunningRelay(sources: Self.sources, extra: """
            destinations: {
              "d": { adapter: "generic", url: "\(sink.baseURL)/hook", ordering: "per-subject", coalesce: true,
                     retry: { schedule: ["100ms"], jitter: "none" } },
            },
            routes: [ { from: "shop", to: ["d"] } ],
            """)
        defer { relay.stop() }
        let placed = try Self.post(relay, "A", "placed")
        try Self.eventually("the first attempt to reach the sink") { sink.requests(path: "/hook").count == 1 }
        let invoiced = try Self.post(relay, "A", "invoiced")
        let other = try Self.post(relay, "B", "placed")
        let shipped = try Self.post(relay, "A", "shipped")
        let delivered = try Self.post(relay, "A", "delivered")
        let postsDone = Date()
        try Self.waitForState(relay, placed, "d", "delivered")
        try Self.waitForState(relay, delivered, "d", "delivered")
        try Self.waitForState(relay, other, "d", "delivered")
        #expect(postsDone < sink.requests(path: "/hook")[0].receivedAt.addingTimeInterval(0.6),
                "precondition: the later statuses were queued while the first was in flight")

        #expect(try Self.delivery(relay, invoiced, "d").state == "superseded")
        #expect(try Self.delivery(relay, shipped, "d").state == "superseded")
        let invoicedID = try Self.delivery(relay, invoiced, "d").id
        let row = try Self.deliveryRow(relay.store, invoicedID)
        #expect(row.attempts == 0 && row.lastError == "superseded by a newer status")
        #expect(try Self.attempts(relay.store, invoicedID).isEmpty, "a superseded status is never sent")
        let requests = sink.requests(path: "/hook")
        #expect(requests.filter { Self.label($0).hasPrefix("A/") }.map(Self.label) == ["A/placed", "A/delivered"])
        #expect(requests.filter { Self.label($0) == "B/placed" }.count == 1, "another subject is not coalesced away")
        #expect(requests.count == 3)
    }

    // MARK: Isolation and protection

    @Test("one destination hanging does not slow another: 50 events reach B within seconds while A holds every answer")
    func hangIsolation() throws {
        let hanging = try Self.startSink([SinkFault(action: .hang(seconds: 30, status: 504))])
        let healthy = try Self.startSink()
        defer { healthy.stop() }
        defer { hanging.stop() }
        let relay = try RunningRelay(sources: Self.sources, extra: """
            destinations: {
              "a": { adapter: "generic", url: "\(hanging.baseURL)/a", timeout: "10s", maxInFlight: 4,
                     retry: { schedule: ["1h"], jitter: "none" } },
              "b": { adapter: "generic", url: "\(healthy.baseURL)/b", timeout: "10s",
                     retry: { schedule: ["100ms"], jitter: "none" } },
            },
            routes: [ { from: "shop", to: ["a", "b"] } ],
            """)
        defer { relay.stop() }
        defer { hanging.stop() }   // before the relay's stop: the held answers go out, so it stops at once
        let started = Date()
        var ids: [String] = []
        for i in 0..<50 { ids.append(try Self.post(relay, "S\(i)", "shipped")) }
        try Self.eventually("50 deliveries to b", timeout: 5) { healthy.requests(path: "/b").count >= 50 }
        for id in ids { try Self.waitForState(relay, id, "b", "delivered", timeout: 2) }
        let elapsed = Date().timeIntervalSince(started)
        #expect(elapsed < 5, "b took \(elapsed) s for 50 events")
        #expect(healthy.requests(path: "/b").count == 50)
        #expect(Set(healthy.requests(path: "/b").compactMap { $0.headers["Idempotency-Key"] }).count == 50)
        // A has exactly maxInFlight attempts open, all still unanswered; the rest wait their turn.
        #expect(hanging.requests(path: "/a").count == 4)
        let states = try ids.map { try Self.delivery(relay, $0, "a").state }
        #expect(states.filter { $0 == "in_flight" }.count == 4)
        #expect(states.filter { $0 == "pending" }.count == 46)
    }

    @Test("circuit breaker: opens after 3 failures, waits its cooldown, a failed probe reopens it, a good one closes it")
    func circuitBreaker() throws {
        let sink = try Self.startSink([SinkFault(times: 4, action: .status(503))])
        defer { sink.stop() }
        let relay = try RunningRelay(sources: Self.sources, extra: """
            destinations: {
              "d": { adapter: "generic", url: "\(sink.baseURL)/hook", circuitBreaker: { failures: 3, cooldown: "1s" },
                     retry: { schedule: ["100ms", "100ms", "100ms", "100ms", "100ms", "100ms"], jitter: "none" } },
            },
            routes: [ { from: "shop", to: ["d"] } ],
            """)
        defer { relay.stop() }
        let first = try Self.post(relay, "C0", "shipped")
        let firstDelivery = try Self.delivery(relay, first, "d")
        // Three failures recorded: the circuit is open now.
        try Self.eventually("three failed attempts recorded") { try Self.attempts(relay.store, firstDelivery.id).count == 3 }
        var ids = [first]
        for i in 1...3 { ids.append(try Self.post(relay, "C\(i)", "shipped")) }
        for id in ids { try Self.waitForState(relay, id, "d", "delivered", timeout: 6) }

        let r = sink.requests(path: "/hook")
        #expect(r.map(\.status) == [503, 503, 503, 503, 200, 200, 200, 200])
        try #require(r.count == 8)
        // Open: nothing for the cooldown after the third failure, then a single probe (which fails: open again).
        #expect(Self.seconds(r[2], r[3]) >= 0.9, "probe after \(Self.seconds(r[2], r[3])) s, cooldown is 1 s")
        #expect(Self.seconds(r[3], r[4]) >= 0.9, "second probe after \(Self.seconds(r[3], r[4])) s, cooldown is 1 s")
        // The second probe succeeds: closed, the three waiting deliveries go at once (no further cooldown).
        for i in 5..<8 {
            #expect(Self.seconds(r[4], r[i]) < 0.9, "request \(i + 1) came \(Self.seconds(r[4], r[i])) s after the good probe")
        }
        let attempts = try ids.map { try Self.delivery(relay, $0, "d").attempts }
        #expect(attempts.reduce(0, +) == 8)

        // Every transition is logged, with the destination, the state left and why: open (warn) after the third
        // failure, half-open (info) at the cooldown's end, open again after the failed probe, half-open, closed.
        let lines = relay.log.split(separator: "\n").compactMap { try? JSONValue.parse(Data($0.utf8)) }
            .filter { $0["msg"]?.stringValue?.hasPrefix("circuit breaker ") == true }
        #expect(lines.map { $0["msg"]?.stringValue ?? "" } == ["circuit breaker open", "circuit breaker half-open",
                                                              "circuit breaker open", "circuit breaker half-open",
                                                              "circuit breaker closed"], "\(relay.log)")
        #expect(lines.map { $0["from"]?.stringValue ?? "" } == ["closed", "open", "half-open", "open", "half-open"])
        #expect(lines.map { $0["level"]?.stringValue ?? "" } == ["warn", "info", "warn", "info", "info"])
        #expect(lines.allSatisfy { $0["destination"]?.stringValue == "d" && !($0["reason"]?.stringValue ?? "").isEmpty })
        try #require(lines.count == 5)
        #expect(lines[0]["consecutiveFailures"]?.numberValue == 3, "\(lines[0].jsonString())")
        #expect(lines[0]["reason"]?.stringValue?.contains("HTTP 503") == true, "\(lines[0].jsonString())")
        #expect(lines[2]["reason"]?.stringValue?.contains("probe attempt failed (HTTP 503)") == true, "\(lines[2].jsonString())")
        #expect(lines[4]["reason"]?.stringValue?.contains("HTTP 200") == true && lines[4]["consecutiveFailures"]?.numberValue == 0,
                "\(lines[4].jsonString())")
    }

    @Test("rate limit: attempts start no faster than the token bucket allows (a burst of one second's worth, then the rate)")
    func rateLimit() throws {
        let sink = try Self.startSink()
        defer { sink.stop() }
        let relay = try RunningRelay(sources: Self.sources, extra: """
            destinations: {
              "d": { adapter: "generic", url: "\(sink.baseURL)/hook", rateLimit: 20 },
            },
            routes: [ { from: "shop", to: ["d"] } ],
            """)
        defer { relay.stop() }
        var ids: [String] = []
        for i in 0..<40 { ids.append(try Self.post(relay, "L\(i)", "shipped")) }
        for id in ids { try Self.waitForState(relay, id, "d", "delivered") }
        let r = sink.requests(path: "/hook")
        try #require(r.count == 40)
        // At 20 per second with a bucket of 20, any 40 attempts span at least (40 - 20) / 20 = 1 s.
        let span = Self.seconds(r[0], r[39])
        #expect(span >= 0.9, "40 attempts in \(span) s at rateLimit 20")
    }

    // MARK: Restart

    @Test("restart on the same SQLite file: deliveries left claimed are sent again, with the same Idempotency-Key")
    func restartTakesBackClaims() throws {
        let dir = try TempDir("relay-delivery-restart")
        defer { dir.remove() }
        let sink = try Self.startSink([SinkFault(times: 3, action: .hang(seconds: 30, status: 504))])
        defer { sink.stop() }
        let dbPath = dir.file("relay.db")
        let extra = """
            destinations: {
              "d": { adapter: "generic", url: "\(sink.baseURL)/hook", timeout: "10s", retry: { schedule: ["100ms"], jitter: "none" } },
            },
            routes: [ { from: "shop", to: ["d"] } ],
            """
        // First run: three attempts go out and hang; the relay stops (after 300 ms of grace) with them unanswered.
        let first = try RunningRelay(sources: Self.sources, extra: extra, in: dir, logName: "first.log",
                                     shutdownTimeout: "300ms")
        var ids: [String] = []
        var keys: [String] = []
        do {
            defer {
                // The stop waits its grace (300 ms) for the hung attempts, then the client's 1 s, not more.
                let stopping = Date()
                first.stop()
                let took = Date().timeIntervalSince(stopping)
                #expect(took < 3.5, "the stop took \(took) s with attempts hanging (shutdownTimeout 300ms)")
            }
            for i in 0..<3 { ids.append(try expectAccepted(try first.client.post("/v1/hooks/shop", json: #"{"id":"R\#(i)","state":"shipped"}"#))) }
            try Self.eventually("three attempts in flight") { sink.requests(path: "/hook").count == 3 }
            for id in ids {
                let d = try #require(try first.service.store.deliveries(eventID: id).first)
                #expect(d.state == "in_flight" && d.attempts == 0)
                keys.append(d.id)
            }
            #expect(Set(sink.requests(path: "/hook").compactMap { $0.headers["Idempotency-Key"] }) == Set(keys))
        }

        // Between runs: the claims are still there, and a live lease is not taken back.
        do {
            let store = try SQLiteStore(options: SQLiteStoreOptions(path: dbPath))
            defer { store.close() }
            for id in ids { #expect(try store.deliveries(eventID: id).first?.state == "in_flight") }
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            #expect(try store.releaseExpiredLeases(nowMillis: now) == 0)
        }

        // Second run on the same file: the claims are taken back at start and delivered.
        let second = try RunningRelay(sources: Self.sources, extra: extra, in: dir, logName: "second.log",
                                      shutdownTimeout: "300ms")
        defer { second.stop() }
        for id in ids {
            let d = try #require(try second.service.store.deliveries(eventID: id).first)
            try Self.eventually("\(d.id) delivered after the restart") {
                try second.service.store.deliveries(eventID: id).first?.state == "delivered"
            }
        }
        let requests = sink.requests(path: "/hook")
        #expect(requests.count == 6)
        #expect(requests.map(\.status) == [504, 504, 504, 200, 200, 200])
        // The same key on the attempt after the restart: the destination can tell it is the same delivery.
        #expect(Set(requests.dropFirst(3).compactMap { $0.headers["Idempotency-Key"] }) == Set(keys))
        let line = readText(dir.file("second.log")).split(separator: "\n")
            .compactMap { try? JSONValue.parse(Data($0.utf8)) }
            .first { $0["msg"]?.stringValue == "deliveries returned to the queue" }
        #expect(line?["count"]?.numberValue == 3, "log: \(readText(dir.file("second.log")))")
    }
}

