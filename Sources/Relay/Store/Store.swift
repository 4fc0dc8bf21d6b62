import Foundation
import Synchronization

// The storage seam. The engine (ingest, dispatcher, admin API) speaks only these protocols; the SQL lives in the
// store targets: `RelaySQLite` (embedded, one relay per file) and `RelayPostgres` (one database shared by any number
// of relays). Both pass `Tests/RelayTests/StoreConformanceTests.swift`.
//
// Threads, for every protocol here: each method may be called from any thread. Methods with a `completion` return at
// once (or after doing the work on the caller's thread) and call it exactly once, on a store thread or on the caller's
// thread before returning; a completion must not block and must not call the blocking methods. Every other method
// blocks its caller until the store has answered: never call one from a completion or from a store thread.
// A method that cannot reach durable storage throws (or completes with) `StoreError.unavailable`; nothing it was
// asked to write is then half-written.

// MARK: - Ingest

/// What committing an event did.
public enum CommitOutcome: Sendable, Equatable {
    /// Stored now, under this id.
    case inserted(String)
    /// The source had already recorded an event with this idempotency key: its id.
    case duplicate(String)

    public var eventID: String {
        switch self {
        case .inserted(let id), .duplicate(let id): return id
        }
    }
}

/// Why the store could not do what it was asked. Nothing was stored; the sender must be told to try again.
public enum StoreError: Error, CustomStringConvertible, Sendable {
    case unavailable(String)
    case closed

    public var description: String {
        switch self {
        case .unavailable(let why): return "store unavailable: \(why)"
        case .closed: return "store is shutting down"
        }
    }
}

/// How a destination takes its deliveries from the queue (from its delivery policy).
public struct QueueDiscipline: Sendable, Hashable {
    /// A subject's later status is never sent before its earlier ones have finished (`ordering: "per-subject"`).
    public var perSubject: Bool
    /// With `perSubject`: an older status still queued is superseded by a newer one for the same subject (`coalesce`).
    public var coalesce: Bool

    public init(perSubject: Bool = false, coalesce: Bool = false) {
        self.perSubject = perSubject
        self.coalesce = coalesce && perSubject
    }

    public static let unordered = QueueDiscipline()
}

/// One delivery the routing table asks for, and how its destination queues.
public struct PlannedDelivery: Sendable, Hashable {
    public var destination: String
    public var discipline: QueueDiscipline

    public init(_ destination: String, _ discipline: QueueDiscipline = .unordered) {
        self.destination = destination
        self.discipline = discipline
    }
}

/// Where the identifiers of an event are linked when it is committed (`Correlation`).
public struct CorrelationScope: Sendable, Equatable {
    public var scope: String
    public var keys: Set<String>

    public init(scope: String, keys: Set<String>) {
        self.scope = scope
        self.keys = keys
    }
}

/// One event waiting for its group commit, as a store's writer takes it. Its JSON is encoded here, on the
/// committing thread, so that the writer only writes. A class: a queued write is handed from the caller to the
/// writer (and the syncer), and copying a struct of this size (the event's strings, dictionaries, body, closure)
/// retained and released every field at each step.
public final class PendingCommit: Sendable {
    public let event: CanonicalEvent
    /// The canonical event's JSON, without the raw body, with its trace context: UTF-8, made once on the thread
    /// that received the webhook.
    public let jsonBytes: [UInt8]
    public var json: String { String(decoding: jsonBytes, as: UTF8.self) }
    /// The raw body, byte for byte.
    public let body: [UInt8]
    public let deliveries: [PlannedDelivery]
    public let link: CorrelationScope?
    public let completion: @Sendable (Result<CommitOutcome, StoreError>) -> Void

    /// Takes the event over (`consuming`: moved in, not copied field by field, when the caller is done with it).
    public init(event: consuming CanonicalEvent, deliveries: [PlannedDelivery], link: CorrelationScope?,
                completion: @escaping @Sendable (Result<CommitOutcome, StoreError>) -> Void) {
        jsonBytes = event.jsonBytes(includeRaw: false, includeTrace: true)
        body = event.raw?.bytes ?? []
        self.event = consume event
        self.deliveries = deliveries
        self.link = link
        self.completion = completion
    }
}

/// The record of accepted events: durable commits, deduplicated by (source, idempotency key).
///
/// `commit` queues the event and returns; commits from many threads share one transaction and one flush (group
/// commit). The completion runs only once the event and its deliveries are durable (or the commit failed), so a 2xx
/// is only ever sent for what a crash cannot lose.
public protocol EventStore: AnyObject, Sendable {
    /// Records `event` and, only when it is new (not a duplicate), one pending delivery per planned delivery, in the
    /// same transaction: an accepted event always has all of its deliveries. With `link`, the event's identifiers
    /// are linked in that scope (`Correlation`), in the same transaction.
    /// The event is taken over (`consuming`), so that a caller done with it hands it on without a copy.
    func commit(_ event: consuming CanonicalEvent, deliveries: [PlannedDelivery], link: CorrelationScope?,
                completion: @escaping @Sendable (Result<CommitOutcome, StoreError>) -> Void)
}

extension EventStore {
    /// Records an event routed to `destinations` (unordered queues), without correlation.
    public func commit(_ event: consuming CanonicalEvent, deliveries destinations: [String] = [],
                       completion: @escaping @Sendable (Result<CommitOutcome, StoreError>) -> Void) {
        commit(event, deliveries: destinations.map { PlannedDelivery($0) }, link: nil, completion: completion)
    }
}

// MARK: - The delivery queue

/// A delivery taken from the queue by a dispatcher, with its lease.
public struct ClaimedDelivery: Sendable, Equatable {
    public var id: String
    public var eventSeq: Int64
    public var destination: String
    public var subjectKey: String
    /// Attempts made before this one.
    public var attempts: Int
    /// A multi-step delivery resumes at this step (0: the first), with the values earlier steps extracted.
    public var step: Int = 0
    public var values: [String: String] = [:]
    /// Fences this claim: a finish or release with a token that is no longer the delivery's (its lease ran out and
    /// another claim took it) changes nothing.
    public var claimToken: Int64 = 0
    /// The store's own key for the delivery's row, when it has one other than `id` (SQLite: the rowid), so that a
    /// finish finds the row without the text id.
    public var rowKey: Int64 = 0

    public init(id: String, eventSeq: Int64, destination: String, subjectKey: String, attempts: Int, step: Int = 0,
                values: [String: String] = [:], claimToken: Int64 = 0, rowKey: Int64 = 0) {
        self.id = id
        self.eventSeq = eventSeq
        self.destination = destination
        self.subjectKey = subjectKey
        self.attempts = attempts
        self.step = step
        self.values = values
        self.claimToken = claimToken
        self.rowKey = rowKey
    }
}

/// Where a multi-step delivery stands after an attempt that did not finish it: the next attempt resumes at `step`
/// with `values`.
public struct StepProgress: Sendable, Equatable {
    public var step: Int
    public var values: [String: String]
    public init(step: Int, values: [String: String]) {
        self.step = step
        self.values = values
    }
}

/// One attempt's result, as recorded.
public struct AttemptRecord: Sendable, Equatable {
    public var startedAt: Int64
    public var latencyMillis: Int64
    public var status: Int?
    public var error: String?
    /// The response body, truncated to `AttemptRecord.maxResponse` bytes.
    public var response: String?
    public static let maxResponse = 2048

    public init(startedAt: Int64, latencyMillis: Int64, status: Int?, error: String?, response: String?) {
        self.startedAt = startedAt
        self.latencyMillis = latencyMillis
        self.status = status
        self.error = error?.storable
        self.response = response.map { (String($0.utf8.prefix(Self.maxResponse)) ?? String($0.prefix(Self.maxResponse / 4))).storable }
    }
}

/// What happens to a delivery after an attempt.
public enum DeliveryResult: Sendable, Equatable {
    case delivered
    case retry(atMillis: Int64)
    case dead(reason: String)
    /// Nothing to send for this destination (a status with no mapping): finished, with why.
    case skipped(reason: String)

    /// The delivery's state afterwards.
    public var state: DeliveryState {
        switch self {
        case .delivered: return .delivered
        case .retry: return .pending
        case .dead: return .dead
        case .skipped: return .skipped
        }
    }
}

/// A delivery's state, as stored and as the admin API shows it.
public enum DeliveryState: String, Sendable, CaseIterable {
    case pending, inFlight = "in_flight", delivered, dead, skipped, superseded

    /// Finished: nothing more will be attempted unless it is replayed.
    public var isFinished: Bool { self != .pending && self != .inFlight }
}

/// One destination's share of a claim.
public struct LaneRequest: Sendable, Equatable {
    public var destination: String
    /// How many deliveries at most.
    public var limit: Int
    public var discipline: QueueDiscipline

    public init(destination: String, limit: Int, discipline: QueueDiscipline = .unordered) {
        self.destination = destination
        self.limit = limit
        self.discipline = discipline
    }
}

/// What a claim took for one destination.
public struct ClaimedLane: Sendable {
    public var claims: [ClaimedDelivery]
    /// The claimed deliveries' events by sequence number, with their raw bodies, subjects completed from correlation.
    public var events: [Int64: CanonicalEvent]
    /// When fewer than the limit were due: the earliest time another delivery of the destination becomes due (nil:
    /// none is waiting for a time; with per-subject order, only heads of their subject count).
    public var nextDueMillis: Int64?

    public init(claims: [ClaimedDelivery], events: [Int64: CanonicalEvent], nextDueMillis: Int64?) {
        self.claims = claims
        self.events = events
        self.nextDueMillis = nextDueMillis
    }
}

/// An attempt to record, and where it leaves its delivery.
public struct FinishedDelivery: Sendable {
    public var claim: ClaimedDelivery
    public var attempt: AttemptRecord
    public var result: DeliveryResult
    /// A multi-step delivery that is retried resumes here.
    public var progress: StepProgress?
    public var discipline: QueueDiscipline

    public init(claim: ClaimedDelivery, attempt: AttemptRecord, result: DeliveryResult, progress: StepProgress? = nil,
                discipline: QueueDiscipline = .unordered) {
        self.claim = claim
        self.attempt = attempt
        self.result = result
        self.progress = progress
        self.discipline = discipline
    }

    /// What the delivery's `last_error` keeps: why it is dead or skipped, else the attempt's error (already
    /// `String.storable`).
    public var lastError: String? {
        switch result {
        case .dead(let reason), .skipped(let reason): return reason.storable
        default: return attempt.error
        }
    }
}

/// Identifiers learned together (from a destination's answer), to be linked in `scope`.
public struct CorrelationLink: Sendable, Equatable {
    public var scope: String
    public var subject: [String: String]

    /// An answer's values may hold a NUL: kept as U+FFFD, as an event's subject is (`String.storable`).
    public init(scope: String, subject: [String: String]) {
        self.scope = scope
        self.subject = subject.storable
    }
}

/// The correlation settings (`correlation.keys`, each source's `correlationScope`), owned by the configuration.
public struct CorrelationSettings: Sendable, Equatable {
    /// Subject keys that identify one subject; empty: no correlation.
    public var keys: Set<String> = Correlation.defaultKeys
    /// Each source's scope, when it is not the source's name.
    public var sourceScopes: [String: String] = [:]

    public init(keys: Set<String> = Correlation.defaultKeys, sourceScopes: [String: String] = [:]) {
        self.keys = keys
        self.sourceScopes = sourceScopes
    }

    public func scope(ofSource name: String) -> String { sourceScopes[name] ?? name }

    /// Where an event from `source` with `subject` is linked at commit: nil when there is nothing to link.
    public func link(source: String, subject: [String: String]) -> CorrelationScope? {
        guard !keys.isEmpty, subject.count > 1 else { return nil }
        return CorrelationScope(scope: scope(ofSource: source), keys: keys)
    }
}

/// A destination's circuit breaker as the store keeps it, so that whoever dispatches the destination next (after a
/// restart, or another relay taking it over) starts from it, and every relay's `/metrics` shows it.
public struct CircuitSnapshot: Sendable, Equatable {
    public var state: CircuitBreaker.State
    public var consecutiveFailures: Int
    /// Wall-clock milliseconds at which an open circuit lets its probe through.
    public var reopensAtMillis: Int64?

    public init(state: CircuitBreaker.State, consecutiveFailures: Int, reopensAtMillis: Int64?) {
        self.state = state
        self.consecutiveFailures = consecutiveFailures
        self.reopensAtMillis = reopensAtMillis
    }
}

/// What a finish changed.
public struct FinishReport: Sendable, Equatable {
    /// Deliveries whose claim was no longer current (its lease ran out and the delivery was claimed again): their
    /// attempts are not recorded, the newer claim's will be.
    public var stale: [String] = []
    public init(stale: [String] = []) { self.stale = stale }
}

/// The delivery queue: claims are leases, so a dispatcher that dies leaves its claims to expire and they are taken
/// again (at-least-once). Each claim carries a token that fences its finish.
///
/// Ordering: with `perSubject`, at most one delivery per (destination, subject) is claimed at a time, the oldest
/// unfinished one, so a later status never overtakes an earlier one, across every relay sharing the store.
///
/// Every relay sharing a store dispatches every destination it is configured for; the claims keep them apart, so
/// a destination's `maxInFlight` and rate limit hold per relay.
public protocol DeliveryQueueStore: AnyObject, Sendable {
    /// The lease a claim takes, in milliseconds.
    var leaseMillis: Int64 { get }
    /// At a dispatcher's start: returns to the queue the claims no live dispatcher can finish (the embedded store:
    /// every claim, its one relay having restarted; a shared store: claims whose lease ran out). Returns how many.
    func recoverClaims() throws -> Int
    /// Claims due deliveries (next attempt at or before `nowMillis`), oldest first, per lane; skips paused
    /// destinations. Events come back with their subjects completed from correlation (`correlation`).
    func claim(_ lanes: [LaneRequest], nowMillis: Int64, correlation: CorrelationSettings) throws -> [String: ClaimedLane]
    /// Gives claimed deliveries back untouched (no attempt made), due now.
    func release(_ claims: [ClaimedDelivery], completion: @escaping @Sendable (Result<Void, StoreError>) -> Void)
    /// Records, durably, that a multi-step delivery finished the steps before `progress.step` with the values they
    /// extracted: whatever happens next (a crash, a restart), it resumes there. Fenced by the claim's token.
    func saveProgress(_ claim: ClaimedDelivery, _ progress: StepProgress,
                      completion: @escaping @Sendable (Result<Void, StoreError>) -> Void)
    /// Records attempts and moves their deliveries on (delivered, pending at a later time, dead or skipped), and
    /// links the identifiers destinations returned (`links`, keys `keys`). A crash may lose a finish (the delivery is
    /// attempted again), never half of one.
    func finish(_ deliveries: [FinishedDelivery], links: [CorrelationLink], keys: Set<String>, nowMillis: Int64,
                completion: @escaping @Sendable (Result<FinishReport, StoreError>) -> Void)
    /// Returns claims whose lease has run out by `nowMillis` to the queue. Returns how many.
    func releaseExpiredLeases(nowMillis: Int64) throws -> Int

    /// Destinations an operator paused: nothing is claimed for them until they are resumed.
    func pausedDestinations() throws -> Set<String>
    func setPaused(_ destination: String, _ paused: Bool, nowMillis: Int64) throws
    /// Circuit breakers as last saved, by destination.
    func circuits() throws -> [String: CircuitSnapshot]
    /// Saves a breaker's state after a change (in the background; a failure is only logged).
    func saveCircuit(_ destination: String, _ snapshot: CircuitSnapshot)
}

// MARK: - Admin queries

/// A delivery as the admin API shows it.
public struct DeliveryInfo: Sendable, Equatable {
    public var id: String
    public var eventID: String
    public var destination: String
    /// The event's subject as one key (`orderId=1&vendorId=2`), for per-subject ordering.
    public var subjectKey: String
    public var state: String
    public var attempts: Int
    public var nextAttemptAt: Int64
    public var lastStatus: Int?
    public var lastError: String?
    public var finishedAt: Int64?
    public var step: Int
    public var claimedBy: String?
    /// Values its steps extracted: so far (pending, dead), or what the finished chain yielded (`responseKeys`).
    public var values: [String: String] = [:]
    /// Its place in listings (newest first): the cursor of the next page.
    public var cursor: Int64

    public init(id: String, eventID: String, destination: String, subjectKey: String, state: String, attempts: Int,
                nextAttemptAt: Int64 = 0, lastStatus: Int? = nil, lastError: String? = nil, finishedAt: Int64? = nil,
                step: Int = 0, claimedBy: String? = nil, cursor: Int64 = 0) {
        self.id = id
        self.eventID = eventID
        self.destination = destination
        self.subjectKey = subjectKey
        self.state = state
        self.attempts = attempts
        self.nextAttemptAt = nextAttemptAt
        self.lastStatus = lastStatus
        self.lastError = lastError
        self.finishedAt = finishedAt
        self.step = step
        self.claimedBy = claimedBy
        self.cursor = cursor
    }
}

/// One recorded attempt.
public struct AttemptInfo: Sendable, Equatable {
    public var n: Int
    public var startedAt: Int64
    public var latencyMillis: Int64
    public var status: Int?
    public var error: String?
    public var response: String?

    public init(n: Int, startedAt: Int64, latencyMillis: Int64, status: Int?, error: String?, response: String?) {
        self.n = n
        self.startedAt = startedAt
        self.latencyMillis = latencyMillis
        self.status = status
        self.error = error
        self.response = response
    }
}

/// `GET /v1/events` filters; newest first, `before` a cursor.
public struct EventQuery: Sendable, Equatable {
    public var source: String?
    public var type: String?
    public var status: String?
    /// A subject key (letters, digits, `_`) and its value.
    public var subject: (key: String, value: String)?
    /// `receivedAt` at or after / before, as the stored RFC 3339 text (UTC, milliseconds).
    public var since: String?
    public var until: String?
    public var before: Int64?
    public var limit: Int

    public init(limit: Int) { self.limit = limit }

    public static func == (a: EventQuery, b: EventQuery) -> Bool {
        a.source == b.source && a.type == b.type && a.status == b.status && a.subject?.key == b.subject?.key
            && a.subject?.value == b.subject?.value && a.since == b.since && a.until == b.until
            && a.before == b.before && a.limit == b.limit
    }
}

/// One event of a listing: its cursor and its canonical JSON (without the raw body).
public struct EventRow: Sendable, Equatable {
    public var cursor: Int64
    public var json: String
    public init(cursor: Int64, json: String) {
        self.cursor = cursor
        self.json = json
    }
}

/// `GET /v1/deliveries` filters; newest first, `before` a cursor.
public struct DeliveryQuery: Sendable, Equatable {
    public var state: DeliveryState?
    public var destination: String?
    public var before: Int64?
    public var limit: Int
    public init(state: DeliveryState? = nil, destination: String? = nil, before: Int64? = nil, limit: Int) {
        self.state = state
        self.destination = destination
        self.before = before
        self.limit = limit
    }
}

/// `POST /v1/replay`: finished deliveries to queue again.
public struct ReplayFilter: Sendable, Equatable {
    public var state: DeliveryState
    /// Only this destination (it must be one of `destinations`).
    public var destination: String?
    /// `finishedAt` at or after / before (milliseconds).
    public var finishedSince: Int64?
    public var finishedUntil: Int64?
    /// The configured destinations and how they queue: only their deliveries are replayed.
    public var destinations: [String: QueueDiscipline]

    public init(state: DeliveryState, destination: String? = nil, finishedSince: Int64? = nil,
                finishedUntil: Int64? = nil, destinations: [String: QueueDiscipline]) {
        self.state = state
        self.destination = destination
        self.finishedSince = finishedSince
        self.finishedUntil = finishedUntil
        self.destinations = destinations
    }
}

public enum ReplayOutcome: Sendable, Equatable {
    case notFound
    /// Still pending or in flight: it will be attempted anyway.
    case unfinished(state: String)
    /// Its destination is no longer configured: nothing could send it.
    case unconfigured(destination: String)
    case replayed(from: String)
}

/// One destination's queue, for `/metrics`.
public struct QueueStat: Sendable, Equatable {
    public var destination: String
    /// Pending and in flight.
    public var waiting: Int
    /// When the oldest of those was queued (milliseconds).
    public var oldestQueuedAt: Int64?
    public var dead: Int

    public init(destination: String, waiting: Int, oldestQueuedAt: Int64?, dead: Int) {
        self.destination = destination
        self.waiting = waiting
        self.oldestQueuedAt = oldestQueuedAt
        self.dead = dead
    }
}

/// What the admin API (and the tests) read: events, deliveries, attempts; replays. Reads see every committed write,
/// by any relay sharing the store.
public protocol AdminStore: AnyObject, Sendable {
    /// Throws unless the store can be read and written now (`/readyz`).
    func ping() throws
    func event(id: String) throws -> CanonicalEvent?
    /// Newest first; at most `query.limit`.
    func events(_ query: EventQuery) throws -> [EventRow]
    func eventCount() throws -> Int
    /// Event ids of a source, oldest first (tests and tools).
    func eventIDs(source: String) throws -> [String]
    /// The deliveries of an event, in the order they were created.
    func deliveries(eventID: String) throws -> [DeliveryInfo]
    func delivery(id: String) throws -> DeliveryInfo?
    /// Newest first; at most `query.limit`.
    func deliveries(_ query: DeliveryQuery) throws -> [DeliveryInfo]
    /// A delivery's attempts, in order.
    func attempts(deliveryID: String) throws -> [AttemptInfo]
    func queueStats() throws -> [QueueStat]
    /// Queues a finished delivery again, due now, its attempts kept, if its destination is one of `destinations`.
    func replay(deliveryID: String, destinations: [String: QueueDiscipline], nowMillis: Int64) throws -> ReplayOutcome
    /// How many finished deliveries match (`dryRun`), or queues them all again, due now. Returns the count.
    func replay(_ filter: ReplayFilter, dryRun: Bool, nowMillis: Int64) throws -> Int
}

// MARK: - The whole store

/// Counters of the write path, for `GET /metrics` and the benchmarks: how many transactions and flushes the events
/// took (events per transaction is what group commit buys).
public final class StoreStats: Sendable {
    public let transactions = Atomic<Int>(0)
    public let events = Atomic<Int>(0)
    public let flushes = Atomic<Int>(0)
    public let flushNanoseconds = Atomic<Int>(0)
    public init() {}
}

/// What a store tells the relay: new deliveries (the dispatcher's cue), a change of pauses or lanes made elsewhere,
/// a failure for good. Handlers are set once by the owner, may be set before or after the store's threads start
/// (they are read under a lock), and run on a store thread: they must return quickly.
public final class StoreSignals: Sendable {
    private struct Handlers {
        var newDeliveries: (@Sendable () -> Void)?
        var changed: (@Sendable () -> Void)?
        var failed: (@Sendable (String) -> Void)?
    }
    private let handlers = Mutex(Handlers())

    public init() {}

    /// Set the handlers (nil leaves one as it is).
    public func observe(newDeliveries: (@Sendable () -> Void)? = nil, changed: (@Sendable () -> Void)? = nil,
                        failed: (@Sendable (String) -> Void)? = nil) {
        handlers.withLock {
            if let newDeliveries { $0.newDeliveries = newDeliveries }
            if let changed { $0.changed = changed }
            if let failed { $0.failed = failed }
        }
    }

    /// Deliveries were committed (here, or by another relay sharing the store): look at the queue.
    public func newDeliveries() { handlers.withLock { $0.newDeliveries }?() }
    /// Pauses, circuits or held lanes changed: read them again.
    public func changed() { handlers.withLock { $0.changed }?() }
    /// The store has failed for good (its disk): stop, so that a restart recovers from what is on disk.
    public func failed(_ reason: String) { handlers.withLock { $0.failed }?(reason) }
}

/// Durable storage: the event record, the delivery queue and the admin queries, plus lifecycle.
public protocol RelayStore: EventStore, DeliveryQueueStore, AdminStore {
    var signals: StoreSignals { get }
    var stats: StoreStats { get }
    /// Why the store refuses everything for good, if it does (an embedded store whose disk failed). A shared store
    /// that cannot reach its server is not failed: it is unavailable, and comes back by itself.
    var failure: String? { get }
    /// What the store is, for logs: never a password.
    var summary: String { get }
    /// Finishes every write already submitted, then refuses new ones.
    func close()
}
