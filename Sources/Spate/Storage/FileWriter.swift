import CSpateSystem
import Glibc
import Synchronization

/// Moves `pwrite` off the transfer loop: the loop copies received bytes into staging buffers
/// and hands full buffers to this writer's own thread. One writer serves every download of a
/// session (each buffer says which file it goes to: `WriteTarget`).
///
/// Why: libcurl hands the body over in pieces of at most 16 KiB (CURL_MAX_WRITE_SIZE), so writing
/// from the callback costs one syscall per 16 KiB and runs the page-cache copy on the loop
/// thread. Staging costs one extra `memcpy` (cheap, cache-resident) and gives one `pwrite` per
/// 64 KiB on a second core, in parallel with receiving. A blocked write (disk congestion) no
/// longer stalls every connection.
///
/// Bounded: a fixed pool of buffers, sized so every sink can hold one and a few more are being
/// written. When none is free the loop waits for one (the writer is then the bottleneck, and
/// waiting is the backpressure: sockets are not read, TCP slows the senders). Only after
/// `acquireTimeoutMilliseconds` without a free buffer (a stuck disk) does the caller write
/// synchronously. Why not write synchronously at once: two threads writing one file contend
/// on its inode lock — measured here as seconds of spinning in `rwsem_spin_on_owner` on tmpfs.
///
/// The writer also starts writeback early (`sync_file_range`) every `writebackInterval` bytes so
/// the final fsync has little left to wait for.
final class FileWriter: @unchecked Sendable {
    /// A staging buffer owned by one sink at a time.
    struct Buffer {
        let memory: UnsafeMutableRawBufferPointer
        var count = 0
        var space: Int { memory.count - count }
    }

    private struct Job {
        var buffer: Buffer
        var offset: Int64
        var target: WriteTarget
        var group: WriteGroup
    }

    private struct State {
        var free: [Buffer] = []
        var jobs: [Job] = []
        /// Buffers submitted and not yet given back by the writer (queued or being written).
        var atWriter = 0
        /// Bytes queued since the writer last went to sleep (see `wakeBytes`).
        var queuedBytes = 0
        /// The writer is waiting for work.
        var writerAsleep = false
        var stopping = false
        /// Files being written (`attach`); with none the writer sleeps until one comes.
        var attached = 0
    }

    static let defaultBufferBytes = 64 * 1024
    /// The largest buffer size (`DownloadOptions.stagingBufferBytes`).
    let bufferBytes: Int
    /// The size new buffers get: smaller when many connections run, so the pool's memory stays
    /// near 1 MiB whatever the count (set by the scheduler as the connection count changes).
    let preferredBufferBytes: Atomic<Int>
    static let writebackInterval: Int64 = 64 << 20
    private let lock = ConditionLock()
    private var state = State()  // guarded by `lock`
    /// Every buffer allocated so far (guarded by `lock`); allocated on demand, up to `capacity`,
    /// so a download that settles on few connections uses little memory.
    private var all: [UnsafeMutableRawBufferPointer] = []
    /// The most buffers that may exist: one per running request plus a few being written
    /// (set by the scheduler as the connection count changes; guarded by `lock`).
    private var capacity: Int
    private var thread: LoopThread?
    /// Producers waiting in `acquire`: the writer then returns each buffer as soon as it is
    /// written instead of after its whole batch (a slow disk must not make them wait longer).
    private let producersWaiting = Atomic<Int>(0)

    /// - Parameter buffers: the pool size (each `bufferBytes`).
    init(buffers: Int, bufferBytes: Int = FileWriter.defaultBufferBytes) {
        self.bufferBytes = bufferBytes
        self.preferredBufferBytes = Atomic(bufferBytes)
        capacity = max(1, buffers)
        thread = LoopThread(name: "spate-writer") { [self] in self.run() }
    }

    deinit {
        for memory in all { memory.deallocate() }
    }

    static let acquireTimeoutMilliseconds = 500
    /// The sleeping writer is woken once this much is queued, not for every buffer.
    ///
    /// Why: the writer drains its queue faster than the network fills it, so with a wake-up per
    /// buffer it slept and was woken about once per 64 KiB (`perf`: 8–10 % of spate's CPU in
    /// futex wake-ups and context switches). A request's last buffer (`flush`), a producer
    /// waiting for a free buffer, and `sleepMilliseconds` bound how long anything waits.
    static let wakeBytes = 256 * 1024
    /// The longest the writer sleeps while fewer than `wakeBytes` are queued. An idle writer
    /// (stalls, backoff) so wakes 200 times a second and finds nothing: microseconds each. With
    /// no download attached (an idle session) it sleeps until one attaches.
    static let sleepMilliseconds = 5

    /// A download starts writing (the idle writer then polls its queue; see `sleepMilliseconds`).
    func attach() {
        lock.withLock {
            state.attached += 1
            lock.broadcast()
        }
    }

    /// A download stopped writing (its requests have all flushed).
    func detach() {
        lock.withLock { state.attached -= 1 }
    }

    /// Staging buffers share about 1 MiB: 64 KiB each up to 16 connections, 16 KiB from 64.
    static func stagingBytes(connections: Int) -> Int {
        min(64 * 1024, max(16 * 1024, 1024 * 1024 / max(1, connections)))
    }

    /// Sets the pool for `connections` running requests: each holds one buffer, and 512 KiB
    /// (at least 8 buffers) more can be in the writer's queue. A few fast connections need
    /// depth (measured: 4 connections with 8 buffers ran at half speed, with 12 at full speed);
    /// 1 MiB of depth cost 0.6 MiB more peak RSS at 16 connections for no measurable speed
    /// (7 runs, 1 GiB uncapped). Idle buffers above the new count are freed now, the others as
    /// they come back.
    func resize(forConnections connections: Int, bufferBytes preferred: Int) {
        lock.withLock {
            capacity = connections + max(8, (512 << 10) / max(1, preferred))
            preferredBufferBytes.store(preferred, ordering: .relaxed)
            trimLocked()
            lock.broadcast()
        }
    }

    /// A free staging buffer; waits up to `acquireTimeoutMilliseconds` for one, then returns
    /// nil (write synchronously then).
    func acquire() -> Buffer? {
        lock.withLock {
            if state.stopping { return nil }  // the thread is gone or going: write synchronously
            let deadline = ConditionLock.deadline(afterMilliseconds: Self.acquireTimeoutMilliseconds)
            while true {
                if let free = state.free.popLast() { return free }
                // Past the capacity, wait only while the writer holds buffers: then it is the
                // bottleneck and one comes back soon. Holding none, every buffer sits in a sink
                // (the connection count fell while more requests were in flight): nothing would
                // come back until some request ends, and each wait of the loop thread stalls
                // every connection — measured, an 8 GiB download crawled at 33 KB/s for
                // minutes. Allocating is bounded: a sink holds at most one buffer.
                if all.count < capacity || state.atWriter == 0 {
                    let size = min(bufferBytes, preferredBufferBytes.load(ordering: .relaxed))
                    let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
                    all.append(memory)
                    return Buffer(memory: memory)
                }
                // Every buffer is queued or staged: the writer must not sleep on a short queue.
                if state.writerAsleep && !state.jobs.isEmpty { lock.broadcast() }
                // Woken by a release or a resize; either may make room.
                producersWaiting.add(1, ordering: .relaxed)
                defer { producersWaiting.subtract(1, ordering: .relaxed) }
                if !lock.wait(until: deadline) { return nil }
            }
        }
    }

    /// Queues `buffer` to be written at `offset`; `group` learns when it is done. A sleeping
    /// writer is woken once `wakeBytes` are queued; call `wake` when someone waits for it.
    /// - Returns: a free buffer for the caller's next bytes when one is ready (nil: `acquire`),
    ///   so the loop thread takes the lock once per buffer, not twice.
    @discardableResult
    func submit(_ buffer: Buffer, at offset: Int64, to target: WriteTarget, group: WriteGroup, wantsNext: Bool = false) -> Buffer? {
        group.add()
        let queued: Buffer?? = lock.withLock {
            // Stopping (the session shuts down while a request flushes): the thread may have
            // left already, so nothing queued now would be written; write here instead.
            if state.stopping { return nil }
            target.outstanding += 1
            state.jobs.append(Job(buffer: buffer, offset: offset, target: target, group: group))
            state.atWriter += 1
            state.queuedBytes += buffer.count
            if state.writerAsleep && state.queuedBytes >= Self.wakeBytes { lock.broadcast() }
            return .some(wantsNext ? state.free.popLast() : nil)
        }
        if let next = queued { return next }
        let (piece, error) = target.write(UnsafeRawBufferPointer(rebasing: buffer.memory[0..<buffer.count]), at: offset)
        group.finish(piece, error: error)
        release(buffer)
        return nil
    }

    /// Wakes a sleeping writer that has work queued (someone is about to wait for it).
    func wake() {
        lock.withLock {
            if state.writerAsleep && !state.jobs.isEmpty { lock.broadcast() }
        }
    }

    /// How many buffers exist now (free, staged in sinks, or at the writer).
    var allocatedBuffers: Int { lock.withLock { all.count } }

    /// Returns a buffer to the pool; one larger than the preferred size is freed instead.
    func release(_ buffer: Buffer) {
        lock.withLock {
            releaseLocked(buffer)
            lock.broadcast()
        }
    }

    private func releaseLocked(_ buffer: Buffer) {
        if buffer.memory.count > preferredBufferBytes.load(ordering: .relaxed) {
            deallocateLocked(buffer.memory)
        } else {
            state.free.append(Buffer(memory: buffer.memory))
        }
        trimLocked()
    }

    /// The writer returns written buffers to the pool and wakes whoever waits for one (or for
    /// a file's writes to drain).
    private func giveBackLocked(_ written: some Collection<(buffer: Buffer, target: WriteTarget)>) {
        state.atWriter -= written.count
        for (buffer, target) in written {
            target.outstanding -= 1
            releaseLocked(buffer)
        }
        lock.broadcast()
    }

    /// Waits until every write queued for `target` is done (before its file is closed: a write
    /// landing after the close could hit another file that reused the descriptor).
    func drain(_ target: WriteTarget) {
        lock.withLock {
            while target.outstanding > 0 {
                if state.writerAsleep && !state.jobs.isEmpty { lock.broadcast() }
                _ = lock.wait(until: ConditionLock.deadline(afterMilliseconds: Self.sleepMilliseconds))
            }
        }
    }

    /// Frees idle buffers beyond the capacity (the connection count fell), unless a producer
    /// is waiting for one.
    private func trimLocked() {
        while all.count > capacity, producersWaiting.load(ordering: .relaxed) == 0, let spare = state.free.popLast() {
            deallocateLocked(spare.memory)
        }
    }

    private func deallocateLocked(_ memory: UnsafeMutableRawBufferPointer) {
        if let i = all.firstIndex(where: { $0.baseAddress == memory.baseAddress }) { all.remove(at: i) }
        memory.deallocate()
    }

    /// Waits for the queue to drain and stops the thread.
    func stop() {
        lock.withLock {
            state.stopping = true
            lock.broadcast()
        }
        thread?.join()
        thread = nil
    }

    /// Takes everything queued under one lock, writes it, and returns the buffers under one
    /// lock: lock traffic per batch, not per buffer (the loop thread shares this lock).
    private func run() {
        var batch: [Job] = []
        var written: [(buffer: Buffer, target: WriteTarget)] = []
        while true {
            let exit: Bool = lock.withLock {
                if !written.isEmpty {
                    giveBackLocked(written)
                    written.removeAll(keepingCapacity: true)
                }
                while state.jobs.isEmpty {
                    if state.stopping { return true }
                    state.writerAsleep = true
                    state.queuedBytes = 0
                    if state.attached == 0 {
                        lock.wait()  // no download is writing: nothing can be queued short
                    } else {
                        _ = lock.wait(until: ConditionLock.deadline(afterMilliseconds: Self.sleepMilliseconds))
                    }
                    state.writerAsleep = false
                }
                swap(&batch, &state.jobs)
                return false
            }
            if exit { return }
            for job in batch {
                let target = job.target
                // The CRC is taken here, on the writer's core, while the bytes are still in cache.
                let (piece, error) = target.write(UnsafeRawBufferPointer(rebasing: job.buffer.memory[0..<job.buffer.count]),
                                                  at: job.offset)
                target.sinceWriteback += Int64(job.buffer.count)
                if producersWaiting.load(ordering: .relaxed) > 0 {
                    lock.withLock { giveBackLocked(CollectionOfOne((job.buffer, target))) }
                } else {
                    written.append((job.buffer, target))
                }
                job.group.finish(piece, error: error)
                if target.sinceWriteback >= Self.writebackInterval {
                    target.sinceWriteback = 0
                    if target.file.fd >= 0 { _ = spate_start_writeback(target.file.fd, 0, 0) }
                }
            }
            batch.removeAll(keepingCapacity: true)
        }
    }
}

/// The writes of one request (or one stream): counts what is queued, remembers the first
/// error, and lets the requesting task wait until everything it queued is on disk... in the
/// page cache, at least (durability is the final fsync's job).
final class WriteGroup: @unchecked Sendable {
    private struct State {
        var pending = 0
        var error: SpateError?
        var waiter: CheckedContinuation<Void, Never>?
        /// What was written, piece by piece (for the journal's range hash).
        var pieces: [HashedRange] = []
    }

    private let lock = ConditionLock()
    private var state = State()

    init() {}

    func add() {
        lock.withLock { state.pending += 1 }
    }

    /// A write of `piece` ended (with `error` if it failed).
    func finish(_ piece: HashedRange, error: SpateError?) {
        let waiter: CheckedContinuation<Void, Never>? = lock.withLock {
            state.pending -= 1
            if error == nil { state.pieces.append(piece) }
            if let error, state.error == nil { state.error = error }
            guard state.pending == 0 else { return nil }
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Records a write done outside the writer thread (the synchronous fallback).
    func wroteDirectly(_ piece: HashedRange) {
        lock.withLock { state.pieces.append(piece) }
    }

    /// The hash of the contiguous run written from `start` so far (nil when nothing is).
    /// After every write is done it covers all of them.
    func hashedRange(from start: Int64) -> HashedRange? {
        let pieces = lock.withLock { state.pieces }.sorted { $0.range.start < $1.range.start }
        guard var combined = pieces.first, combined.range.start == start else { return nil }
        for piece in pieces.dropFirst() {
            guard piece.range.start == combined.range.end else { break }
            combined = combined.appending(piece)
        }
        return combined
    }

    /// Waits until every queued write is done; returns the first write error.
    func wait() async -> SpateError? {
        await withCheckedContinuation { continuation in
            let done: Bool = lock.withLock {
                if state.pending == 0 { return true }
                state.waiter = continuation
                return false
            }
            if done { continuation.resume() }
        }
        return lock.withLock { state.error }
    }
}

/// The file one download writes, as the shared writer sees it.
final class WriteTarget: @unchecked Sendable {
    let file: OutputFile
    /// Whether each write's CRC-32 is computed (for the resume journal).
    let computesCRC: Bool
    /// Bytes written since the last early writeback (touched by the writer thread only).
    var sinceWriteback: Int64 = 0
    /// Buffers queued or being written for this file (guarded by the writer's lock).
    var outstanding = 0

    init(file: OutputFile, computesCRC: Bool) {
        self.file = file
        self.computesCRC = computesCRC
    }

    /// Writes `bytes` at `offset` (all of them, or an error) and hashes them when the journal
    /// wants CRCs: what was written, as the journal records it.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) -> (HashedRange, SpateError?) {
        let code = file.write(bytes, at: offset)
        let piece = HashedRange(range: ByteRange(offset, offset + Int64(bytes.count)), crc: computesCRC ? CRC32.checksum(bytes) : 0)
        return (piece, code == 0 ? nil : file.stream?.failure ?? Syscall.fail("write", path: file.partPath, errno: code))
    }
}

/// One sink's staging: copies body bytes into writer buffers and submits each full buffer.
/// Used on the loop thread while the transfer runs, then by the requesting task to flush.
struct StagedOutput {
    let writer: FileWriter
    let target: WriteTarget
    let group: WriteGroup
    private var buffer: FileWriter.Buffer?
    private var bufferOffset: Int64 = 0

    init(writer: FileWriter, target: WriteTarget, group: WriteGroup = WriteGroup()) {
        self.writer = writer
        self.target = target
        self.group = group
    }

    /// Writes `bytes` at `offset` (each call continues where the previous one ended).
    @inline(__always)
    mutating func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) -> SpateError? {
        var done = 0
        while done < bytes.count {
            if buffer == nil {
                buffer = writer.acquire()
                bufferOffset = offset + Int64(done)
            }
            guard var staged = buffer else {
                // No free buffer for a long time: write the rest synchronously.
                let (piece, error) = target.write(UnsafeRawBufferPointer(rebasing: bytes[done...]), at: offset + Int64(done))
                if let error { return error }
                group.wroteDirectly(piece)
                return nil
            }
            let n = min(staged.space, bytes.count - done)
            (staged.memory.baseAddress! + staged.count).copyMemory(from: bytes.baseAddress! + done, byteCount: n)
            staged.count += n
            done += n
            if staged.space == 0 {
                let more = done < bytes.count
                buffer = writer.submit(staged, at: bufferOffset, to: target, group: group, wantsNext: more)
                bufferOffset = offset + Int64(done)
            } else {
                buffer = staged
            }
        }
        return nil
    }

    /// Queues what is staged and waits until all of this sink's writes are done.
    /// Returns the first write error.
    mutating func flush() async -> SpateError? {
        if let staged = buffer {
            if staged.count > 0 { writer.submit(staged, at: bufferOffset, to: target, group: group) } else { writer.release(staged) }
            buffer = nil
        }
        writer.wake()  // the request waits for its last writes: do not leave them for the timer
        return await group.wait()
    }
}
