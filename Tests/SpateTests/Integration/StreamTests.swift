import Foundation
@testable import Spate
import SpateTestContent
import SpateTestServer
import Synchronization
import Testing

/// Ordered streams (issue 13): the bytes reach a pipe in order, exactly once, with many
/// connections, through a bounded reorder window — also when replies fail part-way — and a
/// reader that goes away stops the download with `.outputClosed`.
@Suite("Ordered streams", .timeLimit(.minutes(5)))
struct StreamTests {
    static let mib: Int64 = 1 << 20

    /// Reads a pipe on its own thread, comparing with `content` as it goes.
    final class PipeReader: @unchecked Sendable {
        let fd: Int32
        let consumed = Atomic<Int64>(0)
        private let content: GeneratedContent
        private let stopAfter: Int64?
        private(set) var mismatch: Int64?
        private var thread: Thread?
        private let done = DispatchSemaphore(value: 0)

        init(fd: Int32, content: GeneratedContent, stopAfter: Int64? = nil, pause: UInt32 = 0) {
            self.fd = fd
            self.content = content
            self.stopAfter = stopAfter
            let thread = Thread { [self] in
                var buffer = [UInt8](repeating: 0, count: 64 * 1024)
                var offset: Int64 = 0
                while true {
                    if let stopAfter, offset >= stopAfter { break }
                    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
                    if n <= 0 { break }
                    if mismatch == nil, let bad = buffer.withUnsafeBytes({ content.firstMismatch(UnsafeRawBufferPointer(rebasing: $0[0..<n]), at: offset) }) {
                        mismatch = bad
                    }
                    offset += Int64(n)
                    consumed.store(offset, ordering: .relaxed)
                    // The workload of a slow reader, not synchronisation: the assertions hold at
                    // any reading speed.
                    if pause > 0 { usleep(pause) }
                }
                close(fd)
                done.signal()
            }
            self.thread = thread
            thread.start()
        }

        func wait() -> Int64 {
            done.wait()
            return consumed.load(ordering: .relaxed)
        }
    }

    /// Range requests as the server saw them, with what the reader had consumed by then.
    final class Arrivals: Sendable {
        let list = Mutex<[(range: ByteRange, consumed: Int64)]>([])
    }

    func makePipe() -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        return (fds[0], fds[1])
    }

    /// Every range request the server saw started, and ended, inside the window measured from
    /// what the reader had consumed when the request arrived — plus the pipe's 64 KiB buffer
    /// (bytes spate counts as written) and the reader's own 64 KiB read, which it counts only
    /// after checking it.
    func expectRequestsInsideTheWindow(_ arrivals: [(range: ByteRange, consumed: Int64)], window: Int64,
                                       sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(!arrivals.isEmpty, sourceLocation: sourceLocation)
        for arrival in arrivals {
            #expect(arrival.range.end <= arrival.consumed + window + 2 * 65536,
                    "request \(arrival.range) arrived when the reader had \(arrival.consumed) bytes", sourceLocation: sourceLocation)
        }
    }

    func hookRecordingArrivals(_ server: TestServer, file: TestServer.File, reader: @escaping @Sendable () -> Int64,
                               fault: (@Sendable (RequestInfo, Int) -> ResponsePlan?)? = nil) -> Arrivals {
        let arrivals = Arrivals()
        let count = Atomic<Int>(0)
        server.setHook { request in
            guard let value = request.header("range"), value != "bytes=0-0" else { return nil }
            let parts = value.dropFirst("bytes=".count).split(separator: "-")
            if parts.count == 2, let first = Int64(parts[0]), let last = Int64(parts[1]) {
                let consumed = reader()
                arrivals.list.withLock { $0.append((ByteRange(first, last + 1), consumed)) }
            }
            let n = count.add(1, ordering: .relaxed).newValue
            return fault?(request, n) ?? TestServer.standardPlan(for: request, file: file)
        }
        return arrivals
    }

    @Test(arguments: [1, 4, 16])
    func aStreamIsExactAndStaysInsideItsWindow(connections: Int) async throws {
        try await withTestServer { server in
            let content = GeneratedContent(seed: 8001 + UInt64(connections), size: 24 * Self.mib + 12345)
            let file = TestServer.File(content: content)
            server.addFile("/f.bin", file)
            let (readFD, writeFD) = makePipe()
            let reader = PipeReader(fd: readFD, content: content)
            let arrivals = hookRecordingArrivals(server, file: file, reader: { reader.consumed.load(ordering: .relaxed) })
            var o = testOptions(connections: connections)
            let window = 2 * Self.mib
            o.output = .stream(fileDescriptor: writeFD, window: window)
            let result = await download(server.url("/f.bin"), to: "-", options: o)
            close(writeFD)
            let total = reader.wait()
            #expect(result.failureKind == nil, "\(result)")
            #expect(total == content.size)
            #expect(reader.mismatch == nil, "first wrong byte at \(reader.mismatch ?? -1)")
            expectRequestsInsideTheWindow(arrivals.list.withLock { $0 }, window: window)
        }
    }

    /// Replies cut off or stalled part-way: their remainders are fetched again, the reader
    /// still gets every byte once, in order.
    @Test func failuresPartWayNeverReorderOrRepeatBytes() async throws {
        try await withTestServer { server in
            let content = GeneratedContent(seed: 8101, size: 16 * Self.mib)
            let file = TestServer.File(content: content)
            server.addFile("/f.bin", file)
            let (readFD, writeFD) = makePipe()
            let reader = PipeReader(fd: readFD, content: content)
            _ = hookRecordingArrivals(server, file: file, reader: { reader.consumed.load(ordering: .relaxed) }) { request, n in
                switch n % 7 {
                case 2: Fault.closeAfter(bytes: 100_000).apply(to: request, file: file)
                case 5: Fault.stallAfter(bytes: 50_000).apply(to: request, file: file)
                default: nil
                }
            }
            var o = testOptions(connections: 6, chunk: 512 << 10)
            o.lowSpeedWindow = .seconds(1)
            o.retry = RetryPolicy(maxRetries: 8, baseDelay: .milliseconds(5), maxDelay: .milliseconds(50))
            o.output = .stream(fileDescriptor: writeFD, window: 4 * Self.mib)
            let result = await download(server.url("/f.bin"), to: "-", options: o)
            close(writeFD)
            let total = reader.wait()
            #expect(result.failureKind == nil, "\(result)")
            #expect(total == content.size && reader.mismatch == nil, "\(total) bytes, first wrong at \(reader.mismatch ?? -1)")
        }
    }

    /// A slow reader: the window holds, so the requests wait for it instead of piling up.
    @Test func aSlowReaderHoldsTheRequestsBack() async throws {
        try await withTestServer { server in
            let content = GeneratedContent(seed: 8201, size: 8 * Self.mib)
            let file = TestServer.File(content: content)
            server.addFile("/f.bin", file)
            let (readFD, writeFD) = makePipe()
            let reader = PipeReader(fd: readFD, content: content, pause: 2000)
            let arrivals = hookRecordingArrivals(server, file: file, reader: { reader.consumed.load(ordering: .relaxed) })
            var o = testOptions(connections: 8, chunk: 256 << 10)
            let window = 1 * Self.mib
            o.output = .stream(fileDescriptor: writeFD, window: window)
            let result = await download(server.url("/f.bin"), to: "-", options: o)
            close(writeFD)
            #expect(reader.wait() == content.size && reader.mismatch == nil)
            #expect(result.failureKind == nil, "\(result)")
            expectRequestsInsideTheWindow(arrivals.list.withLock { $0 }, window: window)
        }
    }

    /// The reader goes away after 1 MiB: the download stops with `.outputClosed`, not a hang
    /// and not a network error.
    @Test(arguments: [Int64(1 << 20), 0])
    func aReaderThatLeavesStopsTheDownload(after: Int64) async throws {
        try await withTestServer { server in
            let content = GeneratedContent(seed: 8301, size: 32 * Self.mib)
            server.addFile("/f.bin", TestServer.File(content: content))
            server.setHook { request in
                var plan = server.standardPlan(for: request)
                plan.bytesPerSecond = 16 << 20
                return plan
            }
            let (readFD, writeFD) = makePipe()
            let reader = PipeReader(fd: readFD, content: content, stopAfter: after)
            var o = testOptions(connections: 4)
            o.output = .stream(fileDescriptor: writeFD, window: 4 * Self.mib)
            let result = await download(server.url("/f.bin"), to: "-", options: o)
            close(writeFD)
            _ = reader.wait()
            #expect(result.failureKind == .outputClosed, "\(result)")
        }
    }

    /// A server without ranges, and a small file fetched whole: one stream, written straight
    /// through, checked against the checksum.
    @Test func oneStreamAndSmallFilesAreWrittenStraightThrough() async throws {
        try await withTestServer { server in
            let big = GeneratedContent(seed: 8401, size: 6 * Self.mib)
            var noRanges = TestServer.File(content: big)
            noRanges.acceptsRanges = false
            server.addFile("/big.bin", noRanges)
            let small = GeneratedContent(seed: 8402, size: 100_000)
            server.addFile("/small.bin", TestServer.File(content: small))
            for (path, content, whole) in [("/big.bin", big, 0), ("/small.bin", small, 1 << 20)] {
                let (readFD, writeFD) = makePipe()
                let reader = PipeReader(fd: readFD, content: content)
                var o = testOptions(connections: 4)
                o.wholeFileBytes = whole
                o.checksum = sha256Checksum(of: content)
                o.output = .stream(fileDescriptor: writeFD, window: 2 * Self.mib)
                let result = await download(server.url(path), to: "-", options: o)
                close(writeFD)
                #expect(reader.wait() == content.size && reader.mismatch == nil, "\(path)")
                #expect(result.failureKind == nil, "\(path): \(result)")
            }
        }
    }

    /// A late write below what was streamed (a hedge's loser flushing its last buffer after
    /// the winner's bytes went out) is dropped: its ring slot already holds the next window's
    /// bytes, which must reach the reader intact.
    @Test func aLateDuplicateNeverOverwritesTheNextWindow() async throws {
        let content = GeneratedContent(seed: 8801, size: 3 * Self.mib / 2)
        let (readFD, writeFD) = makePipe()
        let reader = PipeReader(fd: readFD, content: content)
        let stream = try StreamOutput(outputFD: writeFD, name: "-", windowBytes: Self.mib, algorithm: nil)
        func put(_ start: Int64, _ end: Int64, garbage: Bool = false) -> Int32 {
            let bytes = garbage ? [UInt8](repeating: 0xEE, count: Int(end - start)) : content.bytes(start, end)
            return bytes.withUnsafeBytes { stream.write($0, at: start) }
        }
        let half = Self.mib / 2
        #expect(put(0, half) == 0)
        stream.advance(to: half)
        while stream.streamed < half { await Task.yield() }
        // The window now reaches 1.5 MiB: [1 MiB, 1.5 MiB) reuses the slots of [0, 0.5 MiB).
        #expect(put(half, Self.mib) == 0)
        #expect(put(Self.mib, 3 * half) == 0)
        #expect(put(0, half, garbage: true) == 0, "a late write is dropped, not an error")
        let digest = try await stream.finish(size: content.size)
        #expect(digest == nil)
        stream.stop()
        close(writeFD)
        #expect(reader.wait() == content.size)
        #expect(reader.mismatch == nil, "first wrong byte at \(reader.mismatch ?? -1)")
    }

    /// A wrong checksum on a stream is exit 5 (the bytes already went out).
    @Test func aWrongChecksumOnAStreamIsAMismatch() async throws {
        try await withTestServer { server in
            let content = GeneratedContent(seed: 8501, size: 3 * Self.mib)
            server.addFile("/f.bin", TestServer.File(content: content))
            let (readFD, writeFD) = makePipe()
            let reader = PipeReader(fd: readFD, content: content)
            var o = testOptions(connections: 3)
            o.checksum = try Checksum(parsing: "sha256:" + String(repeating: "0", count: 64))
            o.output = .stream(fileDescriptor: writeFD, window: 1 * Self.mib)
            let result = await download(server.url("/f.bin"), to: "-", options: o)
            close(writeFD)
            _ = reader.wait()
            #expect(result.failureKind == .checksumMismatch, "\(result)")
        }
    }

    /// The discard path writes nothing and still counts every byte.
    @Test func aDiscardCountsTheBytes() async throws {
        try await withTestServer { server in
            let content = GeneratedContent(seed: 8601, size: 5 * Self.mib)
            server.addFile("/f.bin", TestServer.File(content: content))
            let dir = try TemporaryDirectory()
            var o = testOptions(connections: 4)
            o.output = .discard
            let result = await download(server.url("/f.bin"), to: dir.file("nothing"), options: o)
            guard case .success(let r) = result else { Issue.record("\(result)"); return }
            #expect(r.bytes == content.size)
            #expect(dir.contents.isEmpty)
            o.checksum = sha256Checksum(of: content)
            #expect(throws: SpateError.self) { try o.validate() }
        }
    }
}

/// `--max-rate` end to end: one budget for every connection, and a transfer it holds back is
/// never judged stalled.
@Suite("Rate limit", .timeLimit(.minutes(5)))
struct RateLimitTests {
    /// 3 MiB at 1 MiB/s over 4 connections, with a watchdog that would cut any connection
    /// slower than 512 KiB/s (each one's share is 256 KiB/s): no stall, no retry, and it takes
    /// at least as long as the rate allows (a lower bound: a busy machine only adds time).
    @Test func theRateIsSharedAndNeverCountsAsAStall() async throws {
        try await withTestServer { server in
            let content = GeneratedContent(seed: 8701, size: 3 << 20)
            server.addFile("/f.bin", TestServer.File(content: content))
            let dir = try TemporaryDirectory()
            var o = testOptions(connections: 4, chunk: 256 << 10)
            o.selfTuning = false
            o.maxBytesPerSecond = 1 << 20
            o.lowSpeedBytesPerSecond = 512 << 10
            o.lowSpeedWindow = .seconds(1)
            let started = ContinuousClock.now
            let result = await download(server.url("/f.bin"), to: dir.file("f.bin"), options: o)
            let elapsed = ContinuousClock.now - started
            guard case .success(let r) = result else { Issue.record("\(result)"); return }
            #expect(compareFile(dir.file("f.bin"), with: content) == nil)
            #expect(r.retries == 0, "a rate-limited transfer was judged stalled")
            // 3 MiB less the burst and one callback per connection, at 1 MiB/s.
            #expect(elapsed >= .milliseconds(2400), "\(elapsed): faster than the limit")
        }
    }
}
