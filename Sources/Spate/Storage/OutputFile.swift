import CSpateSystem
import Glibc

/// The partial output of one download: `FINAL.part`, written in place with `pwrite` and renamed
/// to its final name only after the content is complete and verified.
///
/// Why this shape: the final name must never hold a wrong or incomplete file, so data goes to a
/// separate name created with `O_EXCL | O_NOFOLLOW` (a planted symlink or an existing file is
/// never followed or clobbered) and mode 0600 (nobody else reads a half-written download); the
/// rename is atomic and is followed by an fsync of the directory so it survives a power cut.
///
/// The file descriptor is shared read-only across threads (`pwrite`/`pread` are thread-safe on
/// distinct ranges); ownership and closing belong to the engine.
public final class OutputFile: @unchecked Sendable {
    public let finalPath: String
    public let partPath: String
    /// The descriptor, open for reading and writing (-1 for a stream or a discard).
    let fd: Int32
    private var closed = false
    /// Where the bytes go instead of a file: an ordered stream (`-o -`, a FIFO, a device).
    let stream: StreamOutput?
    /// Bytes are thrown away (`-o /dev/null`, `--discard`): the benchmark path, nothing is
    /// ordered, buffered or written.
    let discards: Bool
    /// A file with no name until `publish` links it at `finalPath` (`init(unnamedFor:)`);
    /// `partPath` is then the final path, for messages.
    let unnamed: Bool

    /// The partial-file name for a final path: `NAME.part`, beside it.
    ///
    /// Any name the file system takes (255 bytes) must be downloadable, and the journal's
    /// temporary name adds `.part.journal.tmp` (17 bytes) to it. When that does not fit, the
    /// temporary names use the name's first bytes (cut on a character boundary) and a hash
    /// of the whole name instead: `NAME-PREFIX~0123456789abcdef.part`. Deterministic, so a
    /// rerun finds them.
    public static func partPath(for finalPath: String) -> String {
        let slash = finalPath.lastIndex(ofASCII: UInt8(ascii: "/"))
        let nameStart = slash.map { finalPath.utf8.index(after: $0) } ?? finalPath.utf8.startIndex
        let name = finalPath.utf8[nameStart...]
        guard name.count > maxNameBytesKeptWhole else { return finalPath + ".part" }
        let hash = BatchPath.stableHash(Substring(finalPath[nameStart...]))
        var hex = String(hash, radix: 16)
        hex = String(repeating: "0", count: 16 - hex.count) + hex
        // Room for "~" + 16 hex digits + ".part.journal.tmp".
        var keep = maxNameBytesKeptWhole - 17
        let bytes = Array(name)
        while keep > 0 && (bytes[keep] & 0xC0) == 0x80 { keep -= 1 }  // not inside a character
        let prefix = String(decoding: bytes[0..<keep], as: UTF8.self)
        return String(finalPath[..<nameStart]) + prefix + "~" + hex + ".part"
    }

    /// The longest file name whose temporary names fit in 255 bytes as they are.
    static let maxNameBytesKeptWhole = 255 - ".part.journal.tmp".utf8.count

    /// What to do when the partial file already exists.
    enum Replace {
        /// Refuse (another download in progress, or someone else's file).
        case never
        /// Remove it (`--force`).
        case always
        /// Remove it if it is a leftover of spate's — marked `user.spate.partial` when it was
        /// created, or empty — and no process holds its lock. Else refuse (a batch's rerun).
        case leftover
    }

    /// Creates a new partial file beside `finalPath`.
    /// - Parameter replacePartial: remove an existing partial file first (`--force`).
    convenience init(creatingFor finalPath: String, replacePartial: Bool) throws(SpateError) {
        try self.init(creatingFor: finalPath, replacing: replacePartial ? .always : .never)
    }

    /// Creates a new partial file beside `finalPath`, marked as spate's and locked
    /// (`OutputLock`) for as long as it is open, so another run can tell a live download from a
    /// leftover, and never takes over or removes a live one.
    /// - Parameter mark: the note set right after creation: `user.spate.partial` by default;
    ///   a small file written at once passes its final `SavedMark` (one attribute, not two).
    init(creatingFor finalPath: String, replacing: Replace, mark: SavedMark? = nil) throws(SpateError) {
        self.finalPath = finalPath
        let partPath = OutputFile.partPath(for: finalPath)
        self.partPath = partPath
        func create() -> Int32 {
            Syscall.retryingEINTR { open(partPath, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
        }
        var fd = create()
        if fd < 0 && errno == EEXIST && replacing != .never {
            // Replaced only when one is there (no unlink on the common path: one lookup less
            // per file, which a batch of small files notices).
            try Self.removeExisting(partPath, onlyLeftover: replacing == .leftover)
            fd = create()
        }
        if fd < 0 {
            let code = errno
            if code == EEXIST {
                if let conflict = OutputLock.conflict(at: partPath) { throw conflict }
                throw SpateError.localIO("\(partPath) already exists (left by an earlier run?); remove it or use --force")
            }
            throw Syscall.fail("create", path: partPath, errno: code)
        }
        // Another run may have removed or opened the new file between the create and the
        // lock (it found it unlocked): then it is theirs, and this run stops.
        guard OutputLock.tryLock(fd), OutputLock.isSameFile(fd, path: partPath) else {
            let error = OutputLock.heldError(partPath, fd: fd)
            _ = Glibc.close(fd)
            throw error
        }
        if let mark { mark.write(to: fd) } else { SavedMark.markPartial(fd) }
        self.fd = fd
        self.stream = nil
        self.discards = false
        self.unnamed = false
    }

    /// Whether this process can name a file it opened without one: through /proc/self/fd
    /// (linking by descriptor needs a capability that containers usually drop).
    private static let canNameUnnamedFiles = access("/proc/self/fd", X_OK) == 0

    /// A small file written at once (a batch's, `SmallFileFetch`): `body` checked against
    /// `expected`, then written to a file with no name where the system allows (nothing to
    /// replace at `finalPath`), else to a partial file, which replaces a leftover of spate's;
    /// marked as saved from `url`. Throws with nothing left behind.
    static func smallFile(_ body: [UInt8], for finalPath: String, from url: RemoteURL, verifying expected: Checksum?,
                          mode: mode_t) throws(SpateError) -> OutputFile {
        try expected?.verify(body)
        let mark = SavedMark(size: Int64(body.count), url: url)
        let file: OutputFile
        if let unnamed = OutputFile(unnamedFor: finalPath, mode: mode, mark: mark) {
            file = unnamed
        } else {
            file = try OutputFile(creatingFor: finalPath, replacing: .leftover, mark: mark)
        }
        let code = body.withUnsafeBytes { file.write($0, at: 0) }
        if code != 0 {
            file.discard()
            throw Syscall.fail("write", path: file.partPath, errno: code)
        }
        return file
    }

    /// A new file with no name yet (`O_TMPFILE`) in `finalPath`'s directory, marked `mark`:
    /// a small file written at once, named by `publish` once its bytes are durable.
    ///
    /// Why: nobody else can open, lock, replace or remove a file without a name, so none of a
    /// partial file's checks are needed (the lock, the identity checks before writing and
    /// before renaming, the mode change), and a run killed before the name leaves nothing
    /// behind; the link at the end fails if the name exists (no replacing, as
    /// `RENAME_NOREPLACE`). With many small files, the partial file's system calls were a
    /// large part of each file's cost.
    ///
    /// Nil where the kernel or file system has no `O_TMPFILE`, or the file could not be named
    /// later (no /proc): the caller creates a partial file instead, which also reports any
    /// other failure with its path.
    init?(unnamedFor finalPath: String, mode: mode_t, mark: SavedMark) {
        guard Self.canNameUnnamedFiles else { return nil }
        let fd = spate_open_unnamed(FilePaths.directory(of: finalPath), UInt32(mode))
        guard fd >= 0 else { return nil }
        mark.write(to: fd)
        self.finalPath = finalPath
        self.partPath = finalPath
        self.fd = fd
        self.stream = nil
        self.discards = false
        self.unnamed = true
    }

    /// Removes the partial file at `partPath` so a new one can be created — unless another
    /// process holds it (a live download: never removed, even with `--force`), it is not a
    /// regular file, or `onlyLeftover` and it is not spate's (marked `user.spate.partial`, or
    /// empty: a run killed between creating and marking it; removing it loses nothing).
    /// The lock is held while the name is removed, so no other run can take the file meanwhile.
    private static func removeExisting(_ partPath: String, onlyLeftover: Bool) throws(SpateError) {
        let fd = Syscall.retryingEINTR { open(partPath, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC) }
        guard fd >= 0 else {
            if errno == ENOENT { return }
            throw Syscall.fail("open", path: partPath)
        }
        defer { _ = Glibc.close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            throw SpateError.localIO("\(partPath) is not a regular file; spate never removes it")
        }
        guard OutputLock.tryLock(fd) else { throw OutputLock.heldError(partPath, fd: fd) }
        if onlyLeftover && info.st_size != 0 && !SavedMark.isPartialMarked(path: partPath) {
            throw SpateError.localIO("\(partPath) already exists and spate did not create it; remove it or use --force")
        }
        guard OutputLock.isSameFile(fd, path: partPath) else {
            if let conflict = OutputLock.conflict(at: partPath) { throw conflict }
            throw SpateError.localIO("\(partPath) changed while spate replaced it; try again")
        }
        if unlink(partPath) != 0 && errno != ENOENT { throw Syscall.fail("remove", path: partPath) }
    }

    /// Opens an existing partial file to resume it (never following a symlink), and takes its
    /// lock: two runs must never write one partial file.
    init(resumingFor finalPath: String, size: Int64) throws(SpateError) {
        self.finalPath = finalPath
        let partPath = OutputFile.partPath(for: finalPath)
        self.partPath = partPath
        let fd = Syscall.retryingEINTR { open(partPath, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC) }
        guard fd >= 0 else { throw Syscall.fail("open", path: partPath) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            _ = Glibc.close(fd)
            throw SpateError.localIO("\(partPath) is not a regular file")
        }
        guard OutputLock.tryLock(fd), OutputLock.isSameFile(fd, path: partPath) else {
            let error = OutputLock.heldError(partPath, fd: fd)
            _ = Glibc.close(fd)
            throw error
        }
        self.fd = fd
        self.stream = nil
        self.discards = false
        self.unnamed = false
    }

    /// An output that is not a file: an ordered stream, or a discard (`stream` nil).
    init(streamingTo stream: StreamOutput?, name: String) {
        finalPath = name
        partPath = name
        fd = -1
        self.stream = stream
        discards = stream == nil
        unnamed = false
    }

    deinit {
        if !closed && fd >= 0 { _ = Glibc.close(fd) }
    }

    /// Removes the journal of an earlier download at this path. Called only while holding the
    /// new partial file's lock: the journal belongs to whoever holds the partial file.
    func removeStaleJournal() throws(SpateError) {
        let path = Journal.path(for: finalPath)
        if unlink(path) != 0 && errno != ENOENT { throw Syscall.fail("remove", path: path) }
    }

    /// Keeps only the records whose bytes on disk still match their CRC.
    func verify(_ records: [HashedRange]) -> [HashedRange] {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        return records.filter { record in
            var crc: UInt32 = 0
            var offset = record.range.start
            while offset < record.range.end {
                let n = Int(min(Int64(buffer.count), record.range.end - offset))
                let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
                guard Syscall.preadFully(fd, slice, at: offset) == n else { return false }
                crc = CRC32.checksum(UnsafeRawBufferPointer(slice), continuing: crc)
                offset += Int64(n)
            }
            return crc == record.crc
        }
    }

    /// Reserves `size` bytes so a full disk fails now rather than at 99 %.
    /// Falls back to `ftruncate` where the file system cannot preallocate.
    ///
    /// On tmpfs, `fallocate` zeroes every page (0.4 s per GiB measured here) and contends with
    /// concurrent writes on the inode lock, so there the free space is checked instead.
    func preallocate(_ size: Int64) throws(SpateError) {
        guard size > 0 else { return }
        if spate_is_memory_filesystem(fd) != 0 {
            var vfs = statvfs()
            var info = stat()
            // A file system that reports no blocks at all (ramfs) has no limit to check.
            if fstatvfs(fd, &vfs) == 0, vfs.f_blocks > 0, fstat(fd, &info) == 0 {
                // Only the bytes not yet on disk need room: a resume after a full disk asks
                // for what is missing, not for the whole file again.
                let free = Int64(vfs.f_bavail) * Int64(vfs.f_frsize)
                let allocated = Int64(info.st_blocks) * 512
                let needed = max(0, size - allocated)
                if free < needed {
                    throw SpateError.localIO("not enough space for \(partPath): \(needed) more bytes needed, \(free) free")
                }
            }
            if ftruncate(fd, off_t(size)) != 0 { throw Syscall.fail("truncate", path: partPath) }
            return
        }
        let rc = posix_fallocate(fd, 0, off_t(size))
        if rc == 0 { return }
        if rc == EOPNOTSUPP || rc == EINVAL || rc == ENOSYS {
            if ftruncate(fd, off_t(size)) != 0 { throw Syscall.fail("truncate", path: partPath) }
            return
        }
        throw Syscall.fail("preallocate \(size) bytes for", path: partPath, errno: rc)
    }

    /// Sets the length (used when a single stream ends at a size not known up front).
    func truncate(to size: Int64) throws(SpateError) {
        if ftruncate(fd, off_t(size)) != 0 { throw Syscall.fail("truncate", path: partPath) }
    }

    /// Writes `buffer` at `offset`; called from the transfer loop's write path.
    @inline(__always)
    func write(_ buffer: UnsafeRawBufferPointer, at offset: Int64) -> Int32 {
        if let stream { return stream.write(buffer, at: offset) }
        if discards { return 0 }
        return Syscall.pwriteAll(fd, buffer, at: offset)
    }

    /// Flushes the data (not necessarily the metadata) to stable storage.
    func syncData() throws(SpateError) {
        if Syscall.retryingEINTR({ fdatasync(fd) }) != 0 { throw Syscall.fail("fdatasync", path: partPath) }
    }

    /// Makes the verified file durable and gives it its final name.
    ///
    /// Order matters: fsync the data, set the final permissions, rename, then fsync the directory
    /// so the rename itself survives a crash.
    /// - Parameters:
    ///   - mode: final permission bits (0666 minus the umask, like any new file).
    ///   - replaceExisting: whether an existing final file may be replaced (`--force`).
    ///   - mark: the note a rerun of a batch reads to skip the file (see `SavedMark`).
    func finish(mode: mode_t, replaceExisting: Bool, mark: SavedMark?) throws(SpateError) {
        mark?.write(to: fd)
        if Syscall.retryingEINTR({ fsync(fd) }) != 0 { throw Syscall.fail("fsync", path: partPath) }
        try publish(mode: mode, replaceExisting: replaceExisting)
        OutputFile.syncDirectory(of: finalPath)
    }

    /// Gives the file (already durable: fsync'd, or flushed with its whole file system by
    /// `GroupPublisher`) its final name and closes it unless `close` is false. The directory is
    /// not synced here.
    func publish(mode: mode_t, replaceExisting: Bool, close: Bool = true) throws(SpateError) {
        if unnamed {
            // Created with its mode; a link never replaces (and an unnamed file is made only
            // when nothing may be replaced).
            precondition(!replaceExisting, "an unnamed file is never made to replace one")
            let code = spate_link_unnamed(fd, finalPath)
            if code == EEXIST { throw SpateError.localIO("\(finalPath) already exists; use --force to replace it") }
            if code != 0 { throw Syscall.fail("link", path: finalPath, errno: code) }
            if close { self.close() }
            return
        }
        // Publishing is by name: the name must still be this file (spate runs never touch a
        // locked partial file; this catches anyone else who did).
        guard OutputLock.isSameFile(fd, path: partPath) else {
            throw SpateError.localIO("\(partPath) was removed or replaced by another process while spate wrote it; nothing was saved")
        }
        if fchmod(fd, mode) != 0 { throw Syscall.fail("chmod", path: partPath) }
        if replaceExisting {
            // --force replaces files, never a device, FIFO, socket or directory: a rename over
            // /dev/null run as root would destroy the system's null device.
            if let refusal = Self.nonRegularRefusal(finalPath) { throw refusal }
            if rename(partPath, finalPath) != 0 { throw Syscall.fail("rename to", path: finalPath) }
        } else {
            // RENAME_NOREPLACE fails with EEXIST instead of replacing, in one step: no window
            // where another file created at the final name meanwhile is silently overwritten.
            let code = spate_rename_noreplace(partPath, finalPath)
            if code == EEXIST {
                throw SpateError.localIO("\(finalPath) already exists; use --force to replace it")
            }
            if code != 0 { try linkThenUnlink(after: code) }
        }
        if close { self.close() }
    }

    /// The error for an existing `path` that is neither a regular file nor a symbolic link
    /// (a rename replaces the link itself), or nil.
    static func nonRegularRefusal(_ path: String) -> SpateError? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        let type = info.st_mode & S_IFMT
        guard type != S_IFREG && type != S_IFLNK else { return nil }
        return SpateError.localIO("\(path) is not a regular file; spate never replaces it, even with --force")
    }

    /// Where the file system has no RENAME_NOREPLACE: link(2), which also fails with EEXIST
    /// instead of replacing, then unlink the partial name.
    private func linkThenUnlink(after renameError: Int32) throws(SpateError) {
        guard renameError == EINVAL || renameError == ENOSYS || renameError == ENOTSUP || renameError == EOPNOTSUPP else {
            throw Syscall.fail("rename to", path: finalPath, errno: renameError)
        }
        if link(partPath, finalPath) != 0 {
            let code = errno
            if code == EEXIST {
                throw SpateError.localIO("\(finalPath) already exists; use --force to replace it")
            }
            if code == EPERM || code == ENOTSUP || code == EOPNOTSUPP || code == EXDEV || code == EMLINK {
                // File systems with neither: check, then rename.
                if access(finalPath, F_OK) == 0 {
                    throw SpateError.localIO("\(finalPath) already exists; use --force to replace it")
                }
                if rename(partPath, finalPath) != 0 { throw Syscall.fail("rename to", path: finalPath) }
            } else {
                throw Syscall.fail("link", path: finalPath, errno: code)
            }
        } else {
            _ = unlink(partPath)
        }
    }

    /// Closes and deletes the partial file (after a failure that leaves nothing to resume).
    func discard() {
        // By name, so only while the name is still this file (an unnamed file has none: the
        // kernel frees it at the close).
        if !closed && fd >= 0 && !unnamed && OutputLock.isSameFile(fd, path: partPath) { _ = unlink(partPath) }
        close()
    }

    func close() {
        guard !closed else { return }
        closed = true
        if fd >= 0 { _ = Glibc.close(fd) }
    }

    /// Best effort: a directory fsync can fail on some file systems, and the data is already
    /// safe under its final name in that case.
    static func syncDirectory(of path: String) {
        let dir = FilePaths.directory(of: path)
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            _ = fsync(dfd)
            _ = Glibc.close(dfd)
        }
    }
}
