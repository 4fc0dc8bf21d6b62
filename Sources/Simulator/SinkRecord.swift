import Foundation
import Relay

/// One request the sink received, recorded before any fault was applied, with the status it was answered.
public struct SinkRequest: Sendable {
    /// 1, 2, 3... in arrival order; never reused, not even after a reset.
    public var seq: Int
    public var receivedAt: Date
    public var method: String
    public var path: String
    /// The raw query (no `?`), empty when there was none.
    public var query: String
    public var headers: HTTPHeaders
    public var body: [UInt8]
    public var remoteAddress: String
    /// The status answered (for `hang` and `slow`: the one the held answer carries); `Sink.droppedStatus` when the
    /// connection was dropped without an answer.
    public var status: Int
    /// The fault action applied (`status`, `retryAfter`, `hang`, `slow`, `reset`, `json`), nil when none.
    public var fault: String?

    /// Path plus `?query` when there is one.
    public var target: String { query.isEmpty ? path : path + "?" + query }
    /// The body as text (invalid UTF-8 replaced).
    public var bodyText: String { String(decoding: body, as: UTF8.self) }

    /// `{seq, receivedAt, method, path, query, target, headers, body, bytes, status, fault, remoteAddress}`:
    /// headers as an object of lower-cased names (repeated fields joined with ", "), the body as text, plus
    /// `bodyBase64` when the body is not valid UTF-8.
    public var json: JSONValue {
        var headerObject: [String: String] = [:]
        for (name, value) in headers {
            let key = name.lowercased()
            headerObject[key] = headerObject[key].map { $0 + ", " + value } ?? value
        }
        var o: [String: JSONValue] = [
            "seq": .number(Double(seq)),
            "receivedAt": .string(Timestamp.iso8601(receivedAt)),
            "method": .string(method),
            "path": .string(path),
            "query": .string(query),
            "target": .string(target),
            "headers": .object(headerObject.mapValues { .string($0) }),
            "body": .string(bodyText),
            "bytes": .number(Double(body.count)),
            "status": .number(Double(status)),
            "fault": fault.map { .string($0) } ?? .null,
            "remoteAddress": .string(remoteAddress),
        ]
        if String(validating: body, as: UTF8.self) == nil {
            o["bodyBase64"] = .string(Data(body).base64EncodedString())
        }
        return .object(o)
    }
}

/// Counts over every request since the start or the last reset (not only the ones still kept).
public struct SinkStats: Sendable, Equatable {
    public struct PathCounts: Sendable, Equatable {
        public var count = 0
        /// Requests per status answered.
        public var statuses: [Int: Int] = [:]
    }

    /// Requests received (control requests under `/_sink/` are not counted).
    public var total = 0
    /// Requests still kept in memory (the most recent ones).
    public var kept = 0
    /// The sequence number of the latest request (0 before the first one).
    public var lastSeq = 0
    /// Requests per status answered.
    public var statuses: [Int: Int] = [:]
    /// Per path: at most `Sink.maxStatsPaths` distinct ones; the rest count under `Sink.otherPaths`.
    public var paths: [String: PathCounts] = [:]

    mutating func count(path: String, status: Int) {
        total += 1
        statuses[status, default: 0] += 1
        let key = paths[path] != nil || paths.count < Sink.maxStatsPaths ? path : Sink.otherPaths
        paths[key, default: PathCounts()].count += 1
        paths[key, default: PathCounts()].statuses[status, default: 0] += 1
    }

    /// `{total, kept, lastSeq, statuses: {"200": n}, paths: {"/x": {count, statuses}}}`; a dropped connection's
    /// status shows as "dropped".
    public var json: JSONValue {
        func statusObject(_ s: [Int: Int]) -> JSONValue {
            var o: [String: JSONValue] = [:]
            for (k, v) in s { o[k == Sink.droppedStatus ? "dropped" : String(k)] = .number(Double(v)) }
            return .object(o)
        }
        return .object([
            "total": .number(Double(total)),
            "kept": .number(Double(kept)),
            "lastSeq": .number(Double(lastSeq)),
            "statuses": statusObject(statuses),
            "paths": .object(paths.mapValues { .object(["count": .number(Double($0.count)), "statuses": statusObject($0.statuses)]) }),
        ])
    }
}

/// The most recent `capacity` requests, oldest first, in a ring.
struct SinkRing {
    let capacity: Int
    private var items: [SinkRequest] = []
    /// The oldest item's index once the ring is full (0 until then).
    private var head = 0

    init(capacity: Int) { self.capacity = max(1, capacity) }

    var count: Int { items.count }

    subscript(i: Int) -> SinkRequest { items[(head + i) % items.count] }

    mutating func append(_ r: SinkRequest) {
        if items.count < capacity {
            items.append(r)
        } else {
            items[head] = r
            head = (head + 1) % capacity
        }
    }

    mutating func removeAll() {
        items = []
        head = 0
    }

    /// The kept requests with a sequence number above `since`, oldest first, those of `path` only when given, at
    /// most `limit`.
    func select(since: Int, path: String?, limit: Int) -> [SinkRequest] {
        // Sequence numbers grow along the ring: binary search for the first one above `since`.
        var lo = 0, hi = count
        while lo < hi {
            let mid = (lo + hi) / 2
            if self[mid].seq <= since { lo = mid + 1 } else { hi = mid }
        }
        var out: [SinkRequest] = []
        var i = lo
        while i < count && out.count < limit {
            let r = self[i]
            if path == nil || r.path == path { out.append(r) }
            i += 1
        }
        return out
    }
}
