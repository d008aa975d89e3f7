import Glibc
import Synchronization

/// `--trace FILE`: what a session's connections did, as a Chrome trace-event JSON file (opens
/// in Perfetto or chrome://tracing).
///
/// One lane (`tid`) per connection, named by its local port; one complete event (`ph: "X"`)
/// per request that reached the wire, with its range, bytes, status and time to first byte;
/// instant events (`ph: "i"`) on the "events" lane for retries, steals, hedges, tuner steps,
/// journal commits and URL re-resolutions. Events are kept in memory, pre-rendered, up to
/// `limit` (about 300 bytes each: 75 MB at the default; then counted as dropped, and the file
/// says so); `write(to:)` writes them once, in pieces.
/// No secret goes in: URLs are redacted, header values are never recorded.
public final class TraceRecorder: Sendable {
    private struct State {
        var events: [String] = []
        var lanes: Set<Int> = []
        var dropped = 0
    }

    public let limit: Int
    private let origin = ContinuousClock.now
    private let state = Mutex(State())
    /// The lane of instant events.
    static let eventsLane = 0

    public init(limit: Int = 250_000) {
        self.limit = limit
    }

    /// Events kept so far (spans and instants, lane names excluded).
    public var count: Int { state.withLock { $0.events.count } }

    private func microseconds(_ instant: ContinuousClock.Instant) -> String {
        DecimalFormat.fixed(max(0, (instant - origin).secondsDouble * 1e6), decimals: 1)
    }

    private func args(_ values: [(String, TraceValue)]) -> String {
        "{" + values.map { "\(JSONText.quote($0.0)):\($0.1.json)" }.joined(separator: ",") + "}"
    }

    private func add(_ event: String, lane: Int) {
        state.withLock { s in
            guard s.events.count < limit else {
                s.dropped += 1
                return
            }
            s.events.append(event)
            s.lanes.insert(lane)
        }
    }

    /// A request from `start` to `end` on the connection `lane` (its local port).
    func span(_ name: String, category: String, start: ContinuousClock.Instant, end: ContinuousClock.Instant, lane: Int,
              args values: [(String, TraceValue)]) {
        let event = "{\"name\":\(JSONText.quote(name)),\"cat\":\(JSONText.quote(category)),\"ph\":\"X\",\"ts\":\(microseconds(start)),"
            + "\"dur\":\(DecimalFormat.fixed(max(0, (end - start).secondsDouble * 1e6), decimals: 1)),\"pid\":1,\"tid\":\(lane),"
            + "\"args\":\(args(values))}"
        add(event, lane: lane)
    }

    /// Something that happened at one moment (a retry, a steal, a tuner step …).
    func instant(_ name: String, category: String, args values: [(String, TraceValue)] = []) {
        let event = "{\"name\":\(JSONText.quote(name)),\"cat\":\(JSONText.quote(category)),\"ph\":\"i\",\"s\":\"t\","
            + "\"ts\":\(microseconds(.now)),\"pid\":1,\"tid\":\(Self.eventsLane),\"args\":\(args(values))}"
        add(event, lane: Self.eventsLane)
    }

    /// Writes the trace: `{"traceEvents": [...], "displayTimeUnit": "ms"}`.
    public func write(to path: String) throws(SpateError) {
        let (events, lanes, dropped) = state.withLock { ($0.events, $0.lanes, $0.dropped) }
        var names = ["{\"name\":\"process_name\",\"ph\":\"M\",\"ts\":0,\"pid\":1,\"tid\":0,\"args\":{\"name\":\"spate\"}}"]
        for lane in lanes.sorted() {
            let name = lane == Self.eventsLane ? "events" : "connection :\(lane)"
            names.append("{\"name\":\"thread_name\",\"ph\":\"M\",\"ts\":0,\"pid\":1,\"tid\":\(lane),\"args\":{\"name\":\(JSONText.quote(name))}}")
        }
        let all = names + events
        var tail = "],\"displayTimeUnit\":\"ms\""
        if dropped > 0 { tail += ",\"otherData\":{\"dropped_events\":\(dropped)}" }
        // In pieces of a few thousand events: no second copy of the whole trace in memory.
        let pieces = stride(from: 0, to: all.count, by: 4096).lazy.map { start -> String in
            let end = min(all.count, start + 4096)
            return all[start..<end].joined(separator: ",\n") + (end < all.count ? ",\n" : "\n")
        }
        let text = [AnySequence(["{\"traceEvents\":[\n"]), AnySequence(pieces), AnySequence([tail + "}\n"])].joined()
        try TextFile.write(text, to: path, mode: 0o600)
    }
}

/// A value in a trace event's `args`.
enum TraceValue {
    case text(String)
    case integer(Int64)
    case number(Double)

    var json: String {
        switch self {
        case .text(let s): JSONText.quote(s)
        case .integer(let n): String(n)
        case .number(let d): d.isFinite ? DecimalFormat.fixed(d, decimals: 3) : "null"
        }
    }
}

/// Writes text to a new file (created or truncated) in pieces: the trace and the bench chart.
public enum TextFile {
    public static func write(_ pieces: some Sequence<String>, to path: String, mode: mode_t = 0o644) throws(SpateError) {
        let fd = Syscall.retryingEINTR { open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode) }
        guard fd >= 0 else { throw Syscall.fail("create", path: path) }
        defer { _ = close(fd) }
        for piece in pieces {
            var piece = piece
            let code = piece.withUTF8 { StreamOutput.writeAll(fd, UnsafeRawBufferPointer($0)) }
            if code != 0 { throw Syscall.fail("write", path: path, errno: code) }
        }
    }
}
