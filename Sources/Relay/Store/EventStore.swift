import Foundation

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

/// Why the store could not take an event. Nothing was stored; the sender must be told to try again.
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

/// The durable record of accepted events. `commit` calls its completion only once the event is durable (or has
/// failed), from a store thread; commits from many threads share one transaction and one fsync.
public protocol EventStore: AnyObject, Sendable {
    /// Records `event` and, only when it is new (not a duplicate), one pending delivery per destination, in the
    /// same transaction: an accepted event always has all of its deliveries.
    func commit(_ event: CanonicalEvent, deliveries: [String],
                completion: @escaping @Sendable (Result<CommitOutcome, StoreError>) -> Void)
    func event(id: String) throws -> CanonicalEvent?
    func eventCount() throws -> Int
    /// Finishes every commit already submitted, then refuses new ones.
    func close()
}

extension EventStore {
    /// Records an event that no route sends anywhere.
    public func commit(_ event: CanonicalEvent, completion: @escaping @Sendable (Result<CommitOutcome, StoreError>) -> Void) {
        commit(event, deliveries: [], completion: completion)
    }
}

/// A delivery as stored: one event on its way to one destination.
public struct DeliveryRecord: Sendable, Equatable {
    public var id: String
    public var eventID: String
    public var destination: String
    /// The event's subject as one key (`orderId=1&vendorId=2`), for per-subject ordering.
    public var subjectKey: String
    /// `pending` until a dispatcher takes it.
    public var state: String
    public var attempts: Int
}
