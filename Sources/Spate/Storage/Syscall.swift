import Glibc

/// Thin wrappers over the file syscalls Spate uses: each retries `EINTR` and turns a failure into
/// a `SpateError` of kind `.localIO` naming the call, the path and `strerror(errno)`.
enum Syscall {
    static func errorMessage(_ call: String, path: String, errno code: Int32) -> String {
        "\(call) \(path): \(String(cString: strerror(code)))"
    }

    static func fail(_ call: String, path: String, errno code: Int32 = errno) -> SpateError {
        SpateError.localIO(errorMessage(call, path: path, errno: code))
    }

    /// Runs `body` until it stops failing with `EINTR`.
    @inline(__always)
    static func retryingEINTR<T: BinaryInteger>(_ body: () -> T) -> T {
        while true {
            let result = body()
            if result == -1 && errno == EINTR { continue }
            return result
        }
    }

    /// Writes all of `buffer` at `offset`, looping over short writes and `EINTR`.
    /// Returns 0 on success or the errno of the failure.
    @inline(__always)
    static func pwriteAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: Int64) -> Int32 {
        var done = 0
        while done < buffer.count {
            let n = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                return errno
            }
            if n == 0 { return EIO }
            done += n
        }
        return 0
    }

    /// Reads up to `buffer.count` bytes at `offset`, looping over short reads until EOF.
    static func preadFully(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, at offset: Int64) -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                return -1
            }
            if n == 0 { break }
            done += n
        }
        return done
    }
}
