import Glibc

/// Reads a file descriptor line by line in 64 KiB blocks: memory stays bounded by the longest
/// allowed line, whatever the file's length.
struct LineReader {
    static let maxLineBytes = 64 * 1024
    private let fd: Int32
    private var buffer: [UInt8] = []
    private var start = 0
    private var atEnd = false
    /// The number of the line `next()` returned last (1-based).
    private(set) var lineNumber = 0

    /// Bytes still allowed to be read (nil: to the end of the file).
    private var remaining: Int64?

    /// Reads `fd` from its current offset, at most `limit` bytes when given.
    init(fd: Int32, limit: Int64? = nil) {
        self.fd = fd
        self.remaining = limit
    }

    /// The next line without its `\n`, or nil at the end. Throws for a line over
    /// `maxLineBytes`, for bytes that are not UTF-8, and for a read error.
    mutating func next() throws(SpateError) -> Substring? {
        while true {
            if let newline = buffer[start...].firstIndex(of: UInt8(ascii: "\n")) {
                let line = try take(start..<newline)
                start = newline + 1
                return line
            }
            if atEnd {
                guard start < buffer.count else { return nil }
                let line = try take(start..<buffer.count)
                start = buffer.count
                return line
            }
            if buffer.count - start > Self.maxLineBytes {
                throw .usage("line \(lineNumber + 1): longer than \(Self.maxLineBytes) bytes")
            }
            try fill()
        }
    }

    private mutating func take(_ range: Range<Int>) throws(SpateError) -> Substring {
        lineNumber += 1
        guard range.count <= Self.maxLineBytes else { throw .usage("line \(lineNumber): longer than \(Self.maxLineBytes) bytes") }
        guard let text = String(validating: buffer[range], as: UTF8.self) else {
            throw .usage("line \(lineNumber): not valid UTF-8")
        }
        return Substring(text)
    }

    private mutating func fill() throws(SpateError) {
        if start > 0 {
            buffer.removeSubrange(0..<start)
            start = 0
        }
        let old = buffer.count
        let want = Int(min(Int64(64 * 1024), remaining ?? Int64.max))
        guard want > 0 else {
            atEnd = true
            return
        }
        buffer.append(contentsOf: repeatElement(0, count: want))
        let n = buffer.withUnsafeMutableBytes { raw in
            Syscall.retryingEINTR { read(fd, raw.baseAddress! + old, want) }
        }
        if n < 0 { throw Syscall.fail("read", path: "the manifest") }
        buffer.removeLast(want - n)
        if let r = remaining { remaining = r - Int64(n) }
        if n == 0 { atEnd = true }
    }
}
