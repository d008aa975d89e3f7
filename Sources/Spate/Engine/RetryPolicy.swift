/// How long to wait before retrying a failed request, and when to give up.
///
/// A pure value: the caller supplies the attempt number and a random number, so the schedule is
/// testable. Delay for attempt `n` (1-based) without Retry-After, "equal jitter":
///
///     d(n) = min(maxDelay, baseDelay · 2^(n−1)) · (0.5 + 0.5 · r),   r ∈ [0, 1)
///
/// With the defaults (base 250 ms, max 30 s): 125–250 ms, 250–500 ms, 0.5–1 s, 1–2 s, 2–4 s …
/// A server's `Retry-After` replaces the computed delay, capped at `maxDelay`.
public struct RetryPolicy: Sendable, Hashable {
    /// Consecutive failures without progress after which a download fails.
    public var maxRetries: Int
    public var baseDelay: Duration
    /// Upper bound for every wait, including a server's Retry-After.
    public var maxDelay: Duration

    public init(maxRetries: Int = 5, baseDelay: Duration = .milliseconds(250), maxDelay: Duration = .seconds(30)) {
        self.maxRetries = maxRetries
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
    }

    /// The wait before retry number `attempt` (1 for the first retry).
    public func delay(attempt: Int, retryAfter: Duration?, random: Double) -> Duration {
        if let retryAfter { return min(max(retryAfter, .zero), maxDelay) }
        let exponent = min(max(attempt - 1, 0), 30)
        let raw = baseDelay * (1 << exponent)
        let capped = min(raw, maxDelay)
        return capped * (0.5 + 0.5 * min(max(random, 0), 1))
    }
}
