import Foundation
import Synchronization

/// Sends the queued deliveries: claims what is due per destination (a lease in the store), translates each with
/// its destination's adapter, sends it through the HTTP client, classifies the answer and records the attempt.
///
/// One thread runs the loop and owns all per-destination state (in-flight counts, rate budget, circuit breaker,
/// next due time); the HTTP client's completions come back through an inbox. Every state change is in the store
/// (claims, attempts, retries, dead letters): nothing about a delivery lives only in memory.
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
        let result: Result<OutboundResponse, TransportError>?
        let translateFailure: TranslateError?
        /// The request before credentials were attached (to sign again after a 401).
        var unsigned: OutboundRequest? = nil
        var retriedAuth = false
        /// The credentials could not be had (a token endpoint down or refusing): the destination's circuit counts it.
        var authFailure = false
        /// The auth that signed the request (a reload may have replaced the destination's since): it knows the token
        /// that was sent, to drop on a 401 and to blank out of what is stored.
        var auth: (any OutboundAuth)? = nil

        var delivery: ClaimedDelivery { claims[0] }
        var isBatch: Bool { context == nil }
    }

    private struct Inbox {
        var finished: [Finished] = []
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
    /// attempt is known and must not be forgotten, and a claim must not be left held (a live PostgreSQL relay renews
    /// its leases, so an orphaned claim would block its subject for as long as the relay runs).
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
        for name in lanes.keys where !kept.contains(name) {
            if lanes[name]!.inFlight == 0 { lanes[name] = nil } else { lanes[name]!.retired = true }
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
        var stopDeadline: Double?
        while true {
            let (finished, woken, stopping, stopTimeout, replacement, refresh) = inbox.withLock { box -> ([Finished], Bool, Bool, Double, [Destination]?, Bool) in
                let f = box.finished
                box.finished.removeAll(keepingCapacity: true)
                let w = box.wake
                box.wake = false
                let r = box.replacement
                box.replacement = nil
                let refresh = box.refresh
                box.refresh = false
                return (f, w, box.stopping, box.stopTimeout, r, refresh)
            }
            if let replacement { applyReplacement(replacement) }
            if refresh && prepared {
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
            if woken { for name in lanes.keys { lanes[name]!.nextDue = 0 } }
            if !finished.isEmpty { record(finished, stopping: stopping) }
            let allRecorded = retryUnrecorded(now: Self.clock())
            let inFlight = lanes.values.reduce(0) { $0 + $1.inFlight }
            if stopping {
                if stopDeadline == nil { stopDeadline = Self.clock() + stopTimeout }
                if (inFlight == 0 && allRecorded) || Self.clock() > stopDeadline! { break }
                _ = signal.wait(timeout: .now() + .milliseconds(50))
                continue
            }
            let nextWake = dispatchDue()
            let wait = max(0.001, min(1.0, nextWake - Self.clock()))
            _ = signal.wait(timeout: .now() + .microseconds(Int(wait * 1_000_000)))
        }
        done.signal()
    }

    /// Claims and sends what is due on every lane with room; returns when the loop should look again.
    private func dispatchDue() -> Double {
        let now = Self.clock()
        var wanted: [LaneRequest] = []
        var requestRoom: [String: Int] = [:]   // requests that may start now, per lane (batches: fewer than claims)
        var nextWake = now + 1
        for (name, var lane) in lanes {
            defer { lanes[name] = lane }
            let p = lane.destination.policy
            if let rate = p.rateLimit {
                lane.tokens = min(Self.bucket(rate), lane.tokens + (now - lane.refilledAt) * rate)
                lane.refilledAt = now
            }
            if lane.nextDue > now { nextWake = min(nextWake, lane.nextDue); continue }
            if lane.retired || paused.withLock({ $0.contains(name) }) { continue }
            if let reopen = lane.breaker.reopensAt, reopen > now { nextWake = min(nextWake, reopen); continue }
            if let batching = lane.batching, batching.wait > 0, !lane.batchBacklog {
                // Due now: give the statuses queued together a moment to join one request.
                let until = lane.batchHoldUntil ?? (now + batching.wait)
                lane.batchHoldUntil = until
                if until > now { nextWake = min(nextWake, until); continue }
            }
            var room = p.maxInFlight - lane.inFlight
            if let rate = p.rateLimit {
                room = min(room, Int(lane.tokens))
                if room <= 0 { nextWake = min(nextWake, now + (1 - lane.tokens) / rate) }
            }
            guard room > 0 else { continue }
            if lane.breaker.state != .closed {
                // Open past its cooldown, or half-open: one probe at a time.
                let before = lane.breaker.state
                guard lane.breaker.allow(now: now) else { continue }
                if before == .open { logCircuit(name, from: before, lane.breaker, cause: nil) }
                room = 1
            }
            wanted.append(LaneRequest(destination: name, limit: room * (lane.batching?.maxItems ?? 1), discipline: p.discipline))
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
            if let batching = lane.batching {
                let requests = sendBatches(batch.claims, events: batch.events, lane: lane, batching: batching,
                                           room: requestRoom[name] ?? 1)
                lane.inFlight += requests
                if lane.destination.policy.rateLimit != nil { lane.tokens -= Double(requests) }
            } else {
                for claim in batch.claims {
                    lane.inFlight += 1
                    if lane.destination.policy.rateLimit != nil { lane.tokens -= 1 }
                    let context = DeliveryContext(deliveryID: claim.id, destination: name, attempt: claim.attempts + 1,
                                                  step: claim.step, values: claim.values)
                    send(claim, event: batch.events[claim.eventSeq], context: context, learned: [:], lane: lane)
                }
            }
            lanes[name] = lane
            if lane.nextDue != .infinity { nextWake = min(nextWake, lane.nextDue) }
        }
        return nextWake
    }

    /// Sends one step of one delivery.
    private func send(_ claim: ClaimedDelivery, event: CanonicalEvent?, context: DeliveryContext,
                      learned: [String: String], lane: Lane) {
        let started = Self.clock()
        let name = lane.destination.name
        guard let event else {
            enqueue(Finished(claims: [claim], events: [], destination: name, startedAt: started, context: context,
                             learned: learned, result: nil,
                             translateFailure: TranslateError("the event of this delivery is missing from the store")))
            return
        }
        var request: OutboundRequest
        do {
            request = try lane.destination.adapter.translate(event, context: context)
        } catch {
            enqueue(Finished(claims: [claim], events: [event], destination: name, startedAt: started, context: context,
                             learned: learned, result: nil, translateFailure: error))
            return
        }
        transmit(&request, claims: [claim], events: [event], context: context, learned: learned, lane: lane,
                 started: started)
    }

    /// Groups claimed deliveries by their batch key into requests of at most `maxItems`; returns how many
    /// requests (each counted in flight, as is each delivery that could not be translated).
    private func sendBatches(_ claims: [ClaimedDelivery], events: [Int64: CanonicalEvent], lane: Lane,
                             batching: BatchOptions, room: Int) -> Int {
        guard let adapter = lane.destination.adapter as? any BatchingDestinationAdapter else { return 0 }
        let started = Self.clock()
        let name = lane.destination.name
        var count = 0
        var groups: [(key: String, members: [(ClaimedDelivery, CanonicalEvent, JSONValue)])] = []
        for claim in claims {
            let context = DeliveryContext(deliveryID: claim.id, destination: name, attempt: claim.attempts + 1)
            guard let event = events[claim.eventSeq] else {
                count += 1
                enqueue(Finished(claims: [claim], events: [], destination: name, startedAt: started, context: context,
                                 learned: [:], result: nil,
                                 translateFailure: TranslateError("the event of this delivery is missing from the store")))
                continue
            }
            do {
                let item = try adapter.batchItem(event, context: context)
                if let i = groups.firstIndex(where: { $0.key == item.key && $0.members.count < batching.maxItems }) {
                    groups[i].members.append((claim, event, item.item))
                } else {
                    groups.append((item.key, [(claim, event, item.item)]))
                }
            } catch {
                count += 1
                enqueue(Finished(claims: [claim], events: [event], destination: name, startedAt: started,
                                 context: context, learned: [:], result: nil, translateFailure: error))
            }
        }
        // No more requests than the lane has room for (maxInFlight, rate, one probe): the deliveries of the other
        // groups go back to the queue, due now, for the next round.
        let budget = max(0, room - count)
        if groups.count > budget {
            let back = groups[budget...].flatMap { $0.members.map(\.0) }
            groups.removeSubrange(budget...)
            storeRelease(back, retry: false)
        }
        for group in groups {
            count += 1
            let claims = group.members.map(\.0), evts = group.members.map(\.1)
            do {
                var request = try adapter.translate(batchKey: group.key, items: group.members.map(\.2))
                transmit(&request, claims: claims, events: evts, context: nil, learned: [:], lane: lane, started: started)
            } catch {
                enqueue(Finished(claims: claims, events: evts, destination: name, startedAt: started, context: nil,
                                 learned: [:], result: nil, translateFailure: error))
            }
        }
        return count
    }

    private func transmit(_ request: inout OutboundRequest, claims: [ClaimedDelivery], events: [CanonicalEvent],
                          context: DeliveryContext?, learned: [String: String], lane: Lane, started: Double) {
        // One key per delivery; a batch carries its first delivery's id and the ids of all in a second header.
        request.headers.append(("Idempotency-Key", claims.count == 1 && (context?.step ?? 0) == 0
                                    ? claims[0].id : claims[0].id + (context.map { "-\($0.step)" } ?? "-batch")))
        if claims.count > 1 { request.headers.append(("X-Relay-Deliveries", claims.map(\.id).joined(separator: ","))) }
        request.connectTimeout = lane.destination.policy.connectTimeout
        request.totalTimeout = lane.destination.policy.timeout
        if let tls = lane.destination.clientTLS { request.clientTLS = tls }
        authorizeAndSend(request, claims: claims, events: events, context: context, learned: learned,
                         destination: lane.destination, started: started, retriedAuth: false)
    }

    /// Attaches the destination's credentials (maybe after fetching a token) and sends. `retriedAuth`: this is
    /// the one resend after a 401 made the auth drop its cached credentials.
    private func authorizeAndSend(_ unsent: OutboundRequest, claims: [ClaimedDelivery], events: [CanonicalEvent],
                                  context: DeliveryContext?, learned: [String: String], destination: Destination,
                                  started: Double, retriedAuth: Bool) {
        let name = destination.name
        // One span per HTTP request (each step, each resend after a 401), a child of the event's ingest span; an
        // event stored before tracing existed starts a trace of its own. The header goes in before the credentials,
        // so that a signature covers the request as sent.
        let trace = events.first?.trace ?? tracer.newTrace()
        let spanID = tracer.spanID()
        var traced = unsent
        traced.headers.removeAll { HTTPHeaders.sameName($0.0, "traceparent") || HTTPHeaders.sameName($0.0, "tracestate") }
        traced.headers.append(("traceparent", trace.traceparent(span: spanID)))
        if let state = trace.state { traced.headers.append(("tracestate", state)) }
        let request = traced
        let attempt: AttemptSpan? = tracer.records(trace)
            ? AttemptSpan(tracer: tracer, trace: trace, spanID: spanID, claims: claims, events: events, context: context,
                          destination: destination, request: request)
            : nil
        let finish: @Sendable (Result<OutboundResponse, TransportError>?, TranslateError?, Bool) -> Void = { [self] result, failure, authFailed in
            enqueue(Finished(claims: claims, events: events, destination: name, startedAt: started, context: context,
                             learned: learned, result: result, translateFailure: failure, unsigned: request,
                             retriedAuth: retriedAuth, authFailure: authFailed, auth: destination.auth))
        }
        let client = self.client
        let send: @Sendable (OutboundRequest) -> Void = { signed in
            let start = Span.now()
            client.send(signed) { result in
                attempt?.record(start: start, result: result, auth: destination.auth)
                finish(result, nil, false)
            }
        }
        guard let auth = destination.auth else {
            send(request)
            return
        }
        auth.authorize(request, context: AuthContext(client: client, deliveryID: claims[0].id)) { result in
            switch result {
            case .success(let signed):
                send(signed)
            case .failure(let e):
                let failure = TranslateError("\(auth.scheme) auth: \(e.reason)", kind: e.retryable ? .retry : .terminal)
                attempt?.record(start: Span.now(), authFailure: auth.redact(failure.reason))
                finish(nil, failure, true)
            }
        }
    }

    private func enqueue(_ f: Finished) {
        inbox.withLock { $0.finished.append(f) }
        signal.signal()
    }

    /// Classifies finished attempts, updates the lanes, sends the next step of multi-step deliveries, and records
    /// every finished attempt in one store transaction.
    private func record(_ finished: [Finished], stopping: Bool) {
        let now = Self.clock()
        let nowMillis = Self.wallMillis()
        var records: [FinishedDelivery] = []
        var links: [CorrelationLink] = []
        var circuitsChanged = Set<String>()
        for f in finished {
            guard var lane = lanes[f.destination] else { continue }
            let circuitBefore = lane.breaker.state
            defer {
                if lanes[f.destination]?.breaker.state != circuitBefore { circuitsChanged.insert(f.destination) }
            }
            lane.inFlight -= 1
            lane.nextDue = 0   // a finish may free a subject's next status, or room
            let latency = Int64((now - f.startedAt) * 1000)
            let startedMillis = nowMillis - latency
            var status: Int?
            var error: String?
            var response: String?
            var learned = f.learned
            var progress: StepProgress?
            /// A batch whose answer names the items that failed: each delivery's own verdict.
            var itemClassifications: [Classification]?
            let classification: Classification
            if let failure = f.translateFailure {
                switch failure.kind {
                case .skip: classification = .delivered
                case .terminal: classification = .terminal(reason: f.authFailure ? failure.reason : "cannot translate: \(failure.reason)")
                case .retry: classification = .retry(reason: f.authFailure ? failure.reason : "cannot translate yet: \(failure.reason)", after: nil)
                }
                error = failure.reason
                if f.authFailure && failure.kind == .retry {
                    // No credentials to be had: counted like a failed attempt, so a lane whose token endpoint is
                    // down or refusing pauses instead of spending every queued delivery's retries.
                    lane.breaker.record(success: false, now: now)
                } else {
                    // Nothing reached the destination: a probe of an open circuit is still to be made.
                    lane.breaker.cancelProbe()
                }
                if failure.kind != .skip, let context = f.context, context.step > 0 || !context.values.isEmpty {
                    progress = StepProgress(step: context.step, values: context.values)
                }
            } else {
                switch f.result! {
                case .success(let r) where r.status == 401 && !f.retriedAuth && f.unsigned != nil
                        && f.auth?.invalidate(after: r) == true:
                    // Refused credentials: fresh ones (a new token) once, before the attempt counts as failed.
                    lane.inFlight += 1
                    lanes[f.destination] = lane
                    log.info("credentials refused: authorizing again", ["deliveryId": f.delivery.id, "destination": f.destination,
                                                                          "scheme": f.auth?.scheme ?? ""])
                    authorizeAndSend(f.unsigned!, claims: f.claims, events: f.events, context: f.context, learned: f.learned,
                                     destination: lane.destination, started: f.startedAt, retriedAuth: true)
                    continue
                case .success(let r):
                    status = r.status
                    response = String(decoding: r.body.prefix(AttemptRecord.maxResponse), as: UTF8.self)
                    if let context = f.context, let event = f.events.first {
                        let outcome = lane.destination.adapter.outcome(r, event: event, context: context)
                        learned.merge(outcome.correlation) { _, new in new }
                        if outcome.classification == .delivered && outcome.next {
                            var next = context
                            next.step += 1
                            next.values.merge(outcome.values) { _, new in new }
                            let done = StepProgress(step: next.step, values: next.values)
                            if stopping {
                                // No new step while stopping: the delivery resumes at the next step after the restart.
                                records.append(FinishedDelivery(claim: f.delivery,
                                                                attempt: AttemptRecord(startedAt: startedMillis, latencyMillis: latency,
                                                                                       status: status, error: "stopped before step \(next.step + 1)",
                                                                                       response: response),
                                                                result: .retry(atMillis: nowMillis), progress: done,
                                                                discipline: lane.destination.policy.discipline))
                                if !learned.isEmpty { links.append(CorrelationLink(scope: lane.destination.correlationScope, subject: event.subject.merging(learned) { _, new in new })) }
                                lanes[f.destination] = lane
                                continue
                            }
                            // The step is done: its progress is made durable (a crash or restart resumes after it, so an
                            // issued voucher is never issued twice), then the next step goes out, within the same attempt.
                            lane.inFlight += 1
                            lanes[f.destination] = lane
                            let claim = f.delivery, laneNow = lane, learnedSoFar = learned, nextContext = next
                            store.saveProgress(claim, done) { [self] result in
                                switch result {
                                case .success:
                                    send(claim, event: event, context: nextContext, learned: learnedSoFar, lane: laneNow)
                                case .failure(let e):
                                    enqueue(Finished(claims: [claim], events: [event], destination: laneNow.destination.name,
                                                     startedAt: Self.clock(), context: nextContext, learned: learnedSoFar, result: nil,
                                                     translateFailure: TranslateError("cannot record the progress of step \(context.step + 1): \(e)", kind: .retry)))
                                }
                            }
                            continue
                        }
                        classification = outcome.classification
                        if classification != .delivered, context.step > 0 || !context.values.isEmpty {
                            // Retried, or dead-lettered and perhaps replayed later: either resumes at this step, so
                            // what earlier steps did (an issued voucher) is not done twice.
                            progress = StepProgress(step: context.step, values: context.values)
                        } else if classification == .delivered, !outcome.next, !outcome.values.isEmpty {
                            // What the finished chain yielded (responseKeys), kept with the delivery.
                            progress = StepProgress(step: 0, values: outcome.values)
                        }
                    } else {
                        classification = lane.destination.adapter.classify(r)
                        if f.claims.count > 1,
                           let each = (lane.destination.adapter as? any BatchingDestinationAdapter)?.classifyItems(r, count: f.claims.count),
                           each.count == f.claims.count {
                            itemClassifications = each
                        }
                    }
                case .failure(let e):
                    error = e.description
                    if e.isRetryable && !lane.destination.adapter.retries(step: f.context?.step ?? 0) {
                        classification = .terminal(reason: e.description + " (the step is not retried)")
                    } else {
                        classification = e.isRetryable ? .retry(reason: e.description, after: nil) : .terminal(reason: e.description)
                    }
                    if let context = f.context, context.step > 0 || !context.values.isEmpty {
                        progress = StepProgress(step: context.step, values: context.values)
                    }
                }
            }
            if !learned.isEmpty, let event = f.events.first {
                links.append(CorrelationLink(scope: lane.destination.correlationScope, subject: event.subject.merging(learned) { _, new in new }))
            }
            if f.result != nil { metrics?.observe("relay_attempt_duration_seconds", ["destination": f.destination], seconds: now - f.startedAt) }
            // The circuit learns from the answer as a whole.
            if f.translateFailure == nil {
                switch classification {
                case .delivered: lane.breaker.record(success: true, now: now)
                case .terminal: lane.breaker.record(success: status != nil, now: now)   // an answer: the destination is up
                case .retry: lane.breaker.record(success: false, now: now)
                }
            }
            lanes[f.destination] = lane
            if lane.breaker.state != circuitBefore {
                var cause = status.map { "HTTP \($0)" } ?? error ?? "no answer"
                if let auth = f.auth ?? lane.destination.auth { cause = auth.redact(cause) }
                logCircuit(f.destination, from: circuitBefore, lane.breaker, cause: cause)
            }
            metrics?.set("relay_circuit_open", ["destination": f.destination], lane.breaker.state == .closed ? 0 : 1)
            let policy = lane.destination.policy
            for (i, claim) in f.claims.enumerated() {
                let attempts = claim.attempts + 1
                let verdict = itemClassifications?[i] ?? classification
                var result: DeliveryResult
                switch verdict {
                case .delivered:
                    result = f.translateFailure.map { .skipped(reason: $0.reason) } ?? .delivered
                case .terminal(let reason):
                    result = .dead(reason: reason)
                case .retry(let reason, let after):
                    if let delay = policy.retry.delay(afterAttempts: attempts, retryAfter: after, status: status) {
                        result = .retry(atMillis: nowMillis + Int64(delay * 1000))
                    } else {
                        result = .dead(reason: "\(reason) after \(attempts) attempt\(attempts == 1 ? "" : "s")")
                    }
                }
                var itemError = error
                if itemClassifications != nil {
                    switch verdict {
                    case .delivered: itemError = nil
                    case .terminal(let reason), .retry(let reason, _): itemError = reason
                    }
                }
                if itemError == nil, case .dead(let reason) = result { itemError = reason }
                var storedResponse = response
                if let auth = f.auth ?? lane.destination.auth {
                    // A destination may echo the credentials it refused: they never reach the store or the log.
                    storedResponse = storedResponse.map(auth.redact)
                    itemError = itemError.map(auth.redact)
                    if case .dead(let reason) = result { result = .dead(reason: auth.redact(reason)) }
                }
                records.append(FinishedDelivery(claim: claim,
                                                attempt: AttemptRecord(startedAt: startedMillis, latencyMillis: latency, status: status,
                                                                       error: itemError, response: storedResponse),
                                                result: result, progress: progress, discipline: policy.discipline))
                if let metrics {
                    let outcome: String
                    switch result {
                    case .delivered: outcome = "delivered"
                    case .retry: outcome = "retry"
                    case .dead: outcome = "dead"
                    case .skipped: outcome = "skipped"
                    }
                    metrics.increment("relay_deliveries_total", ["destination": f.destination, "outcome": outcome])
                }
                switch result {
                case .delivered:
                    log.info("delivered", ["deliveryId": claim.id, "destination": f.destination, "status": status,
                                           "latencyMs": latency, "attempt": attempts])
                case .retry(let at):
                    log.info("delivery will be retried", ["deliveryId": claim.id, "destination": f.destination,
                                                          "attempt": attempts, "status": status, "latencyMs": latency,
                                                          "error": itemError ?? "HTTP \(status ?? 0)",
                                                          "retryInMs": at - nowMillis])
                case .dead(let reason):
                    log.warn("delivery dead-lettered", ["deliveryId": claim.id, "destination": f.destination,
                                                        "attempts": attempts, "status": status, "latencyMs": latency,
                                                        "reason": reason])
                case .skipped(let reason):
                    log.info("delivery skipped", ["deliveryId": claim.id, "destination": f.destination, "reason": reason])
                }
            }
        }
        for (name, lane) in lanes where lane.retired && lane.inFlight == 0 { lanes[name] = nil }
        if !circuitsChanged.isEmpty {
            let wall = Self.wallMillis()
            for name in circuitsChanged.sorted() {
                guard let lane = lanes[name] else { continue }
                store.saveCircuit(name, lane.breaker.snapshot(now: now, wallMillis: wall))
            }
        }
        guard !records.isEmpty || !links.isEmpty else { return }
        storeFinish(records, links: links, keys: correlation.keys, nowMillis: nowMillis, retry: false)
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
