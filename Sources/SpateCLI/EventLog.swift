import Glibc
import Spate
import Synchronization

/// `--events PATH`: one JSON object per line (NDJSON) for programs that watch a download or a
/// batch. The schema is in docs/events.md; every line has `event` and `time` (Unix seconds).
///
/// - `progress` is written at most every `progressInterval` per file (2 per second);
/// - URLs are redacted and messages are the same secret-free ones spate prints;
/// - every file ends with exactly one `finished` (also for a file a rerun skips, with
///   `"skipped":true`) or `failed`.
///
/// Thread-safe: events arrive from every download's threads; one lock orders the lines, each
/// written with one `write(2)`.
final class EventLog: Sendable {
    static let progressInterval = 0.5
    private struct State {
        var lastProgress: [Int: Double] = [:]
        var failedToWrite = false
    }
    private let fd: Int32
    private let ownsDescriptor: Bool
    private let state = Mutex(State())

    /// Opens `path` for appending (`-`: standard output).
    init(path: String) throws(SpateError) {
        if path == "-" {
            fd = STDOUT_FILENO
            ownsDescriptor = false
        } else {
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard fd >= 0 else {
                throw SpateError(.localIO, "cannot open the events file \(path): \(String(cString: strerror(errno)))")
            }
            self.fd = fd
            ownsDescriptor = true
        }
    }

    deinit { if ownsDescriptor { _ = close(fd) } }

    func record(_ event: BatchEvent) {
        switch event {
        case .queued(let file):
            var line = begin("queued", file)
            line.add("line", file.line)
            line.add("url", file.url)
            write(line)
        case .skipped(let file, let bytes):
            var line = begin("finished", file)
            line.add("bytes", Int64(bytes))
            line.add("seconds", 0.0)
            line.add("skipped", true)
            write(line)
        case .failed(let file, let error):
            // A file stopped in flight by --max-time says so (exit 3), not "cancelled" (130).
            let error = TimeLimit.explain(error)
            var line = begin("failed", file)
            line.add("exit_code", error.kind.exitCode)
            line.add("error", error.message)
            write(line)
        case .file(let file, let event):
            record(event, file)
        }
    }

    private func record(_ event: DownloadEvent, _ file: BatchFile) {
        switch event {
        case .started(let plan):
            var line = begin("started", file)
            line.add("url", plan.url)
            line.add("size", plan.totalBytes)
            line.add("connections", plan.connections)
            line.add("ranges", plan.acceptsRanges)
            write(line)
        case .progress(let progress):
            let now = Self.now()
            let due = state.withLock { s -> Bool in
                if let last = s.lastProgress[file.index], now - last < Self.progressInterval { return false }
                s.lastProgress[file.index] = now
                return true
            }
            guard due else { return }
            var line = begin("progress", file)
            line.add("bytes", progress.bytesDone)
            line.add("size", progress.totalBytes)
            line.add("rate", progress.bytesPerSecond)
            line.add("connections", progress.activeConnections)
            write(line)
        case .retrying(let reason, let attempt, let delay):
            var line = begin("retry", file)
            line.add("attempt", attempt)
            line.add("delay_seconds", delay.secondsDouble)
            line.add("reason", reason)
            write(line)
        case .notice(let text):
            var line = begin("notice", file)
            line.add("message", text)
            write(line)
        case .verifying:
            break
        case .finished(let result):
            state.withLock { _ = $0.lastProgress.removeValue(forKey: file.index) }
            var line = begin("finished", file)
            line.add("bytes", result.bytes)
            line.add("seconds", result.elapsed.secondsDouble)
            line.add("skipped", false)
            line.add("digest", result.verifiedChecksum.map { "\($0.algorithm.rawValue):\($0.hex)" })
            line.add("digest_source", result.checksumSource)
            line.add("connections", result.connections)
            line.add("retries", result.retries)
            write(line)
        }
    }

    /// The last line of a batch (or of a single download).
    /// - Parameter notStarted: files of the list a stopped batch never reached.
    func summary(_ s: BatchSummary, exitCode: Int32, notStarted: Int = 0) {
        var line = JSONLine()
        line.add("event", "summary")
        line.add("time", Self.now())
        line.add("files", s.succeeded + s.failed + s.skipped + s.cancelled)
        line.add("ok", s.succeeded)
        line.add("failed", s.failed)
        line.add("skipped", s.skipped)
        line.add("cancelled", s.cancelled)
        line.add("not_started", notStarted)
        line.add("bytes", s.bytes)
        line.add("seconds", s.elapsed.secondsDouble)
        line.add("rate", s.bytesPerSecond)
        line.add("exit_code", exitCode)
        write(line)
    }

    private func begin(_ name: String, _ file: BatchFile) -> JSONLine {
        var line = JSONLine()
        line.add("event", name)
        line.add("time", Self.now())
        line.add("index", file.index)
        line.add("path", file.path)
        return line
    }

    private func write(_ line: JSONLine) {
        let bytes = Array(line.line.utf8)
        state.withLock { s in
            guard !s.failedToWrite else { return }
            var done = 0
            while done < bytes.count {
                let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, $0.count - done) }
                if n < 0 {
                    if errno == EINTR { continue }
                    s.failedToWrite = true
                    Console.note("warning: cannot write the events file (\(String(cString: strerror(errno)))); no more events")
                    return
                }
                done += n
            }
        }
    }

    static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
