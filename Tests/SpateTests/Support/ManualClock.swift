import Glibc
@testable import Spate
import Synchronization

/// A clock that only moves when the test says so (`advance`): engine waits (retry backoff,
/// Retry-After, the ticker, progress reports) sleep on it, so a test of a 2-minute Retry-After
/// runs in milliseconds and does not depend on how busy the machine is.
final class ManualClock: EngineClock, Sendable {
    private struct Sleeper {
        let deadline: ContinuousClock.Instant
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var offset: Duration = .zero
        var sleepers: [Int: Sleeper] = [:]
        var nextID = 0
        /// Tests waiting for a sleeper whose deadline is at least `ahead` from now.
        var watchers: [(ahead: Duration, continuation: CheckedContinuation<Void, Never>)] = []
    }

    private let base = ContinuousClock.now
    private let baseWall = Int64(time(nil))
    private let state = Mutex(State())

    var now: ContinuousClock.Instant { base + state.withLock { $0.offset } }
    var wallSeconds: Int64 { baseWall + state.withLock { $0.offset.components.seconds } }

    func sleep(until deadline: ContinuousClock.Instant) async throws {
        let id = state.withLock { s -> Int in
            defer { s.nextID += 1 }
            return s.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let (ready, watchers) = state.withLock { s -> (Bool, [CheckedContinuation<Void, Never>]) in
                    if Task.isCancelled { return (true, []) }
                    if deadline <= base + s.offset { return (true, []) }
                    s.sleepers[id] = Sleeper(deadline: deadline, continuation: continuation)
                    let now = base + s.offset
                    let due = s.watchers.filter { deadline - now >= $0.ahead }.map(\.continuation)
                    s.watchers.removeAll { deadline - now >= $0.ahead }
                    return (false, due)
                }
                for w in watchers { w.resume() }
                if ready {
                    if Task.isCancelled { continuation.resume(throwing: CancellationError()) } else { continuation.resume() }
                }
            }
        } onCancel: {
            state.withLock { $0.sleepers.removeValue(forKey: id) }?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves time forward and wakes every sleeper now due.
    func advance(by duration: Duration) {
        let due = state.withLock { s -> [Sleeper] in
            s.offset += duration
            let now = base + s.offset
            let due = s.sleepers.filter { $0.value.deadline <= now }
            for key in due.keys { s.sleepers.removeValue(forKey: key) }
            return Array(due.values)
        }
        for sleeper in due { sleeper.continuation.resume() }
    }

    /// Returns once something sleeps until at least `ahead` from now (the engine is waiting
    /// that long): a synchronisation point, not a timeout.
    func sleeper(atLeast ahead: Duration) async {
        await withCheckedContinuation { continuation in
            let found = state.withLock { s -> Bool in
                let now = base + s.offset
                if s.sleepers.values.contains(where: { $0.deadline - now >= ahead }) { return true }
                s.watchers.append((ahead, continuation))
                return false
            }
            if found { continuation.resume() }
        }
    }
}
