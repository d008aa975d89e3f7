/// The stall watchdog of one transfer: a transfer that receives fewer than
/// `limit.bytesPerSecond × limit.window` bytes (and at least one) within one window is a stall.
///
/// A pure value fed from libcurl's progress callback (called at least once a second, even when
/// nothing arrives) with the body bytes so far and the engine clock's `now`.
///
/// Why not CURLOPT_LOW_SPEED_*: libcurl compares against a speed averaged over about five
/// seconds, so a burst followed by silence is detected seconds late (6 s for a 1 s window,
/// measured here).
struct StallWatchdog: Sendable {
    struct Limit: Sendable, Hashable {
        var bytesPerSecond: Int
        var window: Duration

        /// The bytes one window must bring.
        var bytesPerWindow: Int64 { Int64(min(Double(bytesPerSecond) * window.secondsDouble, Double(ByteSize.largest))) }

        /// For messages: "less than 1024 bytes/s for 10.0 s".
        var description: String {
            "less than \(bytesPerSecond) bytes/s for \(DecimalFormat.fixed(window.secondsDouble, decimals: 1)) s"
        }
    }

    let limit: Limit
    private var windowStart: ContinuousClock.Instant
    private var windowBytes: Int64 = 0

    /// - Parameter bodyBytes: what the transfer has received already (a window that starts
    ///   again mid-transfer).
    init(limit: Limit, now: ContinuousClock.Instant, bodyBytes: Int64 = 0) {
        self.limit = limit
        self.windowStart = now
        self.windowBytes = bodyBytes
    }

    /// Whether the transfer has stalled, given its body bytes so far. A window that brought
    /// enough starts the next one.
    mutating func isStalled(bodyBytes: Int64, now: ContinuousClock.Instant) -> Bool {
        guard now - windowStart >= limit.window else { return false }
        // At least one byte per window, even at a speed limit of 0: a silent server is never
        // waited on forever.
        if bodyBytes - windowBytes < max(1, limit.bytesPerWindow) { return true }
        windowStart = now
        windowBytes = bodyBytes
        return false
    }
}
