import CSpateSystem
import Glibc

/// Makes many small finished files durable together: one `syncfs` per file system for every
/// file that finished meanwhile, then each gets its final name, then each directory is synced
/// once. A file is reported saved only after its bytes and its name are on disk.
///
/// Why: an fsync per file costs a journal commit of the file system each (milliseconds here), so
/// 10,000 small files would spend most of their time waiting for the disk one at a time. The
/// publisher's thread takes everything that queued while it was flushing, so the cost of one
/// flush is shared by as many files as arrive during it (group commit, as databases do), and
/// nothing waits for a timer. Large files keep their own fsync (`OutputFile.finish`): a flush of
/// the whole file system would wait for their gigabytes too.
final class GroupPublisher: @unchecked Sendable {
    private struct Item {
        let file: OutputFile
        let mode: mode_t
        let replaceExisting: Bool
        let continuation: CheckedContinuation<Void, any Error>
    }

    private let lock = ConditionLock()
    private var queue: [Item] = []  // guarded by `lock`
    private var stopping = false  // guarded by `lock`
    private var thread: LoopThread?  // guarded by `lock`; started by the first file
    /// Most files per flush (bounds one round's latency and the directory list).
    static let maxBatch = 4096

    /// Makes `file` (written, verified, marked) durable and gives it its final name.
    /// Throws what publishing throws (e.g. the final name exists); a stopped publisher throws
    /// `.cancelled`. On a throw the file is still the caller's to discard.
    func publish(_ file: OutputFile, mode: mode_t, replaceExisting: Bool) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let refused = lock.withLock { () -> Bool in
                if stopping { return true }
                queue.append(Item(file: file, mode: mode, replaceExisting: replaceExisting, continuation: continuation))
                if thread == nil { thread = LoopThread(name: "spate-publish") { [self] in self.run() } }
                lock.broadcast()
                return false
            }
            if refused { continuation.resume(throwing: SpateError(.cancelled, "the download session has been shut down")) }
        }
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
        while true {
            let batch: [Item]? = lock.withLock {
                while queue.isEmpty && !stopping { lock.wait() }
                if queue.isEmpty { return nil }
                let n = min(queue.count, Self.maxBatch)
                defer { queue.removeFirst(n) }
                return Array(queue[0..<n])
            }
            guard let batch else { return }
            flush(batch)
        }
    }

    private func flush(_ batch: [Item]) {
        // One flush per file system (almost always one).
        let devices = batch.map { item -> UInt64 in
            var info = stat()
            return fstat(item.file.fd, &info) == 0 ? UInt64(info.st_dev) : UInt64.max
        }
        var flushed: [UInt64: Int32] = [:]
        for (item, device) in zip(batch, devices) where flushed[device] == nil {
            flushed[device] = spate_sync_file_system(item.file.fd)
        }
        var directories = Set<String>()
        var results: [(CheckedContinuation<Void, any Error>, Result<Void, SpateError>)] = []
        for (item, device) in zip(batch, devices) {
            if let code = flushed[device], code != 0 {
                let error = Syscall.fail("syncfs", path: item.file.partPath, errno: code)
                results.append((item.continuation, .failure(error)))
                continue
            }
            do {
                try item.file.publish(mode: item.mode, replaceExisting: item.replaceExisting)
                directories.insert(FilePaths.directory(of: item.file.finalPath))
                results.append((item.continuation, .success(())))
            } catch {
                results.append((item.continuation, .failure(error)))
            }
        }
        for directory in directories { OutputFile.syncDirectory(of: directory + "/x") }
        for (continuation, result) in results { continuation.resume(with: result.mapError { $0 as any Error }) }
    }
}
