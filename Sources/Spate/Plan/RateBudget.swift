/// `--max-rate`: one token bucket shared by every transfer of a session (all connections, all
/// files), as a value that takes `now`.
///
/// Why one bucket and not libcurl's `CURLOPT_MAX_RECV_SPEED_LARGE`: that option limits one
/// handle (curl#9914); a download of 16 ranges would get 16 × the rate. Here a transfer spends
/// what it received; a spend that leaves the bucket in debt pauses the transfer (the loop
/// unpauses the paused ones once the debt is repaid). Debt rather than refusal: bytes already
/// received are written at once, never re-delivered, and the long-run rate is exact — the
/// total never exceeds `rate × t + burst` plus what the last callbacks brought.
struct RateBudget: Sendable, Equatable {
    let bytesPerSecond: Double
    /// The most tokens saved up while idle: a short burst, so a pause does not let a
    /// second's worth through at once (accuracy over seconds, not milliseconds).
    let burst: Double
    private(set) var tokens: Double
    private var last: ContinuousClock.Instant

    init(bytesPerSecond: Int64, now: ContinuousClock.Instant) {
        precondition(bytesPerSecond > 0)
        self.bytesPerSecond = Double(bytesPerSecond)
        burst = max(16 * 1024, (Double(bytesPerSecond) / 20).rounded(.down))
        tokens = burst
        last = now
    }

    private mutating func refill(_ now: ContinuousClock.Instant) {
        guard now > last else { return }
        tokens = min(burst, tokens + (now - last).secondsDouble * bytesPerSecond)
        last = now
    }

    /// A transfer received `bytes`. Returns true when the bucket is now in debt: pause it.
    mutating func spend(_ bytes: Int, now: ContinuousClock.Instant) -> Bool {
        refill(now)
        tokens -= Double(bytes)
        return tokens < 0
    }

    /// How long until the debt is repaid (zero when there is none): paused transfers resume then.
    mutating func wait(now: ContinuousClock.Instant) -> Duration {
        refill(now)
        guard tokens < 0 else { return .zero }
        return .nanoseconds(Int64((-tokens / bytesPerSecond * 1e9).rounded(.up)))
    }

    /// The receive buffer for a rate-limited transfer. What one callback brings is what the
    /// bucket can go into debt by, and every connection may bring one at once: together they
    /// stay within 1/20 s of the rate (libcurl's smallest buffer is 1 KiB). Measured: with
    /// 32 KiB buffers, 64 connections sharing 1 MiB/s moved 0.76–1.23 MiB/s over 5-s windows.
    static func receiveBufferBytes(rate: Int64, connections: Int, preferred: Int) -> Int {
        Int(min(Int64(preferred), max(1024, rate / Int64(20 * max(1, connections)))))
    }
}
