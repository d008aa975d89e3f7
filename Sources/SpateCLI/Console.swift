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
}
