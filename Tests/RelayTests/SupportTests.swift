import Foundation
import Testing
@testable import Relay

@Suite struct SupportTests {
    // Expected values computed with Python's datetime (code we did not write).
    @Test(arguments: [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1795305880.123, "2026-11-22T00:04:40.123Z"),
        (951782400.999, "2000-02-29T00:00:00.999Z"),
        (1700000000.5, "2023-11-14T22:13:20.500Z"),
    ])
    func iso8601(_ seconds: Double, _ expected: String) {
        #expect(Timestamp.iso8601(Date(timeIntervalSince1970: seconds)) == expected)
    }

    @Test func eventIDsAreTimeOrderedAndUnique() {
        let ids = (0..<10_000).map { _ in EventID.make() }
        #expect(Set(ids).count == ids.count)
        #expect(ids == ids.sorted())
        #expect(ids.allSatisfy { $0.hasPrefix("evt_") && $0.count == 30 })
    }

    @Test(arguments: [("500us", 0.0005), ("250ms", 0.25), ("5s", 5.0), ("2m", 120.0), ("1h", 3600.0), ("1.5", 1.5)])
    func durations(_ text: String, _ seconds: Double) {
        #expect(ConfigReader.parseDuration(text) == seconds)
    }

    @Test("a counter handle is one counter: shared by name and labels, summed with increment, from many threads")
    func counterHandles() {
        let m = Metrics()
        let a = m.counter("relay_webhooks_received_total", ["source": "shop"])
        #expect(a === m.counter("relay_webhooks_received_total", ["source": "shop"]))
        #expect(a !== m.counter("relay_webhooks_received_total", ["source": "other"]))
        DispatchQueue.concurrentPerform(iterations: 8) { _ in for _ in 0..<1000 { a.increment() } }
        m.increment("relay_webhooks_received_total", ["source": "shop"], by: 2)
        #expect(m.value("relay_webhooks_received_total", ["source": "shop"]) == 8002)
        let text = m.prometheusText()
        #expect(text.contains(#"relay_webhooks_received_total{source="shop"} 8002"#))
        #expect(text.contains(#"relay_webhooks_received_total{source="other"} 0"#))
    }

    @Test("log fields: numbers and booleans are JSON numbers and booleans, text is a JSON string, nil is null")
    func logFieldTypes() throws {
        let port: UInt16 = 8080
        let latency: Int64 = 12
        let status: Int? = 502
        let none: Int? = nil
        let text = Logger.line(.warn, "attempt", ["status": status, "latencyMs": latency, "port": port, "attempt": 2,
                                                  "ratio": 0.25, "ok": false, "none": none, "id": "d-\"1\"", "digits": "502"],
                               at: Date(timeIntervalSince1970: 0))
        #expect(text.hasSuffix("}\n"))
        #expect(text == #"{"time":"1970-01-01T00:00:00.000Z","level":"warn","msg":"attempt","status":502,"latencyMs":12,"port":8080,"attempt":2,"ratio":0.25,"ok":false,"none":null,"id":"d-\"1\"","digits":"502"}"# + "\n")
        let v = try JSONValue.parse(Data(text.utf8))
        #expect(v["status"] == .integer("502") || v["status"] == .number(502), "\(v.jsonString())")
        #expect(v["digits"] == .string("502") && v["ok"] == .bool(false) && v["none"] == .null)
        #expect(Logger.line(.info, "x", ["inf": Double.infinity], at: Date()).contains(#""inf":null"#))
    }

    @Test func badDurationsAreRefused() {
        for text in ["", "s", "-1s", "5 parsecs", "1x"] { #expect(ConfigReader.parseDuration(text) == nil, "\(text)") }
    }
}
