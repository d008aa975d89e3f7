@testable import Spate
import SpateTestContent
import SpateTestServer
import Testing

/// Behind a round trip (the test server holds every reply `firstByteDelay`: this kernel has no
/// netem), every request costs a connection one idle reply wait, and a host's burst of 429s
/// arrives before most of its 206 heads. What is asserted is what spate asks for and what the
/// budget settles on, never how long it took.
@Suite("Round trips", .timeLimit(.minutes(5)))
struct RoundTripTests {
    static let size: Int64 = 8 << 20

    /// Paces every reply at `rate` per connection and holds it `delay`; `refuse` answers first.
    func serve(_ server: TestServer, content: GeneratedContent, rate: Int, delay: Duration?,
               refuse: @escaping @Sendable (RequestInfo) -> ResponsePlan? = { _ in nil }) {
        let file = TestServer.File(content: content)
        server.addFile("/f.bin", file)
        server.setHook { request in
            var plan = refuse(request) ?? server.standardPlan(for: request)
            plan.bytesPerSecond = rate
            plan.firstByteDelay = delay
            return plan
        }
    }

    func options(connections: Int) -> DownloadOptions {
        var o = testOptions(connections: connections)
        o.selfTuning = false
        o.tailHedging = false
        return o
    }

    /// The first `count` range requests (the probe excluded), as byte counts.
    func firstRangeSizes(_ server: TestServer, count: Int) -> [Int64] {
        server.requests.compactMap { request -> Int64? in
            guard let value = request.header("range"), value != "bytes=0-0",
                  case .satisfiable(let start, let end) = RangeRequest.parse(value, size: Self.size) else { return nil }
            return end - start
        }.prefix(count).map { $0 }
    }

    /// 40 ms of reply wait: each of the 4 connections asks for a quarter of the file at once
    /// (one idle round trip in all, not one per 0.5 s of data). Only the delayed case is run
    /// here: load only lengthens the wait, so the quarters hold however busy the machine is.
    /// Loopback without a delay can look like a round trip on a loaded machine (a test server
    /// thread left waiting 13 ms is one), so the usual requests after a short wait are asserted
    /// on the schedule alone (`RangeScheduleTests.theProbesReplyWaitSetsTheFirstRequests`).
    @Test func aRoundTripMakesEachConnectionAskForItsShareAtOnce() async throws {
        try await withTestServer { server in
            let content = GeneratedContent(seed: 81, size: Self.size)
            serve(server, content: content, rate: 8 << 20, delay: .milliseconds(40))
            let dir = try TemporaryDirectory()
            let result = await download(server.url("/f.bin"), to: dir.file("f.bin"), options: options(connections: 4))
            if case .failure(let error) = result { Issue.record("\(error)") }
            #expect(compareFile(dir.file("f.bin"), with: content) == nil)
            let sizes = firstRangeSizes(server, count: 4)
            #expect(sizes == Array(repeating: Self.size / 4, count: 4), "\(sizes)")
        }
    }

    /// The host serves 2 requests per client and 6 arrive at once behind a 300 ms round trip:
    /// the first 429 comes back with the 206 heads, before any byte. The budget settles on 2
    /// (the 6 in flight, less the 4 refusals), not on the few already receiving; the file is
    /// exact. (The round trip is long so that a loaded machine, which may start the 6 requests
    /// tens of milliseconds apart, still has them all in flight when the first reply comes.)
    @Test func aPerClientCapBehindARoundTripIsFoundExactly() async throws {
        try await withTestServer { server in
            let content = GeneratedContent(seed: 82, size: Self.size)
            serve(server, content: content, rate: 4 << 20, delay: .milliseconds(300)) { request in
                guard request.header("range") != "bytes=0-0", request.concurrentRequestsOnHost > 2 else { return nil }
                var refusal = ResponsePlan.text(429, "too many requests\n")
                refusal.setHeader("Retry-After", "0")
                return refusal
            }
            let session = try DownloadSession(limits: .init(maxConnections: 6, maxConnectionsPerHost: 6))
            defer { session.shutdown() }
            let dir = try TemporaryDirectory()
            var o = options(connections: 6)
            o.retry = RetryPolicy(maxRetries: 5, baseDelay: .milliseconds(5), maxDelay: .milliseconds(50))
            let d = try Download(url: server.url("/f.bin"), to: dir.file("f.bin"), options: o, session: session)
            _ = try await d.run()
            #expect(compareFile(dir.file("f.bin"), with: content) == nil)
            let budget = try session.budget(for: server.url("/"))
            #expect(budget.cuts >= 1 && budget.lowest == 2, "\(budget)")
            let served = server.requests.filter { $0.header("range") != "bytes=0-0" && $0.concurrentRequestsOnHost <= 2 }
            #expect(!served.isEmpty)
        }
    }
}
