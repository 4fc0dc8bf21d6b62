import Foundation
import Synchronization

/// One value handed from the thread that makes it (a completion) to a thread that waits for it.
public final class Handoff<T: Sendable>: Sendable {
    private let value = Mutex<T?>(nil)
    private let ready = DispatchSemaphore(value: 0)

    public init() {}

    public func put(_ v: T) {
        value.withLock { $0 = v }
        ready.signal()
    }

    public func take() -> T {
        ready.wait()
        return value.withLock { $0! }
    }

    /// The value, or nil when none came within `timeout` seconds.
    public func take(timeout: Double) -> T? {
        guard ready.wait(timeout: .now() + timeout) == .success else { return nil }
        return value.withLock { $0 }
    }
}
