import Foundation

/// One mutex with two condition variables (pthread), for two threads that wait on different conditions of the
/// same state: each is woken only for what it waits on, never spuriously for the other's.
public final class Monitor: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let conditions = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 2)

    public init() {
        pthread_mutex_init(mutex, nil)
        // Timed waits measure the monotonic clock: a wall-clock step must not stretch them.
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(conditions, &attr)
        pthread_cond_init(conditions + 1, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(conditions)
        pthread_cond_destroy(conditions + 1)
        pthread_mutex_destroy(mutex)
        conditions.deallocate()
        mutex.deallocate()
    }

    public func lock() { pthread_mutex_lock(mutex) }
    public func unlock() { pthread_mutex_unlock(mutex) }

    /// Waits on condition 0 or 1; the mutex must be held.
    public func wait(_ condition: Int) { pthread_cond_wait(conditions + condition, mutex) }

    /// Waits on condition 0 or 1 for at most `microseconds`; the mutex must be held.
    public func wait(_ condition: Int, microseconds: Int) {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        var nanos = Int(now.tv_nsec) + microseconds * 1000
        var deadline = now
        deadline.tv_sec += nanos / 1_000_000_000
        nanos %= 1_000_000_000
        deadline.tv_nsec = nanos
        pthread_cond_timedwait(conditions + condition, mutex, &deadline)
    }

    /// Wakes a waiter of condition 0 or 1; the mutex should be held.
    public func signal(_ condition: Int) { pthread_cond_signal(conditions + condition) }

    /// Wakes every waiter of condition 0 or 1; the mutex should be held.
    public func broadcast(_ condition: Int) { pthread_cond_broadcast(conditions + condition) }
}
