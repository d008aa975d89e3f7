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
        /// How long the last probe waited for its reply once sent (`TransferOutcome.replyWait`).
        var replyWait: Duration?
    }

    let requests: RequestBuilder
    let transport: DownloadTransport
    private let state = Mutex(State())
    /// Jitter for the probe's retry waits (seeded: `DownloadOptions.randomSeed`).
    private let random: Mutex<SplitMix64>
    static let maxRedirects = 20  // as browsers (curl allows 50)
    static let maxRefreshes = 16

    init(requests: RequestBuilder, transport: DownloadTransport, seed: UInt64) {
        self.requests = requests
        self.transport = transport
        self.random = Mutex(SplitMix64(seed: seed))
    }

    private var url: RemoteURL { requests.url }

    /// The file as last resolved.
    var current: RemoteFile { state.withLock { $0.current! } }

    /// The last probe's wait between its request and the reply: the round trip ranges will
    /// pay, known before the first range is sized.
    var probeReplyWait: Duration? { state.withLock { $0.replyWait } }

    /// Resolves the URL for the first time (or again, after the remote file changed).
    func resolve() async throws -> RemoteFile {
        let (remote, body) = try await probe(wholeFileBytes: requests.options.byteRange == nil ? requests.options.wholeFileBytes : 0)
        state.withLock {
            $0.current = remote
            $0.wholeBody = body
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
                let fresh = try await self.probe(wholeFileBytes: 0).0
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
    private func probe(wholeFileBytes: Int) async throws -> (RemoteFile, [UInt8]?) {
        var target = url
        var redirects = 0
        var budget = RetryBudget(policy: requests.options.retry)
        var streak = ConnectStreak(outages: transport.session.outages)
        defer { streak.end(gaveUp: false) }
        while true {
            try Task.checkCancellation()
            let hop = target
            let (outcome, sink, slot) = try await transport.withSlot(for: hop.origin) { slot in
                let sink = ProbeSink(wholeFileBytes: wholeFileBytes)
                // A probe reads at most a small file: a 64 KiB buffer (libcurl allocates it per
                // request; a bigger one is an mmap and page faults per small file of a batch).
                let buffer = min(64 * 1024, transport.session.receiveBufferBytes(fixed: requests.options.receiveBufferBytes))
                let spec = requests.probe(hop, bufferBytes: buffer, slot: slot, wholeFileBytes: wholeFileBytes)
                return (try await transport.perform(spec, sink: sink), sink, slot)
            }
            let end = outcome.end(errorStatus: sink.errorStatus, errorBody: sink.errorBody, url: target,
                                  wallSeconds: transport.clock.wallSeconds)
            // (The loop told the session's `HostOutages` of the reply as its head arrived.)
            if outcome.head != nil { streak.end(gaveUp: false) }
            if FailurePolicy.isThrottling(end), case .status(let reply) = end {
                // A refused probe tells the host's budget as much as a refused range: the
                // session's other downloads to that host hold back too.
                if case .lowered(let count) = transport.session.budgets.refused(slot, now: transport.clock.now) {
                    transport.emit(.notice("the server is throttling (HTTP \(reply.status)): using at most \(count) connections to \(slot.origin.host):\(slot.origin.port)"))
                }
            }
            guard let head = outcome.head, end == .enough || end == .completed else {
                try await failed(end, budget: &budget, origin: hop.origin, streak: &streak)
                continue
            }
            if let wait = outcome.replyWait { state.withLock { $0.replyWait = wait } }
            switch head.status {
            case 301, 302, 303, 307, 308:
                guard let location = head["location"] else {
                    throw SpateError.invalidResponse("redirect \(head.status) without a Location header from \(target.redacted)")
                }
                redirects += 1
                if redirects > Self.maxRedirects {
                    throw SpateError.invalidResponse("too many redirects (more than \(Self.maxRedirects)), last to \(Redactor.originOnly(location))")
                }
                target = try target.resolving(location)
            case 206:
                guard let text = head["content-range"], let contentRange = ContentRange(parsing: text),
                      let range = contentRange.range, range.start == 0 else {
                    throw SpateError.invalidResponse("the probe's 206 reply has a bad Content-Range: \(head["content-range"]?.prefix(80) ?? "none")")
                }
                let rangesUsable = head["accept-ranges"]?.lowercased() != "none" && contentRange.completeLength != nil
                // A 206 that holds every byte (a small file, `wholeFileBytes`) carries the whole
                // file too: its Content-MD5 is the file's.
                let holdsAll = contentRange.completeLength.map { range.end == $0 } ?? false
                return (remoteFile(target, head: head, size: contentRange.completeLength, acceptsRanges: rangesUsable, wholeBody: holdsAll),
                        Self.whole(sink, end: end, size: contentRange.completeLength))
            case 200:
                var size: Int64?
                if head["transfer-encoding"] == nil, let text = head["content-length"] {
                    size = ContentRange.parseDecimal(text)
                }
                let body = Self.whole(sink, end: end, size: size)
                return (remoteFile(target, head: head, size: size ?? body.map { Int64($0.count) }, acceptsRanges: false, wholeBody: true), body)
            case 416:
                if let contentRange = head["content-range"].flatMap(ContentRange.init(parsing:)),
                   contentRange.range == nil, contentRange.completeLength == 0 {
                    return (remoteFile(target, head: head, size: 0, acceptsRanges: true, wholeBody: false), nil)
                }
                throw SpateError(.http, "the server refused bytes=0-0 (416) for \(target.redacted)", httpStatus: 416)
            default:
                // 202 "accepted, not ready yet" (Box while a new upload is processed): wait, ask
                // again. Other statuses below 300 are replies a probe cannot use; 3xx without a
                // redirect (300, 304) are the server's answer.
                let message = head.status == 202
                    ? "the file at \(target.redacted) is not ready yet (202 Accepted)"
                    : "unexpected status \(head.status) from \(target.redacted)"
                let end: TransferEnd = head.status == 202 || head.status >= 300
                    ? .status(StatusReply(status: head.status, retryAfter: RetryAfter.parse(head["retry-after"], now: transport.clock.wallSeconds),
                                          message: message))
                    : .invalidReply(InvalidReply(.unexpectedStatus, message))
                try await failed(end, budget: &budget, streak: &streak)
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
    private func failed(_ end: TransferEnd, budget: inout RetryBudget, origin: RemoteURL.Origin? = nil,
                        streak: inout ConnectStreak) async throws {
        if case .transport(let failure) = end, failure.isUnreachable, let origin {
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

    /// The probe's body when it is the whole file: the transfer completed and holds every byte.
    private static func whole(_ sink: ProbeSink, end: TransferEnd, size: Int64?) -> [UInt8]? {
        guard end == .completed, let body = sink.wholeBody else { return nil }
        if let size, Int64(body.count) != size { return nil }
        if let announced = sink.wholeLength, Int64(body.count) != announced { return nil }
        return body
    }

    /// - Parameter wholeBody: the reply carries the whole file (a 200, or a 206 of every byte):
    ///   `Content-MD5` then describes it.
    private func remoteFile(_ target: RemoteURL, head: ResponseHead, size: Int64?, acceptsRanges: Bool,
                            wholeBody: Bool) -> RemoteFile {
        var file = RemoteFile(url: target, size: size, acceptsRanges: acceptsRanges,
                              strongETag: RemoteFile.strongETag(from: head["etag"]),
                              lastModified: head["last-modified"], contentDisposition: head["content-disposition"])
        if requests.options.serverDigests {
            let found = ServerDigests.parse(head, wholeBody: wholeBody)
            file.serverDigests = found.digests
            file.digestNotices = found.notices
        }
        return file
    }
}
