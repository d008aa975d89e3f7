import Glibc

/// A mutex with one condition variable, for the dedicated threads that must sleep until told.
/// (Swift's `Mutex` has no wait; tasks use continuations instead.)
final class ConditionLock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(mutex, nil)
        // Deadlines on the monotonic clock: a wall-clock step must not stretch a timed wait.
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Waits for a signal; call with the lock held (inside `withLock`).
    func wait() { pthread_cond_wait(condition, mutex) }

    /// Waits for a signal or until `deadline` (CLOCK_MONOTONIC, see `init`); returns false on
    /// timeout. Call with the lock held.
    func wait(until deadline: timespec) -> Bool {
        var d = deadline
        return pthread_cond_timedwait(condition, mutex, &d) != ETIMEDOUT
    }

    /// A CLOCK_MONOTONIC deadline `milliseconds` from now.
    static func deadline(afterMilliseconds milliseconds: Int) -> timespec {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        var nanoseconds = Int(now.tv_nsec) + (milliseconds % 1000) * 1_000_000
        var seconds = Int(now.tv_sec) + milliseconds / 1000
        if nanoseconds >= 1_000_000_000 {
            nanoseconds -= 1_000_000_000
            seconds += 1
        }
        return timespec(tv_sec: seconds, tv_nsec: nanoseconds)
    }

    /// Wakes every waiter; call with the lock held.
    func broadcast() { pthread_cond_broadcast(condition) }
}
