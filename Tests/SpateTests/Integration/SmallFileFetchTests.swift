import Foundation
@testable import Spate
import SpateTestContent
import SpateTestServer
import Synchronization
import Testing

/// A batch's small-file path (`SmallFileFetch`) against the loopback server: every file costs
/// the requests the engine's own probe would make — one for a small file, no second probe for a
/// big one, one for a file that is not there, the retries of the probe's rules for a refusal —
/// and a cancelled batch still hears from every file.
@Suite("Small-file fetch", .timeLimit(.minutes(2)))
struct SmallFileFetchTests {
    func options(_ dir: TemporaryDirectory) -> BatchOptions {
        var options = BatchOptions()
        options.directory = dir.path + "/out"
        options.limits = DownloadSession.Limits(maxConnections: 8, maxConnectionsPerHost: 4)
        options.download = testOptions(connections: 4)
        options.download.wholeFileBytes = DownloadOptions.wholeFileDefault
        return options
    }

    /// Returns once `stream` has yielded `count` times.
    func waitFor(_ count: Int, of stream: AsyncStream<Void>) async {
        var seen = 0
        for await _ in stream {
            seen += 1
            if seen == count { return }
        }
    }

    func range(_ request: RequestInfo) -> String? {
        request.headers.first { $0.name.lowercased() == "range" }?.value
    }

    @Test func eachFileCostsTheRequestsOfItsProbeAndNoMore() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer(hosts: ["127.0.0.1", "127.0.0.2"]) { server in
            let small = GeneratedContent(seed: 31, size: 20_000)
            let big = GeneratedContent(seed: 32, size: 3 << 20)
            let moved = GeneratedContent(seed: 33, size: 777)
            let refusedOnce = GeneratedContent(seed: 34, size: 5000)
            let wrongSum = GeneratedContent(seed: 35, size: 100)
            server.addFile("/small", TestServer.File(content: small))
            server.addFile("/big", TestServer.File(content: big))
            server.addFile("/moved-here", TestServer.File(content: moved))
            server.addFile("/busy", TestServer.File(content: refusedOnce))
            server.addFile("/wrong", TestServer.File(content: wrongSum))
            let refusals = Mutex(0)
            let target = server.url("/moved-here", host: "127.0.0.2")
            server.setHook { request in
                switch request.uri {
                case "/moved":
                    var plan = ResponsePlan(status: 302)
                    plan.setHeader("Location", target)
                    plan.setHeader("Content-Length", "0")
                    return plan
                case "/busy" where refusals.withLock({ n in defer { n += 1 }; return n == 0 }):
                    var plan = ResponsePlan.text(503, "busy")
                    plan.setHeader("Retry-After", "0")
                    return plan
                default:
                    return nil
                }
            }
            let events = Mutex<[BatchEvent]>([])
            let batch = try DownloadBatch(options: options(dir)) { event in events.withLock { $0.append(event) } }
            let entries = [
                ManifestEntry(line: 1, url: server.url("/small"), destination: "small"),
                ManifestEntry(line: 2, url: server.url("/big"), destination: "big"),
                ManifestEntry(line: 3, url: server.url("/missing"), destination: "missing"),
                ManifestEntry(line: 4, url: server.url("/moved"), destination: "moved"),
                ManifestEntry(line: 5, url: server.url("/busy"), destination: "busy"),
                ManifestEntry(line: 6, url: server.url("/wrong"), destination: "wrong",
                              checksum: try Checksum(parsing: "sha256:" + String(repeating: "0", count: 64))),
            ]
            let summary = try await batch.run(entries.makeIterator())
            #expect(summary.succeeded == 4, "\(summary.failures.map(\.error.message))")
            #expect(summary.failed == 2)
            for (name, content) in [("small", small), ("big", big), ("moved", moved), ("busy", refusedOnce)] {
                #expect(compareFile(dir.path + "/out/" + name, with: content) == nil, "\(name)")
            }
            let kinds = Dictionary(uniqueKeysWithValues: summary.failures.map { ($0.file.line, $0.error.kind) })
            #expect(kinds == [3: .http, 6: .checksumMismatch])
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path + "/out").sorted() == ["big", "busy", "moved", "small"])

            let requests = server.requests
            func count(_ uri: String) -> Int { requests.filter { $0.uri == uri }.count }
            #expect(count("/small") == 1)
            #expect(count("/missing") == 1, "a file that is not there is asked for once")
            #expect(count("/moved") == 1 && count("/moved-here") == 1)
            #expect(count("/busy") == 2, "one refusal, one retry")
            #expect(count("/wrong") == 1)
            // The big file's first request is the probe: ranges follow, but no second probe.
            let bigRanges = requests.filter { $0.uri == "/big" }.compactMap(range)
            #expect(bigRanges.filter { $0 == "bytes=0-\(DownloadOptions.wholeFileDefault - 1)" }.count == 1, "\(bigRanges)")
            #expect(bigRanges.count >= 2)

            let all = events.withLock { $0 }
            func lines(_ match: (BatchEvent) -> BatchFile?) -> [Int] { all.compactMap(match).map(\.line).sorted() }
            let retried = lines { if case .file(let f, .retrying) = $0 { f } else { nil } }
            #expect(retried == [5])
            let finished = lines { if case .file(let f, .finished) = $0 { f } else { nil } }
            #expect(finished == [1, 2, 4, 5])
            let started = lines { if case .file(let f, .started) = $0 { f } else { nil } }
            #expect(started == [1, 2, 4, 5, 6], "every file whose reply came whole says how it is fetched")
            let results = all.compactMap { if case .file(let f, .finished(let r)) = $0 { (f.line, r) } else { nil } }
            for (line, result) in results where line != 2 {
                #expect(result.connections == 1, "line \(line)")
            }
            #expect(results.first { $0.0 == 4 }?.1.requests == 2, "a redirect is a request")
            #expect(results.first { $0.0 == 5 }?.1.requests == 2)
            #expect(results.first { $0.0 == 5 }?.1.retries == 1)
            #expect((results.first { $0.0 == 2 }?.1.requests ?? 0) == bigRanges.count, "the big file counts its probe")
        }
    }

    /// `-j 1`: one file on the network at a time, while the written ones wait for their flushes
    /// beside it (counted apart: they hold a descriptor, not a connection), and every one is
    /// still reported saved before the batch returns.
    @Test func filesWaitingForTheDiskDoNotHoldTheNetwork() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            var opts = options(dir)
            opts.maxFilesInFlight = 1
            let finished = Mutex(0)
            let batch = try DownloadBatch(options: opts) { event in
                if case .file(_, .finished) = event { finished.withLock { $0 += 1 } }
            }
            let contents = (0..<30).map { (i: Int) -> GeneratedContent in
                GeneratedContent(seed: UInt64(60 + i), size: Int64(100 + 997 * i))
            }
            let entries = contents.indices.map { i in
                ManifestEntry(line: i + 1, url: server.url("/gen/\(contents[i].size)/\(i)?seed=\(60 + i)"), destination: "f\(i)")
            }
            let summary = try await batch.run(entries.makeIterator())
            #expect(summary.succeeded == 30 && summary.failed == 0, "\(summary)")
            #expect(finished.withLock { $0 } == 30)
            for (i, content) in contents.enumerated() {
                #expect(compareFile(dir.path + "/out/f\(i)", with: content) == nil, "f\(i)")
            }
            #expect(server.requests.count == 30)
            #expect(server.requests.allSatisfy { $0.concurrentRequests == 1 }, "one file on the network at a time")
        }
    }

    /// Downloads that take long (here: fifteen big files whose replies never come) do not hold
    /// back the small files behind them: the batch's wake-ups are counted in small files, and a
    /// download's end is urgent. (Counted among all files in flight, the batch waited for
    /// four endings, and the one small file in flight gave two.)
    @Test func longDownloadsDoNotHoldBackTheSmallFiles() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer(hosts: ["127.0.0.1", "127.0.0.2"]) { server in
            server.setHook { request in
                var plan = server.standardPlan(for: request)
                if request.uri.hasPrefix("/gen/8m/") { plan.firstByteDelay = .seconds(60) }
                return plan
            }
            var opts = options(dir)
            opts.maxFilesInFlight = 16
            opts.limits = DownloadSession.Limits(maxConnections: 64, maxConnectionsPerHost: 16)
            let finished = AsyncStream<Void>.makeStream()
            let batch = try DownloadBatch(options: opts) { event in
                if case .file(_, .finished) = event { finished.continuation.yield() }
            }
            // A mirror makes each big file a `Download` (not the small-file path).
            var entries = try (0..<15).map { i in
                var entry = ManifestEntry(line: i + 1, url: server.url("/gen/8m/\(i)?seed=\(i)"), destination: "big\(i)")
                entry.mirrors = [try RemoteURL(server.url("/gen/8m/\(i)?seed=\(i)", host: "127.0.0.2"))]
                return entry
            }
            entries += (0..<20).map { i in
                ManifestEntry(line: 16 + i, url: server.url("/gen/2000/\(i)?seed=\(i)", host: "127.0.0.2"), destination: "small\(i)")
            }
            let run = Task { try await batch.run(entries.makeIterator()) }
            await waitFor(20, of: finished.stream)
            run.cancel()
            let summary = try await run.value
            #expect(summary.succeeded == 20 && summary.cancelled == 15, "\(summary)")
        }
    }

    /// Cancelling the batch's task while small files wait for their replies and for slots:
    /// every file still ends (as cancelled), nothing is left behind, and the run returns.
    @Test func aCancelledBatchHearsFromEveryFile() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let arrived = AsyncStream<Void>.makeStream()
            server.setHook { request in
                var plan = server.standardPlan(for: request)
                // Still waiting when the batch is cancelled, however late a loaded machine runs
                // this test's task (with 30 s, replies once came first: 4 files saved).
                plan.firstByteDelay = .seconds(250)
                arrived.continuation.yield()
                return plan
            }
            var opts = options(dir)
            opts.limits = DownloadSession.Limits(maxConnections: 4, maxConnectionsPerHost: 4)
            // No stall cut before the cancel either: a watchdog retry (after the default 10 s
            // without a byte) is a request sent after the four the test waits for, which the
            // last check would take for one sent after the cancel.
            opts.download.lowSpeedWindow = .seconds(300)
            let ended = Mutex<[Int: SpateError.Kind?]>([:])
            let batch = try DownloadBatch(options: opts) { event in
                switch event {
                case .file(let f, .finished): ended.withLock { $0[f.line] = .some(nil) }
                case .failed(let f, let e): ended.withLock { $0[f.line] = e.kind }
                default: break
                }
            }
            let entries = (0..<12).map { i in
                ManifestEntry(line: i + 1, url: server.url("/gen/3000/\(i)?seed=\(i)"), destination: "f\(i)")
            }
            let run = Task { try await batch.run(entries.makeIterator()) }
            // Four requests at the server (every slot), eight files waiting for a slot.
            await waitFor(4, of: arrived.stream)
            run.cancel()
            let summary = try await run.value
            #expect(summary.stoppedEarly)
            #expect(summary.cancelled == 12, "\(summary)")
            #expect(summary.succeeded == 0 && summary.failed == 0)
            #expect(ended.withLock { $0.count } == 12, "one ending per file")
            #expect(ended.withLock { $0.values.allSatisfy { $0 == .cancelled } })
            let left = (try? FileManager.default.contentsOfDirectory(atPath: dir.path + "/out")) ?? []
            #expect(left.isEmpty, "\(left)")
            #expect(server.requests.count == 4, "no file waiting for a slot was sent after the cancel")
        }
    }
}
