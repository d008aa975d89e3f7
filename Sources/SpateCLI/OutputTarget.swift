import Glibc
import Spate

/// What `-o` names when it is not a regular file, curl's way: `-` is standard output, a FIFO
/// or a character device is written in order like it, `/dev/null` (or `--discard`) throws the
/// bytes away. None of them is ever replaced, created or removed, with or without `--force`.
struct OutputTarget {
    /// The library's output.
    let output: DownloadOutput
    /// For messages and events: "-", or the path.
    let path: String
    /// A descriptor this process opened (a FIFO, a device), closed at exit.
    let openedFD: Int32?

    /// Nil when `-o` is a regular file (or a path that does not exist yet), the usual case.
    static func resolve(output: String?, discard: Bool, window: Int64, checksum: Bool) throws(SpateError) -> OutputTarget? {
        if discard {
            guard output == nil else { throw SpateError(.usage, "--discard keeps nothing: leave out -o") }
            return try nullDevice(path: "/dev/null", window: window, checksum: checksum)
        }
        guard let output else { return nil }
        // Names of standard output itself: when it is redirected to a file, stat() says
        // "regular file", and the file path logic would put a .part beside it in /dev.
        if output == "-" || ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"].contains(output) {
            // As curl does: binary data on a terminal helps nobody and can leave it unusable.
            if isatty(1) != 0 {
                throw SpateError(.usage, "-o - would write the file to a terminal; redirect standard output (| or >) or give -o PATH")
            }
            return OutputTarget(output: .stream(fileDescriptor: 1, window: window), path: output, openedFD: nil)
        }
        var info = stat()
        // Following symlinks: /dev/stdout and /dev/fd/N are links to what they name.
        guard stat(output, &info) == 0 else { return nil }
        switch info.st_mode & S_IFMT {
        case S_IFREG, S_IFDIR:
            return nil
        case S_IFCHR:
            var null = stat()
            if stat("/dev/null", &null) == 0, (null.st_mode & S_IFMT) == S_IFCHR, null.st_rdev == info.st_rdev {
                return try nullDevice(path: output, window: window, checksum: checksum)
            }
            return try open(output, window: window)
        case S_IFIFO:
            return try open(output, window: window)
        default:
            throw SpateError(.localIO, "\(output) is not a regular file, a FIFO or a character device; spate does not write to it")
        }
    }

    /// The discard fast path; with a checksum the bytes must be seen in order, so they are
    /// streamed into the device instead.
    private static func nullDevice(path: String, window: Int64, checksum: Bool) throws(SpateError) -> OutputTarget {
        guard checksum else { return OutputTarget(output: .discard, path: path, openedFD: nil) }
        return try open(path, window: window)
    }

    /// Opens an existing FIFO or device for writing, never creating or truncating anything.
    /// (A FIFO's open waits for its reader, as `cat > fifo` does.)
    private static func open(_ path: String, window: Int64) throws(SpateError) -> OutputTarget {
        let fd = Glibc.open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY)
        guard fd >= 0 else {
            throw SpateError(.localIO, "open \(path): \(String(cString: strerror(errno)))")
        }
        return OutputTarget(output: .stream(fileDescriptor: fd, window: window), path: path, openedFD: fd)
    }

    /// "saved PATH", "wrote … to standard output", "discarded …" for the summary line.
    var summaryVerb: String {
        switch output {
        case .discard: "discarded"
        case .stream: path == "-" ? "wrote to standard output" : "wrote to \(path)"
        case .file: "saved \(path)"
        }
    }
}
