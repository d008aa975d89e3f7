@testable import Spate
import SpateTestContent
import SpateTestServer
import Synchronization
import Testing

/// Several sources for one file (issue 14, item 2): 127.0.0.1 is the URL, 127.0.0.2 the
/// mirror (two hosts of one test server). What is asserted is where the bytes came from and
/// what each host was sent, never how long it took.
@Suite("Mirrors", .timeLimit(.minutes(5)))
struct MirrorTests {
    static let hosts = ["127.0.0.1", "127.0.0.2"]
    static let size: Int64 = 6 << 20

    /// Bytes each host was asked for, by its range requests (the probe excluded).
    func askedBytes(_ server: TestServer) -> [String: Int64] {
        var asked: [String: Int64] = [:]
        for r in server.requests {
            guard let value = r.header("range"), value != "bytes=0-0",
                  case .satisfiable(let start, let end) = RangeRequest.parse(value, size: Self.size) else { continue }
            asked[r.host, default: 0] += end - start
        }
        return asked
    }

    func options() -> DownloadOptions {
        var o = testOptions(connections: 8, chunk: 256 << 10)
        o.selfTuning = false
        o.tailHedging = false
        return o
    }

    /// Downloads the URL's /f.bin with 127.0.0.2's as its mirror: a failure is recorded, the
    /// file must be exact. Returns the download's notices.
    func downloadWithMirror(_ server: TestServer, _ content: GeneratedContent, options: DownloadOptions) async throws -> [String] {
        var o = options
        o.mirrors = [try RemoteURL(server.url("/f.bin", host: "127.0.0.2"))]
        let dir = try TemporaryDirectory()
        let (result, notices) = await downloadNoticing(server.url("/f.bin"), to: dir.file("f.bin"), options: o)
        if case .failure(let error) = result { Issue.record("\(error)") }
        #expect(compareFile(dir.file("f.bin"), with: content) == nil)
        return notices
    }

    /// The URL's host serves `content`, the mirror's another version of the same size (seed
    /// `seed`); the hosts in `pacing` send 1 MiB/s per connection.
    func serveAnotherVersionOnTheMirror(_ server: TestServer, _ content: GeneratedContent, seed: UInt64, pacing: Set<String>) {
        let file = TestServer.File(content: content)
        let other = TestServer.File(content: GeneratedContent(seed: seed, size: content.size))
        server.setHook { request in
            var plan = TestServer.standardPlan(for: request, file: request.host == "127.0.0.1" ? file : other)
            if pacing.contains(request.host) { plan.bytesPerSecond = 1 << 20 }
            return plan
        }
    }

    /// Content bytes each host sent.
    func servedBytes(_ server: TestServer) -> [String: Int64] {
        let hosts = Dictionary(server.requests.map { ($0.index, $0.host) }, uniquingKeysWith: { a, _ in a })
        var served: [String: Int64] = [:]
        for s in server.servedBytes { served[hosts[s.requestIndex] ?? "?", default: 0] += s.count }
        return served
    }

    /// The mirror is 16x slower per connection: both serve, the fast one more (each of the
    /// mirror's 256 KiB requests takes a second; the URL's host fetches the rest meanwhile), the file is exact, and the
    /// user's Authorization goes to the URL's host only.
    @Test func rangesFlowToBothSourcesByTheirSpeed() async throws {
        try await withTestServer(hosts: Self.hosts) { server in
            let content = GeneratedContent(seed: 141, size: Self.size)
            let file = TestServer.File(content: content)
            server.addFile("/f.bin", file)
            server.setHook { request in
                var plan = TestServer.standardPlan(for: request, file: file)
                // The URL's host paced too: the mirror joins once its probe is done, and the
                // download must not be over by then.
                plan.bytesPerSecond = request.host == "127.0.0.1" ? 4 << 20 : 256 << 10
                return plan
            }
            var o = options()
            o.headers = [try HTTPHeader(parsing: "Authorization: Bearer mirror-test-secret")]
            _ = try await downloadWithMirror(server, content, options: o)
            let served = servedBytes(server)
            let fast = served["127.0.0.1", default: 0], slow = served["127.0.0.2", default: 0]
            #expect(slow > 0 && fast > slow, "\(served)")
            for r in server.requests {
                let sent = r.header("authorization") != nil
                #expect(sent == (r.host == "127.0.0.1"), "\(r.host) \(r.header("range") ?? "")")
            }
        }
    }

    /// The mirror serves another version (same size, another ETag): it is probed, left out
    /// with a notice naming why, and never asked for a range.
    @Test func aMirrorOfAnotherVersionIsLeftOut() async throws {
        try await withTestServer(hosts: Self.hosts) { server in
            let content = GeneratedContent(seed: 142, size: Self.size)
            // The download outlasts the mirror's probe.
            serveAnotherVersionOnTheMirror(server, content, seed: 143, pacing: ["127.0.0.1", "127.0.0.2"])
            let notices = try await downloadWithMirror(server, content, options: options())
            #expect(notices.contains { $0.contains("not using the mirror") && $0.contains("same version") }, "\(notices)")
            #expect(askedBytes(server)["127.0.0.2"] == nil, "only probed")
        }
    }

    /// With a checksum, a mirror of another version is used (every byte is checked), and when
    /// its bytes differ the download fails: no file, and the message says mirrors took part.
    @Test func aChecksumMismatchWithMirrorsSaysSo() async throws {
        try await withTestServer(hosts: Self.hosts) { server in
            let content = GeneratedContent(seed: 144, size: Self.size)
            serveAnotherVersionOnTheMirror(server, content, seed: 145, pacing: ["127.0.0.1"])  // the mirror joins in time
            var o = options()
            o.checksum = sha256Checksum(of: content)
            o.mirrors = [try RemoteURL(server.url("/f.bin", host: "127.0.0.2"))]
            let dir = try TemporaryDirectory()
            let (result, _) = await downloadNoticing(server.url("/f.bin"), to: dir.file("f.bin"), options: o)
            try #require(askedBytes(server)["127.0.0.2", default: 0] > 0, "the mirror served ranges")
            guard case .failure(let error) = result else { Issue.record("bytes of another version were saved"); return }
            #expect(error.kind == .checksumMismatch)
            #expect(error.message.contains("mirrors served part of the bytes"), "\(error.message)")
            #expect(dir.contents.isEmpty)
        }
    }

    /// The mirror answers its first ranges, then only 500s: it is dropped with a notice, its
    /// bytes go to the URL's host, and the file is exact.
    @Test func aMirrorThatFailsMidwayIsDropped() async throws {
        try await withTestServer(hosts: Self.hosts) { server in
            let content = GeneratedContent(seed: 144, size: Self.size)
            let file = TestServer.File(content: content)
            let served = Mutex(0)
            server.setHook { request in
                var plan = TestServer.standardPlan(for: request, file: file)
                let mirrorRequests = served.withLock { $0 }
                // The URL's host crawls until the mirror has failed four times, so the mirror's
                // workers ask many times however loaded the machine is (at 128 KiB/s a
                // connection it would need 12 s alone); then it serves the rest quickly.
                plan.bytesPerSecond = request.host == "127.0.0.1" ? (mirrorRequests >= 6 ? 8 << 20 : 128 << 10) : 8 << 20
                guard request.host == "127.0.0.2", request.header("range") != "bytes=0-0" else { return plan }
                let n = served.withLock { n -> Int in
                    n += 1
                    return n
                }
                return n <= 2 ? plan : ResponsePlan.text(500, "broken mirror\n")
            }
            var o = options()
            o.retry = RetryPolicy(maxRetries: 1, baseDelay: .milliseconds(5), maxDelay: .milliseconds(20))
            let notices = try await downloadWithMirror(server, content, options: o)
            #expect(notices.contains { $0.contains("dropped the source") && $0.contains("127.0.0.2") }, "\(notices)")
        }
    }
}

extension MirrorTests {
    /// `--max-per-host` for one URL caps each source's host: 6 connections, 3 per host, and
    /// neither host ever sees more than 3 open.
    @Test func eachSourcesHostKeepsItsBudget() async throws {
        try await withTestServer(hosts: Self.hosts) { server in
            let content = GeneratedContent(seed: 147, size: Self.size)
            let file = TestServer.File(content: content)
            server.setHook { request in
                var plan = TestServer.standardPlan(for: request, file: file)
                plan.bytesPerSecond = 4 << 20  // replies overlap, so an overrun would show
                return plan
            }
            var o = options()
            o.connections = 6
            o.maxConnectionsPerHost = 3
            _ = try await downloadWithMirror(server, content, options: o)
            for host in Self.hosts {
                let peak = server.peakOpenConnections(host: host)
                #expect((1...3).contains(peak), "\(host): \(peak) open at once")
            }
        }
    }

    /// A manifest line with a TAB-separated mirror: the batch fetches the file from both hosts.
    @Test func aManifestLinesMirrorsServeItsFile() async throws {
        try await withTestServer(hosts: Self.hosts) { server in
            let content = GeneratedContent(seed: 146, size: Self.size)
            server.addFile("/f.bin", TestServer.File(content: content))
            var parser = ManifestParser()
            let line = "\(server.url("/f.bin"))\t\(server.url("/f.bin", host: "127.0.0.2"))\tdata/f.bin"
            let entry = try #require(try parser.feed(Substring(line), number: 1) ?? parser.finish())
            #expect(entry.mirrors.count == 1 && entry.destination == "data/f.bin")
            let dir = try TemporaryDirectory()
            var options = BatchOptions()
            options.directory = dir.path + "/out"
            options.limits = DownloadSession.Limits(maxConnections: 8, maxConnectionsPerHost: 4)
            options.download = self.options()
            let batch = try DownloadBatch(options: options) { _ in }
            let summary = try await batch.run([entry].makeIterator())
            #expect(summary.succeeded == 1, "\(summary)")
            #expect(compareFile(dir.path + "/out/data/f.bin", with: content) == nil)
            let asked = askedBytes(server)
            #expect(asked["127.0.0.1", default: 0] > 0 && asked["127.0.0.2", default: 0] > 0, "\(asked)")
        }
    }
}

/// Which mirrors describe the same file, and when a failing one is dropped (no I/O).
@Suite("Mirror checks")
struct SourceSetTests {
    /// A range's retries travel with its bytes: the request that spends the last one may be a
    /// healthy source's first failure. Only a source that failed twice in a row is dropped,
    /// never the last one, and never for a local failure.
    @Test func onlyASourceThatKeepsFailingIsDropped() throws {
        let session = try DownloadSession()
        defer { session.shutdown() }
        let transport = DownloadTransport(session: session, counters: DownloadCounters(), emit: { _ in })
        func source(_ url: String) throws -> SourceSet.Source {
            let requests = RequestBuilder(url: try RemoteURL(url), options: DownloadOptions())
            return SourceSet.Source(resolver: RemoteResolver(requests: requests, transport: transport, seed: 1), requests: requests)
        }
        let set = SourceSet(try source("http://a.example/f"))
        set.add(try source("http://b.example/f"))
        let reset = SpateError(.network, "connection reset")
        set.record(0, failed: true)
        #expect(set.drop(0, after: reset) == .spared, "one failure of the URL's source")
        set.record(1, failed: true)
        set.record(1, failed: true)
        #expect(set.drop(1, after: SpateError(.localIO, "disk full")) == .kept, "not the source's fault")
        #expect(set.drop(1, after: reset) == .dropped)
        #expect(set.drop(1, after: reset) == .alreadyDropped)
        #expect(set.activeCount == 1 && set.source(for: 1).index == 0, "every worker now asks the URL")
        set.record(0, failed: true)
        #expect(set.drop(0, after: reset) == .kept, "the last source's failure is the download's")
    }

    func remote(_ url: String, size: Int64? = 1000, etag: String? = "\"a\"", date: String? = "Mon, 01 Jan 2024 00:00:00 GMT",
                ranges: Bool = true) throws -> RemoteFile {
        RemoteFile(url: try RemoteURL(url), size: size, acceptsRanges: ranges, strongETag: etag, lastModified: date)
    }

    @Test func aMirrorMustServeTheSameSizeAndVersion() throws {
        let primary = try remote("http://a.example/f")
        let sha = try Checksum(parsing: "sha256:" + String(repeating: "ab", count: 32))
        #expect(SourceSet.mismatch(primary: primary, mirror: try remote("http://b.example/f"), checksum: nil) == nil)
        #expect(SourceSet.mismatch(primary: primary, mirror: try remote("http://b.example/f", size: 999), checksum: nil)?
            .contains("999 bytes") == true)
        #expect(SourceSet.mismatch(primary: primary, mirror: try remote("http://b.example/f", ranges: false), checksum: nil) != nil)
        // Another ETag: another version, unless a checksum will check every byte.
        let other = try remote("http://b.example/f", etag: "\"b\"")
        #expect(SourceSet.mismatch(primary: primary, mirror: other, checksum: nil)?.contains("--checksum") == true)
        #expect(SourceSet.mismatch(primary: primary, mirror: other, checksum: sha) == nil)
        // ...but not when the mirror publishes a digest that disagrees with it.
        var disagreeing = other
        disagreeing.serverDigests = [ServerDigest(checksum: try Checksum(parsing: "sha256:" + String(repeating: "cd", count: 32)),
                                                  source: "Repr-Digest")]
        #expect(SourceSet.mismatch(primary: primary, mirror: disagreeing, checksum: sha)?.contains("Repr-Digest") == true)
        // No ETags: Last-Modified decides.
        let byDate = try remote("http://a.example/f", etag: nil)
        #expect(SourceSet.mismatch(primary: byDate, mirror: try remote("http://b.example/f", etag: nil), checksum: nil) == nil)
        #expect(SourceSet.mismatch(primary: byDate, mirror: try remote("http://b.example/f", etag: nil, date: "Tue, 02 Jan 2024 00:00:00 GMT"),
                                   checksum: nil) != nil)
    }
}
