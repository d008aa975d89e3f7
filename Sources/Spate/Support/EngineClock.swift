import Glibc

/// The engine's time source. Every decision that depends on time — retry waits and
/// Retry-After, the stall watchdog, the tuner's sampling windows, hedging, the throttling
/// cooldown — reads `now` from a clock passed in, and every wait goes through `sleep(until:)`,
/// so tests drive time by hand (`ManualClock` in the tests) instead of sleeping.
///
/// Instants are `ContinuousClock.Instant`: monotonic, so a wall-clock step never stretches or
/// skips a wait (RELIABILITY D32). `wallSeconds` is the wall clock, used only to read the
/// HTTP-date form of `Retry-After`.
protocol EngineClock: Sendable {
    var now: ContinuousClock.Instant { get }
    /// Seconds since the epoch (for HTTP dates).
    var wallSeconds: Int64 { get }
    /// Returns at `deadline` (or at once if it has passed); throws `CancellationError` when the
    /// task is cancelled.
    func sleep(until deadline: ContinuousClock.Instant) async throws
}

extension EngineClock {
    func sleep(for duration: Duration) async throws {
        try await sleep(until: now + duration)
    }
}

/// The real clock: `ContinuousClock` and `time(2)`.
struct SystemClock: EngineClock {
    var now: ContinuousClock.Instant { .now }
    var wallSeconds: Int64 { Int64(time(nil)) }
    func sleep(until deadline: ContinuousClock.Instant) async throws {
        try await Task.sleep(until: deadline, clock: .continuous)
    }
}
