import CSpateSystem
import Glibc
import Synchronization

/// An ordered stream: the download's bytes written, in order, to standard output, a FIFO or a
/// character device, with many connections and bounded memory.
///
/// Ring mode (segmented downloads): ranges finish out of order, so they land in a reorder
/// window — an anonymous memory file (`memfd`) used as a ring of `windowBytes`, written with
/// `pwrite` at `offset mod windowBytes` by the session's writer like any file. A thread of its
/// own follows the contiguous-done watermark (as `WatermarkHasher` does), copies the done
/// prefix to the output, feeds the digest, and frees the pages it streamed (`PUNCH_HOLE`).
/// The schedule hands out no byte at or beyond `streamed + windowBytes` (`RangeSchedule`'s
/// window), so a byte never overwrites one not yet streamed, and what the window holds is
/// bounded by `windowBytes`: received-but-not-streamed bytes plus requests in flight.
///
/// Direct mode (one stream: no byte ranges, or a small file in one reply): the bytes already
/// arrive in order and are written straight to the output.
///
/// Why a memory file rather than heap buffers: the session's writer, staging and digest paths
/// all work with `(fd, offset)`; a ring behind a descriptor reuses them unchanged, and its
/// pages are freed exactly as they are streamed. (They are shared memory: counted in the
/// process's memory cgroup and in `Shmem`, not in its RSS.)
final class StreamOutput: @unchecked Sendable {
    private struct State {
        /// The contiguous bytes in the ring (ring mode).
        var watermark: Int64 = 0
        /// Bytes written to the output.
        var streamed: Int64 = 0
        var target: Int64?
        var failure: SpateError?
        var stopped = false
        var waiter: CheckedContinuation<[UInt8]?, any Error>?
        var finished = false
    }

    /// The output's descriptor (not owned: the caller opened it and closes it).
    let outputFD: Int32
    /// For messages: "standard output", or the path.
    let name: String
    /// The reorder window (ring mode); 0 in direct mode.
    let windowBytes: Int64
    private let ringFD: Int32
    private let digest: Digest?
    private let lock = ConditionLock()
    private var state = State()  // guarded by `lock`
    private var thread: LoopThread?
    private let progress = Mutex<(@Sendable (Int64, SpateError?) -> Void)?>(nil)
    static let chunkBytes = 1 << 20

    /// - Parameters:
    ///   - windowBytes: the reorder window; nil for direct mode (bytes arrive in order).
    ///   - algorithm: the digest to compute in order (`--checksum`), if any.
    init(outputFD: Int32, name: String, windowBytes: Int64?, algorithm: DigestAlgorithm?) throws(SpateError) {
        self.outputFD = outputFD
        self.name = name
        self.digest = algorithm.map { Digest($0) }
        if let windowBytes {
            let fd = spate_memory_file("spate-window")
            guard fd >= 0 else { throw Syscall.fail("create the reorder window for", path: name) }
            guard ftruncate(fd, off_t(windowBytes)) == 0 else {
                let error = Syscall.fail("size the reorder window for", path: name)
                _ = Glibc.close(fd)
                throw error
            }
            self.ringFD = fd
            self.windowBytes = windowBytes
            thread = LoopThread(name: "spate-stream") { [self] in self.run() }
        } else {
            self.ringFD = -1
            self.windowBytes = 0
        }
    }

    /// Called on the streaming thread after bytes reach the output (with the total streamed)
    /// or when the output fails: the workers move their window, or stop.
    func onProgress(_ handler: @escaping @Sendable (Int64, SpateError?) -> Void) {
        progress.withLock { $0 = handler }
    }

    var failure: SpateError? { lock.withLock { state.failure } }

    /// Bytes written to the output so far.
    var streamed: Int64 { lock.withLock { state.streamed } }

    /// Stores `buffer` at `offset` of the stream (the session's writer calls this like `pwrite`).
    /// Returns 0 or an errno value (EPIPE once the output failed: the caller stops).
    func write(_ buffer: UnsafeRawBufferPointer, at offset: Int64) -> Int32 {
        guard ringFD >= 0 else {
            if lock.withLock({ state.failure }) != nil { return EPIPE }
            return writeDirect(buffer, at: offset)
        }
        // Under the lock, against `streamed`: bytes below it were streamed already, and their
        // ring slots may hold the next window's bytes by now (a hedge's loser, or the primary
        // a hedge beat, can flush its last buffer late). Those are dropped, never written.
        // Bytes at or beyond streamed + window cannot come: the schedule hands none out.
        return lock.withLock { () -> Int32 in
            if state.failure != nil { return EPIPE }
            let skip = Int(max(0, min(Int64(buffer.count), state.streamed - offset)))
            var done = skip
            while done < buffer.count {
                let at = offset + Int64(done)
                guard at < state.streamed + windowBytes else { return EIO }
                let position = at % windowBytes
                let n = Int(min(Int64(buffer.count - done), windowBytes - position))
                let code = Syscall.pwriteAll(ringFD, UnsafeRawBufferPointer(rebasing: buffer[done..<(done + n)]), at: position)
                if code != 0 { return code }
                done += n
            }
            return 0
        }
    }

    /// Direct mode: in order. A piece that arrives before the one preceding it (the writer's
    /// rare synchronous fallback) waits for it; bytes already written (a stream restarted
    /// from an earlier offset) are not written again.
    private func writeDirect(_ buffer: UnsafeRawBufferPointer, at offset: Int64) -> Int32 {
        let skip: Int? = lock.withLock {
            while state.streamed < offset && state.failure == nil && !state.stopped { lock.wait() }
            guard state.failure == nil, !state.stopped else { return nil }
            return Int(min(Int64(buffer.count), state.streamed - offset))
        }
        guard let skip else { return EPIPE }
        let fresh = UnsafeRawBufferPointer(rebasing: buffer[skip...])
        if fresh.isEmpty { return 0 }
        digest?.update(fresh)
        let code = writeToOutput(fresh)
        let (streamed, failure) = lock.withLock { () -> (Int64, SpateError?) in
            if code == 0 { state.streamed += Int64(fresh.count) } else { state.failure = outputError(code) }
            lock.broadcast()
            return (state.streamed, state.failure)
        }
        progress.withLock { $0 }?(streamed, failure)
        return code == 0 ? 0 : EPIPE
    }

    /// The contiguous done prefix now reaches `watermark` (ring mode; monotonic).
    func advance(to watermark: Int64) {
        lock.withLock {
            if watermark > state.watermark {
                state.watermark = watermark
                lock.broadcast()
            }
        }
    }

    /// Waits until all `size` bytes are written to the output; returns the digest of what was
    /// written (nil without an algorithm). Throws the output's failure.
    func finish(size: Int64) async throws -> [UInt8]? {
        try await withCheckedThrowingContinuation { continuation in
            let ready: Result<[UInt8]?, any Error>? = lock.withLock {
                state.target = size
                if ringFD >= 0 { state.watermark = max(state.watermark, size) }
                if let failure = state.failure { return .failure(failure) }
                if state.streamed >= size {
                    state.finished = true
                    return .success(digest?.finalize())
                }
                if ringFD < 0 {
                    return .failure(SpateError(.network, "the stream ended after \(state.streamed) of \(size) bytes (internal error)"))
                }
                state.waiter = continuation
                lock.broadcast()
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }
    }

    /// Stops the streaming thread (after `finish`, or to abandon the stream) and frees the
    /// window. Idempotent.
    func stop() {
        lock.withLock {
            state.stopped = true
            lock.broadcast()
        }
        thread?.join()
        thread = nil
        let waiter = lock.withLock { () -> CheckedContinuation<[UInt8]?, any Error>? in
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(throwing: CancellationError())
        if ringFD >= 0 { _ = Glibc.close(ringFD) }
    }

    deinit {
        if thread != nil { stop() }
    }

    private func outputError(_ code: Int32) -> SpateError {
        if code == EPIPE { return Self.readerStopped(name) }
        return Syscall.fail("write to", path: name, errno: code)
    }

    private func run() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.chunkBytes, alignment: 4096)
        defer { buffer.deallocate() }
        while true {
            let next: (offset: Int64, count: Int)? = lock.withLock {
                while true {
                    if state.stopped || state.failure != nil { return nil }
                    if state.streamed < state.watermark {
                        let position = state.streamed % windowBytes
                        let count = min(Int64(Self.chunkBytes), state.watermark - state.streamed, windowBytes - position)
                        return (state.streamed, Int(count))
                    }
                    if let target = state.target, state.streamed >= target, let waiter = state.waiter {
                        state.waiter = nil
                        state.finished = true
                        waiter.resume(returning: digest?.finalize())
                    }
                    lock.wait()
                }
            }
            guard let next else { return }
            let position = next.offset % windowBytes
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<next.count])
            var code: Int32 = 0
            let n = Syscall.preadFully(ringFD, slice, at: position)
            if n != next.count {
                code = n < 0 ? errno : EIO
            } else {
                digest?.update(UnsafeRawBufferPointer(slice))
                code = writeToOutput(UnsafeRawBufferPointer(slice))
            }
            if code == 0 { _ = spate_punch_hole(ringFD, position, Int64(next.count)) }
            let (streamed, failure, waiter) = lock.withLock { () -> (Int64, SpateError?, CheckedContinuation<[UInt8]?, any Error>?) in
                if code == 0 {
                    state.streamed += Int64(next.count)
                } else {
                    state.failure = n == next.count ? outputError(code) : Syscall.fail("read the reorder window of", path: name, errno: code)
                }
                let waiter = state.failure != nil ? state.waiter : nil
                if waiter != nil { state.waiter = nil }
                lock.broadcast()
                return (state.streamed, state.failure, waiter)
            }
            if let waiter, let failure { waiter.resume(throwing: failure) }
            progress.withLock { $0 }?(streamed, failure)
        }
    }

    /// Writes to the output, giving up (ECANCELED) once `stop()` is called: a reader that
    /// stays open without reading must not keep an interrupted spate from exiting.
    private func writeToOutput(_ buffer: UnsafeRawBufferPointer) -> Int32 {
        Self.writeAll(outputFD, buffer) { [self] in lock.withLock { state.stopped } }
    }

    /// Writes all of `buffer` to `fd` (a pipe, FIFO or device), looping over short writes,
    /// EINTR and EAGAIN. It waits for room with `poll` (checking `shouldStop` every 200 ms)
    /// and never writes more to a pipe than it has room for, so no write blocks for long.
    /// Returns 0 or an errno value (ECANCELED when stopped).
    /// The error when the reader of `name` (`-`: standard output) closed its end.
    static func readerStopped(_ name: String) -> SpateError {
        SpateError(.outputClosed, "the reader of \(name == "-" ? "standard output" : name) stopped reading (broken pipe)")
    }

    static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, shouldStop: () -> Bool = { false }) -> Int32 {
        let pipeSize = spate_pipe_capacity(fd)
        var done = 0
        while done < buffer.count {
            var room = buffer.count - done
            if pipeSize > 0 {
                var waiting = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                let ready = poll(&waiting, 1, 200)
                if ready == 0 {
                    if shouldStop() { return ECANCELED }
                    continue
                }
                if ready < 0 && errno != EINTR { return errno }
                if (waiting.revents & Int16(POLLERR | POLLHUP)) != 0 && (waiting.revents & Int16(POLLOUT)) == 0 { return EPIPE }
                // Poll says at least PIPE_BUF is free; the queue says how much more.
                let free = max(Int(PIPE_BUF), Int(pipeSize) - max(0, Int(spate_pipe_queued(fd))))
                room = min(room, free)
            }
            let n = Glibc.write(fd, buffer.baseAddress! + done, room)
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                return errno
            }
            done += n
        }
        return 0
    }
}
