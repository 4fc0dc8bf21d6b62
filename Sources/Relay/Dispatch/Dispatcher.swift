import Foundation
import Synchronization

/// Sends the queued deliveries: claims what is due per destination (a lease in the store), translates each with
/// its destination's adapter, sends it through the HTTP client, classifies the answer and records the attempt.
///
/// One thread runs the loop and owns all per-destination state (in-flight counts, rate budget, circuit breaker,
/// next due time); the HTTP client's completions, credentials fetched on another thread and a step's saved
/// progress come back through an inbox, and only the loop translates and sends. Every state change is in the store
/// (claims, attempts, retries, dead letters): nothing about a delivery lives only in memory.
///
/// One request's end (`AttemptOutcome`: not translated, no credentials, answered, no answer) goes through
/// `record`: a refused 401 is authorized and sent once more; otherwise it is classified, and either a multi-step
/// delivery goes on to its next step (its progress saved first), or the circuit learns from it and each delivery
/// it carried gets its record, log line and count; what a turn of the loop recorded goes to the store at once.
public final class Dispatcher: @unchecked Sendable {
    public struct Destination: Sendable {
        public var name: String
        public var adapter: any DestinationAdapter
        public var policy: DeliveryPolicy
        /// Identifiers this destination's responses yield are linked within this scope (`correlationScope`, by
        /// default the destination's name): a partner's source and destination share it when they share a name.
        public var correlationScope: String
        /// Credentials attached to every request (`auth`), and the client certificate (`tls`).
        public var auth: (any OutboundAuth)?
        public var clientTLS: ClientTLS?
        public init(name: String, adapter: any DestinationAdapter, policy: DeliveryPolicy, correlationScope: String? = nil,
                    auth: (any OutboundAuth)? = nil, clientTLS: ClientTLS? = nil) {
            self.name = name
            self.adapter = adapter
            self.policy = policy
            self.correlationScope = correlationScope ?? name
            self.auth = auth
            self.clientTLS = clientTLS
        }
    }

    private struct Lane {
        let destination: Destination
        var inFlight = 0
        var breaker: CircuitBreaker
        /// Rate limiting: attempts may start while `tokens` >= 1; refilled at `rateLimit` per second, holding at most
        /// a tenth of a second's worth (so no second ever sees much more than `rateLimit` starts).
        var tokens: Double
        var refilledAt: Double
        /// When something may next be due (0: now). `.infinity` once the queue was seen empty.
        var nextDue: Double = 0
        /// A batching destination waits `batching.wait` after its queue becomes due, for more to join: until then.
        var batchHoldUntil: Double?
        /// The last claim took all it could: more is waiting, send it without another wait.
        var batchBacklog = false
        var batching: BatchOptions? { (destination.adapter as? any BatchingDestinationAdapter)?.batching }
        /// Removed by a configuration reload: claims nothing more, dropped once its attempts in flight are recorded.
        var retired = false
    }

    /// How one request ended.
    private enum AttemptOutcome: Sendable {
        /// No request went out: the delivery could not be translated (or its event is missing from the store, or
        /// the progress of its last step could not be recorded).
        case translateFailed(TranslateError)
        /// No request went out: the credentials could not be had (a token endpoint down or refusing).
        case authFailed(TranslateError, auth: any OutboundAuth)
        /// The destination answered.
        case answered(OutboundResponse, Sent)
        /// The request got no answer (connection, timeout, TLS, I/O).
        case transportFailed(TransportError, Sent)

        /// A request went out (its duration is measured).
        var wasSent: Bool {
            switch self {
            case .translateFailed, .authFailed: false
            case .answered, .transportFailed: true
            }
        }
    }

    /// A request that went out, as what its answer may need.
    private struct Sent: Sendable {
        /// The request before credentials were attached (to sign again after a 401).
        let unsigned: OutboundRequest
        /// This is the one resend after a 401.
        let retriedAuth: Bool
        /// The auth that signed the request (a reload may have replaced the destination's since): it knows the token
        /// that was sent, to drop on a 401 and to blank out of what is stored.
        let auth: (any OutboundAuth)?
    }

    /// One request's end: a delivery (at some step of it), or a batch of deliveries sharing the request.
    private struct Finished: Sendable {
        let claims: [ClaimedDelivery]
        let events: [CanonicalEvent]
        let destination: String
        let startedAt: Double
        /// The step sent (single deliveries).
        let context: DeliveryContext?
        /// Identifiers earlier steps of this attempt learned (correlation).
        let learned: [String: String]
        let outcome: AttemptOutcome

        var delivery: ClaimedDelivery { claims[0] }
        /// The auth that signed the request, or could not (nil: nothing was to be signed).
        var auth: (any OutboundAuth)? {
            switch outcome {
            case .translateFailed: nil
            case .authFailed(_, let auth): auth
            case .answered(_, let sent), .transportFailed(_, let sent): sent.auth
            }
        }
    }

    /// A request on its way (its credentials being attached, or sent): what its end is recorded with.
    private struct Outgoing: Sendable {
        let claims: [ClaimedDelivery]
        let events: [CanonicalEvent]
        let context: DeliveryContext?
        let learned: [String: String]
        let destination: Destination
        let started: Double
        /// The request with its trace context, before credentials were attached.
        let unsigned: OutboundRequest
        let retriedAuth: Bool
        let span: AttemptSpan?

        var sent: Sent { Sent(unsigned: unsigned, retriedAuth: retriedAuth, auth: destination.auth) }

        func finished(_ outcome: AttemptOutcome) -> Finished {
            Finished(claims: claims, events: events, destination: destination.name, startedAt: started, context: context,
                     learned: learned, outcome: outcome)
        }
    }

    /// A multi-step delivery's next step, within the same attempt.
    private struct NextStep: Sendable {
        let claim: ClaimedDelivery
        let event: CanonicalEvent
        /// The next step, with the values the steps so far extracted.
        let context: DeliveryContext
        let learned: [String: String]
        /// The destination that sent the step before (a reload may have replaced the lane's since).
        let destination: Destination
        /// The step before: when it started, and its answer (recorded with the attempt if a stop comes first;
        /// credentials blanked out).
        let startedAt: Double
        let status: Int
        let response: String

        /// What is made durable before the step goes out: the delivery resumes there.
        var progress: StepProgress { StepProgress(step: context.step, values: context.values) }
    }

    /// What reaches the loop through its inbox: from the HTTP client's thread, the store's, a token fetch's (they
    /// only enqueue), and from the loop itself (a delivery that could not be translated). Everything about a
    /// delivery's state, its translation and its sending happens on the loop's thread.
    private enum Message: Sendable {
        /// A request ended (or none could go out).
        case finished(Finished)
        /// A step's progress is durable: the next step goes out.
        case continueStep(NextStep)
        /// The credentials came on another thread (after a token fetch): the request goes out.
        case authorized(OutboundRequest, Outgoing)
    }

    private struct Inbox {
        var messages: [Message] = []
        var wake = false
        var stopping = false
        /// How long a stop waits for the attempts in flight (`shutdown(timeout:)`).
        var stopTimeout: Double = 10
        /// A configuration reload's destinations, applied by the loop.
        var replacement: [Destination]?
        /// Read pauses and circuits from the store again.
        var refresh = false
    }

    let store: any DeliveryQueueStore
    let client: HTTPClient
    let log: Logger
    /// Which subject keys identify a subject (events are completed with linked identifiers before translation,
    /// and identifiers learned from responses are linked) and each source's scope. A reload may change it.
    private let correlationBox: Mutex<CorrelationSettings>
    var correlation: CorrelationSettings { correlationBox.withLock { $0 } }
    let metrics: Metrics?
    /// Every request carries `traceparent` (a new span id per request, a child of the event's ingest span); its
    /// CLIENT span is exported when the trace is sampled and tracing is configured.
    let tracer: Tracer
    /// The loop has read what the store keeps for it (claims to recover, pauses, circuits): until then it claims
    /// nothing, and retries every second (a database that is down at start).
    private var prepared = false                     // the loop thread's
    private var lastClaimError: (message: String, at: Double)?   // the loop thread's: repeated failures are logged once a minute

    /// Outcomes and releases the store could not take (it was unavailable: a lost database connection, a full
    /// disk). They are kept and offered again about every second until the store takes them: the outcome of an
    /// attempt is known and must not be forgotten, and a claim given back is due at once rather than when its lease
    /// runs out (PostgreSQL renews only the claims a relay still holds: a release counts as given back even while the
    /// database cannot hear of it).
    private struct Unrecorded: Sendable {
        var finishes: [(records: [FinishedDelivery], links: [CorrelationLink], keys: Set<String>, nowMillis: Int64)] = []
        var releases: [[ClaimedDelivery]] = []
        var isEmpty: Bool { finishes.isEmpty && releases.isEmpty }
    }
    private let unrecorded = Mutex(Unrecorded())
    private var unrecordedRetryAt: Double = 0                   // the loop thread's
    private var lanes: [String: Lane] = [:]          // the loop thread's
    private let inbox = Mutex(Inbox())
    /// Destinations an operator paused: nothing is claimed for them until resumed (kept in the store too).
    private let paused = Mutex<Set<String>>([])
    /// The configured destinations (readable from any thread, unlike `lanes`).
    private let destinationNames: Mutex<Set<String>>
    private let signal = DispatchSemaphore(value: 0)
    private let done = DispatchSemaphore(value: 0)
    private var thread: Thread?
    /// The loop's thread, once it runs.
    private let loopThread = Mutex<pthread_t?>(nil)

    public init(store: any DeliveryQueueStore, client: HTTPClient, destinations: [Destination], log: Logger,
                correlation: CorrelationSettings = CorrelationSettings(keys: []), metrics: Metrics? = nil,
                tracer: Tracer = .disabled) {
        self.metrics = metrics
        self.tracer = tracer
        destinationNames = Mutex(Set(destinations.map(\.name)))
        self.store = store
        correlationBox = Mutex(correlation)
        self.client = client
        self.log = log
        let now = Self.clock()
        for d in destinations {
            lanes[d.name] = Lane(destination: d, breaker: CircuitBreaker(threshold: d.policy.breakerThreshold,
                                                                        cooldown: d.policy.breakerCooldown),
                                 tokens: d.policy.rateLimit.map(Self.bucket) ?? 0, refilledAt: now)
        }
    }

    /// The rate limiter's bucket size for `rate` attempts per second.
    static func bucket(_ rate: Double) -> Double { max(1, rate / 10) }

    static func clock() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
    static func wallMillis() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    /// Starts the loop. It first takes back the claims no live dispatcher can finish (`recoverClaims`), reads the
    /// paused destinations and the stored circuit breakers; while the store cannot answer it retries every second.
    public func start() {
        let t = Thread { [self] in self.loop() }
        t.name = "relay-dispatch"
        thread = t
        t.start()
    }

    /// What the loop does before its first claim (and again, cheaply, after a reload). False: not yet (logged).
    private func prepare() -> Bool {
        do {
            let released = try store.recoverClaims()
            if released > 0 { log.info("deliveries returned to the queue", ["count": released]) }
            let pausedNames = try store.pausedDestinations()
            paused.withLock { $0 = pausedNames }
            for name in pausedNames.sorted() { log.warn("destination paused (by an operator, before this start)", ["destination": name]) }
            restoreCircuits(try store.circuits())
            return true
        } catch {
            claimFailed("cannot prepare the delivery queue (retrying every second)", error)
            return false
        }
    }

    /// Takes up the circuit breakers as stored (by this relay before a restart, or by another relay).
    private func restoreCircuits(_ stored: [String: CircuitSnapshot]) {
        let now = Self.clock(), wall = Self.wallMillis()
        for (name, snapshot) in stored {
            guard var lane = lanes[name], lane.inFlight == 0 else { continue }
            let before = lane.breaker.state
            lane.breaker.restore(snapshot, now: now, wallMillis: wall)
            lanes[name] = lane
            if before != lane.breaker.state || snapshot.state != .closed {
                metrics?.set("relay_circuit_open", ["destination": name], lane.breaker.state == .closed ? 0 : 1)
            }
            // Taken up from the store (a restart, or another relay on the same database). A half-open circuit is
            // restored open (its probe's outcome unknown) and probes again when due: not logged as a change.
            if before != lane.breaker.state, before != .halfOpen {
                log.log(lane.breaker.state == .open ? .warn : .info, "circuit breaker \(lane.breaker.state.rawValue)",
                        ["destination": name, "from": before.rawValue, "consecutiveFailures": lane.breaker.consecutiveFailures,
                         "reason": "as stored (by this relay before a restart, or by another relay on the same store)"])
            }
        }
    }

    /// Logs a circuit breaker's change of state (open: warn; half-open, closed: info) with the destination, the
    /// state it left and why: `cause` is the outcome of the attempt that changed it (`HTTP 503`, a transport error;
    /// nil for half-open, which the cooldown's end brings).
    private func logCircuit(_ name: String, from before: CircuitBreaker.State, _ breaker: CircuitBreaker, cause: String?) {
        let reason: String
        switch (before, breaker.state) {
        case (_, .halfOpen):
            reason = "the cooldown (\(Self.seconds(breaker.cooldown))) is over: one probe attempt"
        case (.halfOpen, .open):
            reason = "the probe attempt failed (\(cause ?? "no answer")): no attempts for \(Self.seconds(breaker.cooldown))"
        case (_, .open):
            reason = "\(breaker.consecutiveFailures) consecutive failed attempts (breakerThreshold \(breaker.threshold)), the last: "
                + "\(cause ?? "no answer"); no attempts for \(Self.seconds(breaker.cooldown))"
        case (.halfOpen, .closed):
            reason = "the probe attempt was answered (\(cause ?? "an answer"))"
        case (_, .closed):
            reason = "an attempt was answered (\(cause ?? "an answer"))"
        }
        log.log(breaker.state == .open ? .warn : .info, "circuit breaker \(breaker.state.rawValue)",
                ["destination": name, "from": before.rawValue, "consecutiveFailures": breaker.consecutiveFailures,
                 "reason": reason])
    }

    static func seconds(_ s: Double) -> String { s == s.rounded() ? "\(Int(s))s" : "\(s)s" }

    /// Logs a store failure of the loop, once a minute while it repeats.
    private func claimFailed(_ message: String, _ error: any Error) {
        let now = Self.clock(), text = "\(error)"
        if let last = lastClaimError, last.message == text, now - last.at < 60 { return }
        lastClaimError = (text, now)
        log.error(message, ["error": text])
    }

    /// Pauses, circuits or lanes were changed by another relay sharing the store: read them again.
    public func storeChanged() {
        inbox.withLock { $0.refresh = true; $0.wake = true }
        signal.signal()
    }

    /// Pauses or resumes a destination (durably: the store remembers it across restarts). False when no such
    /// destination exists. Attempts in flight finish; nothing new is claimed while paused.
    public func setPaused(_ name: String, _ pause: Bool) throws -> Bool {
        guard destinationNames.withLock({ $0.contains(name) }) else { return false }
        try store.setPaused(name, pause, nowMillis: Self.wallMillis())
        paused.withLock { if pause { $0.insert(name) } else { $0.remove(name) } }
        log.warn(pause ? "destination paused" : "destination resumed", ["destination": name])
        if !pause { wake() }
        return true
    }

    /// The destinations paused now.
    public var pausedDestinations: Set<String> { paused.withLock { $0 } }

    /// A configuration reload: destinations with a new name get a lane, changed ones take their new adapter and
    /// policy (keeping their attempts in flight and circuit state), removed ones claim nothing more and go once
    /// their attempts in flight are recorded (their queued deliveries wait in the store for the destination's return).
    public func replaceDestinations(_ destinations: [Destination], correlation: CorrelationSettings? = nil) {
        if let correlation { correlationBox.withLock { $0 = correlation } }
        destinationNames.withLock { $0 = Set(destinations.map(\.name)) }
        inbox.withLock { $0.replacement = destinations; $0.wake = true }
        signal.signal()
    }

    private func applyReplacement(_ destinations: [Destination]) {
        let now = Self.clock()
        var kept = Set<String>()
        for d in destinations {
            kept.insert(d.name)
            if var lane = lanes[d.name] {
                let samePolicy = lane.destination.policy.breakerThreshold == d.policy.breakerThreshold
                    && lane.destination.policy.breakerCooldown == d.policy.breakerCooldown
                lane = Lane(destination: d, inFlight: lane.inFlight,
                            breaker: samePolicy ? lane.breaker : CircuitBreaker(threshold: d.policy.breakerThreshold,
                                                                               cooldown: d.policy.breakerCooldown),
                            tokens: d.policy.rateLimit.map(Self.bucket) ?? 0, refilledAt: now)
                lanes[d.name] = lane
            } else {
                lanes[d.name] = Lane(destination: d, breaker: CircuitBreaker(threshold: d.policy.breakerThreshold,
                                                                            cooldown: d.policy.breakerCooldown),
                                     tokens: d.policy.rateLimit.map(Self.bucket) ?? 0, refilledAt: now)
            }
        }
        for (name, lane) in lanes where !kept.contains(name) {
            if lane.inFlight == 0 { lanes[name] = nil } else { lanes[name]?.retired = true }
        }
    }

    /// New deliveries were committed: look at the queue now.
    public func wake() {
        // Once per wake-up, not once per call (the store after each batch, replays, resumes): each signal would be
        // one more turn of the loop. A wake already pending is seen when the loop next takes the inbox.
        let first = inbox.withLock { box -> Bool in
            defer { box.wake = true }
            return !box.wake
        }
        if first { signal.signal() }
    }

    /// Stops claiming, lets attempts in flight finish (up to `timeout`), records them, and returns. What is still
    /// in flight after that stays claimed in the store and is taken again at the next start.
    public func shutdown(timeout: Double) {
        inbox.withLock {
            $0.stopping = true
            $0.stopTimeout = max(0, timeout)
        }
        signal.signal()
        if thread != nil { _ = done.wait(timeout: .now() + timeout + 5) }
    }

    private func loop() {
        nameThisThread("relay-dispatch")
        loopThread.withLock { $0 = pthread_self() }
        var stopDeadline: Double?
        while true {
            let taken = takeInbox()
            let stopping = taken.stopping
            if let replacement = taken.replacement { applyReplacement(replacement) }
            if taken.refresh && prepared {
                if let names = try? store.pausedDestinations() { paused.withLock { $0 = names } }
                if let stored = try? store.circuits() { restoreCircuits(stored) }
            }
            if !prepared && !stopping {
                prepared = prepare()
                if !prepared {
                    _ = signal.wait(timeout: .now() + .seconds(1))
                    continue
                }
            }
            if taken.wake { for i in lanes.indices { lanes.values[i].nextDue = 0 } }
            if !taken.messages.isEmpty { handle(taken.messages, stopping: stopping) }
            let allRecorded = retryUnrecorded(now: Self.clock())
            let inFlight = lanes.values.reduce(0) { $0 + $1.inFlight }
            if stopping {
                let deadline = stopDeadline ?? (Self.clock() + taken.stopTimeout)
                stopDeadline = deadline
                if (inFlight == 0 && allRecorded) || Self.clock() > deadline { break }
                _ = signal.wait(timeout: .now() + .milliseconds(50))
                continue
            }
            let nextWake = dispatchDue()
            let wait = max(0.001, min(1.0, nextWake - Self.clock()))
            _ = signal.wait(timeout: .now() + .microseconds(Int(wait * 1_000_000)))
        }
        done.signal()
    }

    /// What the inbox holds: its messages, a wake, a replacement and a refresh are taken (the stop stays set).
    private func takeInbox() -> Inbox {
        inbox.withLock { box in
            let taken = box
            box.messages.removeAll(keepingCapacity: true)
            box.wake = false
            box.replacement = nil
            box.refresh = false
            return taken
        }
    }

    /// True on the loop's thread.
    private var onLoopThread: Bool {
        loopThread.withLock { $0 }.map { pthread_equal($0, pthread_self()) != 0 } ?? false
    }

    /// Claims and sends what is due on every lane with room; returns when the loop should look again.
    private func dispatchDue() -> Double {
        let now = Self.clock()
        var wanted: [LaneRequest] = []
        var requestRoom: [String: Int] = [:]   // requests that may start now, per lane (batches: fewer than claims)
        var nextWake = now + 1
        for (name, var lane) in lanes {
            defer { lanes[name] = lane }
            guard let room = laneRoom(name, &lane, now: now, nextWake: &nextWake) else { continue }
            wanted.append(LaneRequest(destination: name, limit: room * (lane.batching?.maxItems ?? 1),
                                      discipline: lane.destination.policy.discipline))
            requestRoom[name] = room
        }
        guard !wanted.isEmpty else { return nextWake }
        let nowMillis = Self.wallMillis()
        let claimed: [String: ClaimedLane]
        do {
            claimed = try store.claim(wanted, nowMillis: nowMillis, correlation: correlation)
            lastClaimError = nil
        } catch {
            claimFailed("cannot claim deliveries", error)
            return now + 1
        }
        for (name, batch) in claimed {
            guard var lane = lanes[name] else { continue }
            let limit = wanted.first { $0.destination == name }?.limit ?? 0
            start(batch, on: &lane, limit: limit, room: requestRoom[name] ?? 1, now: now, nowMillis: nowMillis)
            lanes[name] = lane
            if lane.nextDue != .infinity { nextWake = min(nextWake, lane.nextDue) }
        }
        return nextWake
    }

    /// How many requests a lane may start now (its rate budget refilled first): nil when none (not due yet,
    /// retired or paused, an open circuit, a batch's wait, no room under `maxInFlight` or the rate limit), and
    /// `nextWake` then says when to look again; one probe for a circuit past its cooldown.
    private func laneRoom(_ name: String, _ lane: inout Lane, now: Double, nextWake: inout Double) -> Int? {
        let p = lane.destination.policy
        if let rate = p.rateLimit {
            lane.tokens = min(Self.bucket(rate), lane.tokens + (now - lane.refilledAt) * rate)
            lane.refilledAt = now
        }
        if lane.nextDue > now { nextWake = min(nextWake, lane.nextDue); return nil }
        if lane.retired || paused.withLock({ $0.contains(name) }) { return nil }
        if let reopen = lane.breaker.reopensAt, reopen > now { nextWake = min(nextWake, reopen); return nil }
        if let batching = lane.batching, batching.wait > 0, !lane.batchBacklog {
            // Due now: give the statuses queued together a moment to join one request.
            let until = lane.batchHoldUntil ?? (now + batching.wait)
            lane.batchHoldUntil = until
            if until > now { nextWake = min(nextWake, until); return nil }
        }
        var room = p.maxInFlight - lane.inFlight
        if let rate = p.rateLimit {
            room = min(room, Int(lane.tokens))
            if room <= 0 { nextWake = min(nextWake, now + (1 - lane.tokens) / rate) }
        }
        guard room > 0 else { return nil }
        if lane.breaker.state != .closed {
            // Open past its cooldown, or half-open: one probe at a time.
            let before = lane.breaker.state
            guard lane.breaker.allow(now: now) else { return nil }
            if before == .open { logCircuit(name, from: before, lane.breaker, cause: nil) }
            room = 1
        }
        return room
    }

    /// A lane's claims go out (a request each, or in batches) and count in flight; what the claim found tells the
    /// lane when it is next due.
    private func start(_ batch: ClaimedLane, on lane: inout Lane, limit: Int, room: Int, now: Double, nowMillis: Int64) {
        lane.batchHoldUntil = nil
        lane.batchBacklog = lane.batching != nil && batch.claims.count >= limit
        if batch.claims.count < limit {
            // Drained what is due now: sleep until the next retry is due (or a wake).
            if let next = batch.nextDueMillis {
                lane.nextDue = now + max(0, Double(next - nowMillis) / 1000)
            } else {
                lane.nextDue = .infinity
            }
        }
        if batch.claims.isEmpty { lane.breaker.cancelProbe() }
        let destination = lane.destination
        if let batching = lane.batching {
            let requests = sendBatches(batch.claims, events: batch.events, destination: destination, batching: batching,
                                       room: room)
            lane.inFlight += requests
            if destination.policy.rateLimit != nil { lane.tokens -= Double(requests) }
        } else {
            for claim in batch.claims {
                lane.inFlight += 1
                if destination.policy.rateLimit != nil { lane.tokens -= 1 }
                let context = DeliveryContext(deliveryID: claim.id, destination: destination.name,
                                              attempt: claim.attempts + 1, step: claim.step, values: claim.values)
                send(claim, event: batch.events[claim.eventSeq], context: context, learned: [:], destination: destination)
            }
        }
    }

    /// Sends one step of one delivery.
    private func send(_ claim: ClaimedDelivery, event: CanonicalEvent?, context: DeliveryContext,
                      learned: [String: String], destination: Destination) {
        let started = Self.clock()
        guard let event else {
            finishUnsent([claim], events: [], destination: destination.name, started: started, context: context,
                         learned: learned, Self.missingEvent)
            return
        }
        var request: OutboundRequest
        do {
            request = try destination.adapter.translate(event, context: context)
        } catch {
            finishUnsent([claim], events: [event], destination: destination.name, started: started, context: context,
                         learned: learned, error)
            return
        }
        transmit(&request, claims: [claim], events: [event], context: context, learned: learned,
                 destination: destination, started: started)
    }

    private static var missingEvent: TranslateError { TranslateError("the event of this delivery is missing from the store") }

    /// No request could go out for these deliveries: their end is recorded as such (by the loop, as any other).
    private func finishUnsent(_ claims: [ClaimedDelivery], events: [CanonicalEvent], destination: String, started: Double,
                              context: DeliveryContext?, learned: [String: String], _ failure: TranslateError) {
        enqueue(.finished(Finished(claims: claims, events: events, destination: destination, startedAt: started,
                                   context: context, learned: learned, outcome: .translateFailed(failure))))
    }

    /// Groups claimed deliveries by their batch key into requests of at most `maxItems`; returns how many
    /// requests (each counted in flight, as is each delivery that could not be translated).
    private func sendBatches(_ claims: [ClaimedDelivery], events: [Int64: CanonicalEvent], destination: Destination,
                             batching: BatchOptions, room: Int) -> Int {
        guard let adapter = destination.adapter as? any BatchingDestinationAdapter else { return 0 }
        let started = Self.clock()
        var (groups, failed) = batchGroups(claims, events: events, destination: destination.name, adapter: adapter,
                                           maxItems: batching.maxItems, started: started)
        // No more requests than the lane has room for (maxInFlight, rate, one probe): the deliveries of the other
        // groups go back to the queue, due now, for the next round.
        let budget = max(0, room - failed)
        if groups.count > budget {
            let back = groups[budget...].flatMap { $0.members.map(\.0) }
            groups.removeSubrange(budget...)
            storeRelease(back, retry: false)
        }
        for group in groups {
            let claims = group.members.map(\.0), evts = group.members.map(\.1)
            do {
                var request = try adapter.translate(batchKey: group.key, items: group.members.map(\.2))
                transmit(&request, claims: claims, events: evts, context: nil, learned: [:], destination: destination,
                         started: started)
            } catch {
                finishUnsent(claims, events: evts, destination: destination.name, started: started, context: nil,
                             learned: [:], error)
            }
        }
        return failed + groups.count
    }

    /// The deliveries of one batch request: one batch key, at most `maxItems`, each with its event and item.
    private typealias BatchGroup = (key: String, members: [(ClaimedDelivery, CanonicalEvent, JSONValue)])

    /// The claims' items grouped by batch key (in claim order, at most `maxItems` a group), and how many claims
    /// had no item (their event missing, or not translatable: each finished on its own).
    private func batchGroups(_ claims: [ClaimedDelivery], events: [Int64: CanonicalEvent], destination name: String,
                             adapter: any BatchingDestinationAdapter, maxItems: Int,
                             started: Double) -> (groups: [BatchGroup], failed: Int) {
        var groups: [BatchGroup] = []
        var failed = 0
        for claim in claims {
            let context = DeliveryContext(deliveryID: claim.id, destination: name, attempt: claim.attempts + 1)
            guard let event = events[claim.eventSeq] else {
                failed += 1
                finishUnsent([claim], events: [], destination: name, started: started, context: context, learned: [:],
                             Self.missingEvent)
                continue
            }
            do {
                let item = try adapter.batchItem(event, context: context)
                if let i = groups.firstIndex(where: { $0.key == item.key && $0.members.count < maxItems }) {
                    groups[i].members.append((claim, event, item.item))
                } else {
                    groups.append((item.key, [(claim, event, item.item)]))
                }
            } catch {
                failed += 1
                finishUnsent([claim], events: [event], destination: name, started: started, context: context,
                             learned: [:], error)
            }
        }
        return (groups, failed)
    }

    private func transmit(_ request: inout OutboundRequest, claims: [ClaimedDelivery], events: [CanonicalEvent],
                          context: DeliveryContext?, learned: [String: String], destination: Destination,
                          started: Double) {
        // One key per delivery; a batch carries its first delivery's id and the ids of all in a second header.
        request.headers.append(("Idempotency-Key", claims.count == 1 && (context?.step ?? 0) == 0
                                    ? claims[0].id : claims[0].id + (context.map { "-\($0.step)" } ?? "-batch")))
        if claims.count > 1 { request.headers.append(("X-Relay-Deliveries", claims.map(\.id).joined(separator: ","))) }
        request.connectTimeout = destination.policy.connectTimeout
        request.totalTimeout = destination.policy.timeout
        if let tls = destination.clientTLS { request.clientTLS = tls }
        authorizeAndSend(request, claims: claims, events: events, context: context, learned: learned,
                         destination: destination, started: started, retriedAuth: false)
    }

    /// Attaches the destination's credentials (maybe after fetching a token) and sends. `retriedAuth`: this is
    /// the one resend after a 401 made the auth drop its cached credentials. Credentials that come at once are
    /// sent at once; those that come on another thread (a token fetch's) go back to the loop, which sends.
    private func authorizeAndSend(_ unsent: OutboundRequest, claims: [ClaimedDelivery], events: [CanonicalEvent],
                                  context: DeliveryContext?, learned: [String: String], destination: Destination,
                                  started: Double, retriedAuth: Bool) {
        // One span per HTTP request (each step, each resend after a 401), a child of the event's ingest span; an
        // event stored before tracing existed starts a trace of its own. The header goes in before the credentials,
        // so that a signature covers the request as sent.
        let trace = events.first?.trace ?? tracer.newTrace()
        let spanID = tracer.spanID()
        var request = unsent
        request.headers.removeAll { HTTPHeaders.sameName($0.0, "traceparent") || HTTPHeaders.sameName($0.0, "tracestate") }
        request.headers.append(("traceparent", trace.traceparent(span: spanID)))
        if let state = trace.state { request.headers.append(("tracestate", state)) }
        let span: AttemptSpan? = tracer.records(trace)
            ? AttemptSpan(tracer: tracer, trace: trace, spanID: spanID, claims: claims, events: events, context: context,
                          destination: destination, request: request)
            : nil
        let outgoing = Outgoing(claims: claims, events: events, context: context, learned: learned,
                                destination: destination, started: started, unsigned: request, retriedAuth: retriedAuth,
                                span: span)
        guard let auth = destination.auth else {
            post(request, outgoing)
            return
        }
        auth.authorize(request, context: AuthContext(client: client, deliveryID: claims[0].id)) { [self] result in
            switch result {
            case .success(let signed):
                if onLoopThread { post(signed, outgoing) } else { enqueue(.authorized(signed, outgoing)) }
            case .failure(let e):
                let failure = TranslateError("\(auth.scheme) auth: \(e.reason)", kind: e.retryable ? .retry : .terminal)
                span?.record(start: Span.now(), authFailure: auth.redact(failure.reason))
                enqueue(.finished(outgoing.finished(.authFailed(failure, auth: auth))))
            }
        }
    }

    /// Sends a request with its credentials. The HTTP client's completion ends the request's span and only
    /// enqueues its end for the loop.
    private func post(_ signed: OutboundRequest, _ outgoing: Outgoing) {
        let start = Span.now()
        client.send(signed) { [self] result in
            outgoing.span?.record(start: start, result: result, auth: outgoing.destination.auth)
            switch result {
            case .success(let response): enqueue(.finished(outgoing.finished(.answered(response, outgoing.sent))))
            case .failure(let error): enqueue(.finished(outgoing.finished(.transportFailed(error, outgoing.sent))))
            }
        }
    }

    private func enqueue(_ message: Message) {
        inbox.withLock { $0.messages.append(message) }
        signal.signal()
    }

    // MARK: - The end of a request (the loop)

    /// What one turn of the loop records: every finished delivery and learned identifier, in one store transaction.
    private struct Recording {
        let now: Double
        let nowMillis: Int64
        var records: [FinishedDelivery] = []
        var links: [CorrelationLink] = []
        var circuitsChanged = Set<String>()
    }

    /// When a request started and how long it took, as stored with its attempt.
    private struct Timing {
        let nowMillis: Int64
        let latency: Int64
        var startedMillis: Int64 { nowMillis - latency }

        init(startedAt: Double, _ recording: Recording) {
            nowMillis = recording.nowMillis
            latency = Int64((recording.now - startedAt) * 1000)
        }

        func attempt(status: Int?, error: String?, response: String?) -> AttemptRecord {
            AttemptRecord(startedAt: startedMillis, latencyMillis: latency, status: status, error: error, response: response)
        }
    }

    /// What a finished request means for its deliveries, before the lane and the store hear of it.
    private struct Verdict {
        var classification: Classification
        /// A batch whose answer names the items that failed: each delivery's own verdict (in the claims' order).
        var items: [Classification]? = nil
        /// The answer's status and the start of its body (nil: no answer).
        var status: Int? = nil
        var response: String? = nil
        /// Why there was no request or no answer.
        var error: String? = nil
        /// Identifiers learned by the steps so far, this one's included (correlation).
        var learned: [String: String]
        /// Where a retry (or the replay of a dead letter) resumes, or what a finished chain yielded.
        var progress: StepProgress? = nil
    }

    /// A finished request, read.
    private enum Reading {
        case final(Verdict)
        /// A step was answered and another follows.
        case nextStep(NextStep)
    }

    /// Handles what the inbox brought, in order: each finished request is recorded (the lanes updated, every
    /// delivery's outcome in one store transaction for the lot), steps whose progress is durable and requests whose
    /// credentials came are sent.
    private func handle(_ messages: [Message], stopping: Bool) {
        var recording = Recording(now: Self.clock(), nowMillis: Self.wallMillis())
        for message in messages {
            switch message {
            case .finished(let f):
                record(f, stopping: stopping, into: &recording)
            case .continueStep(let next) where stopping:
                // The stop came while the step's progress was being saved: no new step either.
                lanes[next.destination.name]?.inFlight -= 1
                stopBefore(next, Timing(startedAt: next.startedAt, recording), into: &recording)
            case .continueStep(let next):
                send(next.claim, event: next.event, context: next.context, learned: next.learned,
                     destination: next.destination)
            case .authorized(let signed, let outgoing):
                post(signed, outgoing)
            }
        }
        for (name, lane) in lanes where lane.retired && lane.inFlight == 0 { lanes[name] = nil }
        saveCircuits(recording.circuitsChanged, now: recording.now)
        guard !recording.records.isEmpty || !recording.links.isEmpty else { return }
        storeFinish(recording.records, links: recording.links, keys: correlation.keys, nowMillis: recording.nowMillis,
                    retry: false)
    }

    /// One finished request, in stages: a refused 401 is authorized and sent again; otherwise the answer (or the
    /// failure) is classified, and either the delivery goes on to its next step, or the circuit learns from the
    /// request and each of its deliveries gets its record, log line and count.
    private func record(_ f: Finished, stopping: Bool, into recording: inout Recording) {
        guard var lane = lanes[f.destination] else { return }
        let circuitBefore = lane.breaker.state
        defer {
            lanes[f.destination] = lane
            if lane.breaker.state != circuitBefore { recording.circuitsChanged.insert(f.destination) }
        }
        lane.nextDue = 0   // a finish may free a subject's next status, or room
        if reauthorize(f, destination: lane.destination) { return }   // still in flight
        lane.inFlight -= 1
        let timing = Timing(startedAt: f.startedAt, recording)
        switch Self.classify(f, destination: lane.destination) {
        case .nextStep(let next):
            if stopping {
                stopBefore(next, timing, into: &recording)
            } else {
                lane.inFlight += 1   // the same attempt goes on
                saveProgressAndContinue(next)
            }
        case .final(let verdict):
            link(verdict.learned, of: f.events.first, destination: lane.destination, into: &recording)
            if f.outcome.wasSent {
                metrics?.observe("relay_attempt_duration_seconds", ["destination": f.destination],
                                 seconds: recording.now - f.startedAt)
            }
            updateCircuit(&lane, after: f, verdict, now: recording.now)
            recordDeliveries(f, verdict, lane: lane, timing, into: &recording)
        }
    }

    /// Refused credentials (a 401) that fresh ones may replace (the auth dropped its token): authorized and sent
    /// once more, before the attempt counts as failed. True when it was: the request is still in flight.
    private func reauthorize(_ f: Finished, destination: Destination) -> Bool {
        guard case .answered(let response, let sent) = f.outcome, response.status == 401, !sent.retriedAuth,
              let auth = sent.auth, auth.invalidate(after: response) else { return false }
        log.info("credentials refused: authorizing again", ["deliveryId": f.delivery.id, "destination": f.destination,
                                                              "scheme": auth.scheme])
        authorizeAndSend(sent.unsigned, claims: f.claims, events: f.events, context: f.context, learned: f.learned,
                         destination: destination, started: f.startedAt, retriedAuth: true)
        return true
    }

    /// A request's end as a verdict on its deliveries (or the next step of a multi-step delivery).
    private static func classify(_ f: Finished, destination: Destination) -> Reading {
        switch f.outcome {
        case .translateFailed(let failure): .final(unsentVerdict(failure, authFailed: false, f))
        case .authFailed(let failure, _): .final(unsentVerdict(failure, authFailed: true, f))
        case .answered(let response, _): classifyAnswer(response, f, destination: destination)
        case .transportFailed(let error, _): .final(transportVerdict(error, f, destination: destination))
        }
    }

    /// No request went out: the translation failed (skip: the delivery ends skipped) or no credentials were had.
    private static func unsentVerdict(_ failure: TranslateError, authFailed: Bool, _ f: Finished) -> Verdict {
        let classification: Classification
        switch failure.kind {
        case .skip: classification = .delivered
        case .terminal: classification = .terminal(reason: authFailed ? failure.reason : "cannot translate: \(failure.reason)")
        case .retry: classification = .retry(reason: authFailed ? failure.reason : "cannot translate yet: \(failure.reason)", after: nil)
        }
        return Verdict(classification: classification, error: failure.reason, learned: f.learned,
                       progress: failure.kind == .skip ? nil : resumePoint(f.context))
    }

    /// No answer: retried when the error is retryable and the step may be retried, else terminal.
    private static func transportVerdict(_ e: TransportError, _ f: Finished, destination: Destination) -> Verdict {
        let classification: Classification
        if e.isRetryable && !destination.adapter.retries(step: f.context?.step ?? 0) {
            classification = .terminal(reason: e.description + " (the step is not retried)")
        } else {
            classification = e.isRetryable ? .retry(reason: e.description, after: nil) : .terminal(reason: e.description)
        }
        return Verdict(classification: classification, error: e.description, learned: f.learned,
                       progress: resumePoint(f.context))
    }

    /// An answer, classified by the adapter: a delivery's step by `outcome` (identifiers learned, values, maybe a
    /// next step), a batch by `classify` (and per item when the answer names them).
    private static func classifyAnswer(_ r: OutboundResponse, _ f: Finished, destination: Destination) -> Reading {
        let response = String(decoding: r.body.prefix(AttemptRecord.maxResponse), as: UTF8.self)
        var v = Verdict(classification: .delivered, status: r.status, response: response, learned: f.learned)
        guard let context = f.context, let event = f.events.first else {
            v.classification = destination.adapter.classify(r)
            v.items = itemClassifications(r, f, destination: destination)
            return .final(v)
        }
        let outcome = destination.adapter.outcome(r, event: event, context: context)
        v.learned.merge(outcome.correlation) { _, new in new }
        if outcome.classification == .delivered && outcome.next {
            var next = context
            next.step += 1
            next.values.merge(outcome.values) { _, new in new }
            return .nextStep(NextStep(claim: f.delivery, event: event, context: next, learned: v.learned,
                                      destination: destination, startedAt: f.startedAt, status: r.status,
                                      response: (f.auth ?? destination.auth).map { $0.redact(response) } ?? response))
        }
        v.classification = outcome.classification
        if v.classification != .delivered {
            // Retried, or dead-lettered and perhaps replayed later: either resumes at this step, so what earlier
            // steps did (an issued voucher) is not done twice.
            v.progress = resumePoint(context)
        } else if !outcome.values.isEmpty {
            // What the finished chain yielded (responseKeys), kept with the delivery.
            v.progress = StepProgress(step: 0, values: outcome.values)
        }
        return .final(v)
    }

    /// A batch's answer naming the items that failed: one classification per delivery (nil: one for all).
    private static func itemClassifications(_ r: OutboundResponse, _ f: Finished,
                                            destination: Destination) -> [Classification]? {
        guard f.claims.count > 1, let adapter = destination.adapter as? any BatchingDestinationAdapter,
              let each = adapter.classifyItems(r, count: f.claims.count), each.count == f.claims.count else { return nil }
        return each
    }

    /// Where a delivery that does not end now resumes: the step sent, when it is a later one or carries values.
    private static func resumePoint(_ context: DeliveryContext?) -> StepProgress? {
        guard let context, context.step > 0 || !context.values.isEmpty else { return nil }
        return StepProgress(step: context.step, values: context.values)
    }

    /// The step is done: its progress is made durable (a crash or restart resumes after it, so an issued voucher is
    /// never issued twice), then the next step goes out, within the same attempt. The store's completion only
    /// enqueues: the loop translates and sends the next step.
    private func saveProgressAndContinue(_ next: NextStep) {
        store.saveProgress(next.claim, next.progress) { [self] result in
            switch result {
            case .success:
                enqueue(.continueStep(next))
            case .failure(let e):
                finishUnsent([next.claim], events: [next.event], destination: next.destination.name, started: Self.clock(),
                             context: next.context, learned: next.learned,
                             TranslateError("cannot record the progress of step \(next.context.step): \(e)", kind: .retry))
            }
        }
    }

    /// No new step while stopping (the stop came before the step's answer was read, or while its progress was
    /// being saved): the attempt is recorded with the step's progress (a retry, due now), and the delivery resumes
    /// at the next step after the restart.
    private func stopBefore(_ next: NextStep, _ timing: Timing, into recording: inout Recording) {
        recording.records.append(FinishedDelivery(claim: next.claim,
                                                  attempt: timing.attempt(status: next.status,
                                                                          error: "stopped before step \(next.context.step + 1)",
                                                                          response: next.response),
                                                  result: .retry(atMillis: timing.nowMillis), progress: next.progress,
                                                  discipline: next.destination.policy.discipline))
        link(next.learned, of: next.event, destination: next.destination, into: &recording)
    }

    /// Identifiers a destination's answers yielded, linked with the event's subject in the destination's scope.
    private func link(_ learned: [String: String], of event: CanonicalEvent?, destination: Destination,
                      into recording: inout Recording) {
        guard !learned.isEmpty, let event else { return }
        recording.links.append(CorrelationLink(scope: destination.correlationScope,
                                               subject: event.subject.merging(learned) { _, new in new }))
    }

    /// The circuit learns from the request as a whole: an answer is a success unless retried; no credentials to be
    /// had is a failure; a request that never went out leaves a probe still to be made. A change is logged.
    private func updateCircuit(_ lane: inout Lane, after f: Finished, _ v: Verdict, now: Double) {
        let before = lane.breaker.state
        switch f.outcome {
        case .authFailed(let failure, _) where failure.kind == .retry:
            // No credentials to be had: counted like a failed attempt, so a lane whose token endpoint is down or
            // refusing pauses instead of spending every queued delivery's retries.
            lane.breaker.record(success: false, now: now)
        case .translateFailed, .authFailed:
            // Nothing reached the destination: a probe of an open circuit is still to be made.
            lane.breaker.cancelProbe()
        case .answered, .transportFailed:
            switch v.classification {
            case .delivered: lane.breaker.record(success: true, now: now)
            case .terminal: lane.breaker.record(success: v.status != nil, now: now)   // an answer: the destination is up
            case .retry: lane.breaker.record(success: false, now: now)
            }
        }
        if lane.breaker.state != before {
            var cause = v.status.map { "HTTP \($0)" } ?? v.error ?? "no answer"
            if let auth = f.auth ?? lane.destination.auth { cause = auth.redact(cause) }
            logCircuit(f.destination, from: before, lane.breaker, cause: cause)
        }
        metrics?.set("relay_circuit_open", ["destination": f.destination], lane.breaker.state == .closed ? 0 : 1)
    }

    /// Each delivery the request carried gets its record (the request's verdict, or its own when a batch's answer
    /// names it), with credentials blanked out of what is stored, then its log line and count.
    private func recordDeliveries(_ f: Finished, _ v: Verdict, lane: Lane, _ timing: Timing,
                                  into recording: inout Recording) {
        let policy = lane.destination.policy
        let auth = f.auth ?? lane.destination.auth
        for (i, claim) in f.claims.enumerated() {
            let verdict = v.items?[i] ?? v.classification
            var result = Self.result(of: verdict, f.outcome, attempts: claim.attempts + 1, status: v.status,
                                     policy: policy, nowMillis: timing.nowMillis)
            var error = Self.itemError(verdict, v, result)
            var response = v.response
            if let auth {
                // A destination may echo the credentials it refused: they never reach the store or the log.
                response = response.map(auth.redact)
                error = error.map(auth.redact)
                if case .dead(let reason) = result { result = .dead(reason: auth.redact(reason)) }
            }
            recording.records.append(FinishedDelivery(claim: claim,
                                                      attempt: timing.attempt(status: v.status, error: error, response: response),
                                                      result: result, progress: v.progress, discipline: policy.discipline))
            report(result, claim: claim, destination: f.destination, status: v.status, error: error, timing)
        }
    }

    /// Where a delivery goes: delivered (skipped when it had nothing to send), retried at its policy's next time,
    /// or dead (retrying cannot help, or its retries are spent).
    private static func result(of verdict: Classification, _ outcome: AttemptOutcome, attempts: Int, status: Int?,
                               policy: DeliveryPolicy, nowMillis: Int64) -> DeliveryResult {
        switch verdict {
        case .delivered:
            switch outcome {
            case .translateFailed(let failure), .authFailed(let failure, _): return .skipped(reason: failure.reason)
            case .answered, .transportFailed: return .delivered
            }
        case .terminal(let reason):
            return .dead(reason: reason)
        case .retry(let reason, let after):
            guard let delay = policy.retry.delay(afterAttempts: attempts, retryAfter: after, status: status) else {
                return .dead(reason: "\(reason) after \(attempts) attempt\(attempts == 1 ? "" : "s")")
            }
            return .retry(atMillis: nowMillis + Int64(delay * 1000))
        }
    }

    /// The error kept with a delivery's attempt: the request's, a batch item's own reason, or the dead letter's.
    private static func itemError(_ verdict: Classification, _ v: Verdict, _ result: DeliveryResult) -> String? {
        var error = v.error
        if v.items != nil {
            switch verdict {
            case .delivered: error = nil
            case .terminal(let reason), .retry(let reason, _): error = reason
            }
        }
        if error == nil, case .dead(let reason) = result { error = reason }
        return error
    }

    /// A delivery's outcome in `relay_deliveries_total` and the log.
    private func report(_ result: DeliveryResult, claim: ClaimedDelivery, destination: String, status: Int?,
                        error: String?, _ timing: Timing) {
        let attempts = claim.attempts + 1, latency = timing.latency
        if let metrics {
            let outcome: String
            switch result {
            case .delivered: outcome = "delivered"
            case .retry: outcome = "retry"
            case .dead: outcome = "dead"
            case .skipped: outcome = "skipped"
            }
            metrics.increment("relay_deliveries_total", ["destination": destination, "outcome": outcome])
        }
        switch result {
        case .delivered:
            log.info("delivered", ["deliveryId": claim.id, "destination": destination, "status": status,
                                   "latencyMs": latency, "attempt": attempts])
        case .retry(let at):
            log.info("delivery will be retried", ["deliveryId": claim.id, "destination": destination,
                                                  "attempt": attempts, "status": status, "latencyMs": latency,
                                                  "error": error ?? "HTTP \(status ?? 0)",
                                                  "retryInMs": at - timing.nowMillis])
        case .dead(let reason):
            log.warn("delivery dead-lettered", ["deliveryId": claim.id, "destination": destination,
                                                "attempts": attempts, "status": status, "latencyMs": latency,
                                                "reason": reason])
        case .skipped(let reason):
            log.info("delivery skipped", ["deliveryId": claim.id, "destination": destination, "reason": reason])
        }
    }

    /// The circuits that changed are saved (in the background): another relay on the same store takes them up.
    private func saveCircuits(_ names: Set<String>, now: Double) {
        guard !names.isEmpty else { return }
        let wall = Self.wallMillis()
        for name in names.sorted() {
            guard let lane = lanes[name] else { continue }
            store.saveCircuit(name, lane.breaker.snapshot(now: now, wallMillis: wall))
        }
    }

    private func storeFinish(_ records: [FinishedDelivery], links: [CorrelationLink], keys: Set<String>, nowMillis: Int64,
                             retry: Bool) {
        let log = self.log
        store.finish(records, links: links, keys: keys, nowMillis: nowMillis) { [self] result in
            switch result {
            case .failure(let e):
                if !retry {
                    log.error("cannot record delivery attempts: kept, and offered to the store again every second",
                              ["error": e.description, "count": records.count])
                }
                unrecorded.withLock { $0.finishes.append((records, links, keys, nowMillis)) }
            case .success(let report):
                if retry {
                    log.info("delivery attempts recorded after the store came back", ["count": records.count])
                }
                if !report.stale.isEmpty {
                    log.warn("attempts not recorded: their lease ran out and the deliveries were claimed again",
                             ["deliveryIds": report.stale.joined(separator: ",")])
                }
            }
        }
    }

    private func storeRelease(_ claims: [ClaimedDelivery], retry: Bool) {
        let log = self.log
        store.release(claims) { [self] result in
            if case .failure(let e) = result {
                if !retry {
                    log.error("cannot return claimed deliveries: offered to the store again every second",
                              ["error": e.description, "count": claims.count])
                }
                unrecorded.withLock { $0.releases.append(claims) }
            }
        }
    }

    /// Offers what the store could not take to it again (the loop, about once a second while there is any).
    /// True when nothing is left over.
    @discardableResult
    private func retryUnrecorded(now: Double) -> Bool {
        if unrecorded.withLock({ $0.isEmpty }) { return true }
        guard now >= unrecordedRetryAt else { return false }
        unrecordedRetryAt = now + 1
        let pending = unrecorded.withLock { box -> Unrecorded in
            defer { box = Unrecorded() }
            return box
        }
        for f in pending.finishes { storeFinish(f.records, links: f.links, keys: f.keys, nowMillis: f.nowMillis, retry: true) }
        for r in pending.releases { storeRelease(r, retry: true) }
        return unrecorded.withLock { $0.isEmpty }
    }
}

/// The CLIENT span of one request to a destination, recorded when its answer (or failure) comes back: name
/// `deliver <destination>`, attributes `relay.destination`, `relay.delivery_id`, `relay.attempt` (and `relay.step`
/// for a later step, `relay.batch_size` for a batch, linked to the other events' traces), `http.request.method`,
/// `server.address`, `server.port`, `http.response.status_code`; an error status for a failure or a 4xx/5xx answer.
/// Never the URL's path, query or userinfo, a header or a body.
struct AttemptSpan: Sendable {
    let tracer: Tracer
    let template: Span

    init(tracer: Tracer, trace: TraceContext, spanID: UInt64, claims: [ClaimedDelivery], events: [CanonicalEvent],
         context: DeliveryContext?, destination: Dispatcher.Destination, request: OutboundRequest) {
        self.tracer = tracer
        var attributes: [(String, Span.Value)] = [
            ("relay.destination", .string(destination.name)),
            ("relay.delivery_id", .string(claims[0].id)),
            ("relay.attempt", .int(Int64(claims[0].attempts + 1))),
            ("http.request.method", .string(request.method)),
        ]
        if let step = context?.step, step > 0 { attributes.append(("relay.step", .int(Int64(step)))) }
        if claims.count > 1 { attributes.append(("relay.batch_size", .int(Int64(claims.count)))) }
        if let (host, port) = Self.server(of: request.url) {
            attributes.append(("server.address", .string(host)))
            attributes.append(("server.port", .int(Int64(port))))
        }
        var span = Span(childOf: trace, spanID: spanID, name: "deliver \(destination.name)", kind: .client, start: 0,
                        attributes: attributes)
        var seen: Set<TraceID> = [trace.traceID]
        for e in events.dropFirst() {
            guard let t = e.trace, seen.insert(t.traceID).inserted else { continue }
            span.links.append(Span.Link(traceID: t.traceID, spanID: t.spanID, flags: t.flags))
        }
        template = span
    }

    func record(start: UInt64, result: Result<OutboundResponse, TransportError>, auth: (any OutboundAuth)?) {
        var s = template
        s.start = start
        s.end = Span.now()
        switch result {
        case .success(let r):
            s.attributes.append(("http.response.status_code", .int(Int64(r.status))))
            if r.status >= 400 {
                s.fail("HTTP \(r.status)")
                s.attributes.append(("error.type", .string(String(r.status))))
            }
        case .failure(let e):
            s.fail(auth.map { $0.redact(e.description) } ?? e.description)
            s.attributes.append(("error.type", .string(e.kindName)))
        }
        tracer.record(s)
    }

    /// No request went out: the credentials could not be had.
    func record(start: UInt64, authFailure reason: String) {
        var s = template
        s.start = start
        s.end = start
        s.fail(reason)
        s.attributes.append(("error.type", .string("auth")))
        tracer.record(s)
    }

    /// The host and port of an absolute URL, without userinfo (IPv6 literals without their brackets).
    static func server(of url: String) -> (String, Int)? {
        guard let scheme = url.range(of: "://") else { return nil }
        let secure = url[..<scheme.lowerBound].lowercased() == "https"
        let rest = url[scheme.upperBound...]
        var authority = rest[..<(rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex)]
        if let at = authority.lastIndex(of: "@") { authority = authority[authority.index(after: at)...] }
        var host = authority, port = secure ? 443 : 80
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":"), let p = Int(after.dropFirst()) { port = p }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            if let p = Int(authority[authority.index(after: colon)...]) { port = p }
        }
        return host.isEmpty ? nil : (String(host), port)
    }
}
