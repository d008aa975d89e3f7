import CSpateSystem
import Glibc

/// Makes many small finished files durable together, with one `syncfs` per round for every
/// file that finished meanwhile. A file is reported saved only after its bytes and its name are
/// on disk.
///
/// Each round's flush does two jobs (a pipeline): it makes durable the bytes of the files
/// queued since the last round — which then get their final names — and the names given in the
/// previous round, whose files are then reported saved. So a file waits for two flushes, and
/// each flush is shared by every file that arrived while the previous one ran (group commit, as
/// databases do); nothing waits for a timer, and no directory needs an fsync of its own
/// (`syncfs` commits the file system's journal, renames included).
///
/// Why: an fsync per file costs a journal commit each (milliseconds here), so 10,000 small
/// files would spend most of their time waiting for the disk one at a time. Large files keep
/// their own fsync (`OutputFile.finish`): a flush of the whole file system would wait for their
/// gigabytes too.
final class GroupPublisher: @unchecked Sendable {
    private struct Item {
        let file: OutputFile
        let mode: mode_t
        let replaceExisting: Bool
        let completion: Completion
    }

    /// A small file's bytes still to be written (`save`): on this thread, at its round.
    private struct Unwritten {
        let body: [UInt8]
        let path: String
        /// The URL its mark names (`SavedMark`, computed on this thread: a SHA-256).
        let url: RemoteURL
        /// The digest its bytes must have, checked on this thread before they are written.
        let expected: Checksum?
        let mode: mode_t
        let completion: @Sendable (Result<Void, SpateError>) -> Void
    }

    /// Who hears that a file was saved (or why not): a task in `publish`, or a callback.
    private enum Completion {
        case task(CheckedContinuation<Void, any Error>)
        case callback(@Sendable (Result<Void, SpateError>) -> Void)

        func finish(_ error: SpateError?) {
            switch self {
            case .task(let continuation):
                if let error { continuation.resume(throwing: error) } else { continuation.resume() }
            case .callback(let completion):
                completion(error.map { .failure($0) } ?? .success(()))
            }
        }
    }

    private let lock = ConditionLock()
    /// Directory → its file system (`st_dev`), on the publisher's thread only: one flush per
    /// file system, without a `stat` per file (a batch writes many files to few directories).
    private var devices: [String: UInt64] = [:]
    private var queue: [Item] = []  // guarded by `lock`
    private var unwritten: [Unwritten] = []  // guarded by `lock`
    private var unwrittenBytes = 0  // guarded by `lock`
    /// The most bytes `save` holds for this thread to write; beyond, its callers write.
    let maxUnwrittenBytes: Int
    static let defaultMaxUnwrittenBytes = 16 << 20
    private var stopping = false  // guarded by `lock`
    private var thread: LoopThread?  // guarded by `lock`; started by the first file
    /// Most files per flush (bounds one round's latency and the directory list).
    static let maxBatch = 4096

    init(maxUnwrittenBytes: Int = GroupPublisher.defaultMaxUnwrittenBytes) {
        self.maxUnwrittenBytes = maxUnwrittenBytes
    }

    /// Makes `file` (written, verified, marked) durable and gives it its final name.
    /// Throws what publishing throws (e.g. the final name exists); a stopped publisher throws
    /// `.cancelled`. On a throw the file is still the caller's to discard.
    func publish(_ file: OutputFile, mode: mode_t, replaceExisting: Bool) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let refused = lock.withLock { () -> Bool in
                if stopping { return true }
                queue.append(Item(file: file, mode: mode, replaceExisting: replaceExisting, completion: .task(continuation)))
                startIfNeeded()
                return false
            }
            if refused { continuation.resume(throwing: Self.shutDown) }
        }
    }

    /// Takes `body` to check against `expected` and write to a new file for `path` on this
    /// thread (`OutputFile.smallFile`, marked as saved from `url`), then makes it durable and
    /// names it as `publish(_:mode:completion:)` does — unless `maxUnwrittenBytes` are already
    /// waiting to be written: then false, and the caller writes the file itself
    /// (`OutputFile.smallFile`) and publishes it.
    ///
    /// Why: a batch's small files arrive on the loop thread, whose time is every transfer's;
    /// this thread is idle between its flushes. (Written on the loop thread, 10,000 small files
    /// on tmpfs took 1.56-1.89 s and 28,000 context switches, against 1.30-1.71 s and 10,000
    /// here.) The bound keeps memory from growing while a flush is slow.
    func save(_ body: [UInt8], to path: String, from url: RemoteURL, verifying expected: Checksum?, mode: mode_t,
              completion: @escaping @Sendable (Result<Void, SpateError>) -> Void) -> Bool {
        enum Taken { case queued, full, refused }
        let taken = lock.withLock { () -> Taken in
            if stopping { return .refused }
            if unwrittenBytes + body.count > maxUnwrittenBytes { return .full }
            unwritten.append(Unwritten(body: body, path: path, url: url, expected: expected, mode: mode, completion: completion))
            unwrittenBytes += body.count
            startIfNeeded()
            return .queued
        }
        switch taken {
        case .queued: return true
        case .full: return false
        case .refused:
            completion(.failure(Self.shutDown))
            return true
        }
    }

    /// `publish` for a caller that is not a task (a batch's small files, `SmallFileFetch`):
    /// never replaces a file; `completion` is called on the publisher's thread. On a failure
    /// the file is discarded here.
    func publish(_ file: OutputFile, mode: mode_t, completion: @escaping @Sendable (Result<Void, SpateError>) -> Void) {
        let refused = lock.withLock { () -> Bool in
            if stopping { return true }
            queue.append(Item(file: file, mode: mode, replaceExisting: false, completion: .callback(completion)))
            startIfNeeded()
            return false
        }
        if refused {
            file.discard()
            completion(.failure(Self.shutDown))
        }
    }

    private static let shutDown = SpateError(.cancelled, "the download session has been shut down")

    /// (Under `lock`.) Starts the thread with the first file, and wakes it.
    private func startIfNeeded() {
        if thread == nil { thread = LoopThread(name: "spate-publish") { [self] in self.run() } }
        lock.broadcast()
    }

    /// Publishes what is queued, then stops the thread.
    func stop() {
        let thread = lock.withLock { () -> LoopThread? in
            stopping = true
            lock.broadcast()
            return self.thread
        }
        thread?.join()
    }

    private func run() {
        var named: [Item] = []  // renamed in the last round; saved once the next flush returns
        while true {
            let taken: ([Item], [Unwritten])? = lock.withLock {
                while queue.isEmpty && unwritten.isEmpty && named.isEmpty && !stopping { lock.wait() }
                if queue.isEmpty && unwritten.isEmpty && named.isEmpty { return nil }
                let n = min(queue.count, Self.maxBatch)
                let bodies = unwritten
                unwritten = []
                defer { queue.removeFirst(n) }
                return (Array(queue[0..<n]), bodies)
            }
            guard let (arrived, bodies) = taken else { return }
            var written: [Item] = []
            for body in bodies {
                if let item = write(body) { written.append(item) }
            }
            // Counted until every one is written (the array holds them until then).
            let bytes = bodies.reduce(0) { $0 + $1.body.count }
            lock.withLock { unwrittenBytes -= bytes }
            named = round(arrived: arrived + written, named: named)
        }
    }

    /// A small file's bytes in a new file, ready for its round; nil (its completion told why)
    /// when that failed.
    private func write(_ item: Unwritten) -> Item? {
        do throws(SpateError) {
            let file = try OutputFile.smallFile(item.body, for: item.path, from: item.url, verifying: item.expected, mode: item.mode)
            return Item(file: file, mode: item.mode, replaceExisting: false, completion: .callback(item.completion))
        } catch {
            item.completion(.failure(error))
            return nil
        }
    }

    private func device(of file: OutputFile) -> UInt64 {
        let directory = FilePaths.directory(of: file.finalPath)
        if let known = devices[directory] { return known }
        var info = stat()
        let device = fstat(file.fd, &info) == 0 ? UInt64(info.st_dev) : UInt64.max
        if devices.count > 4096 { devices.removeAll() }
        devices[directory] = device
        return device
    }

    /// One flush: `named` are then saved (or failed by the flush); `arrived` are then durable
    /// and get their names. Returns the ones named now.
    private func round(arrived: [Item], named: [Item]) -> [Item] {
        var flushed: [UInt64: Int32] = [:]  // device → syncfs result
        let devices = (named + arrived).map { ($0, device(of: $0.file)) }
        for (item, dev) in devices where flushed[dev] == nil { flushed[dev] = spate_sync_file_system(item.file.fd) }
        for (item, dev) in devices.prefix(named.count) {
            let code = flushed[dev] ?? 0
            if code == 0 {
                item.file.close()
                item.completion.finish(nil)
            } else {
                // The name was given last round, without replacing anything, but its bytes may
                // not be on disk: take it back, so a rerun fetches the file again instead of
                // trusting its mark — while the name is still this file (checked with the file
                // still open: another run may have put its own file there since).
                if !item.replaceExisting && OutputLock.isSameFile(item.file.fd, path: item.file.finalPath) {
                    _ = unlink(item.file.finalPath)
                }
                item.file.close()
                item.completion.finish(Syscall.fail("syncfs", path: item.file.finalPath, errno: code))
            }
        }
        var nowNamed: [Item] = []
        for (item, dev) in devices.dropFirst(named.count) {
            let code = flushed[dev] ?? 0
            do throws(SpateError) {
                if code != 0 { throw Syscall.fail("syncfs", path: item.file.partPath, errno: code) }
                try item.file.publish(mode: item.mode, replaceExisting: item.replaceExisting, close: false)
                nowNamed.append(item)
            } catch {
                // A task's file is its caller's to discard; a callback's is this thread's.
                if case .callback = item.completion { item.file.discard() }
                item.completion.finish(error)
            }
        }
        return nowNamed
    }
}
