import Synchronization

/// What several downloads share: one libcurl loop thread (every request of every download and
/// host goes through one multi handle), one writer thread, one journal thread, and the
/// connection budgets — a global maximum and a per-host maximum, where the host is the scheme,
/// host and port a request really goes to (a redirect to a CDN counts against the CDN).
///
/// N downloads in one session never exceed either budget, probes included; connections a
/// finishing download gives back go to the others at once; a host that answers 429/503 has its
/// own budget lowered, not the others'.
///
/// ```swift
/// try await DownloadSession.with(limits: .init(maxConnections: 16, maxConnectionsPerHost: 4)) { session in
///     try await withThrowingTaskGroup(of: DownloadResult.self) { group in
///         for (url, path) in files {
///             let download = try Download(url: url, to: path, session: session)
///             group.addTask { try await download.run() }
///         }
///         for try await result in group { print(result.path) }
///     }
/// }
/// ```
///
/// A `Download` created without a session runs in a session of its own, sized by its options.
/// Call `shutdown()` when done with a session you created (`with` does it for you): it stops
/// the threads, ending any request still running.
public final class DownloadSession: Sendable {
    /// The connection budgets of a session.
    public struct Limits: Sendable, Hashable {
        /// The most connections open at once, across all downloads and hosts.
        public var maxConnections: Int
        /// The most connections open at once to one host (scheme, host, port), across all
        /// downloads, probes included.
        public var maxConnectionsPerHost: Int
        /// The most bytes per second received across all downloads and hosts (`--max-rate`),
        /// or nil for no limit. One budget shared by every transfer (`RateBudget`).
        public var maxBytesPerSecond: Int64?

        public static let defaultMaxConnections = 64
        public static let defaultMaxConnectionsPerHost = 16
        /// The highest global maximum a session accepts.
        public static let highestMaxConnections = 1024

        public init(maxConnections: Int = Limits.defaultMaxConnections,
                    maxConnectionsPerHost: Int = Limits.defaultMaxConnectionsPerHost, maxBytesPerSecond: Int64? = nil) {
            self.maxConnections = maxConnections
            self.maxConnectionsPerHost = maxConnectionsPerHost
            self.maxBytesPerSecond = maxBytesPerSecond
        }

        public func validate() throws(SpateError) {
            guard (1...Self.highestMaxConnections).contains(maxConnections) else {
                throw .usage("the connection maximum must be between 1 and \(Self.highestMaxConnections), not \(maxConnections)")
            }
            guard maxConnectionsPerHost >= 1 else {
                throw .usage("the per-host connection maximum must be at least 1, not \(maxConnectionsPerHost)")
            }
            if let rate = maxBytesPerSecond, !(1024...ByteSize.largest).contains(rate) {
                throw .usage("the rate limit must be at least 1 KiB/s")
            }
        }
    }

    public let limits: Limits
    let clock: any EngineClock
    let loop: CurlLoop
    let budgets: ConnectionBudgets
    let writer: FileWriter
    let committer: JournalCommitter
    /// `--trace`: what the connections did, if asked (`TraceRecorder`).
    public let trace: TraceRecorder?
    /// Makes small files durable in groups (its thread starts with the first small file).
    let publisher = GroupPublisher()
    /// Hosts a download gave up on and that have not answered since (`HostOutages`).
    let outages = HostOutages()

    private struct State {
        /// Each running download's connection count (for sizing the shared buffers).
        var connections: [ObjectIdentifier: Int] = [:]
        var isShutDown = false
    }
    private let state = Mutex(State())

    /// Starts a session: its threads sleep until downloads run.
    /// - Parameter trace: records every request and scheduling event for `--trace`.
    public convenience init(limits: Limits = Limits(), trace: TraceRecorder? = nil) throws(SpateError) {
        try self.init(limits: limits, clock: SystemClock(), trace: trace)
    }

    /// - Parameters:
    ///   - clock: the time source of every decision (tests pass a manual clock).
    ///   - stagingBufferBytes: the largest staging buffer of the writer.
    init(limits: Limits, clock: any EngineClock, stagingBufferBytes: Int = FileWriter.defaultBufferBytes,
         trace: TraceRecorder? = nil) throws(SpateError) {
        try limits.validate()
        self.limits = limits
        self.clock = clock
        self.trace = trace
        let perHost = min(limits.maxConnectionsPerHost, limits.maxConnections)
        budgets = ConnectionBudgets(maxConnections: limits.maxConnections, maxPerHost: perHost)
        loop = CurlLoop(maxConnections: limits.maxConnections, maxPerHost: perHost, maxBytesPerSecond: limits.maxBytesPerSecond,
                        clock: clock, trace: trace, outages: outages)
        writer = FileWriter(buffers: 1, bufferBytes: stagingBufferBytes)
        committer = JournalCommitter(trace: trace)
    }

    /// Runs `body` with a new session and shuts the session down afterwards, on every path.
    public static func with<T: Sendable>(limits: Limits = Limits(),
                                         _ body: (DownloadSession) async throws -> T) async throws -> T {
        let session = try DownloadSession(limits: limits)
        do {
            let result = try await body(session)
            session.shutdown()
            return result
        } catch {
            session.shutdown()
            throw error
        }
    }

    deinit { shutdown() }

    /// Whether `shutdown()` was called: a download started now fails at once.
    public var isShutDown: Bool { state.withLock { $0.isShutDown } }

    /// Stops the session's threads: requests still running end (their downloads fail as
    /// cancelled), queued writes land first. Idempotent; also done when the session is
    /// released.
    public func shutdown() {
        guard state.withLock({ s in defer { s.isShutDown = true }; return !s.isShutDown }) else { return }
        loop.shutdown()
        writer.stop()
        committer.stop()
        publisher.stop()
    }

    /// The connection budget of the host `url` points at (its scheme, host and port).
    public func budget(for url: String) throws(SpateError) -> HostBudget {
        budgets.snapshot(try RemoteURL(url).origin)
    }

    /// Connections in use now, across every host.
    public var connectionsInUse: Int { budgets.inUse }

    // MARK: - Shared buffers

    /// A download runs (or changes its connection count): the writer's pool follows the total.
    func setConnections(_ count: Int?, for download: ObjectIdentifier) {
        let total = state.withLock { s -> Int in
            if let count { s.connections[download] = count } else { s.connections.removeValue(forKey: download) }
            return planned(s)
        }
        writer.resize(forConnections: total, bufferBytes: FileWriter.stagingBytes(connections: total))
    }

    /// The connections all downloads may use now (at most the global maximum).
    var connectionsPlanned: Int { state.withLock { planned($0) } }

    private func planned(_ s: State) -> Int {
        min(limits.maxConnections, max(1, s.connections.values.reduce(0, +)))
    }

    /// libcurl's receive buffer for the next request: a 2 MiB budget shared by the connections
    /// the session's downloads plan to use (256 KiB each up to 8, 128 KiB at 16, 32 KiB from
    /// 64), or `fixed` when the download sets one.
    ///
    /// Why: the buffer sets the size of each `recv`, so bigger means fewer syscalls, but memory
    /// must not grow with the connection count.
    func receiveBufferBytes(fixed: Int?) -> Int {
        if let fixed { return fixed }
        let shared = min(256 * 1024, max(32 * 1024, 2 * 1024 * 1024 / connectionsPlanned))
        guard let rate = limits.maxBytesPerSecond else { return shared }
        return RateBudget.receiveBufferBytes(rate: rate, connections: connectionsPlanned, preferred: shared)
    }
}
