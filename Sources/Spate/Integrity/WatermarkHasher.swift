import Glibc

/// Computes the whole-file digest while the download runs, by reading back the bytes below the
/// contiguous-done watermark on its own thread.
///
/// Why behind the watermark: ranges finish out of order, so the digest cannot be fed from the
/// write path; but work is handed out from the lowest offset, so the done prefix trails the
/// frontier by a few requests and the data is still in the page cache. When the last byte
/// lands, only the tail remains to hash — no second full read of the file.
final class WatermarkHasher: @unchecked Sendable {
    private struct State {
        var watermark: Int64 = 0
        var hashed: Int64 = 0
        var target: Int64?
        var cancelled = false
        var failure: SpateError?
        var waiter: CheckedContinuation<[UInt8], any Error>?
        var result: [UInt8]?
    }

    private let fd: Int32
    private let path: String
    private let digest: Digest
    private let lock = ConditionLock()
    private var state = State()  // guarded by `lock`
    private var thread: LoopThread?
    static let readBytes = 1 << 20

    init(fd: Int32, path: String, algorithm: DigestAlgorithm) {
        self.fd = fd
        self.path = path
        self.digest = Digest(algorithm)
        thread = LoopThread(name: "spate-digest") { [self] in self.run() }
    }

    /// The done prefix now reaches `watermark` (monotonic; smaller values are ignored).
    func advance(to watermark: Int64) {
        lock.withLock {
            if watermark > state.watermark {
                state.watermark = watermark
                lock.broadcast()
            }
        }
    }

    /// Waits until all `size` bytes are hashed and returns the digest.
    func finish(size: Int64) async throws -> [UInt8] {
        try await withCheckedThrowingContinuation { continuation in
            let ready: Result<[UInt8], any Error>? = lock.withLock {
                state.target = size
                state.watermark = max(state.watermark, size)
                if let failure = state.failure { return .failure(failure) }
                if let result = state.result { return .success(result) }
                state.waiter = continuation
                lock.broadcast()
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }
    }

    /// Stops the thread (after `finish`, or to abandon the digest). Waits for it.
    func stop() {
        lock.withLock {
            state.cancelled = true
            lock.broadcast()
        }
        thread?.join()
        thread = nil
        let waiter = lock.withLock { () -> CheckedContinuation<[UInt8], any Error>? in
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(throwing: CancellationError())
    }

    private func run() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.readBytes, alignment: 4096)
        defer { buffer.deallocate() }
        while true {
            // Wait for bytes to hash, for the end, or for cancellation.
            let next: (offset: Int64, count: Int)? = lock.withLock {
                while true {
                    if state.cancelled || state.failure != nil || state.result != nil { return nil }
                    if state.hashed < state.watermark {
                        return (state.hashed, Int(min(Int64(Self.readBytes), state.watermark - state.hashed)))
                    }
                    if let target = state.target, state.hashed >= target {
                        state.result = digest.finalize()
                        let waiter = state.waiter
                        state.waiter = nil
                        waiter?.resume(returning: state.result!)
                        return nil
                    }
                    lock.wait()
                }
            }
            guard let next else { return }
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<next.count])
            let n = Syscall.preadFully(fd, slice, at: next.offset)
            if n != next.count {
                let code = n < 0 ? errno : EIO
                lock.withLock {
                    let failure = Syscall.fail("read back for the checksum", path: path, errno: code)
                    state.failure = failure
                    let waiter = state.waiter
                    state.waiter = nil
                    waiter?.resume(throwing: failure)
                }
                return
            }
            digest.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            lock.withLock { state.hashed += Int64(n) }
        }
    }
}
