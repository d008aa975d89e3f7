import Spate
import Synchronization

/// What a person sees of a batch on stderr. On a terminal: one aggregate line (files done of
/// all, failures, skipped, bytes, rate, connections) and a line for each of the `maxFileLines`
/// biggest files in flight, redrawn at most 5 times a second. Otherwise (or with -q): only
/// notices (not with -q) and the summary at the end.
final class BatchProgress: Sendable {
    static let maxFileLines = 4
    static let redrawInterval = 0.2

    private struct Active {
        var name: String
        var done: Int64 = 0
        var total: Int64?
        var rate = 0.0
        var connections = 0
    }

    private struct State {
        var active: [Int: Active] = [:]
        var finished = 0
        var failed = 0
        var skipped = 0
        var bytesFinished: Int64 = 0
        var linesShown = 0
        var lastDraw = 0.0
    }

    let live: Bool
    let quiet: Bool
    /// The files the batch will handle (the manifest's selected entries).
    let total: Int
    private let state = Mutex(State())

    init(quiet: Bool, total: Int) {
        self.quiet = quiet
        self.live = !quiet && Console.isTerminal
        self.total = total
    }

    func handle(_ event: BatchEvent) {
        switch event {
        case .queued:
            return
        case .skipped:
            state.withLock { $0.skipped += 1 }
        case .failed(let file, _):
            state.withLock { s in
                s.failed += 1
                s.active.removeValue(forKey: file.index)
            }
        case .file(let file, let event):
            switch event {
            case .started(let plan):
                state.withLock { $0.active[file.index] = Active(name: Self.shortName(file.path), total: plan.totalBytes) }
            case .progress(let p):
                state.withLock { s in
                    s.active[file.index]?.done = p.bytesDone
                    s.active[file.index]?.rate = p.bytesPerSecond
                    s.active[file.index]?.connections = p.activeConnections
                }
            case .notice(let text):
                guard !quiet else { return }
                clear()
                Console.note("note: \(file.path): \(text)")
            case .finished(let result):
                state.withLock { s in
                    s.finished += 1
                    s.bytesFinished += result.bytes
                    s.active.removeValue(forKey: file.index)
                }
            case .retrying, .verifying:
                break
            }
        }
        if live { drawIfDue() }
    }

    /// Removes the live lines (before the summary).
    func clear() {
        guard live else { return }
        state.withLock { s in
            guard s.linesShown > 0 else { return }
            Console.write(Self.moveToTop(s.linesShown) + "\u{1B}[J")
            s.linesShown = 0
        }
    }

    private func drawIfDue() {
        let now = EventLog.now()
        state.withLock { s in
            guard now - s.lastDraw >= Self.redrawInterval else { return }
            s.lastDraw = now
            let lines = Self.lines(s, total: total)
            let columns = Console.columns
            Console.write(Self.moveToTop(s.linesShown) + lines.map { "\u{1B}[K" + Console.fitted($0, columns: columns) }.joined(separator: "\n") + "\u{1B}[J")
            s.linesShown = lines.count
        }
    }

    private static func moveToTop(_ shown: Int) -> String {
        (shown > 1 ? "\u{1B}[\(shown - 1)A" : "") + "\r"
    }

    private static func lines(_ s: State, total: Int) -> [String] {
        let done = s.finished + s.failed + s.skipped
        let inFlight = s.active.values
        let bytes = s.bytesFinished + inFlight.reduce(0) { $0 + $1.done }
        let rate = inFlight.reduce(0.0) { $0 + $1.rate }
        let connections = inFlight.reduce(0) { $0 + $1.connections }
        var head = "\(done)/\(total) files"
        if s.failed > 0 { head += ", \(s.failed) failed" }
        if s.skipped > 0 { head += ", \(s.skipped) skipped" }
        head += "  \(ByteSize.format(bytes))  \(ByteSize.formatRate(rate))  \(inFlight.count) in flight  \(connections) conn"
        var lines = [head]
        let biggest = inFlight.sorted { ($0.total ?? 0) > ($1.total ?? 0) }.prefix(maxFileLines)
        for file in biggest {
            var line = "  \(file.name)  "
            if let t = file.total, t > 0 {
                line += "\(min(100, Int(Double(file.done) * 100 / Double(t))))% of \(ByteSize.format(t))"
            } else {
                line += ByteSize.format(file.done)
            }
            line += "  \(ByteSize.formatRate(file.rate))"
            lines.append(line)
        }
        return lines
    }

    /// The last 40 characters of a path (the name is what tells files apart).
    static func shortName(_ path: String) -> String {
        path.count > 40 ? "…" + path.suffix(39) : path
    }
}
