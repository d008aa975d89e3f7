import Spate
import Synchronization

/// `-m/--max-time SECONDS` (curl's `-m`): the whole run — every retry and wait, every file of a
/// batch — stops at the limit as an interrupt stops it (the partial file and journal are kept
/// for a resume), and exits 3 with one line that says why, not 130: a script can tell a limit
/// it set from a Ctrl-C.
///
/// One per process: the jobs ask `reached` when they end cancelled, to say which stop it was.
enum TimeLimit {
    private static let state = Mutex<(seconds: Double, reached: Bool)>((0, false))

    static let range: ClosedRange<Double> = 0...31_536_000

    /// Parses and records the limit; nil when not given, or 0 (no limit, as curl's `-m 0`).
    static func parse(_ seconds: Double?) throws(SpateError) -> Duration? {
        guard let seconds, seconds != 0 else { return nil }
        guard range.contains(seconds) else {
            throw SpateError(.usage, "--max-time must be between 0 (no limit) and 31536000 seconds (a year)")
        }
        state.withLock { $0.seconds = seconds }
        return .milliseconds(Int64((seconds * 1000).rounded(.up)))
    }

    /// Marks the limit reached (before the run is cancelled).
    static func markReached() { state.withLock { $0.reached = true } }

    /// Whether the run was stopped by the limit.
    static var reached: Bool { state.withLock { $0.reached } }

    /// The error a run stopped by the limit ends with (exit 3, as any timeout).
    static var error: SpateError {
        let seconds = state.withLock { $0.seconds }
        let text = seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
        return SpateError(.network, "stopped at --max-time \(text) s")
    }

    /// `error` in place of a cancellation the limit caused; any other error as it is.
    static func explain(_ error: SpateError) -> SpateError {
        error.kind == .cancelled && reached ? self.error : error
    }
}
