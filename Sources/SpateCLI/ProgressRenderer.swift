import Spate

/// Turns download events into what a person sees on stderr: a live progress line on a terminal,
/// otherwise (or with -q) only notices and a one-line summary.
struct ProgressRenderer {
    let live: Bool
    let quiet: Bool
    private var lineShown = false
    private var plan: DownloadPlan?

    init(quiet: Bool) {
        self.quiet = quiet
        self.live = !quiet && Console.isTerminal
    }

    mutating func handle(_ event: DownloadEvent) {
        switch event {
        case .started(let plan):
            self.plan = plan
        case .progress(let progress):
            guard live else { return }
            Console.write("\r\u{1B}[K" + Console.fitted(Self.progressLine(progress)))
            lineShown = true
        case .retrying(let reason, let attempt, let delay):
            guard live else { return }
            clearLine()
            Console.note("retry \(attempt) in \(Self.seconds(delay.secondsDouble)): \(reason)")
        case .notice(let text):
            guard !quiet else { return }
            clearLine()
            Console.note("note: \(text)")
        case .verifying:
            break
        case .finished:
            clearLine()
        }
    }

    mutating func clearLine() {
        if lineShown {
            Console.write("\r\u{1B}[K")
            lineShown = false
        }
    }

    /// `512 MiB / 1.00 GiB  50%  612 MiB/s  ETA 0:01  16 conn`
    static func progressLine(_ p: DownloadProgress) -> String {
        var parts: [String] = []
        if let total = p.totalBytes, total > 0 {
            parts.append("\(ByteSize.format(p.bytesDone)) / \(ByteSize.format(total))")
            parts.append("\(min(100, Int(Double(p.bytesDone) * 100 / Double(total))))%")
        } else {
            parts.append(ByteSize.format(p.bytesDone))
        }
        parts.append(ByteSize.formatRate(p.bytesPerSecond))
        if let eta = p.estimatedSecondsRemaining { parts.append("ETA \(clock(eta))") }
        parts.append("\(p.activeConnections) conn")
        return parts.joined(separator: "  ")
    }

    /// The one-line summary printed at the end.
    /// - Parameter verb: how to name the output ("wrote to standard output"); default
    ///   "saved PATH".
    static func summary(_ r: DownloadResult, verb: String? = nil) -> String {
        var text = "\(verb ?? "saved \(r.path)") (\(ByteSize.format(r.bytes))) in \(seconds(r.elapsed.secondsDouble)), "
        text += "\(ByteSize.formatRate(r.bytesPerSecond)), \(r.connections) connection\(r.connections == 1 ? "" : "s")"
        if r.bytesResumed > 0 { text += ", \(ByteSize.format(r.bytesResumed)) resumed from before" }
        if let checksum = r.verifiedChecksum {
            text += ", \(checksum.algorithm.rawValue) verified"
            if let source = r.checksumSource, source != "--checksum" { text += " (the server's \(source))" }
            if let tail = r.verificationTail { text += " \(seconds(tail.secondsDouble)) after the last byte" }
        }
        if r.retries > 0 { text += ", \(r.retries) retr\(r.retries == 1 ? "y" : "ies")" }
        return text
    }

    static func seconds(_ s: Double) -> String {
        s < 10 ? "\(DecimalFormat.fixed(s, decimals: 2)) s" : "\(DecimalFormat.fixed(s, decimals: 1)) s"
    }

    static func clock(_ seconds: Double) -> String {
        let total = Int(seconds.rounded(.up))
        let h = total / 3600, m = (total % 3600) / 60, s = total % 60
        let ss = s < 10 ? "0\(s)" : "\(s)"
        if h > 0 { return "\(h):\(m < 10 ? "0\(m)" : "\(m)"):\(ss)" }
        return "\(m):\(ss)"
    }
}
