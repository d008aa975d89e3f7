import Synchronization

/// How many range workers may run at once: the `ConnectionTuner`'s target, lowered when the
/// server throttles.
///
/// Sustained 429/503 replies mean the server wants fewer requests: a throttling reply lowers
/// the allowance by at least a quarter, and to no more than the requests still running (those
/// the server accepted) — at most once per `cooldown`, so one burst of replies to simultaneous
/// requests counts once; never below 1. Every `recoverAfter` successful requests in a row raise
/// it by one again, up to the maximum. Worker `i` runs only while `i < allowed`; the others
/// wait here without spending their retries.
final class ConnectionGate: Sendable {
    private struct State {
        var allowed: Int
        /// What the tuner wants; throttling keeps `allowed` below it until requests succeed.
        var target: Int
        var throttledSinceCheck = false
        var stalledSinceCheck = false
        var successes = 0
        var lastCut: ContinuousClock.Instant?
        /// How many times the allowance was cut (a request remembers the count it was sent at).
        var cuts = 0
        var finished = false
        var waiters: [Int: (index: Int, continuation: CheckedContinuation<Bool, Never>)] = [:]
        var nextWaiter = 0
    }

    let maximum: Int
    static let recoverAfter = 8
    static let cooldown: Duration = .milliseconds(250)
    private let state: Mutex<State>

    init(maximum: Int, initial: Int? = nil) {
        self.maximum = maximum
        let start = min(maximum, max(1, initial ?? maximum))
        state = Mutex(State(allowed: start, target: start))
    }

    /// Sets the tuner's target; the allowance follows at once (upwards only when the server is
    /// not throttling).
    func setTarget(_ target: Int) {
        let wake = state.withLock { s -> [CheckedContinuation<Bool, Never>] in
            s.target = min(maximum, max(1, target))
            if s.lastCut == nil || s.allowed > s.target { s.allowed = s.target }
            return takeAdmitted(&s)
        }
        for w in wake { w.resume(returning: true) }
    }

    /// Whether a throttling reply arrived since the last call.
    func takeThrottled() -> Bool {
        state.withLock { s in
            defer { s.throttledSinceCheck = false }
            return s.throttledSinceCheck
        }
    }

    /// A transfer was cut by the stall watchdog (the tuner backs off; see `ConnectionTuner`).
    func noteStall() {
        state.withLock { $0.stalledSinceCheck = true }
    }

    /// Whether a transfer stalled since the last call.
    func takeStalled() -> Bool {
        state.withLock { s in
            defer { s.stalledSinceCheck = false }
            return s.stalledSinceCheck
        }
    }

    var allowed: Int { state.withLock { $0.allowed } }

    /// The number of cuts so far: what a request was sent at (see `throttled`).
    var cuts: Int { state.withLock { $0.cuts } }

    /// Waits until worker `index` may run; false once the download no longer needs workers.
    func admit(_ index: Int) async -> Bool {
        let ready: Bool? = state.withLock { s in
            if s.finished { return false }
            return index < s.allowed ? true : nil
        }
        if let ready { return ready }
        let key = state.withLock { s -> Int in
            defer { s.nextWaiter += 1 }
            return s.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let immediate: Bool? = state.withLock { s in
                    if s.finished || Task.isCancelled { return false }
                    if index < s.allowed { return true }
                    s.waiters[key] = (index, continuation)
                    return nil
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: key) }
            waiter?.continuation.resume(returning: false)
        }
    }

    /// What a throttling reply means for the request that got it.
    enum ThrottleDecision: Equatable {
        /// The allowance was lowered to this. The reply reported too many connections, not a
        /// failing request: it does not count against the request's retries.
        case lowered(Int)
        /// The request was sent before the latest cut, or the reply came less than `cooldown`
        /// after it: it answers a higher count than the one now allowed, so it does not count
        /// either, and the request waits out the rest of the cooldown (`remaining`, maybe zero)
        /// before asking again, so the cut can take effect.
        case settling(remaining: Duration)
        /// Sent at the current allowance, which is already as low as it can go (the requests
        /// still running, or 1): the server refuses even this many, and the reply counts as a
        /// failed attempt.
        case persisting

        /// How long a request waits before asking again without spending a retry; nil when the
        /// reply counts as a failed attempt.
        var uncountedWait: Duration? {
            switch self {
            case .lowered: ConnectionGate.cooldown
            case .settling(let remaining): remaining
            case .persisting: nil
            }
        }
    }

    /// A 429 or 503, to a request sent when the gate had made `sentAtCuts` cuts, while
    /// `running` other requests were still running: lower the allowance.
    ///
    /// Why the decision: a worker still inside the allowance used to count every such reply
    /// against its retries while the allowance came down one cut per cooldown, so with
    /// `Retry-After: 0` it could spend all its retries in a burst and fail the download while
    /// the gate was still converging on the count the server accepts. Only a refusal of a
    /// request sent at the lowest allowance counts.
    func throttled(running: Int, sentAtCuts: Int, now: ContinuousClock.Instant = .now) -> ThrottleDecision {
        state.withLock { s in
            s.successes = 0
            s.throttledSinceCheck = true
            let sinceCut = s.lastCut.map { now - $0 }
            if let sinceCut, sinceCut < Self.cooldown { return .settling(remaining: Self.cooldown - sinceCut) }
            let lowered = max(1, min(s.allowed - max(1, s.allowed / 4), running))
            guard lowered != s.allowed else {
                return sentAtCuts < s.cuts ? .settling(remaining: .zero) : .persisting
            }
            s.allowed = lowered
            s.lastCut = now
            s.cuts += 1
            return .lowered(lowered)
        }
    }

    /// A successful request: maybe raise the allowance again.
    func succeeded() {
        let wake = state.withLock { s -> [CheckedContinuation<Bool, Never>] in
            guard s.allowed < s.target else { return [] }
            s.successes += 1
            guard s.successes >= Self.recoverAfter else { return [] }
            s.successes = 0
            s.allowed += 1
            if s.allowed >= s.target { s.lastCut = nil }
            return takeAdmitted(&s)
        }
        for w in wake { w.resume(returning: true) }
    }

    /// No more work: every waiting worker returns false.
    func finish() {
        let all = state.withLock { s -> [CheckedContinuation<Bool, Never>] in
            s.finished = true
            defer { s.waiters.removeAll() }
            return s.waiters.values.map(\.continuation)
        }
        for w in all { w.resume(returning: false) }
    }

    private func takeAdmitted(_ s: inout State) -> [CheckedContinuation<Bool, Never>] {
        let keys = s.waiters.filter { $0.value.index < s.allowed }.map(\.key)
        return keys.compactMap { s.waiters.removeValue(forKey: $0)?.continuation }
    }
}
