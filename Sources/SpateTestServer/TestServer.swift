import NIOCore
import NIOPosix
import NIOHTTP1
import Spate
import SpateTestContent
import Synchronization

/// A programmable HTTP/1.1 server on loopback, for tests, benchmarks and the demo.
///
/// It serves deterministic generated content (`GeneratedContent`) of any size with single
/// ranges (`a-b`, `a-`, `-n`), 206/416, a strong ETag, Last-Modified and keep-alive. Every
/// request can be answered by a hook instead (faults, cloud API emulations); the server records
/// every request it receives so tests can assert on what a client sent, and to which host.
///
/// Paths: files added with `addFile`, and `/gen/SIZE[/NAME]?seed=N` for any size on the fly.
public final class TestServer: Sendable {
    /// A file the server knows.
    public struct File: Sendable {
        public var content: GeneratedContent
        /// The strong ETag sent with every reply; nil sends none.
        public var etag: String?
        public var lastModified: String?
        /// When false the server ignores Range and always answers 200 with the whole body.
        public var acceptsRanges: Bool
        public var contentDisposition: String?

        public init(content: GeneratedContent, etag: String? = nil, lastModified: String? = TestServer.defaultLastModified,
                    acceptsRanges: Bool = true, contentDisposition: String? = nil) {
            self.content = content
            self.etag = etag ?? content.etag
            self.lastModified = lastModified
            self.acceptsRanges = acceptsRanges
            self.contentDisposition = contentDisposition
        }

        /// A file without an ETag (validated by Last-Modified only).
        public static func withoutETag(_ content: GeneratedContent) -> File {
            var f = File(content: content)
            f.etag = nil
            return f
        }
    }

    /// Answers a request instead of the standard behaviour; return nil to fall through.
    public typealias Hook = @Sendable (RequestInfo) -> ResponsePlan?

    public static let defaultLastModified = "Sat, 21 Nov 2026 10:00:00 GMT"

    private struct State: ~Copyable {
        var files: [String: File] = [:]
        var hook: Hook?
        var requests: [RequestInfo] = []
        var requestCount = 0
        var activeReplies = 0
        var served: [ServedBytes] = []
        /// Per local host: replies in progress, connections open, and the most ever open.
        var activeByHost: [String: Int] = [:]
        var open: [String: Int] = [:]
        var peakOpen: [String: Int] = [:]
    }

    /// Content bytes one reply actually handed to the socket.
    public struct ServedBytes: Sendable, Hashable {
        public let requestIndex: Int
        public let start: Int64
        public let count: Int64
    }

    private let state = Mutex(State())
    private let group: MultiThreadedEventLoopGroup
    private let channels: [any Channel]
    /// The port each host listens on.
    public let ports: [String: Int]
    /// The first host (usually 127.0.0.1).
    public let host: String

    /// Most requests kept in `requests`.
    static let maxRecordedRequests = 100_000

    /// Starts listening on each of `hosts` (127.0.0.1 and 127.0.0.2 make two "hosts" for
    /// cross-origin tests). Port 0 picks a free port per host.
    public static func start(hosts: [String] = ["127.0.0.1"], port: Int = 0, threads: Int = 1) async throws -> TestServer {
        precondition(!hosts.isEmpty)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let core = TestServerCoreBox()
        var channels: [any Channel] = []
        var ports: [String: Int] = [:]
        do {
            for host in hosts {
                let channel = try await ServerBootstrap(group: group)
                    .serverChannelOption(.backlog, value: 256)
                    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                    .childChannelOption(.writeBufferWaterMark, value: .init(low: 256 * 1024, high: 1024 * 1024))
                    .childChannelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(
                                ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes)))
                            try channel.pipeline.syncOperations.addHandler(
                                ConnectionHandler(core: core, localHost: host))
                        }
                    }
                    .bind(host: host, port: port).get()
                channels.append(channel)
                ports[host] = channel.localAddress?.port ?? 0
            }
        } catch {
            for c in channels { try? await c.close() }
            try? await group.shutdownGracefully()
            throw error
        }
        let server = TestServer(group: group, channels: channels, ports: ports, host: hosts[0])
        core.server.withLock { $0 = server }
        return server
    }

    private init(group: MultiThreadedEventLoopGroup, channels: [any Channel], ports: [String: Int], host: String) {
        self.group = group
        self.channels = channels
        self.ports = ports
        self.host = host
    }

    /// The first host's port.
    public var port: Int { ports[host]! }

    /// `http://HOST:PORT/path` for `path` on `host` (default: the first host).
    public func url(_ path: String, host: String? = nil) -> String {
        let h = host ?? self.host
        return "http://\(h):\(ports[h]!)\(path.hasPrefix("/") ? path : "/" + path)"
    }

    /// Serves `file` at `path` (exact match, query ignored).
    public func addFile(_ path: String, _ file: File) {
        state.withLock { $0.files[path] = file }
    }

    public func removeFile(_ path: String) {
        state.withLock { _ = $0.files.removeValue(forKey: path) }
    }

    /// The file served at `path` (`query` picks the seed of generated content).
    public func file(at path: String, query: String? = nil) -> File? {
        state.withLock { $0.files[path] } ?? TestServer.generatedFile(path: path, query: query)
    }

    /// Installs (or removes, with nil) the hook that may answer requests.
    public func setHook(_ hook: Hook?) {
        state.withLock { $0.hook = hook }
    }

    /// Every request received so far, in arrival order.
    public var requests: [RequestInfo] { state.withLock { $0.requests } }

    public func clearRequests() { state.withLock { $0.requests.removeAll() } }

    /// Stops listening and closes every connection.
    public func stop() async {
        for c in channels { try? await c.close() }
        try? await group.shutdownGracefully()
    }

    // MARK: - Request handling (called on event loops)

    /// Counts received on one host, for `record`'s `make`.
    struct Counts {
        let index: Int
        let concurrent: Int
        let concurrentOnHost: Int
        let openOnHost: Int
    }

    /// Records a request to `host`; `make` gets its index and the replies and connections in
    /// progress.
    func record(host: String, _ make: (Counts) -> RequestInfo) -> RequestInfo {
        state.withLock { s in
            s.requestCount += 1
            s.activeReplies += 1
            s.activeByHost[host, default: 0] += 1
            let info = make(Counts(index: s.requestCount, concurrent: s.activeReplies,
                                   concurrentOnHost: s.activeByHost[host]!, openOnHost: s.open[host] ?? 0))
            if s.requests.count < Self.maxRecordedRequests { s.requests.append(info) }
            return info
        }
    }

    /// A reply on `host` ended (completely or not), having sent `served` content bytes.
    func replyEnded(host: String, _ served: ServedBytes?) {
        state.withLock { s in
            s.activeReplies -= 1
            s.activeByHost[host, default: 1] -= 1
            if let served, served.count > 0, s.served.count < Self.maxRecordedRequests { s.served.append(served) }
        }
    }

    /// A connection to `host` carried its first request: it counts as open from now on.
    ///
    /// Why not from the accept: a client that closes a connection and opens another at once
    /// may have the new one accepted here before the old one's close is read (both arrive in
    /// one poll); counted from the first request, the old close is always read first, so the
    /// count is what the client really had open, not an artefact of the server's event order.
    func connectionOpened(host: String) {
        state.withLock { s in
            s.open[host, default: 0] += 1
            s.peakOpen[host] = max(s.peakOpen[host] ?? 0, s.open[host]!)
        }
    }

    /// A connection to `host` closed (either side).
    func connectionClosed(host: String) {
        state.withLock { $0.open[host, default: 1] -= 1 }
    }

    /// Connections open to `host` now.
    public func openConnections(host: String) -> Int { state.withLock { $0.open[host] ?? 0 } }

    /// The most connections (that carried a request) open to `host` at once.
    public func peakOpenConnections(host: String) -> Int { state.withLock { $0.peakOpen[host] ?? 0 } }

    /// Content bytes sent so far, reply by reply (for measuring what a client fetched twice).
    public var servedBytes: [ServedBytes] { state.withLock { $0.served } }

    /// Content bytes sent so far per request path (without the query), for asserting that a
    /// client never fetched a file again.
    public func servedBytesByPath() -> [String: Int64] {
        state.withLock { s in
            var paths: [Int: String] = [:]
            for request in s.requests { paths[request.index] = String(request.uri.prefix(while: { $0 != "?" })) }
            var totals: [String: Int64] = [:]
            for served in s.served { totals[paths[served.requestIndex] ?? "?", default: 0] += served.count }
            return totals
        }
    }

    func plan(for request: RequestInfo) -> ResponsePlan {
        let hook = state.withLock { $0.hook }
        if let hook, let plan = hook(request) { return plan }
        return standardPlan(for: request)
    }

    /// What a well-behaved server answers: the file at the path with range support, or 404.
    public func standardPlan(for request: RequestInfo) -> ResponsePlan {
        guard request.method == "GET" || request.method == "HEAD" else {
            return .text(405, "method not allowed\n")
        }
        guard let file = file(at: request.path, query: request.query) else {
            return .text(404, "not found\n")
        }
        return TestServer.standardPlan(for: request, file: file)
    }

    /// The standard reply for `file`: 200, 206 or 416 depending on Range and If-Range.
    public static func standardPlan(for request: RequestInfo, file: File) -> ResponsePlan {
        let size = file.content.size
        var common: [(name: String, value: String)] = [("Content-Type", "application/octet-stream")]
        if let etag = file.etag { common.append(("ETag", etag)) }
        if let lastModified = file.lastModified { common.append(("Last-Modified", lastModified)) }
        if let disposition = file.contentDisposition { common.append(("Content-Disposition", disposition)) }
        common.append(("Accept-Ranges", file.acceptsRanges ? "bytes" : "none"))

        var range = file.acceptsRanges ? RangeRequest.parse(request.header("range"), size: size) : .ignore
        if let ifRange = request.header("if-range"), range != .ignore {
            // RFC 9110 §13.1.5: serve the range only if the validator still matches.
            let matches = ifRange.hasPrefix("\"") ? (ifRange == file.etag) : (ifRange == file.lastModified)
            if !matches { range = .ignore }
        }
        var plan: ResponsePlan
        switch range {
        case .ignore:
            plan = ResponsePlan(status: 200, headers: common, body: .content(file.content, start: 0, end: size))
            plan.setHeader("Content-Length", String(size))
        case .unsatisfiable:
            plan = ResponsePlan(status: 416, headers: common, body: .empty)
            plan.setHeader("Content-Range", "bytes */\(size)")
            plan.setHeader("Content-Length", "0")
        case .satisfiable(let start, let end):
            plan = ResponsePlan(status: 206, headers: common, body: .content(file.content, start: start, end: end))
            plan.setHeader("Content-Range", "bytes \(start)-\(end - 1)/\(size)")
            plan.setHeader("Content-Length", String(end - start))
        }
        if request.method == "HEAD" { plan.body = .empty }
        return plan
    }

    /// `/gen/SIZE[/NAME]?seed=N`: generated content of SIZE bytes (suffixes K, M, G allowed).
    static func generatedFile(path: String, query: String?) -> File? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        guard parts.count >= 2, parts[0] == "gen", let size = ByteSize.parse(String(parts[1])) else { return nil }
        var seed: UInt64 = 1
        for pair in (query ?? "").split(separator: "&") where pair.hasPrefix("seed=") {
            seed = UInt64(pair.dropFirst(5)) ?? 1
        }
        return File(content: GeneratedContent(seed: seed, size: size))
    }
}

/// Lets connection handlers reach the server object that is created after the bind.
final class TestServerCoreBox: Sendable {
    let server = Mutex<TestServer?>(nil)
}
