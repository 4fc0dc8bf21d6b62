import Adapters
import Crypto
import Foundation
@testable import Relay
import Simulator
import Synchronization
import Testing

@Suite("Standard Webhooks signing (outbound)")
struct StandardWebhooksSigningTests {
    // Known-answer vector, computed with Python's hmac and base64 (and checked with PyPI standardwebhooks'
    // Webhook.sign):
    //   k1 = bytes(range(1, 33)); k2 = b"rotation-old-key"
    //   msg = b'msg_dlv_01J9ZK.1735689600.{"orderId":"A-1","status":"shipped"}'
    //   base64.b64encode(hmac.new(k, msg, hashlib.sha256).digest())
    static let newSecret = "whsec_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
    static let oldSecret = "whsec_cm90YXRpb24tb2xkLWtleQ=="
    static let newSignature = "v1,umQ4RvWOjVge6tvRh7oxUK7wnwf1kBwbc+6QmTlH0D0="
    static let oldSignature = "v1,ec4vHBMDw+X7yDACenNznzwaj6zZZtcf/A8wHDl/Wr4="
    static let body = Array(#"{"orderId":"A-1","status":"shipped"}"#.utf8)
    static let env = ["WHSEC_NEW": newSecret, "WHSEC_OLD": oldSecret, "TOKEN": "tok-5e1d"]
    static let twoSecrets = #"{ standardWebhooks: { secrets: ["${env:WHSEC_NEW}", "${env:WHSEC_OLD}"] } }"#

    /// Authorizes `request` at a fixed time and waits for the result.
    static func sign(_ auth: any OutboundAuth, _ request: OutboundRequest, deliveryID: String = "dlv_01J9ZK",
                     now: Date = Date(timeIntervalSince1970: 1_735_689_600.75)) throws -> OutboundRequest {
        let box = Mutex<Result<OutboundRequest, AuthError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        auth.authorize(request, context: AuthContext(client: nil, deliveryID: deliveryID, now: now)) { result in
            box.withLock { $0 = result }
            done.signal()
        }
        done.wait()
        return try box.withLock { $0! }.get()
    }

    static func header(_ r: OutboundRequest, _ name: String) -> [String] {
        r.headers.filter { $0.0.caseInsensitiveCompare(name) == .orderedSame }.map(\.1)
    }

    @Test("known answer: one v1 entry per secret, in the configured order, space-separated")
    func knownAnswer() throws {
        let (auth, problems) = makeAuth(Self.twoSecrets, environment: Self.env)
        #expect(problems.isEmpty, "\(problems)")
        let request = OutboundRequest(method: "POST", url: "https://r.example/hook",
                                      headers: [("Content-Type", "application/json")], body: Self.body)
        let signed = try Self.sign(try #require(auth), request)
        #expect(Self.header(signed, "webhook-id") == ["msg_dlv_01J9ZK"])
        #expect(Self.header(signed, "webhook-timestamp") == ["1735689600"])
        #expect(Self.header(signed, "webhook-signature") == ["\(Self.newSignature) \(Self.oldSignature)"])
        #expect(signed.body == Self.body && signed.url == request.url && signed.method == "POST")
        #expect(Self.header(signed, "Content-Type") == ["application/json"])
        #expect(auth?.scheme == "standard-webhooks")

        // One secret: one entry; a single reference (not a list) is accepted too.
        let (one, p1) = makeAuth(#"{ standardWebhooks: { secrets: "${env:WHSEC_OLD}" } }"#, environment: Self.env)
        #expect(p1.isEmpty, "\(p1)")
        #expect(Self.header(try Self.sign(try #require(one), request), "webhook-signature") == [Self.oldSignature])
    }

    @Test("webhook-id: the Idempotency-Key (stable across retries) or the delivery id, msg_ prefixed once")
    func messageID() throws {
        let auth = try #require(makeAuth(Self.twoSecrets, environment: Self.env).auth)
        let cases: [([(String, String)], String, String)] = [
            ([("Idempotency-Key", "dlv_01J9ZK")], "dlv_other", "msg_dlv_01J9ZK"),
            ([("idempotency-key", "dlv_01J9ZK-batch")], "dlv_other", "msg_dlv_01J9ZK-batch"),
            ([("Idempotency-Key", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W")], "dlv_other", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
            ([], "dlv_01J9ZK", "msg_dlv_01J9ZK"),
            ([], "msg_already", "msg_already"),
        ]
        for (headers, deliveryID, want) in cases {
            let r = OutboundRequest(method: "POST", url: "https://r.example/hook", headers: headers, body: Self.body)
            let signed = try Self.sign(auth, r, deliveryID: deliveryID)
            #expect(Self.header(signed, "webhook-id") == [want], "\(headers) \(deliveryID)")
        }
        // The id of the vector, reached through the Idempotency-Key: the same signatures.
        let r = OutboundRequest(method: "POST", url: "https://r.example/hook", headers: [("Idempotency-Key", "dlv_01J9ZK")],
                                body: Self.body)
        #expect(Self.header(try Self.sign(auth, r, deliveryID: "dlv_x"), "webhook-signature")
                == ["\(Self.newSignature) \(Self.oldSignature)"])
    }

    @Test("each attempt: a fresh timestamp and signature, stale webhook-* headers replaced, the body signed as sent")
    func eachAttempt() throws {
        let auth = try #require(makeAuth(Self.twoSecrets, environment: Self.env).auth)
        let stale = OutboundRequest(method: "PUT", url: "https://r.example/hook",
                                    headers: [("Webhook-Id", "old"), ("webhook-timestamp", "1"), ("WEBHOOK-SIGNATURE", "v1,old")],
                                    body: Array("{}".utf8))
        let first = try Self.sign(auth, stale, now: Date(timeIntervalSince1970: 1_800_000_000))
        let second = try Self.sign(auth, stale, now: Date(timeIntervalSince1970: 1_800_000_031))
        for (signed, ts) in [(first, "1800000000"), (second, "1800000031")] {
            #expect(Self.header(signed, "webhook-id") == ["msg_dlv_01J9ZK"])
            #expect(Self.header(signed, "webhook-timestamp") == [ts])
            #expect(Self.header(signed, "webhook-signature").count == 1)
            // Checked independently with the one-shot HMAC.
            let message = Array("msg_dlv_01J9ZK.\(ts).{}".utf8)
            let want = [Self.newSecret, Self.oldSecret].map { s in
                "v1," + ByteEncoding.base64(HMAC.authenticate(.sha256, key: ByteEncoding.fromBase64(String(s.dropFirst(6)))!,
                                                              message: message))
            }.joined(separator: " ")
            #expect(Self.header(signed, "webhook-signature") == [want])
        }
        #expect(Self.header(first, "webhook-signature") != Self.header(second, "webhook-signature"))

        // Combined with a static scheme: both headers; the signature still covers the body as sent.
        let (both, problems) = makeAuth(#"{ bearer: "${env:TOKEN}", standardWebhooks: { secrets: ["${env:WHSEC_NEW}"] } }"#,
                                        environment: Self.env)
        #expect(problems.isEmpty, "\(problems)")
        let r = OutboundRequest(method: "POST", url: "https://r.example/hook", body: Self.body)
        let signed = try Self.sign(try #require(both), r)
        #expect(Self.header(signed, "Authorization") == ["Bearer tok-5e1d"])
        #expect(Self.header(signed, "webhook-signature") == [Self.newSignature])
    }

    @Test("configuration problems name the key path and never the secret's value")
    func problems() {
        let env = ["PLAIN": "sk_live_5b7e0c9a", "BAD64": "whsec_not*base64!", "EMPTYKEY": "whsec_", "GOOD": Self.newSecret]
        let cases: [(String, String)] = [
            (#"{ standardWebhooks: { secrets: ["whsec_AQID"] } }"#,
             "destinations.d.auth.standardWebhooks.secrets[0]: secrets must be a reference"),
            (#"{ standardWebhooks: { secrets: ["${env:GOOD}", "${env:PLAIN}"] } }"#,
             "destinations.d.auth.standardWebhooks.secrets[1]: ${env:PLAIN} is not a Standard Webhooks secret"),
            (#"{ standardWebhooks: { secrets: "${env:BAD64}" } }"#,
             "destinations.d.auth.standardWebhooks.secrets: ${env:BAD64} is not a Standard Webhooks secret"),
            (#"{ standardWebhooks: { secrets: ["${env:EMPTYKEY}"] } }"#,
             "destinations.d.auth.standardWebhooks.secrets[0]: ${env:EMPTYKEY} is not a Standard Webhooks secret"),
            (#"{ standardWebhooks: { secrets: ["${env:MISSING}"] } }"#,
             "destinations.d.auth.standardWebhooks.secrets[0]: environment variable MISSING is not set"),
            (#"{ standardWebhooks: { secrets: [] } }"#, "destinations.d.auth.standardWebhooks.secrets: needs at least one secret"),
            (#"{ standardWebhooks: {} }"#, "destinations.d.auth.standardWebhooks.secrets: is required"),
            (#"{ standardWebhooks: { secrets: ["${env:GOOD}"], secret: "${env:GOOD}" } }"#,
             "destinations.d.auth.standardWebhooks.secret: unknown key"),
            (#"{ standardWebhooks: "${env:GOOD}" }"#, "destinations.d.auth.standardWebhooks: expected an object"),
            (#"{ standardWebhooks: { secrets: [42] } }"#, "destinations.d.auth.standardWebhooks.secrets[0]: expected a secret reference"),
        ]
        for (block, want) in cases {
            let (auth, problems) = makeAuth(block, environment: env)
            #expect(auth == nil, "\(block)")
            #expect(problems.contains { $0.hasPrefix(want) }, "\(block): \(problems)")
            for p in problems {
                #expect(!p.contains("sk_live_5b7e0c9a") && !p.contains("not*base64") && !p.contains(Self.newSecret))
            }
        }
    }

    @Test("over HTTP: a retried delivery keeps its webhook-id and gets a fresh timestamp; both signatures verify")
    func overHTTP() throws {
        let sink = try DeliveryTests.startSink([SinkFault(path: "/signed", times: 1, action: .status(503))])
        defer { sink.stop() }
        let relay = try RunningRelay(sources: DeliveryTests.sources, extra: """
            destinations: {
              "signed": { adapter: "generic", url: "\(sink.baseURL)/signed",
                          retry: { schedule: ["1s"], jitter: "none" },
                          auth: { standardWebhooks: { secrets: ["${env:WHSEC_NEW}", "${env:WHSEC_OLD}"] } } },
            },
            routes: [ { from: "shop", to: ["signed"] } ],
            """, environment: Self.env)
        defer { relay.stop() }
        let id = try DeliveryTests.post(relay, "ORD-7", "shipped")
        let delivered = try DeliveryTests.waitForState(relay, id, "signed", "delivered")
        let got = sink.requests(path: "/signed")
        try #require(got.count == 2, "\(got.map(\.status))")
        #expect(got.map(\.status) == [503, 200])
        let keys = [Self.newSecret, Self.oldSecret].map { ByteEncoding.fromBase64(String($0.dropFirst(6)))! }
        for r in got {
            let msgID = try #require(r.headers["webhook-id"])
            let ts = try #require(r.headers["webhook-timestamp"].flatMap { Int64($0) })
            #expect(msgID == "msg_" + delivered.id && r.headers["Idempotency-Key"] == delivered.id)
            #expect(abs(Double(ts) - r.receivedAt.timeIntervalSince1970) < 2)
            let entries = try #require(r.headers["webhook-signature"]).split(separator: " ").map(String.init)
            let message = Array("\(msgID).\(ts).".utf8) + r.body
            #expect(entries == keys.map { "v1," + ByteEncoding.base64(HMAC.authenticate(.sha256, key: $0, message: message)) })
        }
        #expect(got[0].headers["webhook-id"] == got[1].headers["webhook-id"])
        #expect(got[0].headers["webhook-timestamp"] != got[1].headers["webhook-timestamp"])
        #expect(!relay.log.contains(Self.newSecret) && !relay.log.contains(Self.oldSecret))
    }
}
