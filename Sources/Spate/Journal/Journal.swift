import Glibc
import Synchronization

/// The resume journal of one download: `FINAL.part.journal`, beside the partial file.
///
/// Group commit: completed ranges collect in memory; when the download hands over its running
/// requests' progress (every `commitInterval`), when `commitInterval` has passed with records
/// waiting, or when many records wait, the session's `JournalCommitter` thread fdatasyncs the
/// data file and only then appends one LZ4 frame with the records — the journal never claims
/// bytes that are not on disk. When the journal grows past a bound it is compacted: a snapshot of every record goes
/// to a temporary file, which is fsync'd and renamed over the journal, so a 100 GiB download
/// keeps a journal of kilobytes.
///
/// The download reports how far its running requests got with `noteInFlight`, which returns
/// the journal's `JournalStatus`: a failing commit reaches the download as a value it acts on
/// (a notice, then an error), never as silence.
final class Journal: @unchecked Sendable {
    let path: String
    let header: JournalCodec.Header
    let commitInterval: Duration
    private let dataFD: Int32
    private let dataPath: String

    /// Guards what the download hands over: records, in-flight progress, status, and when the
    /// next commit is due.
    private let lock = ConditionLock()
    private var pending: [HashedRange] = []
    private var inFlight: [HashedRange] = []
    /// Progress was handed over, or many records wait: commit at once.
    private var news = false
    private var nextDue: ContinuousClock.Instant
    private var status = JournalStatus()
    private var closed = false
    /// Set by `JournalCommitter.register`: asked to commit early when many records wait.
    private weak var committer: JournalCommitter?

    /// Serialises commits (the committer thread's, and the last one in `close`); guards the
    /// file state below.
    private let commitLock = ConditionLock()
    private var fd: Int32
    private var journalBytes: Int64 = 0
    private var snapshotBytes: Int64 = 0
    private var all = HashedRangeList()
    /// How far each in-flight request got, by its start offset, as last committed.
    private var progress: [Int64: HashedRange] = [:]
    /// Records of commits that failed: the next frame carries them again.
    private var unwritten: [HashedRange] = []

    static let commitEarlyAfterRecords = 4096
    /// Compact when the journal exceeds this and twice its last snapshot.
    static let compactAfterBytes: Int64 = 256 * 1024
    /// A journal bigger than this is refused when loading (it cannot be one of ours).
    static let maxLoadBytes = 256 << 20

    static func path(for finalPath: String) -> String { OutputFile.partPath(for: finalPath) + ".journal" }

    /// Writes a new journal atomically (temporary file, fsync, rename) holding `records`, which
    /// must already be on disk in the data file. Commits start once a committer registers it.
    init(path: String, header: JournalCodec.Header, records: [HashedRange], data: OutputFile,
         commitInterval: Duration = .seconds(1)) throws(SpateError) {
        self.path = path
        self.commitInterval = commitInterval
        self.header = header
        self.dataFD = data.fd
        self.dataPath = data.partPath
        self.all = HashedRangeList(records: records)
        self.fd = -1
        self.nextDue = .now + commitInterval
        fd = try writeSnapshot()
    }

    func attach(to committer: JournalCommitter) {
        lock.withLock { self.committer = committer }
    }

    /// Records bytes that are written (not yet durable): they are claimed at the next commit.
    func record(_ range: HashedRange) {
        let early = lock.withLock { () -> JournalCommitter? in
            pending.append(range)
            guard pending.count == Self.commitEarlyAfterRecords else { return nil }
            news = true
            return committer
        }
        early?.commitSoon()
    }

    /// Hands over the written prefixes of the requests in flight (committed at once, with the
    /// records waiting) and returns the journal's status.
    func noteInFlight(_ ranges: [HashedRange]) -> JournalStatus {
        let (current, committer) = lock.withLock { () -> (JournalStatus, JournalCommitter?) in
            inFlight = ranges
            news = true
            return (self.status, self.committer)
        }
        committer?.commitSoon()
        return current
    }

    /// Whether the committer should commit now.
    func wantsCommit(now: ContinuousClock.Instant) -> Bool {
        lock.withLock { news || (!pending.isEmpty && now >= nextDue) }
    }

    /// When records waiting become due; nil when none wait.
    var commitDue: ContinuousClock.Instant? {
        lock.withLock { pending.isEmpty ? nil : nextDue }
    }

    /// One commit of what was handed over since the last (called by the committer thread).
    func commitNow() {
        commitLock.withLock {
            let (batch, inFlight, closed) = lock.withLock { () -> ([HashedRange], [HashedRange], Bool) in
                defer {
                    pending.removeAll(keepingCapacity: true)
                    news = false
                    nextDue = .now + commitInterval
                }
                return (pending, self.inFlight, self.closed)
            }
            guard !closed, fd >= 0 else { return }
            guard !batch.isEmpty || !unwritten.isEmpty || inFlight.contains(where: { progress[$0.range.start] != $0 }) else { return }
            // Data first: the journal must never claim bytes a crash could lose. If the data
            // cannot be made durable, the records wait for the next commit.
            if Syscall.retryingEINTR({ fdatasync(dataFD) }) != 0 {
                let error = Syscall.fail("fdatasync", path: dataPath)
                lock.withLock {
                    pending.insert(contentsOf: batch, at: 0)
                    status.failed(error)
                }
                return
            }
            let result = Result { () throws(SpateError) in try commit(batch, inFlight: inFlight) }
            lock.withLock {
                switch result {
                case .success(nil): status.succeeded()
                case .success(let compaction?): status.compactionFailed(compaction)
                case .failure(let error): status.failed(error)  // the records wait in `unwritten`
                }
            }
        }
    }

    /// Commits what is pending and closes the file; the journal stays for a later resume.
    /// The caller unregisters it from the committer first.
    func close() {
        commitNow()
        commitLock.withLock {
            lock.withLock { closed = true }
            if fd >= 0 {
                rememberIdentity()
                _ = Glibc.close(fd)
                fd = -1
            }
        }
    }

    /// The journal file's device and inode when it was last open: `remove` unlinks the name
    /// only while it is still this file (once the download is published, another run may
    /// already have started a journal of its own at the same name).
    private var identity: (dev_t, ino_t)?

    private func rememberIdentity() {
        var info = stat()
        if fstat(fd, &info) == 0 { identity = (info.st_dev, info.st_ino) }
    }

    /// Closes and deletes the journal (after a verified finish, or when its data is worthless).
    func remove() {
        lock.withLock {
            pending.removeAll()
            inFlight.removeAll()
            closed = true
        }
        commitLock.withLock {
            if fd >= 0 {
                rememberIdentity()
                _ = Glibc.close(fd)
                fd = -1
            }
        }
        var info = stat()
        if let identity, lstat(path, &info) == 0, info.st_dev != identity.0 || info.st_ino != identity.1 { return }
        _ = unlink(path)
    }

    // MARK: - Committing (under `commitLock`)

    /// Appends one frame of `batch`, the changed in-flight prefixes and any records a failed
    /// commit left, after the data file was made durable; compacts the journal when it has
    /// grown. Returns the error of a compaction that failed after the records were committed.
    private func commit(_ batch: [HashedRange], inFlight: [HashedRange]) throws(SpateError) -> SpateError? {
        for r in batch {
            all.insert(r)
            progress.removeValue(forKey: r.range.start)
        }
        var changed: [HashedRange] = []
        for r in inFlight where progress[r.range.start] != r && !all.contains(r) {
            progress[r.range.start] = r
            changed.append(r)
        }
        unwritten += batch + changed
        let frame = JournalCodec.encodeFrame(.append, unwritten)
        let code = frame.withUnsafeBytes { Syscall.pwriteAll(fd, $0, at: journalBytes) }
        if code != 0 { throw Syscall.fail("write", path: path, errno: code) }
        if Syscall.retryingEINTR({ fdatasync(fd) }) != 0 { throw Syscall.fail("fdatasync", path: path) }
        journalBytes += Int64(frame.count)
        unwritten.removeAll(keepingCapacity: true)
        if journalBytes > Self.compactAfterBytes && journalBytes > 2 * snapshotBytes {
            do {
                let compacted = try writeSnapshot()
                _ = Glibc.close(fd)
                fd = compacted
            } catch {
                return error  // the appended journal stays valid; compaction is tried again
            }
        }
        return nil
    }

    /// Writes header + one snapshot frame of every record to `path.tmp`, fsyncs it and renames
    /// it over the journal. Returns the new journal's descriptor.
    private func writeSnapshot() throws(SpateError) -> Int32 {
        let temporary = path + ".tmp"
        _ = unlink(temporary)
        let tfd = Syscall.retryingEINTR { open(temporary, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
        guard tfd >= 0 else { throw Syscall.fail("create", path: temporary) }
        var bytes = JournalCodec.encodeHeader(header)
        bytes += JournalCodec.encodeFrame(.snapshot, all.records + progress.values.sorted { $0.range.start < $1.range.start })
        let code = bytes.withUnsafeBytes { Syscall.pwriteAll(tfd, $0, at: 0) }
        guard code == 0, Syscall.retryingEINTR({ fsync(tfd) }) == 0 else {
            let error = Syscall.fail("write", path: temporary, errno: code == 0 ? errno : code)
            _ = Glibc.close(tfd)
            _ = unlink(temporary)
            throw error
        }
        guard rename(temporary, path) == 0 else {
            let error = Syscall.fail("rename to", path: path)
            _ = Glibc.close(tfd)
            _ = unlink(temporary)
            throw error
        }
        OutputFile.syncDirectory(of: path)
        journalBytes = Int64(bytes.count)
        snapshotBytes = journalBytes
        return tfd
    }

    // MARK: - Loading

    /// Reads and decodes a journal. A missing file is nil; an unreadable or undecodable header
    /// is a `.journal` error; damaged or torn frames are dropped (reported in the contents).
    static func load(path: String) throws(SpateError) -> JournalCodec.Contents? {
        let fd = Syscall.retryingEINTR { open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw Syscall.fail("open", path: path)
        }
        defer { _ = Glibc.close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw Syscall.fail("stat", path: path) }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw SpateError(.journal, "\(path) is not a regular file") }
        guard info.st_size <= maxLoadBytes else {
            throw SpateError(.journal, "\(path) is \(info.st_size) bytes, too large to be a spate journal")
        }
        var bytes = [UInt8](repeating: 0, count: Int(info.st_size))
        let n = bytes.withUnsafeMutableBytes { Syscall.preadFully(fd, $0, at: 0) }
        guard n == bytes.count else { throw Syscall.fail("read", path: path) }
        let result = bytes.withUnsafeBytes { raw in Result { () throws(JournalCodec.DecodeError) in try JournalCodec.decode(raw) } }
        switch result {
        case .success(let contents): return contents
        case .failure(let error): throw SpateError(.journal, "\(path) is unusable: \(error.description)")
        }
    }
}
