import Foundation
@testable import Spate
import SpateTestContent
import SpateTestServer
import Synchronization
import Testing

/// Several downloads in one session: the budgets hold at the server (which counts the
/// connections open to each of its two addresses), a throttling host loses budget alone, and
/// time-driven waits follow an injected clock.
@Suite("Sessions", .timeLimit(.minutes(5)))
struct SessionTests {
    static let hosts = ["127.0.0.1", "127.0.0.2"]
    static let size: Int64 = 32 << 20

    /// Eight files, four on each host.
    func files(on server: TestServer) -> [(url: String, name: String, content: GeneratedContent)] {
        (0..<8).map { i in
            let content = GeneratedContent(seed: UInt64(300 + i), size: Self.size)
            server.addFile("/f\(i).bin", TestServer.File(content: content))
            return (server.url("/f\(i).bin", host: Self.hosts[i % 2]), "f\(i).bin", content)
        }
    }

    /// Replies paced at `rate` bytes/s each, so requests overlap at the server (unpaced, a
    /// loopback reply is in the socket buffers before the next request is read); `refuse`
    /// may answer instead.
    func pace(_ server: TestServer, rate: Int, refuse: @escaping @Sendable (RequestInfo) -> ResponsePlan? = { _ in nil }) {
        server.setHook { request in
            if let refusal = refuse(request) { return refusal }
            var plan = server.standardPlan(for: request)
            plan.bytesPerSecond = rate
            return plan
        }
    }

    /// Runs every file in `session` at once; returns each one's result.
    func downloadAll(_ files: [(url: String, name: String, content: GeneratedContent)], into dir: TemporaryDirectory,
                     session: DownloadSession, options: DownloadOptions) async throws -> [String: Result<DownloadResult, SpateError>] {
        let downloads = try files.map { try Download(url: $0.url, to: dir.file($0.name), options: options, session: session) }
        return await withTaskGroup(of: (String, Result<DownloadResult, SpateError>).self) { group in
            for (file, download) in zip(files, downloads) {
                group.addTask {
                    do throws(SpateError) {
                        return (file.name, .success(try await download.run()))
                    } catch {
                        return (file.name, .failure(error))
                    }
                }
            }
            var results: [String: Result<DownloadResult, SpateError>] = [:]
            for await (name, result) in group { results[name] = result }
            return results
        }
    }

    @Test func eightDownloadsFromTwoHostsNeverExceedThePerHostBudget() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer(hosts: Self.hosts) { server in
            let files = files(on: server)
            pace(server, rate: 32 << 20)
            let session = try DownloadSession(limits: .init(maxConnections: 16, maxConnectionsPerHost: 4))
            defer { session.shutdown() }
            let results = try await downloadAll(files, into: dir, session: session, options: testOptions(connections: 16))
            for file in files {
                if case .failure(let error) = results[file.name] { Issue.record("\(file.name): \(error)") }
                #expect(compareFile(dir.file(file.name), with: file.content) == nil, "\(file.name)")
            }
            for host in Self.hosts {
                let peak = server.peakOpenConnections(host: host)
                #expect(peak <= 4, "\(host): \(peak) connections open at once")
                let sockets = session.loop.sockets.peak(try RemoteURL(server.url("/", host: host)).origin.key)
                #expect((1...4).contains(sockets), "\(host): spate had \(sockets) sockets open at once")
                let busiest = server.requests.filter { $0.host == host }.map(\.concurrentRequestsOnHost).max() ?? 0
                #expect(busiest <= 4, "\(host): \(busiest) requests at once")
                #expect(busiest >= 2, "\(host): the downloads ran side by side (\(busiest) at most)")
            }
            #expect(session.connectionsInUse == 0, "every slot given back")
        }
    }

    /// The second host refuses (429) any request beyond two at once; the first never throttles.
    /// Replies are paced at 24 MiB/s so the downloads outlast the budget's convergence: the
    /// first cut may leave 3 (the requests in flight then), and the next cut needs a refusal
    /// one cooldown later. At 64 MiB/s the last files sometimes ended before it, under the
    /// load of the whole suite (the budget stayed at 3).
    @Test func aThrottlingHostLosesBudgetAndTheOtherKeepsIt() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer(hosts: Self.hosts) { server in
            let files = files(on: server)
            pace(server, rate: 24 << 20) { request in
                guard request.host == Self.hosts[1], request.concurrentRequestsOnHost > 2 else { return nil }
                return .text(429, "too many connections\n")
            }
            let session = try DownloadSession(limits: .init(maxConnections: 16, maxConnectionsPerHost: 4))
            defer { session.shutdown() }
            var options = testOptions(connections: 16)
            options.retry = RetryPolicy(maxRetries: 5, baseDelay: .milliseconds(5), maxDelay: .milliseconds(50))
            let results = try await downloadAll(files, into: dir, session: session, options: options)
            for file in files {
                if case .failure(let error) = results[file.name] { Issue.record("\(file.name): \(error)") }
                #expect(compareFile(dir.file(file.name), with: file.content) == nil, "\(file.name)")
            }
            let refusedRanges = server.requests.filter { $0.host == Self.hosts[1] && $0.concurrentRequestsOnHost > 2 }
            #expect(!refusedRanges.isEmpty, "the server refused some requests")
            let throttled = try session.budget(for: server.url("/", host: Self.hosts[1]))
            let calm = try session.budget(for: server.url("/", host: Self.hosts[0]))
            #expect(throttled.cuts >= 1 && (1...2).contains(throttled.lowest), "cut to what the host serves: \(throttled)")
            #expect(calm.cuts == 0 && calm.allowed == 4 && calm.lowest == 4, "the other host keeps its budget: \(calm)")
            #expect(server.requests.filter { $0.host == Self.hosts[0] }.allSatisfy { $0.concurrentRequestsOnHost <= 4 })
            for host in Self.hosts {
                #expect(server.peakOpenConnections(host: host) <= 4, "\(host)")
                #expect(session.loop.sockets.peak(try RemoteURL(server.url("/", host: host)).origin.key) <= 4, "\(host)")
            }
        }
    }

    /// Serves `content` at /f.bin and answers the first range request with 503 and
    /// `Retry-After: retryAfter`.
    func refuseFirstRange(of content: GeneratedContent, on server: TestServer, retryAfter: String) {
        let file = TestServer.File(content: content)
        server.addFile("/f.bin", file)
        let refused = Mutex(false)
        server.setHook { request in
            guard request.header("range") != "bytes=0-0", refused.withLock({ r in defer { r = true }; return !r }) else { return nil }
            return Fault.status(503, retryAfter: retryAfter).apply(to: request, file: file)
        }
    }

    /// A 2-minute Retry-After, waited on an injected clock: the download sleeps until the test
    /// moves the clock, then finishes. Nothing depends on how fast the machine is.
    @Test func retryAfterIsWaitedOnTheSessionClock() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let content = GeneratedContent(seed: 310, size: 3 << 20)
            refuseFirstRange(of: content, on: server, retryAfter: "120")
            let clock = ManualClock()
            let session = try DownloadSession(limits: .init(maxConnections: 1, maxConnectionsPerHost: 1), clock: clock)
            defer { session.shutdown() }
            var options = testOptions(connections: 1, chunk: 1 << 20)
            options.retry = RetryPolicy(maxRetries: 3, baseDelay: .milliseconds(5), maxDelay: .seconds(300))
            options.journal = false
            let download = try Download(url: server.url("/f.bin"), to: dir.file("f.bin"), options: options, session: session)
            let run = Task { try await download.run() }
            await clock.sleeper(atLeast: .seconds(100))
            let ranges = { server.requests.filter { $0.header("range").map { $0 != "bytes=0-0" } ?? false } }
            #expect(ranges().count == 1, "waiting after the refusal, nothing sent meanwhile")
            clock.advance(by: .seconds(120))
            let result = try await run.value
            #expect(result.retries == 1)
            #expect(ranges().count == 4, "the refused range again, then the other two")
            #expect(compareFile(dir.file("f.bin"), with: content) == nil)
        }
    }

    /// A worker waiting out a refusal's Retry-After holds nothing up: another worker fetches
    /// the refused range, and the download ends without that wait (the clock never moves here,
    /// so a download that waited for it would never end).
    @Test func aPendingRetryDoesNotHoldUpAFinishedDownload() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let content = GeneratedContent(seed: 311, size: 4 << 20)
            refuseFirstRange(of: content, on: server, retryAfter: "600")
            let session = try DownloadSession(limits: .init(maxConnections: 2, maxConnectionsPerHost: 2), clock: ManualClock())
            defer { session.shutdown() }
            var options = testOptions(connections: 2, chunk: 1 << 20)
            options.retry = RetryPolicy(maxRetries: 3, baseDelay: .milliseconds(5), maxDelay: .seconds(900))
            options.selfTuning = false
            options.tailHedging = false
            options.journal = false
            let download = try Download(url: server.url("/f.bin"), to: dir.file("f.bin"), options: options, session: session)
            let result = try await download.run()
            #expect(result.retries == 1)
            #expect(compareFile(dir.file("f.bin"), with: content) == nil)
        }
    }

    /// Shutting a session down while its downloads run ends them (cancelled, partial files
    /// kept for a resume), and a download started afterwards fails at once.
    @Test func shuttingASessionDownEndsItsDownloads() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let content = GeneratedContent(seed: 312, size: 32 << 20)
            server.addFile("/f.bin", TestServer.File(content: content))
            pace(server, rate: 1 << 20)
            let session = try DownloadSession(limits: .init(maxConnections: 4, maxConnectionsPerHost: 4))
            let download = try Download(url: server.url("/f.bin"), to: dir.file("f.bin"), options: testOptions(connections: 4),
                                        session: session)
            let run = Task { try await download.run() }
            for await event in download.events {
                if case .progress(let p) = event, p.bytesDone > 0 { break }  // bytes are flowing
            }
            session.shutdown()
            do {
                _ = try await run.value
                Issue.record("a download whose session shut down must not succeed")
            } catch let error as SpateError {
                #expect(error.kind == .cancelled)
            }
            #expect(dir.contents == ["f.bin.part", "f.bin.part.journal"], "kept for a resume")
            let late = try Download(url: server.url("/f.bin"), to: dir.file("g.bin"), session: session)
            await #expect(throws: SpateError.self) { try await late.run() }
        }
    }

    /// The README's session example, line for line (only the URLs and paths differ).
    @Test func readmeSessionExample() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer(hosts: Self.hosts) { server in
            let contents = (0..<3).map { GeneratedContent(seed: UInt64(320 + $0), size: 5 << 20 + Int64($0)) }
            for (i, content) in contents.enumerated() { server.addFile("/part\(i).bin", TestServer.File(content: content)) }
            let files = contents.indices.map { i in (server.url("/part\(i).bin", host: Self.hosts[i % 2]), dir.file("part\(i).bin")) }

            // --- README session example begins ---
            let limits = DownloadSession.Limits(maxConnections: 16, maxConnectionsPerHost: 4)
            let saved = try await DownloadSession.with(limits: limits) { session in
                try await withThrowingTaskGroup(of: DownloadResult.self) { group in
                    for (url, path) in files {
                        let download = try Download(url: url, to: path, session: session)
                        group.addTask { try await download.run() }
                    }
                    var saved: [String] = []
                    for try await result in group { saved.append(result.path) }
                    return saved
                }
            }
            // --- README session example ends ---

            #expect(Set(saved) == Set(files.map(\.1)))
            for (i, content) in contents.enumerated() { #expect(compareFile(dir.file("part\(i).bin"), with: content) == nil) }
        }
    }
}

/// The journal's failure reporting, on a real file: a commit that fails reaches the download
/// as a status (a notice, then an error), and records survive a failed commit.
@Suite("Journal commits")
struct JournalCommitTests {
    @Test func aFailingCommitIsReportedAndItsRecordsAreKept() throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("out.bin")
        let file = try OutputFile(creatingFor: path, replacePartial: true)
        let header = JournalCodec.Header(totalSize: 1 << 20, fingerprint: Array(repeating: 7, count: 32), validator: .strongETag("\"e\""))
        let journal = try Journal(path: Journal.path(for: path), header: header, records: [], data: file)
        let first = HashedRange(range: ByteRange(0, 4096), crc: 1)
        journal.record(first)
        journal.commitNow()
        #expect(journal.noteInFlight([]).failuresInARow == 0)
        #expect(try Journal.load(path: Journal.path(for: path))?.records == [first])

        file.close()  // the data file's descriptor goes bad: fdatasync fails before any record is claimed
        let second = HashedRange(range: ByteRange(4096, 8192), crc: 2)
        journal.record(second)
        journal.commitNow()
        let status = journal.noteInFlight([])
        #expect(status.failuresInARow == 1 && status.lastError?.kind == .localIO)
        guard case .notice = status.verdict(path: journal.path, reportedFailures: 0) else { Issue.record("a notice first"); return }
        journal.commitNow()
        journal.commitNow()
        guard case .stop(let error) = journal.noteInFlight([]).verdict(path: journal.path, reportedFailures: 1) else {
            Issue.record("an error when commits keep failing"); return
        }
        #expect(error.kind.exitCode == 6)
        #expect(try Journal.load(path: Journal.path(for: path))?.records == [first], "nothing unsynced was claimed")
        #expect(journal.commitDue != nil, "the unclaimed record still waits for a commit")
        journal.remove()
    }
}
