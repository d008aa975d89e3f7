import Glibc
import Synchronization

/// Finds the file behind the URL (the probe) and keeps the resolved URL usable.
///
/// Redirects are resolved once, by the probe, and every range goes to the resolved URL. Signed
/// URLs expire (S3, GCS, Box's dl.boxcloud.com): when the resolved URL starts answering
/// 401/403/404/410, `refresh` asks the original URL again — once for all workers (single
/// flight), at most `maxRefreshes` times per download — and checks that the new target still
/// describes the same file.
final class RemoteResolver: Sendable {
    private struct State {
        var current: RemoteFile?
        var refreshes = 0
        var inProgress: Task<RemoteFile, any Error>?
        /// The whole file, when the first probe's reply held all of it (taken once).
        var wholeBody: [UInt8]?
        /// The probe's reply, paused after its head, when it is the whole file from a server
        /// without ranges: the download's stream (taken once; dropped, it ends).
        var handover: TransferHandover?
        /// How long the last probe waited for its reply once sent (`TransferOutcome.replyWait`).
        var replyWait: Duration?
        /// The first probe's first attempt, when someone else made it (taken once).
        var prefetched: Prefetched?
    }

    /// The first attempt of a probe that another part made: a batch's small-file fetch
    /// (`SmallFileFetch`), whose reply showed a bigger file or failed. The first `resolve`
    /// goes on from it as if this resolver had made it — the answer is used, a failure is
    /// judged by the same rules and counts in the same retry budget — instead of asking the
    /// server again (a round trip per file, and a second request for a file that is not there).
    struct Prefetched: Sendable {
        enum Attempt: Sendable {
            case answered(RemoteFile)
            case failed(TransferEnd)
        }
        var attempt: Attempt
        /// The URL it asked (after `redirects` redirects from the resolver's URL).
        var target: RemoteURL
        var redirects: Int
        var replyWait: Duration?
        /// The requests it took (redirects included), and the first one's time to first byte.
        var requests: Int
        var timeToFirstByte: Duration?
        /// Its reply, paused after its head, when it is the whole file from a server without
        /// ranges (with its connection slot, `TransferHandover.keep`): the download's stream
        /// goes on with it (`takeHandover`), so the file is asked for once.
        var handover: TransferHandover? = nil
    }

    let requests: RequestBuilder
    let transport: DownloadTransport
    private let handsOver: Bool
    private let state = Mutex(State())
    /// Jitter for the probe's retry waits (seeded: `DownloadOptions.randomSeed`).
    private let random: Mutex<SplitMix64>
    static let maxRedirects = 20  // as browsers (curl allows 50)
    static let maxRefreshes = 16

    /// - Parameter handsOver: the first probe's reply from a server without ranges is kept for
    ///   the download's stream (`takeHandover`): the download's own resolver, not a mirror's.
    init(requests: RequestBuilder, transport: DownloadTransport, seed: UInt64, prefetched: Prefetched? = nil,
         handsOver: Bool = false) {
        self.handsOver = handsOver
        self.requests = requests
        self.transport = transport
        self.random = Mutex(SplitMix64(seed: seed))
        if let prefetched {
            state.withLock {
                $0.prefetched = prefetched
                $0.replyWait = prefetched.replyWait
            }
        }
    }

    private var url: RemoteURL { requests.url }

    /// The file as last resolved.
    var current: RemoteFile { state.withLock { $0.current! } }

    /// The last probe's wait between its request and the reply: the round trip ranges will
    /// pay, known before the first range is sized.
    var probeReplyWait: Duration? { state.withLock { $0.replyWait } }

    /// Resolves the URL for the first time (or again, after the remote file changed).
    func resolve() async throws -> RemoteFile {
        let prefetched = state.withLock { s -> Prefetched? in
            defer { s.prefetched = nil }
            return s.prefetched
        }
        let handsOver = handsOver && requests.options.byteRange == nil && !requests.options.http2
        if let prefetched, case .answered(let known) = prefetched.attempt {
            // (A hand-over this download cannot stream from ends here, when dropped.)
            state.withLock {
                $0.current = known
                $0.handover = handsOver ? prefetched.handover : nil
            }
            return known
        }
        let (remote, body, handover) = try await probe(
            wholeFileBytes: requests.options.byteRange == nil ? requests.options.wholeFileBytes : 0, after: prefetched,
            handsOver: handsOver)
        state.withLock {
            $0.current = remote
            $0.wholeBody = body
            $0.handover = handover
        }
        return remote
    }

    /// The file's bytes, when the probe's reply held all of them (see
    /// `DownloadOptions.wholeFileBytes`). Returns them once.
    func takeWholeBody() -> [UInt8]? {
        state.withLock { s in
            defer { s.wholeBody = nil }
            return s.wholeBody
        }
    }

    /// The probe's reply, paused after its head, when the server sent the whole file without
    /// ranges (`ProbeSink` hands it over): the stream to go on with (`StreamFetcher`), so the
    /// file is not asked for twice. Returns it once; nil otherwise.
    func takeHandover() -> TransferHandover? {
        state.withLock { s in
            defer { s.handover = nil }
            return s.handover
        }
    }

    /// A request to `stale` was refused: resolve again from the original URL, unless that
    /// cannot help (no redirect was involved) or the budget is spent — then nil.
    /// Throws `.remoteChanged` when the new target describes another file.
    func refresh(after stale: RemoteURL) async throws -> RemoteFile? {
        enum Step { case current(RemoteFile), wait(Task<RemoteFile, any Error>, started: Bool), none }
        let step: Step = state.withLock { s in
            guard let current = s.current else { return .none }
            if current.url != stale { return .current(current) }  // someone already refreshed
            if let task = s.inProgress { return .wait(task, started: false) }
            guard current.url != url, s.refreshes < Self.maxRefreshes else { return .none }
            s.refreshes += 1
            transport.session.trace?.instant("re-resolve", category: "url", args: [("url", .text(url.redacted))])
            // The check against the old file happens inside the task, before anyone can use the
            // new URL: a changed file must never become `current` (its ranges would mix).
            let task = Task { [self] () async throws -> RemoteFile in
                let fresh = try await self.probe(wholeFileBytes: 0, handsOver: false).0
                if let change = Self.difference(current, fresh) { throw SpateError.remoteChanged(change) }
                return fresh
            }
            s.inProgress = task
            return .wait(task, started: true)
        }
        switch step {
        case .none:
            return nil
        case .current(let remote):
            return remote
        case .wait(let task, let started):
            let fresh: RemoteFile
            do {
                // A cancelled download must not wait for a probe that backs off for minutes.
                fresh = try await withTaskCancellationHandler { try await task.value } onCancel: { task.cancel() }
            } catch {
                state.withLock { if started { $0.inProgress = nil } }
                throw error
            }
            state.withLock { s in
                s.current = fresh
                if started { s.inProgress = nil }
            }
            // Only the worker that asked, and only the first time: 16 workers see one expiry.
            if started && state.withLock({ $0.refreshes }) == 1 {
                transport.emit(.notice("the download URL expired; resolved it again from \(url.redacted) (and will each time it does)"))
            }
            return fresh
        }
    }

    /// Why two probes describe different files, or nil when they agree.
    static func difference(_ a: RemoteFile, _ b: RemoteFile) -> String? {
        if a.size != b.size {
            return "its size is now \(b.size.map(String.init) ?? "unknown"), was \(a.size.map(String.init) ?? "unknown")"
        }
        if let etag = a.strongETag, etag != b.strongETag {
            return "ETag changed from \(etag) to \(b.strongETag ?? "none")"
        }
        if a.strongETag == nil, let date = a.lastModified, date != b.lastModified {
            return "Last-Modified changed from \(date) to \(b.lastModified ?? "none")"
        }
        return nil
    }

    // MARK: - The probe

    /// One GET with `Range: bytes=0-0` (not HEAD: presigned GET URLs often reject HEAD), through
    /// the session's loop with a connection slot for each hop's host, following redirects by
    /// hand so credentials stay with their origin. Failures go through `FailurePolicy` like any
    /// request's.
    /// - Parameter first: a failed first attempt someone else made (`Prefetched`): judged and
    ///   counted first, then the probe goes on from its URL.
    /// - Parameter handsOver: a 200 too long to keep is paused and returned for the stream
    ///   (`ProbeSink`), not cut.
    private func probe(wholeFileBytes: Int, after first: Prefetched? = nil,
                       handsOver: Bool) async throws -> (RemoteFile, [UInt8]?, TransferHandover?) {
        var target = url
        var redirects = 0
        var budget = RetryBudget(policy: requests.options.retry)
        var streak = ConnectStreak(outages: transport.session.outages)
        defer { streak.end(gaveUp: false) }
        if let first, case .failed(let end) = first.attempt {
            target = first.target
            redirects = first.redirects
            try await failed(end, budget: &budget, origin: target.origin, streak: &streak)
        }
        while true {
            try Task.checkCancellation()
            let hop = target
            // Not `withSlot`: a reply handed over keeps its slot (`TransferHandover.keep`).
            let slot = try await transport.session.budgets.acquire(hop.origin, priority: transport.priority)
            let sink = ProbeSink(wholeFileBytes: wholeFileBytes, handsOver: handsOver)
            // A probe reads at most a small file: a 64 KiB buffer (libcurl allocates it per
            // request; a bigger one is an mmap and page faults per small file of a batch) —
            // unless its reply may become the download's stream, which keeps the buffer.
            let bufferBytes = transport.session.receiveBufferBytes(fixed: requests.options.receiveBufferBytes)
            let spec = requests.probe(hop, bufferBytes: handsOver ? bufferBytes : min(64 * 1024, bufferBytes), slot: slot,
                                      wholeFileBytes: wholeFileBytes)
            let outcome: TransferOutcome
            do {
                outcome = try await transport.perform(spec, sink: sink)
            } catch {
                transport.session.budgets.release(slot)
                throw error
            }
            transport.session.budgets.release(slot, unlessKeptBy: outcome.handover)
            // (The loop told the session's `HostOutages` of the reply as its head arrived.)
            if outcome.head != nil { streak.end(gaveUp: false) }
            let reply = try ProbeReply.read(outcome, sink: sink, target: target, redirects: &redirects,
                                            serverDigests: requests.options.serverDigests, wallSeconds: transport.clock.wallSeconds)
            // A refused probe tells the host's budget as much as a refused range: the session's
            // other downloads to that host hold back too.
            if case .failed(let end) = reply, let notice = transport.session.budgets.judge(end, slot: slot, now: transport.clock.now)?.notice {
                transport.emit(.notice(notice))
            }
            if outcome.head != nil, let wait = outcome.replyWait { state.withLock { $0.replyWait = wait } }
            switch reply {
            case .redirect(let next):
                target = next
            case .file(let remote, let body):
                return (remote, body, outcome.handover)
            case .failed(let end):
                try await failed(end, budget: &budget, origin: hop.origin, streak: &streak)
            }
        }
    }

    /// A probe that failed: wait and ask again, or throw. The probe's statuses are the
    /// original URL's own answers, so 401/403/404/410 stop at once (there is nothing to
    /// resolve again) and a throttling host counts like any retryable status.
    ///
    /// A failure to connect to a host the session knows is down (`HostOutages`) is final at
    /// once; a probe whose every attempt failed to connect to `origin` marks it down when it
    /// gives up.
    private func failed(_ end: TransferEnd, budget: inout RetryBudget, origin: RemoteURL.Origin,
                        streak: inout ConnectStreak) async throws {
        if case .transport(let failure) = end, failure.isUnreachable {
            if streak.outages.isDown(origin) {
                throw SpateError(failure.error.kind, "\(failure.message) (not retried: an earlier download could not connect to \(origin.host):\(origin.port) in all its attempts, and nothing from it has answered since)")
            }
            streak.failed(origin, failuresBefore: budget.failures)
        } else {
            streak.end(gaveUp: false)
        }
        do {
            try await transport.retryAlone(after: end, budget: &budget, random: random.withLock { $0.nextUnitInterval() })
        } catch let error as SpateError where error.kind != .cancelled {
            // Every counted failure of this probe was a failure to reach this host: the streak
            // began with the budget's first failure and has them all. (Checked, not assumed:
            // a probe's budget counts every transport failure today.)
            if streak.origin != nil && streak.failuresBefore == 0 && streak.count == budget.failures { streak.end(gaveUp: true) }
            throw error
        }
    }

    /// A probe's failures to connect to one host in a row, registered with the session's
    /// `HostOutages` while they last.
    /// Not copyable: it holds a registration that must end exactly once.
    struct ConnectStreak: ~Copyable {
        let outages: HostOutages
        private(set) var origin: RemoteURL.Origin?
        private(set) var count = 0
        /// The probe's counted failures before the streak began.
        private(set) var failuresBefore = 0
        private var token: UInt64 = 0

        init(outages: HostOutages) { self.outages = outages }

        mutating func failed(_ host: RemoteURL.Origin, failuresBefore: Int) {
            if origin != host {
                end(gaveUp: false)
                origin = host
                token = outages.failing(host)
                self.failuresBefore = failuresBefore
            }
            count += 1
        }

        mutating func end(gaveUp: Bool) {
            guard let origin else { return }
            outages.stoppedFailing(origin, token: token, gaveUp: gaveUp)
            self.origin = nil
            count = 0
        }
    }
}
