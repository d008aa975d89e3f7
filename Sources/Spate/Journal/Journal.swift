import Glibc
import Synchronization

/// The resume journal of one download: `FINAL.part.journal`, beside the partial file.
///
/// Group commit, on its own thread: completed ranges collect in memory; every
/// `commitInterval` (or sooner when many wait) the data file is fdatasync'd and only then is
/// one LZ4 frame with their records appended — the journal never claims bytes that are not on
/// disk. When the journal grows past a bound it is compacted: a snapshot of every record goes to
/// a temporary file, which is fsync'd and renamed over the journal, so a 100 GiB download keeps
/// a journal of kilobytes.
final class Journal: @unchecked Sendable {
    let path: String
    let header: JournalCodec.Header
    private let dataFD: Int32
    private let dataPath: String
    private var fd: Int32  // touched by the journal thread only (and by init/close)
    private var journalBytes: Int64 = 0
    private var all = HashedRangeList()
    private let lock = ConditionLock()
    private var pending: [HashedRange] = []  // guarded by `lock`
    /// How far each in-flight request got, by its start offset; replaced at every commit.
    private var progress: [Int64: HashedRange] = [:]  // journal thread only
    /// Reports the written prefixes of the requests in flight (called at each commit).
    private var inFlightProgress: @Sendable () -> [HashedRange] = { [] }  // guarded by `lock`
    private let commitInterval: Duration
    private var stopping = false  // guarded by `lock`
    private var commitRequested = false  // guarded by `lock`
    private var failure: SpateError?  // guarded by `lock`
    private var thread: LoopThread?

    static let commitEarlyAfterRecords = 4096
    /// Compact when the journal exceeds this and twice its last snapshot.
    static let compactAfterBytes: Int64 = 256 * 1024
    /// A journal bigger than this is refused when loading (it cannot be one of ours).
    static let maxLoadBytes = 256 << 20
    private var snapshotBytes: Int64 = 0

    static func path(for finalPath: String) -> String { OutputFile.partPath(for: finalPath) + ".journal" }

    /// Writes a new journal atomically (temporary file, fsync, rename) holding `records`, which
    /// must already be on disk in the data file, and starts the commit thread.
    init(path: String, header: JournalCodec.Header, records: [HashedRange], data: OutputFile,
         commitInterval: Duration = .seconds(1)) throws(SpateError) {
        self.path = path
        self.commitInterval = commitInterval
        self.header = header
        self.dataFD = data.fd
        self.dataPath = data.partPath
        self.all = HashedRangeList(records: records)
        self.fd = -1
        fd = try writeSnapshot()
        thread = LoopThread(name: "spate-journal") { [self] in self.run() }
    }

    /// Records bytes that are written (not yet durable): they are claimed at the next commit.
    func record(_ range: HashedRange) {
        lock.withLock {
            pending.append(range)
            if pending.count >= Self.commitEarlyAfterRecords {
                commitRequested = true
                lock.broadcast()
            }
        }
    }

    /// Sets where the written prefixes of in-flight requests come from.
    func reportInFlightProgress(_ provider: @escaping @Sendable () -> [HashedRange]) {
        lock.withLock { inFlightProgress = provider }
    }

    /// The first commit failure, if any (the download continues; resume then loses progress).
    var commitFailure: SpateError? { lock.withLock { failure } }

    /// Commits what is pending and stops the thread; the journal stays for a later resume.
    func close() {
        lock.withLock {
            stopping = true
            lock.broadcast()
        }
        thread?.join()
        thread = nil
        if fd >= 0 {
            _ = Glibc.close(fd)
            fd = -1
        }
    }

    /// Stops and deletes the journal (after a verified finish, or when its data is worthless).
    func remove() {
        lock.withLock { pending.removeAll() }
        close()
        _ = unlink(path)
    }

    // MARK: - The commit thread

    private func run() {
        while true {
            let (batch, exit): ([HashedRange], Bool) = lock.withLock {
                if !stopping && !commitRequested {
                    _ = lock.wait(until: ConditionLock.deadline(afterMilliseconds: commitInterval.milliseconds))
                }
                commitRequested = false
                let batch = pending
                pending.removeAll(keepingCapacity: true)
                return (batch, stopping)
            }
            // Requests in flight report how far they got: their prefixes are claimed too.
            let inFlight = lock.withLock { inFlightProgress }()
            if !batch.isEmpty || inFlight.contains(where: { progress[$0.range.start] != $0 }) {
                do { try commit(batch, inFlight: inFlight) } catch {
                    lock.withLock { if failure == nil { failure = error } }
                }
            }
            if exit { return }
        }
    }

    private func commit(_ batch: [HashedRange], inFlight: [HashedRange]) throws(SpateError) {
        // Data first: the journal must never claim bytes a crash could lose.
        if Syscall.retryingEINTR({ fdatasync(dataFD) }) != 0 { throw Syscall.fail("fdatasync", path: dataPath) }
        for r in batch {
            all.insert(r)
            progress.removeValue(forKey: r.range.start)
        }
        var changed: [HashedRange] = []
        for r in inFlight where progress[r.range.start] != r && !all.contains(r) {
            progress[r.range.start] = r
            changed.append(r)
        }
        let frame = JournalCodec.encodeFrame(.append, batch + changed)
        let code = frame.withUnsafeBytes { Syscall.pwriteAll(fd, $0, at: journalBytes) }
        if code != 0 { throw Syscall.fail("write", path: path, errno: code) }
        journalBytes += Int64(frame.count)
        if Syscall.retryingEINTR({ fdatasync(fd) }) != 0 { throw Syscall.fail("fdatasync", path: path) }
        if journalBytes > Self.compactAfterBytes && journalBytes > 2 * snapshotBytes {
            let old = fd
            fd = try writeSnapshot()
            _ = Glibc.close(old)
        }
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
