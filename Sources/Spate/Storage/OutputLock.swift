import Glibc

/// One writer per output: the exclusive `flock` a download holds on its partial file for as
/// long as it writes it.
///
/// Why on the partial file: it is the one thing every run on an output touches first (created
/// with `O_EXCL`, or opened to resume), the lock lives exactly as long as the descriptor (a
/// killed process leaves no stale lock: the kernel drops it), and nothing else has to be
/// cleaned up. Every path that would remove or reuse a partial file asks here first; a second
/// run on a live output fails at once, naming the holder.
///
/// Probing never takes the lock (it reads `/proc/locks`): a probe that held it even briefly
/// could make the owner's own non-blocking attempt fail.
enum OutputLock {
    /// Takes the exclusive lock on `fd` without waiting. False when another descriptor holds it.
    static func tryLock(_ fd: Int32) -> Bool {
        Syscall.retryingEINTR { flock(fd, LOCK_EX | LOCK_NB) } == 0
    }

    /// Whether `fd` is the file named `path` now (same device and inode, the name not a
    /// symlink): after taking the lock, and before publishing, a download checks that nobody
    /// put another file at its partial name.
    static func isSameFile(_ fd: Int32, path: String) -> Bool {
        var open = stat(), named = stat()
        guard fstat(fd, &open) == 0, lstat(path, &named) == 0 else { return false }
        return open.st_dev == named.st_dev && open.st_ino == named.st_ino
    }

    /// The error for a partial file at `partPath` that another process holds, or nil when there
    /// is none or nobody holds it.
    static func conflict(at partPath: String) -> SpateError? {
        var info = stat()
        guard lstat(partPath, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        switch holder(device: info.st_dev, inode: info.st_ino) {
        case .free: return nil
        case .held(let pid): return heldError(partPath, pid: pid)
        case .unknown: break
        }
        // No /proc/locks: ask the lock itself, shared so that a live owner is not disturbed
        // for longer than this call.
        let fd = Syscall.retryingEINTR { open(partPath, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC) }
        guard fd >= 0 else { return nil }
        defer { _ = close(fd) }
        return Syscall.retryingEINTR({ flock(fd, LOCK_SH | LOCK_NB) }) == 0 ? nil : heldError(partPath, pid: nil)
    }

    /// The error for a partial file that another process holds (pid when known).
    static func heldError(_ partPath: String, pid: Int32?) -> SpateError {
        let who = pid.map { "another spate process (pid \($0))" } ?? "another spate process"
        return SpateError.localIO("\(partPath) is locked by \(who), which is downloading to this output now; wait for it to finish or stop it")
    }

    /// The error for a partial file held by another descriptor, found through `fd`.
    static func heldError(_ partPath: String, fd: Int32) -> SpateError {
        var info = stat()
        guard fstat(fd, &info) == 0, case .held(let pid) = holder(device: info.st_dev, inode: info.st_ino) else {
            return heldError(partPath, pid: nil)
        }
        return heldError(partPath, pid: pid)
    }

    enum Holder: Equatable { case free, held(Int32?), unknown }

    /// Who holds a `flock` write lock on the inode, from `/proc/locks` (`.unknown` without it).
    static func holder(device: dev_t, inode: ino_t) -> Holder {
        guard let text = readProcLocks() else { return .unknown }
        return holder(in: text, device: device, inode: inode)
    }

    /// Parses `/proc/locks` lines such as `1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF`
    /// (waiters, marked `->`, are skipped).
    static func holder(in text: String, device: dev_t, inode: ino_t) -> Holder {
        let major = UInt64((UInt64(device) >> 8) & 0xfff) | UInt64((UInt64(device) >> 32) & ~UInt64(0xfff))
        let minor = UInt64(UInt64(device) & 0xff) | UInt64((UInt64(device) >> 12) & ~UInt64(0xff))
        var sameInodeElsewhere = false
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 6, fields[1] == "FLOCK", fields[3] == "WRITE" else { continue }
            let id = fields[5].split(separator: ":")
            guard id.count == 3, UInt64(id[2]) == UInt64(inode) else { continue }
            guard UInt64(id[0], radix: 16) == major, UInt64(id[1], radix: 16) == minor else {
                // btrfs and overlay file systems show another device here than stat does.
                sameInodeElsewhere = true
                continue
            }
            return .held(Int32(fields[4]))
        }
        return sameInodeElsewhere ? .unknown : .free
    }

    private static func readProcLocks() -> String? {
        let fd = Syscall.retryingEINTR { open("/proc/locks", O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else { return nil }
        defer { _ = close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { buffer in Syscall.retryingEINTR { read(fd, buffer.baseAddress, buffer.count) } }
            if n < 0 { return nil }
            if n == 0 { break }
            bytes += chunk[0..<n]
            if bytes.count > 64 << 20 { return nil }  // bounded: a machine with millions of locks
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
