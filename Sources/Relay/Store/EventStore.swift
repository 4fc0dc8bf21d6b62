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
    func commit(_ event: CanonicalEvent, completion: @escaping @Sendable (Result<CommitOutcome, StoreError>) -> Void)
    func event(id: String) throws -> CanonicalEvent?
    func eventCount() throws -> Int
    /// Finishes every commit already submitted, then refuses new ones.
    func close()
}
