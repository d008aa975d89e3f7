import Glibc

/// Writes to stderr with one `write(2)` per call, so lines from different tasks never interleave
/// mid-line.
enum Console {
    static func line(_ text: String) {
        write(text + "\n")
    }

    static func error(_ message: String) {
        line("spate: error: \(message)")
    }

    static func note(_ message: String) {
        line("spate: \(message)")
    }

    static func write(_ text: String) {
        var bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress! + done, $0.count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                return
            }
            done += n
        }
    }

    /// Whether stderr is a terminal (progress lines only make sense there).
    static var isTerminal: Bool { isatty(2) == 1 }

    /// The terminal's width in columns (80 when it does not say). Asked at every redraw: a
    /// resized window takes effect at the next line.
    static var columns: Int {
        var size = winsize()
        guard ioctl(2, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return 80 }
        return Int(size.ws_col)
    }

    /// `line` cut to fit in one row of the terminal, less one column: a status line that
    /// wraps breaks the redraw, which moves the cursor up by lines, not rows.
    static func fitted(_ line: String, columns: Int = Console.columns) -> String {
        let room = max(1, columns - 1)
        guard line.count > room else { return line }
        return String(line.prefix(max(0, room - 1))) + "…"
    }
}
