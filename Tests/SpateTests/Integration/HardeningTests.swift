import Foundation
@testable import Spate
import SpateTestContent
import SpateTestServer
import Synchronization
import Testing

/// Issue 15's cases against the loopback test server: replies that used to trap, hang or loop,
/// a server that imitates Apache's weak validators, and the messages of malformed replies.
/// Each failed (a trap, a hang, a loop or the wrong exit code) before its fix.
@Suite("Hardening", .timeLimit(.minutes(5)))
struct HardeningTests {
    static let mib: Int64 = 1 << 20

    func options(connections: Int = 2) -> DownloadOptions {
        var o = testOptions(connections: connections, chunk: 256 << 10)
        o.lowSpeedWindow = .seconds(1)
        return o
    }

    /// Runs a download and collects its notices.
    func run(_ url: String, to path: String, options: DownloadOptions) async -> (Result<DownloadResult, SpateError>, [String]) {
        do {
            let d = try Download(url: url, to: path, options: options)
            async let result = d.run()
            var notices: [String] = []
            for await event in d.events { if case .notice(let text) = event { notices.append(text) } }
            return (.success(try await result), notices)
        } catch let error as SpateError {
            return (.failure(error), [])
        } catch {
            return (.failure(SpateError(.localIO, "\(error)")), [])
        }
    }

    // MARK: Sizes near 2^63 (a trap before)

    @Test(arguments: ["bytes 0-0/9223372036854775807", "bytes 0-0/9223372036854775806", "bytes 0-0/1152921504606846977"])
    func aProbeClaimingAHugeFileIsAnInvalidReply(contentRange: String) async throws {
        try await withTestServer { server in
            server.setHook { request in
                var plan = ResponsePlan(status: 206, body: .bytes([7]))
                plan.setHeader("Content-Range", contentRange)
                plan.setHeader("Content-Length", "1")
                plan.setHeader("ETag", "\"x\"")
                return plan
            }
            let dir = try TemporaryDirectory()
            let result = await download(server.url("/f.bin"), to: dir.file("f.bin"), options: options())
            #expect(result.failureKind == .invalidResponse, "\(result)")
            #expect(dir.contents.isEmpty)
        }
    }

    @Test func aRangeReplyClaimingAHugeTotalIsAnInvalidReply() async throws {
        try await withTestServer { server in
            let content = GeneratedContent(seed: 151, size: 2 * Self.mib)
            let file = TestServer.File(content: content)
            server.addFile("/f.bin", file)
            server.setHook { request in
                guard let range = request.header("range"), !range.hasPrefix("bytes=0-") else { return nil }
                var plan = TestServer.standardPlan(for: request, file: file)
                if let value = plan.header("Content-Range") {
                    plan.setHeader("Content-Range", value.split(separator: "/")[0] + "/9223372036854775807")
                }
                return plan
            }
            let dir = try TemporaryDirectory()
            var o = options()
            o.wholeFileBytes = 0
            let result = await download(server.url("/f.bin"), to: dir.file("f.bin"), options: o)
            #expect(result.failureKind == .invalidResponse, "\(result)")
            #expect(!FileManager.default.fileExists(atPath: dir.file("f.bin")))
        }
    }

    // MARK: Trickles and silence (a hang before)

    /// A server that sends a byte a second: every attempt is cut by the watchdog and counts,
    /// although each moved a byte; the download ends after max-retries + 1 attempts per range.
    @Test func aTrickleIsAStallAndTheRetryBudgetEnds() async throws {
        try await withTestServer { server in
            let content = GeneratedContent(seed: 152, size: 512 << 10)
            let file = TestServer.File(content: content)
            server.addFile("/f.bin", file)
            server.setHook { request in
                guard request.header("range") != "bytes=0-0" else { return nil }
                return Fault.slow(bytesPerSecond: 1).apply(to: request, file: file)
            }
            let dir = try TemporaryDirectory()
            var o = options(connections: 1)
            o.retry = RetryPolicy(maxRetries: 1, baseDelay: .milliseconds(5), maxDelay: .milliseconds(20))
            o.wholeFileBytes = 0
            o.tailHedging = false
            o.workStealing = false
            let result = await download(server.url("/f.bin"), to: dir.file("f.bin"), options: o)
            #expect(result.failureKind == .network, "\(result)")
            #expect(result.failureMessage?.contains("stalled") == true, "\(result)")
            let ranges = server.requests.filter { $0.header("range") != "bytes=0-0" }
            #expect(ranges.count == 2, "one attempt and one retry, not one per byte: \(ranges.count)")
        }
    }

    /// `--min-speed 0` still bounds a silent server: nothing at all for the window is a stall.
    @Test func aSilentServerIsCutEvenWithoutASpeedFloor() async throws {
        try await withTestServer { server in
            let content = GeneratedContent(seed: 153, size: 512 << 10)
            let file = TestServer.File(content: content)
            server.addFile("/f.bin", file)
            server.setHook { request in
                guard request.header("range") != "bytes=0-0" else { return nil }
                return Fault.stallAfter(bytes: 1000).apply(to: request, file: file)
            }
            let dir = try TemporaryDirectory()
            var o = options(connections: 1)
            o.lowSpeedBytesPerSecond = 0
            o.retry = RetryPolicy(maxRetries: 0, baseDelay: .milliseconds(5), maxDelay: .milliseconds(20))
            o.wholeFileBytes = 0
            o.tailHedging = false
            let result = await download(server.url("/f.bin"), to: dir.file("f.bin"), options: o)
            #expect(result.failureKind == .network && result.failureMessage?.contains("stalled") == true, "\(result)")
        }
    }

    // MARK: Resume after a full disk (refused before: it asked for the whole file's space)

    /// On a small tmpfs (mounted for the test; skipped where mounting is not allowed): a first
    /// run saves half the file and stops; the disk is then filled so that the missing half fits
    /// but the whole file does not; the rerun resumes and the file is exact.
    @Test func aResumeNeedsSpaceOnlyForTheMissingBytes() async throws {
        let dir = try TemporaryDirectory()
        let mountPoint = dir.file("small")
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: false)
        guard getuid() == 0, runTool("/bin/mount", ["-t", "tmpfs", "-o", "size=12m", "tmpfs", mountPoint]) == 0 else {
            print("[full disk] skipped: cannot mount a tmpfs here (needs root)")
            return
        }
        defer { _ = runTool("/bin/umount", [mountPoint]) }
        try await withTestServer { server in
            let content = GeneratedContent(seed: 159, size: 8 * Self.mib)
            let file = TestServer.File(content: content)
            let failing = Atomic<Bool>(true)
            let served = Atomic<Int>(0)
            server.setHook { request in
                guard let range = request.header("range"), range != "bytes=0-0" else { return nil }
                if failing.load(ordering: .relaxed) && served.add(1, ordering: .relaxed).newValue > 4 {
                    return .text(500, "down\n")
                }
                return TestServer.standardPlan(for: request, file: file)
            }
            server.addFile("/f.bin", file)
            let path = mountPoint + "/f.bin"
            var o = testOptions(connections: 1, chunk: Self.mib)
            o.wholeFileBytes = 0
            o.retry = RetryPolicy(maxRetries: 0, baseDelay: .milliseconds(5), maxDelay: .milliseconds(20))
            o.tailHedging = false
            o.workStealing = false
            let first = await download(server.url("/f.bin"), to: path, options: o)
            #expect(first.failureKind == .http, "\(first)")
            // Fill the disk: room for the missing 4 MiB and a little, not for 8 MiB.
            var vfs = statvfs()
            #expect(statvfs(mountPoint, &vfs) == 0)
            let free = Int64(vfs.f_bavail) * Int64(vfs.f_frsize)
            let filler = free - 5 * Self.mib
            #expect(filler > 0)
            #expect(FileManager.default.createFile(atPath: mountPoint + "/filler", contents: Data(repeating: 0xA5, count: Int(filler))))
            failing.store(false, ordering: .relaxed)
            let (second, notices) = await run(server.url("/f.bin"), to: path, options: o)
            #expect(second.failureKind == nil, "\(second)")
            #expect(notices.contains { $0.hasPrefix("resuming: 4.00 MiB") }, "\(notices)")
            #expect(compareFile(path, with: content) == nil)
        }
    }

    func runTool(_ path: String, _ arguments: [String]) -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? CLIRunner.spawn(process)) != nil else { return -1 }
        process.waitUntilExit()
        return process.terminationStatus
    }

    // MARK: Apache's weak validators (a loop, then a false "remote changed", before)

    /// Like Apache for a file modified less than a second ago: a weak ETag, and 200 with the
    /// whole file for any `If-Range` (the date is too young to be strong).
    func imitateApache(_ server: TestServer, file: TestServer.File, young: @escaping @Sendable () -> Bool) {
        server.setHook { request in
            var file = file
            file.etag = young() ? "W/\"5f-apache\"" : "\"5f-apache\""
            if young(), request.header("if-range") != nil {
                return TestServer.standardPlan(for: RequestInfo(copying: request, withoutHeader: "range"), file: file)
            }
            return TestServer.standardPlan(for: request, file: file)
        }
    }

    @Test func aServerThatJudgesIfRangeWeakIsAskedWithoutIt() async throws {
        try await withTestServer { server in
            let content = GeneratedContent(seed: 154, size: 3 * Self.mib)
            let file = TestServer.File(content: content)
            imitateApache(server, file: file) { true }
            let dir = try TemporaryDirectory()
            var o = options(connections: 4)
            o.wholeFileBytes = 0
            let (result, notices) = await run(server.url("/f.bin"), to: dir.file("f.bin"), options: o)
            #expect(result.failureKind == nil, "\(result)")
            #expect(compareFile(dir.file("f.bin"), with: content) == nil)
            #expect(notices.filter { $0.contains("ignores If-Range") }.count == 1, "\(notices)")
            // At most one refused request per connection, then none carries If-Range.
            let withIfRange = server.requests.filter { $0.header("if-range") != nil }
            #expect(withIfRange.count <= 4, "\(withIfRange.count) requests with If-Range")
        }
    }

    /// A first run interrupted while the file was young (journaled with its Last-Modified),
    /// and a rerun once the server sends a strong ETag: the dates are compared, the download
    /// resumes, and the bytes already saved are not fetched again.
    @Test func aJournalWithADateResumesWhenTheServerLaterSendsAStrongETag() async throws {
        try await withTestServer { server in
            let content = GeneratedContent(seed: 155, size: 4 * Self.mib)
            let file = TestServer.File(content: content)
            let young = Atomic<Bool>(true)
            let failAfter = Atomic<Int>(3)
            server.setHook { request in
                var file = file
                let isYoung = young.load(ordering: .relaxed)
                file.etag = isYoung ? "W/\"5f-apache\"" : "\"5f-apache\""
                if isYoung, let range = request.header("range"), range != "bytes=0-0" {
                    if failAfter.subtract(1, ordering: .relaxed).newValue < 0 {
                        return .text(500, "down for maintenance\n")
                    }
                }
                return TestServer.standardPlan(for: request, file: file)
            }
            let dir = try TemporaryDirectory()
            var o = options(connections: 1)
            o.wholeFileBytes = 0
            o.retry = RetryPolicy(maxRetries: 0, baseDelay: .milliseconds(5), maxDelay: .milliseconds(20))
            o.journalCommitInterval = .milliseconds(10)
            let first = await download(server.url("/f.bin"), to: dir.file("f.bin"), options: o)
            #expect(first.failureKind == .http, "\(first)")
            #expect(FileManager.default.fileExists(atPath: Journal.path(for: dir.file("f.bin"))))
            young.store(false, ordering: .relaxed)
            server.clearRequests()
            let (second, notices) = await run(server.url("/f.bin"), to: dir.file("f.bin"), options: o)
            #expect(second.failureKind == nil, "\(second)")
            #expect(notices.contains { $0.hasPrefix("resuming:") }, "\(notices)")
            #expect(compareFile(dir.file("f.bin"), with: content) == nil)
            let fetched = server.requests.filter { $0.header("range") != "bytes=0-0" }.count
            #expect(fetched < 16, "\(fetched) range requests: the saved bytes were fetched again")
        }
    }

    // MARK: Malformed replies: exit 8, not 3

    @Test(arguments: ["abc", "-1", "12 34"])
    func aMalformedContentLengthIsAnInvalidReply(value: String) async throws {
        try await withTestServer { server in
            server.setHook { _ in
                var plan = ResponsePlan(status: 200, body: .bytes(Array("hello".utf8)))
                plan.setHeader("Content-Length", value)
                plan.closeAfterResponse = true
                return plan
            }
            let dir = try TemporaryDirectory()
            let result = await download(server.url("/f.bin"), to: dir.file("f.bin"), options: options())
            #expect(result.failureKind == .invalidResponse, "\(result)")
        }
    }

    @Test func anOversizedHeaderIsAnInvalidReply() async throws {
        try await withTestServer { server in
            server.setHook { _ in
                var plan = ResponsePlan.text(200, "x")
                plan.setHeader("X-Padding", String(repeating: "a", count: 1 << 20))
                return plan
            }
            let dir = try TemporaryDirectory()
            let result = await download(server.url("/f.bin"), to: dir.file("f.bin"), options: options())
            #expect(result.failureKind == .invalidResponse, "\(result)")
            #expect(result.failureMessage?.contains("too large") == true, "\(result)")
        }
    }

    @Test func anHTTP09ReplyIsAnInvalidReply() async throws {
        try await withTestServer { server in
            server.setHook { _ in
                var plan = ResponsePlan(status: 200, body: .bytes(Array("just bytes\n".utf8)))
                plan.rawHead = ""
                plan.closeAfterResponse = true
                return plan
            }
            let dir = try TemporaryDirectory()
            let result = await download(server.url("/f.bin"), to: dir.file("f.bin"), options: options())
            #expect(result.failureKind == .invalidResponse, "\(result)")
        }
    }

    // MARK: Notices and limits

    @Test func aFileWithoutValidatorsIsSaidOnce() async throws {
        try await withTestServer { server in
            let content = GeneratedContent(seed: 156, size: 2 * Self.mib)
            var file = TestServer.File.withoutETag(content)
            file.lastModified = nil
            server.addFile("/f.bin", file)
            let dir = try TemporaryDirectory()
            var o = options(connections: 2)
            o.wholeFileBytes = 0
            let (result, notices) = await run(server.url("/f.bin"), to: dir.file("f.bin"), options: o)
            #expect(result.failureKind == nil)
            #expect(notices.filter { $0.hasPrefix("no validator") }.count == 1, "\(notices)")
            // With a checksum the bytes are checked: no notice.
            o.checksum = sha256Checksum(of: content)
            o.overwrite = true
            let (_, quiet) = await run(server.url("/f.bin"), to: dir.file("f.bin"), options: o)
            #expect(!quiet.contains { $0.hasPrefix("no validator") }, "\(quiet)")
        }
    }

    @Test func fifteenRedirectsAreFollowedAndTwentyOneAreNot() async throws {
        try await withTestServer { server in
            let content = GeneratedContent(seed: 157, size: 100_000)
            server.addFile("/f.bin", TestServer.File(content: content))
            server.setHook { request in
                guard request.uri.hasPrefix("/hop/") else { return nil }
                let n = Int(request.uri.dropFirst(5)) ?? 0
                var plan = ResponsePlan(status: 302)
                plan.setHeader("Location", n <= 1 ? "/f.bin" : "/hop/\(n - 1)")
                plan.setHeader("Content-Length", "0")
                return plan
            }
            let dir = try TemporaryDirectory()
            let ok = await download(server.url("/hop/15"), to: dir.file("a.bin"), options: options())
            #expect(ok.failureKind == nil, "\(ok)")
            #expect(compareFile(dir.file("a.bin"), with: content) == nil)
            let tooMany = await download(server.url("/hop/21"), to: dir.file("b.bin"), options: options())
            #expect(tooMany.failureMessage?.contains("too many redirects") == true, "\(tooMany)")
            // The hops are relative: the message names the origin they resolve to, not "…".
            #expect(tooMany.failureMessage?.contains("last to http://127.0.0.1:\(server.port)/…") == true, "\(tooMany)")
        }
    }

    /// `--chunk-size` has a floor, and a fixed size at the floor finishes.
    @Test func theSmallestChunkSizeFinishes() async throws {
        #expect(throws: SpateError.self) {
            var o = DownloadOptions()
            o.chunkBytes = 1
            try o.validate()
        }
        try await withTestServer { server in
            let content = GeneratedContent(seed: 158, size: 256 << 10)
            server.addFile("/f.bin", TestServer.File(content: content))
            let dir = try TemporaryDirectory()
            var o = testOptions(connections: 4, chunk: DownloadOptions.minimumChunkBytes)
            o.wholeFileBytes = 0
            let result = await download(server.url("/f.bin"), to: dir.file("f.bin"), options: o)
            #expect(result.failureKind == nil, "\(result)")
            #expect(compareFile(dir.file("f.bin"), with: content) == nil)
        }
    }
}

extension Result where Failure == SpateError {
    var failureKind: SpateError.Kind? {
        if case .failure(let error) = self { return error.kind }
        return nil
    }

    var failureMessage: String? {
        if case .failure(let error) = self { return error.message }
        return nil
    }
}
