import Synchronization

/// Runs the range workers of one segmented download, doing what its `RangeSchedule` decides.
///
/// A worker loops: wait to be admitted (the tuner's count) → take a connection slot for the
/// host (the session's budgets) → ask the schedule for work → fetch it → report how it ended →
/// do what the schedule says (next, wait and retry, ask the host's budget about a throttling
/// reply, resolve the URL again, stop). A ticker samples the throughput for the tuner and hands
/// the journal the running requests' progress.
///
/// One lock (`core`) guards the schedule and the running requests' sinks; every action is
/// computed under it and performed after it is released.
final class RangeWorkers: Sendable {
    /// What the workers use, besides the schedule.
    struct Parts: Sendable {
        let transport: DownloadTransport
        /// Where the bytes come from: the URL, and the mirrors in use.
        let sources: SourceSet
        let output: StagedOutputFactory
        let journal: Journal?
        let hasher: WatermarkHasher?
        /// An ordered stream follows the watermark too, and moves the window.
        let stream: StreamOutput?
        /// Output offset 0 is this remote offset (`--range`).
        let remoteOffset: Int64
        /// The download, for the session's accounting of connections.
        let identity: ObjectIdentifier
        /// Whether the download can start over as one stream when the server keeps ignoring
        /// ranges (`RangesIgnored`): a file from its start, fetched from the URL alone.
        var canStartOverAsStream = false
    }

    /// Thrown by `run()` when the server answered `ignoredRangeLimit` range requests with the
    /// whole file (200) and `Parts.canStartOverAsStream`: the engine starts the download over
    /// as one stream from byte 0 (RELIABILITY A.1; a 200 body is never written at another
    /// offset). A single such reply (a cache's miss, after which it serves ranges) is retried
    /// as a range like any bad reply.
    struct RangesIgnored: Error {}

    /// Range requests the server answered with the whole file so far.
    private let ignoredRangeReplies = Atomic<Int>(0)
    static let ignoredRangeLimit = 2

    struct Running {
        let sink: RangeSink
        let handle: TransferHandle
    }

    /// Everything the workers share, behind `core`'s lock.
    struct Core {
        var schedule: RangeSchedule
        var running: [RangeLedger.AssignmentID: Running] = [:]
        var admission: [Int: (worker: Int, continuation: CheckedContinuation<Bool, Never>)] = [:]
        /// Idle workers (woken when a request ends).
        var changes: [Int: CheckedContinuation<Void, Never>] = [:]
        /// Workers waiting before a retry (woken only when the download is done).
        var pauses: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter = 0
        var finished = false
        /// The ordered stream's output failed (its reader went away): every worker stops.
        var outputFailure: SpateError?
        var journalFailuresReported = 0
        /// Counts requests that ended: an idle worker that decided to wait at generation g
        /// returns at once if a request ended since (no lost wake-up between deciding and
        /// waiting).
        var generation = 0

        /// How far each running request has written.
        func positions() -> [RangeLedger.AssignmentID: Int64] {
            running.mapValues { $0.sink.publishedPosition.load(ordering: .relaxed) }
        }

        enum WaitKind: Sendable { case change, pause }

        mutating func addWaiter(_ kind: WaitKind, _ key: Int, _ continuation: CheckedContinuation<Void, Never>) {
            switch kind {
            case .change: changes[key] = continuation
            case .pause: pauses[key] = continuation
            }
        }

        mutating func takeWaiter(_ kind: WaitKind, _ key: Int) -> CheckedContinuation<Void, Never>? {
            switch kind {
            case .change: changes.removeValue(forKey: key)
            case .pause: pauses.removeValue(forKey: key)
            }
        }
    }

    let core: Mutex<Core>
    let parts: Parts
    /// The notice that the server cuts its replies short was given (once per download).
    private let shortenedNoticeGiven = Atomic<Bool>(false)
    private let maximumWorkers: Int

    var session: DownloadSession { parts.transport.session }
    var clock: any EngineClock { parts.transport.clock }

    init(schedule: RangeSchedule, parts: Parts) {
        self.core = Mutex(Core(schedule: schedule))
        self.parts = parts
        self.maximumWorkers = schedule.settings.maximumWorkers
    }

    /// The most workers the download was allowed at once.
    var peakWorkers: Int { core.withLock { $0.schedule.peakWorkers } }

    /// What a child task of the group reports when it ends.
    enum ChildEnd: Sendable {
        case worker
        /// The tuner raised the count: start workers up to this many, then tick on.
        case grow(Int)
        case ticker
    }

    func run() async throws {
        let (allowed, watermark, tuning) = core.withLock { ($0.schedule.allowedWorkers, $0.schedule.watermark, $0.schedule.isTuning) }
        parts.hasher?.advance(to: watermark)  // bytes already on disk (resume)
        parts.stream?.advance(to: watermark)
        session.setConnections(allowed, for: parts.identity)
        try await withThrowingTaskGroup(of: ChildEnd.self) { group in
            // Workers start as the tuner asks for them: a parked task still costs memory.
            var spawned = 0
            func spawn(upTo count: Int) {
                while spawned < min(count, maximumWorkers) {
                    let index = spawned
                    guard group.addTaskUnlessCancelled(operation: { try await self.worker(index) }) else { return }
                    spawned += 1
                }
            }
            spawn(upTo: allowed)
            let ticks = tuning || parts.journal != nil
            if ticks { group.addTask { try await self.ticker() } }
            // Not `waitForAll()`: it waits for every child even after one throws, and a worker
            // parked in admission would wait forever. Leaving by throwing cancels the rest.
            var finishedWorkers = 0
            while let end = try await group.next() {
                switch end {
                case .worker:
                    finishedWorkers += 1
                    // Every byte done: workers still queued for a connection slot, pausing, or
                    // running a hedge's loser end now (they return normally, see `worker`).
                    if finishedWorkers == spawned || core.withLock({ $0.finished }) { group.cancelAll() }
                case .grow(let count):
                    guard finishedWorkers < spawned else { break }
                    spawn(upTo: count)
                    _ = group.addTaskUnlessCancelled { try await self.ticker() }
                case .ticker:
                    break
                }
            }
        }
        guard core.withLock({ $0.schedule.isComplete }) else {
            // Workers end quietly when cancelled (a batch's --fail-fast, a cancelled task):
            // that is a cancellation, not a fault.
            try Task.checkCancellation()
            throw SpateError(.network, "download ended with bytes missing (internal error)")
        }
    }

    // MARK: - Workers

    private enum Step: Sendable {
        case done
        /// Someone took the work between the look and the slot: look again.
        case lookAgain
        case ended(RangeSchedule.Next, TransferEnd, RemoteFile, source: Int)
    }

    /// One worker: cancelled once the download is done, it returns normally.
    private func worker(_ index: Int) async throws -> ChildEnd {
        do {
            return try await work(index)
        } catch is CancellationError where core.withLock({ $0.finished }) {
            return .worker
        }
    }

    private func work(_ index: Int) async throws -> ChildEnd {
        while true {
            try Task.checkCancellation()
            if let failure = core.withLock({ $0.outputFailure }) { throw failure }
            guard await admit(index) else { return .worker }
            // Look before taking a connection slot: a slot is held only to fetch, so idle
            // workers never keep other downloads from the budget, and a worker never queues
            // for a slot of a download that is already done.
            let (preview, generation) = core.withLock { c in
                (c.schedule.preview(worker: index, positions: c.positions(), now: clock.now), c.generation)
            }
            switch preview {
            case .done:
                finishAll()
                return .worker
            case .wait(let until):
                await waitForChange(until: until, since: generation)
                continue
            case .fetch:
                break
            }
            let (sourceIndex, source) = parts.sources.source(for: index)
            let remote = source.resolver.current
            let step = try await parts.transport.withSlot(for: remote.url.origin) { slot -> Step in
                // The source may have been dropped while this worker waited for its slot.
                guard parts.sources.isActive(sourceIndex) else { return .lookAgain }
                let now = clock.now
                let (work, victim) = core.withLock { c -> (RangeSchedule.Work, RangeSink?) in
                    let work = c.schedule.nextWork(worker: index, positions: c.positions(), now: now)
                    guard case .fetch(let job) = work else { return (work, nil) }
                    let sink = RangeSink(requested: job.assignment.range, remoteOffset: parts.remoteOffset, output: parts.output.make(),
                                         remote: remote, counters: parts.transport.counters,
                                         sentIfRange: source.requests.sendsIfRange(for: remote))
                    c.running[job.assignment.id] = Running(sink: sink, handle: TransferHandle())
                    return (work, job.shorten.flatMap { c.running[$0.victim]?.sink })
                }
                switch work {
                case .done:
                    return .done
                case .wait:
                    return .lookAgain
                case .fetch(let job):
                    // A steal: the victim learns its new end before the thief starts.
                    if let victim, let shorten = job.shorten { victim.limit.store(shorten.end, ordering: .relaxed) }
                    if let trace = session.trace, job.shorten != nil || job.isHedge {
                        let range = job.assignment.range
                        trace.instant(job.isHedge ? "hedge" : "steal", category: "schedule", args: [
                            ("start", .integer(range.start)), ("end", .integer(range.end)),
                        ])
                    }
                    let (next, end) = try await fetch(job, worker: index, slot: slot, remote: remote, requests: source.requests)
                    return .ended(next, end, remote, source: sourceIndex)
                }
            }
            switch step {
            case .done:
                finishAll()
                return .worker
            case .lookAgain:
                continue
            case .ended(let next, let end, let remote, let source):
                parts.sources.record(source, failed: Self.blamesSource(end))
                try await follow(next, after: end, remote: remote, source: source)
            }
        }
    }

    /// Does what the schedule decided after a request ended.
    private func follow(_ next: RangeSchedule.Next, after end: TransferEnd, remote: RemoteFile, source: Int) async throws {
        switch next {
        case .proceed:
            return
        case .wait(let delay, let attempt):
            parts.transport.noteRetry(delay, after: end.error, attempt: attempt)
            if delay > .zero { await pause(until: clock.now + delay) }
        case .reResolve(let reply):
            do {
                guard try await parts.sources.source(source).resolver.refresh(after: remote.url) != nil else { throw reply.error }
            } catch let error as SpateError {
                try drop(source, after: error)
            }
        case .stop(let error):
            try drop(source, after: error)
        }
    }

    /// Whether a request's end counts against its source (`SourceSet.record`): not a success,
    /// not a throttling reply (the host budget's business), not a local failure.
    static func blamesSource(_ end: TransferEnd) -> Bool {
        switch end {
        case .completed, .enough, .abandoned, .localFailure: false
        default: !FailurePolicy.isThrottling(end)
        }
    }

    /// A source failed: the others go on without it (its bytes are pending again), or, when
    /// it cannot be dropped (`SourceSet.drop`), the download fails with `error`.
    private func drop(_ source: Int, after error: SpateError) throws {
        switch parts.sources.drop(source, after: error) {
        case .kept: throw error
        case .alreadyDropped, .spared: return
        case .dropped: break
        }
        let host = parts.sources.source(source).resolver.current.url.redacted
        // (The failed request's end already put its bytes back and woke the idle workers.)
        parts.transport.emit(.notice("dropped the source \(host) (\(error.message)); going on with \(parts.sources.activeCount) source(s)"))
    }

    /// Runs one request and reports its end to the schedule.
    private func fetch(_ job: RangeSchedule.Job, worker: Int, slot: BudgetSlot, remote: RemoteFile,
                       requests: RequestBuilder) async throws -> (RangeSchedule.Next, TransferEnd) {
        let id = job.assignment.id
        guard let request = core.withLock({ c -> Running? in
            c.schedule.requestStarted(id, now: clock.now)
            return c.running[id]
        }) else { preconditionFailure("request \(id) is not registered") }
        let sink = request.sink
        let range = job.assignment.range
        let spec = requests.range(ByteRange(range.start + parts.remoteOffset, range.end + parts.remoteOffset), of: remote,
                                        fresh: job.freshConnection, sendIfRange: sink.sentIfRange,
                                        bufferBytes: session.receiveBufferBytes(fixed: requests.options.receiveBufferBytes), slot: slot)
        let outcome: TransferOutcome
        do {
            outcome = try await parts.transport.perform(spec, sink: sink, handle: request.handle)
        } catch {
            // Cancelled: the loop no longer touches the sink; let its writes land first.
            let writeError = await sink.flush()
            if writeError == nil, let written = sink.written { parts.journal?.record(written) }
            _ = record(id, worker: worker, doneThrough: writeError == nil ? sink.position : range.start, end: .abandoned)
            throw error
        }
        // Bytes count as done only once they are in the file (the digest reads them back).
        let writeError = await sink.flush()
        let end = writeError.map(TransferEnd.localFailure)
            ?? sink.end(of: outcome, url: remote.url, wallSeconds: clock.wallSeconds)
        if writeError == nil, let written = sink.written { parts.journal?.record(written) }
        if case .invalidReply(let reply) = end, reply.kind == .ifRangeIgnored, requests.ifRange.turnOff() {
            parts.transport.emit(.notice("the server ignores If-Range for this file (a validator it considers weak, as Apache does for a file modified in the last second): asking without it; every reply's validator is still checked"))
        }
        // A 429/503 is judged by the host's budget first (shared with the session's other
        // downloads): a cut, or a reply to a higher count than now allowed, does not count.
        let judged = session.budgets.judge(end, slot: slot, now: clock.now)
        if let notice = judged?.notice { parts.transport.emit(.notice(notice)) }
        let throttle = judged?.decision
        let shortened = end == .completed && sink.shortenedByServer
        if shortened, !shortenedNoticeGiven.exchange(true, ordering: .relaxed) {
            parts.transport.emit(.notice("the server answered \(sink.servedEnd - range.start) of the \(range.count) bytes asked for in one request (a 206 for the first part of the range); asking for the rest in further requests"))
        }
        let ended = record(id, worker: worker, doneThrough: writeError == nil ? sink.position : range.start, end: end,
                           throttle: throttle, replyWait: outcome.replyWait, shortenedByServer: shortened)
        if ended.complete { session.budgets.succeeded(slot.origin) }
        if ended.refusedForWidth {
            if let cap = ended.spanCapped {
                parts.transport.emit(.notice("the server refused a range of \(ByteSize.format(range.count)) with 403 and serves narrower ones: asking for at most \(ByteSize.format(cap)) per request"))
            }
            return (ended.next, .enough)  // the bytes are pending again; nothing failed
        }
        if case .invalidReply(let reply) = end, reply.kind == .ignoredRange, parts.canStartOverAsStream,
           ignoredRangeReplies.add(1, ordering: .relaxed).newValue >= Self.ignoredRangeLimit {
            throw RangesIgnored()
        }
        return (ended.next, end)
    }

    /// Reports a request's end to the schedule, stops the requests it made unnecessary, moves
    /// the digest's watermark and wakes idle workers.
    private func record(_ id: RangeLedger.AssignmentID, worker: Int, doneThrough: Int64, end: TransferEnd,
                        throttle: ThrottleDecision? = nil, replyWait: Duration? = nil,
                        shortenedByServer: Bool = false) -> RangeSchedule.Ended {
        let now = clock.now
        let (ended, losers, waiters) = core.withLock { c in
            c.running.removeValue(forKey: id)
            c.generation += 1
            let ended = c.schedule.requestEnded(id, worker: worker, doneThrough: doneThrough, end: end, throttle: throttle,
                                                    replyWait: replyWait, shortenedByServer: shortenedByServer, now: now)
            if let extend = ended.extend, let victim = c.running[extend.victim]?.sink {
                // Never past what the victim asked the server for.
                victim.limit.store(min(extend.end, victim.requested.end), ordering: .relaxed)
            }
            let losers = ended.abandon.compactMap { c.running[$0]?.handle }
            defer { c.changes.removeAll() }
            return (ended, losers, Array(c.changes.values))
        }
        for handle in losers { session.loop.abandon(handle) }
        parts.hasher?.advance(to: ended.watermark)
        parts.stream?.advance(to: ended.watermark)
        for waiter in waiters { waiter.resume() }
        return ended
    }

    /// The ordered stream wrote `streamed` bytes, or failed: move the window and wake the idle
    /// workers (work inside the window may be free now); a failure wakes every waiting worker
    /// to stop.
    func streamProgressed(_ streamed: Int64, failure: SpateError?) {
        let (waiters, running): ([CheckedContinuation<Void, Never>], [TransferHandle]) = core.withLock { c in
            if let failure {
                c.outputFailure = failure
            } else if !c.schedule.moveWindow(streamed: streamed) {
                return ([], [])
            }
            c.generation += 1
            var woken = Array(c.changes.values)
            c.changes.removeAll()
            guard failure != nil else { return (woken, []) }
            woken += c.pauses.values
            c.pauses.removeAll()
            return (woken, c.running.values.map(\.handle))
        }
        // The reader is gone: requests in flight stop now, not at the end of their ranges.
        for handle in running { session.loop.abandon(handle) }
        for waiter in waiters { waiter.resume() }
    }
}
