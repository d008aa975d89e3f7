import Synchronization

/// One download of a URL to a local path: the entry point for programs that embed Spate.
///
/// ```swift
/// var options = DownloadOptions()
/// options.connections = 8
/// options.checksum = try Checksum(parsing: "sha256:…")
/// let download = try Download(url: "https://example.com/big.iso", to: "big.iso", options: options)
/// async let result = download.run()
/// for await event in download.events {
///     if case .progress(let p) = event { print(p.bytesDone, p.totalBytes ?? -1) }
/// }
/// let summary = try await result
/// ```
///
/// - `events` is an `AsyncSequence` that ends when `run()` returns or throws. It keeps only the
///   newest events if its reader falls behind, so a slow reader never slows the download.
/// - Cancelling the task that awaits `run()` stops the download: every request is removed, the
///   partial file is deleted, and `run()` throws `SpateError` of kind `.cancelled`.
/// - The output appears under `destination` only when it is complete and verified.
/// - With a `session`, the download shares that session's connection budgets, transfer loop
///   and threads with the session's other downloads; without one it runs in a session of its
///   own (`options.connections` at most, to any host).
public final class Download: Sendable {
    public let url: RemoteURL
    public let destination: String
    public let options: DownloadOptions
    /// The session it runs in; nil: its own.
    public let session: DownloadSession?
    public let events: AsyncStream<DownloadEvent>
    /// Nil with an `observer`: its events go there, and `events` is a stream that ends at once.
    private let continuation: AsyncStream<DownloadEvent>.Continuation?
    private let started = Atomic<Bool>(false)
    /// Its place in the session's queue for connection slots (see `DownloadTransport.priority`).
    private let priority: UInt64
    /// Receives every event instead of `events`, synchronously, in order (a batch forwards
    /// them without a task per file, and never loses one; nobody reads its downloads' streams).
    private let observer: (@Sendable (DownloadEvent) -> Void)?

    /// The `events` of a download whose events go to an observer: finished, never yields.
    private static let noEvents = AsyncStream<DownloadEvent> { $0.finish() }

    /// Checks the URL and options (no network traffic yet).
    public convenience init(url: String, to destination: String, options: DownloadOptions = DownloadOptions(),
                            session: DownloadSession? = nil) throws(SpateError) {
        try self.init(url: try RemoteURL(url), to: destination, options: options, session: session, priority: 0, observer: nil)
    }

    /// The probe's answer, when a batch's small-file fetch already has it (taken by `run`).
    /// Taken by `run` (once): it may hold a paused reply and its connection slot
    /// (`Prefetched.handover`), which must go as soon as the engine is done with it, not when
    /// this object goes.
    private let prefetched: Mutex<RemoteResolver.Prefetched?>

    /// - Parameter prefetched: the probe's answer, when a batch's small-file fetch already has it.
    init(url: RemoteURL, to destination: String, options: DownloadOptions, session: DownloadSession?, priority: UInt64,
         prefetched: RemoteResolver.Prefetched? = nil, observer: (@Sendable (DownloadEvent) -> Void)?) throws(SpateError) {
        try options.validate()
        self.prefetched = Mutex(prefetched)
        self.priority = priority
        self.observer = observer
        self.url = url
        guard !destination.isEmpty else { throw .usage("the output path is empty") }
        self.destination = destination
        self.options = options
        self.session = session
        if observer == nil {
            (events, continuation) = AsyncStream.makeStream(of: DownloadEvent.self, bufferingPolicy: .bufferingNewest(256))
        } else {
            // A batch's downloads: nobody reads their streams (one fewer allocation per file).
            (events, continuation) = (Self.noEvents, nil)
        }
    }

    /// Where the resume journal of a download to `path` lives.
    public static func journalPath(for path: String) -> String { Journal.path(for: path) }

    /// The partial file a download to `path` writes (`PATH.part`, or a shortened name when
    /// that would not fit in 255 bytes with its journal's suffixes).
    public static func partialPath(for path: String) -> String { OutputFile.partPath(for: path) }

    /// Whether another process is downloading to `path` now (it holds the partial file's lock).
    /// A batch's small file written with no name until it is saved (`O_TMPFILE`) holds no lock
    /// and is not seen here.
    public static func outputIsLocked(_ path: String) -> Bool { OutputLock.conflict(at: OutputFile.partPath(for: path)) != nil }

    /// Runs the download to the end. Call once.
    public func run() async throws(SpateError) -> DownloadResult {
        guard !started.exchange(true, ordering: .acquiringAndReleasing) else {
            preconditionFailure("Download.run() called twice")
        }
        let continuation = self.continuation
        defer { continuation?.finish() }
        let session: DownloadSession
        if let shared = self.session {
            guard !shared.isShutDown else { throw SpateError(.cancelled, "the download session has been shut down") }
            session = shared
        } else {
            session = try DownloadSession(
                limits: .init(maxConnections: options.connections,
                              maxConnectionsPerHost: min(options.maxConnectionsPerHost ?? options.connections, options.connections),
                              maxBytesPerSecond: options.maxBytesPerSecond),
                clock: SystemClock(), stagingBufferBytes: options.stagingBufferBytes, trace: options.trace)
        }
        defer { if self.session == nil { session.shutdown() } }
        let observer = self.observer
        // Progress reports start with the download, or — when small files arrive whole in the
        // probe's reply — once the probe says the file is bigger than that: a task and a timer
        // per small file of a batch cost more than the file itself.
        let reporter = Mutex<Task<Void, Never>?>(nil)
        let wholeFileBytes = options.wholeFileBytes
        let interval = options.progressInterval
        let engineBox = Mutex<DownloadEngine?>(nil)
        let startReporter: @Sendable () -> Void = {
            reporter.withLock { task in
                guard task == nil, let engine = engineBox.withLock({ $0 }) else { return }
                task = Task { await Download.reportProgress(engine: engine, interval: interval, clock: session.clock) }
            }
        }
        let prefetched = self.prefetched.withLock { taken in
            defer { taken = nil }
            return taken
        }
        let engine = DownloadEngine(url: url, destination: destination, options: options, session: session,
                                    priority: priority, prefetched: prefetched) { event in
            if wholeFileBytes > 0, case .started(let plan) = event, plan.totalBytes.map({ $0 > wholeFileBytes }) ?? true {
                startReporter()
            }
            if let observer { observer(event) } else { continuation?.yield(event) }
        }
        engineBox.withLock { $0 = engine }
        if wholeFileBytes == 0 { startReporter() }
        defer { reporter.withLock { $0?.cancel() } }
        do {
            let result = try await engine.run()
            // No progress after `.finished`: the reporter may be inside an emit right now.
            let task = reporter.withLock { $0 }
            task?.cancel()
            await task?.value
            if let observer { observer(.finished(result)) } else { continuation?.yield(.finished(result)) }
            return result
        } catch let error as SpateError {
            throw error
        } catch is CancellationError {
            throw SpateError(.cancelled, "download cancelled")
        } catch {
            throw SpateError(.localIO, "unexpected error: \(error)")
        }
    }

    /// Emits `.progress` every `interval` until cancelled, with an exponentially smoothed rate.
    private static func reportProgress(engine: DownloadEngine, interval: Duration, clock: any EngineClock) async {
        let start = clock.now
        var lastTime = start
        var lastBytes: Int64 = 0
        var rate = 0.0
        var total: Int64?
        while !Task.isCancelled {
            do { try await clock.sleep(for: interval) } catch { return }
            let now = clock.now
            let written = engine.counters.bytesWritten.load(ordering: .relaxed)
            let already = engine.counters.bytesAlreadyDone.load(ordering: .relaxed)
            let dt = (now - lastTime).secondsDouble
            if dt > 0 {
                let instant = Double(max(0, written - lastBytes)) / dt
                rate = rate == 0 ? instant : rate * 0.7 + instant * 0.3
            }
            lastTime = now
            lastBytes = written
            if total == nil { total = engine.knownSize }
            engine.emit(.progress(DownloadProgress(
                bytesDone: already + written, totalBytes: total, bytesPerSecond: rate,
                activeConnections: engine.counters.activeTransfers.load(ordering: .relaxed), elapsed: now - start)))
        }
    }
}
