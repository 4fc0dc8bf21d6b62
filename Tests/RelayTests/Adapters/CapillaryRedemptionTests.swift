import Adapters
import Foundation
@testable import Relay
import Simulator
import Testing

/// Capillary's vendor redemption definitions pasted as they are (`vendorRedemption`), checked and run.
@Suite("Capillary vendor redemptions")
struct CapillaryRedemptionTests {
    /// Capillary's "Update Vendor Redemption" example (docs.capillarytech.com), with its inline Basic credential.
    static func documented(authorization: String = "Basic Ymxpc3M6MWY5OTRhMjQ1M2M0MWM3YzVjZTJmNGRjNzU5MWI1NzY=",
                           url: String = "https://eucrm.cc.capillarytech.com/v1.1/coupon/issue") -> String {
        #"""
        {
            "name": "UAT Vendor Redemption 6 update 1",
            "redemptionType": "MILES",
            "actions": [
                {
                    "apiUrl": "\#(url)",
                    "apiBodyField": "{\"root\": {\"coupon\": [{\"customer\": {\"mobile\": \"${mobile}\"}, \"series_id\": 716308}]}}",
                    "apiBody": "{\"root\": {\"coupon\": [{\"customer\": {\"mobile\": \"${mobile}\"}, \"series_id\": 716308}]}}",
                    "name": "test12345",
                    "execOrder": 1,
                    "apiType": "POST",
                    "retryAction": false,
                    "actionId": 20811,
                    "enabled": true,
                    "apiHeaders": {
                        "Authorization": "\#(authorization)",
                        "Content-Type": "application/json"
                    },
                    "contextKeys": {
                        "voucher": "response.coupon.code"
                    }
                }
            ],
            "responseKeys": [
                "voucher"
            ],
            "vendorId": "430",
            "enabled": true
        }
        """#
    }

    static func config(_ destination: String) -> String {
        """
        {
          sources: { "cap": { adapter: "capillary", verify: { none: true } } },
          destinations: { "vendor": { adapter: "generic", \(destination) } },
          routes: [ { from: "cap", to: ["vendor"] } ],
        }
        """
    }

    static func load(_ destination: String, environment: [String: String] = [:]) -> (RelayConfig?, [String]) {
        do {
            return (try RelayConfig.parse(Data(config(destination).utf8), registry: BuiltinAdapters.registry,
                                          environment: environment), [])
        } catch let e as ConfigError {
            return (nil, e.problems.map(\.description))
        } catch {
            return (nil, ["\(error)"])
        }
    }

    @Test("Capillary's documented example is taken verbatim, except its inline credential, which is refused without being shown")
    func verbatim() throws {
        let (_, refused) = Self.load("vendorRedemption: \(Self.documented())")
        #expect(refused.count == 1, "\(refused)")
        #expect(refused.first?.hasPrefix("destinations.vendor.vendorRedemption.actions[0].apiHeaders.Authorization: holds an inline credential") == true, "\(refused)")
        #expect(refused.first?.contains("${env:") == true)
        #expect(!refused.joined().contains("Ymxpc3M6"), "the credential must not be echoed")

        let (config, problems) = Self.load("vendorRedemption: \(Self.documented(authorization: "Basic ${env:ACME_BASIC}"))",
                                           environment: ["ACME_BASIC": "Ymxpc3M6c2VjcmV0"])
        #expect(problems.isEmpty, "\(problems)")
        let d = try #require(config?.destinations["vendor"]?.adapter as? GenericDestination)
        #expect(d.steps.count == 1 && d.responseKeys == ["voucher"] && d.disabled == nil)
        let step = d.steps[0]
        #expect(step.name == "test12345" && step.method == "POST" && step.retry == false)
        #expect(step.contextKeys.map(\.0) == ["voucher"] && step.contentType == "application/json")
        // Capillary's variables resolve from the canonical event.
        let event = CanonicalEvent(id: "evt_1", source: "cap", type: "reward.issued", subject: ["transactionId": "3482445"],
                                   receivedAt: "2026-12-06T00:00:00.000Z", attributes: ["mobile": .string("919876543210")],
                                   idempotencyKey: "k")
        let request = try d.translate(event, context: DeliveryContext(deliveryID: "dlv_1", destination: "vendor", attempt: 1))
        #expect(String(decoding: request.body, as: UTF8.self)
                == #"{"root": {"coupon": [{"customer": {"mobile": "919876543210"}, "series_id": 716308}]}}"#)
        #expect(request.headers.contains { $0 == ("Authorization", "Basic Ymxpc3M6c2VjcmV0") })

        // Capillary's "Create Vendor Redemption" example indexes arrays as get(0).
        let (created, createProblems) = Self.load(#"""
            vendorRedemption: { brandId: 1, vendorId: 36, name: "Miles", redemptionType: "MILES", responseKeys: ["voucher"],
              actions: [ { name: "add good will points", execOrder: 1, apiType: "POST",
                           apiUrl: "https://crm-nightly-new.cc.capillarytech.com/v1.1/request/add?program_id=2851",
                           apiHeaders: { accept: "application/json", "Content-Type": "application/json",
                                         Authorization: "Basic ${env:CAP_BASIC}" },
                           apiBody: "{\"transactionId_property\": \"${rewardTransactionId}\",\"customFields_property\": {\"customField_1_property\": \"${customfield_CF1}\"}, \"fulfillmentStatus_property\": \"${fulfillmentStatus}\"}",
                           contextKeys: { voucher: "response.requests.request.get(0).id" } } ] }
            """#, environment: ["CAP_BASIC": "YTpi"])
        #expect(createProblems.isEmpty, "\(createProblems)")
        let miles = try #require(created?.destinations["vendor"]?.adapter as? GenericDestination)
        let answer = OutboundResponse(status: 200, headers: HTTPHeaders([("Content-Type", "application/json")]),
                                      body: Array(#"{"requests":{"request":[{"id":"G-1"},{"id":"G-2"}]}}"#.utf8))
        let outcome = miles.outcome(answer, event: event, context: DeliveryContext(deliveryID: "dlv_1", destination: "vendor", attempt: 1))
        #expect(outcome.classification == .delivered && outcome.values == ["voucher": "G-1"], "\(outcome)")
    }

    @Test("problems inside the pasted definition name their key path; a definition in a file is read, and its bad JSON is reported without its text")
    func problems() throws {
        let dir = try TempDir("relay-capillary-redemption")
        defer { dir.remove() }
        let bad = Self.load(#"""
            vendorRedemption: { vendorId: "1", name: "x", responseKeys: ["voucher", "points"],
              actions: [
                { name: "a", execOrder: 1, apiType: "FETCH", apiUrl: "https://v.example/${email}", apiTimeout: 5,
                  apiBody: "{}", apiBodyField: "{\"x\":1}", retryAction: "no",
                  apiHeaders: { "X-Api-Key": "k-123456", "Content-Type": "application/json" },
                  contextKeys: { voucher: "coupon.code" } },
                { name: "b", execOrder: 2, apiUrl: "https://user:pw@v.example/b", enabled: false },
              ] }
            """#).1
        let expected = [
            "destinations.vendor.vendorRedemption.actions[0].apiTimeout: unknown key",
            "destinations.vendor.vendorRedemption.actions[0].apiType: must be GET, POST, PUT, PATCH or DELETE",
            "destinations.vendor.vendorRedemption.actions[0].apiHeaders.X-Api-Key: holds an inline credential",
            "destinations.vendor.vendorRedemption.actions[0].apiBodyField: differs from apiBody",
            "destinations.vendor.vendorRedemption.actions[0].contextKeys.voucher: expected a path into the response",
            "destinations.vendor.vendorRedemption.actions[0].retryAction: expected",
            #"destinations.vendor.vendorRedemption.responseKeys[0]: "voucher" is not one of the enabled actions' contextKeys"#,
            #"destinations.vendor.vendorRedemption.responseKeys[1]: "points""#,
            #"destinations.vendor.vendorRedemption.actions[name="a"]: ${email} is not a Capillary variable"#,
        ]
        for e in expected { #expect(bad.contains { $0.hasPrefix(e) }, "missing \(e) in \(bad)") }
        #expect(!bad.joined().contains("k-123456"))
        // A disabled action is left out unchecked; a variable the destination names is known.
        let named = Self.load(#"""
            variables: { email: "${attributes.email?}" },
            vendorRedemption: { actions: [ { name: "a", execOrder: 1, apiType: "GET", apiUrl: "https://v.example/${email}" },
                                           { name: "b", execOrder: 2, apiUrl: "https://user:pw@v.example/b", enabled: false } ] }
            """#)
        #expect(named.1.isEmpty, "\(named.1)")
        let credentialsInURL = Self.load(#"vendorRedemption: { actions: [ { name: "a", apiUrl: "https://v.example/b?apiKey=abc123" } ] }"#).1
        #expect(credentialsInURL.count == 1 && credentialsInURL[0].contains("apiUrl: the query parameter apiKey holds an inline credential"), "\(credentialsInURL)")
        #expect(!credentialsInURL[0].contains("abc123"))

        // From a file: read as it is; a broken one is reported at its key path, with no text of the file.
        let file = try dir.write("acme.json", Self.documented(authorization: "Basic ${env:ACME_BASIC}"))
        let fromFile = Self.load(#"vendorRedemption: "\#(file)""#, environment: ["ACME_BASIC": "c2VjcmV0"])
        #expect(fromFile.1.isEmpty && fromFile.0?.destinations["vendor"] != nil, "\(fromFile.1)")
        let broken = try dir.write("broken.json", #"{ "actions": [ { "apiHeaders": { "Authorization": "Basic c3VwZXJzZWNyZXQ=" } "name": "x" } ] }"#)
        let brokenProblems = Self.load(#"vendorRedemption: "\#(broken)""#).1
        #expect(brokenProblems.count == 1 && brokenProblems[0].hasPrefix("destinations.vendor.vendorRedemption<\(broken)>: is not valid JSON"), "\(brokenProblems)")
        #expect(!brokenProblems[0].contains("c3VwZXJzZWNyZXQ"), "\(brokenProblems)")
        let absent = Self.load(#"vendorRedemption: "\#(dir.file("nope.json"))""#).1
        #expect(absent.count == 1 && absent[0].contains("no such file"), "\(absent)")
    }

    @Test("a chain runs in execOrder with Capillary's variables; responseKeys are recorded with the delivery; retryAction: false dead-letters at once; enabled: false skips")
    func runs() throws {
        let sink = try DeliveryTests.startSink([
            SinkFault(path: "/coupon/issue", action: .json(body: .object(["coupon": .object(["code": .string("VCH-77")])]))),
        ])
        defer { sink.stop() }
        let redemption = #"""
            { "vendorId": "430", "name": "acme vouchers", "redemptionType": "VENDOR_ONLY_REWARD", "enabled": true,
              "actions": [
                { "name": "confirm", "execOrder": 2, "apiType": "PUT", "apiUrl": "\#(sink.baseURL)/coupons/${voucher}/confirm",
                  "apiHeaders": { "Content-Type": "application/json" },
                  "apiBody": "{\"status\": \"${fulfillmentStatus}\", \"txn\": ${rewardTransactionId}}", "retryAction": false },
                { "name": "issue", "execOrder": 1, "apiType": "POST", "apiUrl": "\#(sink.baseURL)/coupon/issue",
                  "apiHeaders": { "Authorization": "Basic ${env:ACME_BASIC}", "Content-Type": "application/json" },
                  "apiBody": "{\"mobile\": \"${mobile}\", \"partner\": \"${customfield_Partner_Order_Id}\", \"member\": \"${customerId}\"}",
                  "contextKeys": { "voucher": "response.coupon.code" } },
                { "name": "audit", "execOrder": 3, "apiUrl": "\#(sink.baseURL)/audit", "enabled": false }
              ],
              "responseKeys": ["voucher"] }
            """#
        let relay = try RunningRelay(sources: """
            "cap": { adapter: "capillary", verify: { none: true }, statusMap: { "received": "placed" } },
            """, extra: """
            destinations: {
              "vouchers": { adapter: "generic", vendorRedemption: \(redemption), retry: { schedule: ["50ms", "50ms"], jitter: "none" } },
              "off": { adapter: "generic", vendorRedemption: { enabled: false, actions: [ { name: "x", apiUrl: "\(sink.baseURL)/off" } ] } },
            },
            routes: [ { from: "cap", to: ["vouchers", "off"] } ],
            """, environment: ["ACME_BASIC": "YWNtZTpzZWNyZXQ="])
        defer { relay.stop() }
        let first = try expectAccepted(try relay.client.post("/v1/hooks/cap", json: """
            {"rewardTransactionId": 3482445, "customerId": 85076836, "fulfillmentStatus": "received", "mobile": "919876543210",
             "customfield_Partner_Order_Id": "PO-1"}
            """))
        let done = try DeliveryTests.waitForState(relay, first, "vouchers", "delivered")
        #expect(done.values == ["voucher": "VCH-77"], "\(done)")
        let issue = try #require(sink.requests(path: "/coupon/issue").first)
        #expect(String(decoding: issue.body, as: UTF8.self) == #"{"mobile": "919876543210", "partner": "PO-1", "member": "85076836"}"#)
        #expect(issue.headers["Authorization"] == "Basic YWNtZTpzZWNyZXQ=")
        let confirm = try #require(sink.requests(path: "/coupons/VCH-77/confirm").first)
        #expect(confirm.method == "PUT" && String(decoding: confirm.body, as: UTF8.self) == #"{"status": "placed", "txn": 3482445}"#)
        #expect(sink.requests(path: "/audit").isEmpty && sink.requests(path: "/off").isEmpty)
        let off = try DeliveryTests.waitForState(relay, first, "off", "skipped")
        #expect(off.lastError?.contains(#"the vendor redemption is disabled (enabled: false)"#) == true, "\(off)")

        // The confirm step fails with a 503: not retried (retryAction: false), the issue step is not repeated.
        sink.setFaults([SinkFault(path: "/coupon/issue", action: .json(body: .object(["coupon": .object(["code": .string("VCH-78")])]))),
                            SinkFault(path: "/coupons/VCH-78/confirm", action: .status(503))])
        let second = try expectAccepted(try relay.client.post("/v1/hooks/cap", json: #"{"rewardTransactionId": 3482446}"#))
        let dead = try DeliveryTests.waitForState(relay, second, "vouchers", "dead")
        #expect(dead.attempts == 1, "\(dead)")
        #expect(dead.lastError?.contains(#"step "confirm" (2 of 2): HTTP 503 (retryAction: false, so not retried)"#) == true, "\(dead)")
        #expect(sink.requests(path: "/coupon/issue").count == 2 && sink.requests(path: "/coupons/VCH-78/confirm").count == 1)
        // What was extracted before the failure is kept with the dead letter, so a replay resumes at the failed
        // step: the voucher is not issued twice.
        #expect(dead.values == ["voucher": "VCH-78"] && dead.step == 1, "\(dead)")
        sink.setFaults([])
        let outcome = try relay.store.replay(deliveryID: dead.id, destinations: ["vouchers": .unordered, "off": .unordered],
                                             nowMillis: Int64(Date().timeIntervalSince1970 * 1000))
        #expect(outcome == .replayed(from: "dead"))
        relay.service.dispatcher?.wake()
        let replayed = try DeliveryTests.waitForState(relay, second, "vouchers", "delivered")
        #expect(replayed.values == ["voucher": "VCH-78"], "\(replayed)")
        #expect(sink.requests(path: "/coupon/issue").count == 2 && sink.requests(path: "/coupons/VCH-78/confirm").count == 2)
    }
}
