import Synchronization

/// Runs the range workers of one segmented download: each worker takes the lowest pending
/// bytes, fetches them, records what arrived, and repeats. When nothing is pending, idle workers
/// steal the far half of the largest in-flight remainder, and at the very end duplicate the
/// tail of the slowest request on a fresh connection (the first to finish wins). A request that
/// fails part-way leaves its remainder pending, to be fetched from where it stopped.
final class RangeScheduler: Sendable {
    /// A request the scheduler started, as other workers see it.
    struct Active: Sendable {
        let sink: RangeSink
        let handle: TransferHandle
        let started: ContinuousClock.Instant
        let isHedge: Bool
    }

    /// One unit of work for a worker.
    struct Job: Sendable {
        let assignment: RangeLedger.Assignment
        let sink: RangeSink
        let handle: TransferHandle
        let isHedge: Bool
    }

    enum Work: Sendable {
        case fetch(Job)
        case wait
        case done
    }

    let context: EngineContext
    let resolver: RemoteResolver
    let writer: FileWriter
    let hasher: WatermarkHasher?
    let journal: Journal?
    let sizer: RequestSizer
    let workers: Int
    /// Output offset 0 is this remote offset (`--range`).
    let remoteOffset: Int64
    let ledger: SharedLedger
    let gate: ConnectionGate
    private let registry = Mutex<[RangeLedger.AssignmentID: Active]>([:])
    private let signal = ChangeSignal()
    /// Speeds (bytes/s) of recently completed requests: what a healthy connection achieves.
    private let recentSpeeds = Mutex<[Double]>([])
    static let recentSpeedsKept = 16

    /// Neither side of a steal is smaller than this: a steal costs the victim its connection.
    static let minimumStealBytes: Int64 = 256 * 1024
    static let stealAlignment: Int64 = 64 * 1024
    /// A request is judged for hedging only after running this long.
    static let hedgeMinimumAge: Duration = .milliseconds(300)
    /// Idle workers look again at least this often (slow transfers become hedge candidates).
    static let idleRecheck: Duration = .milliseconds(100)

    init(context: EngineContext, resolver: RemoteResolver, size: Int64, remoteOffset: Int64 = 0, alreadyDone: RangeSet = RangeSet(),
         writer: FileWriter, hasher: WatermarkHasher?, journal: Journal?, sizer: RequestSizer, workers: Int) {
        self.context = context
        self.resolver = resolver
        self.writer = writer
        self.hasher = hasher
        self.journal = journal
        self.remoteOffset = remoteOffset
        self.sizer = sizer
        self.workers = workers
        self.ledger = SharedLedger(RangeLedger(size: size, alreadyDone: alreadyDone))
        let tuner = ConnectionTuner(maximum: workers, initial: context.options.initialConnections)
        self.tuner = Mutex(tuner)
        let starting = context.options.selfTuning ? tuner.target : workers
        writer.resize(forConnections: starting, bufferBytes: Self.stagingBytes(connections: starting))
        self.gate = ConnectionGate(maximum: workers, initial: context.options.selfTuning ? tuner.target : workers)
        self.peakConnections = Atomic(context.options.selfTuning ? tuner.target : workers)
    }

    /// The tuner's state (changed only by the tuning task).
    private let tuner: Mutex<ConnectionTuner>
    /// The most connections the download was allowed at once.
    let peakConnections: Atomic<Int>
    /// How often the tuner samples the aggregate throughput.
    static let tuningWindow: Duration = .milliseconds(100)

    /// Staging buffers share about 1 MiB: 64 KiB each up to 16 connections, 16 KiB from 64.
    static func stagingBytes(connections: Int) -> Int {
        min(64 * 1024, max(16 * 1024, 1024 * 1024 / max(1, connections)))
    }

    /// libcurl's receive buffer for the next request: a 2 MiB budget shared by the connections
    /// allowed now (256 KiB each up to 8, 128 KiB at 16, 32 KiB from 64).
    var receiveBufferBytes: Int {
        if let fixed = context.options.receiveBufferBytes { return fixed }
        return min(256 * 1024, max(32 * 1024, 2 * 1024 * 1024 / max(1, gate.allowed)))
    }

    /// What a child task of the scheduler's group reports when it ends.
    private enum ChildEnd: Sendable {
        case worker
        /// The tuner raised the target: start workers up to this count, then tune on.
        case grow(Int)
        case tuner
    }

    func run() async throws {
        hasher?.advance(to: ledger.withLock { $0.watermark })  // bytes already on disk (resume)
        try await withThrowingTaskGroup(of: ChildEnd.self) { group in
            // Workers start as the tuner asks for them: a parked task still costs memory.
            var spawned = 0
            func spawn(upTo count: Int) {
                while spawned < min(count, workers) {
                    let index = spawned
                    guard group.addTaskUnlessCancelled(operation: { try await self.worker(index); return .worker }) else { return }
                    spawned += 1
                }
            }
            let tuning = context.options.selfTuning && workers > 1
            spawn(upTo: tuning ? gate.allowed : workers)
            if tuning { group.addTask { await self.tune() } }
            // Not `waitForAll()`: it waits for every child even after one throws, and a worker
            // parked in the gate would wait forever. Leaving the group by throwing cancels the rest.
            var finishedWorkers = 0
            while let end = try await group.next() {
                switch end {
                case .worker:
                    finishedWorkers += 1
                    if finishedWorkers == spawned { group.cancelAll() }  // nothing left to tune
                case .grow(let count):
                    // A grow that arrives after the last worker finished has nothing to do.
                    guard finishedWorkers < spawned else { break }
                    spawn(upTo: count)
                    _ = group.addTaskUnlessCancelled { await self.tune() }
                case .tuner:
                    break
                }
            }
        }
        guard ledger.withLock({ $0.isComplete }) else {
            throw SpateError(.network, "download ended with bytes missing (internal error)")
        }
    }

    // MARK: - Tuning

    /// The tuner's sampling state, kept across `tune()` runs.
    private struct Sampling {
        var bytes: Int64 = 0
        var time = ContinuousClock.now
        var cpu: SystemCPU.Sample?
        var started = false
    }
    private let sampling = Mutex(Sampling())

    /// Samples the aggregate throughput every `tuningWindow` and lets the tuner set how many
    /// connections run. The first window starts with the first byte (connection set-up and slow
    /// start are not the steady state). Returns `.grow` when more workers are needed (the group
    /// starts them and runs `tune()` again), `.tuner` when done or cancelled.
    private func tune() async -> ChildEnd {
        if !sampling.withLock({ $0.started }) {
            while context.counters.bytesWritten.load(ordering: .relaxed) == 0 {
                if Task.isCancelled || ledger.withLock({ $0.isComplete }) { return .tuner }
                await signal.wait(timeout: Self.tuningWindow)
            }
            sampling.withLock { $0 = Sampling(bytes: context.counters.bytesWritten.load(ordering: .relaxed), time: .now,
                                              cpu: SystemCPU.sample(), started: true) }
        }
        while !ledger.withLock({ $0.isComplete }) {
            do { try await Task.sleep(for: Self.tuningWindow) } catch { return .tuner }
            let bytes = context.counters.bytesWritten.load(ordering: .relaxed)
            let now = ContinuousClock.now
            let cpu = SystemCPU.sample()
            let (rate, busy) = sampling.withLock { s -> (Double, Double?) in
                let rate = Double(bytes - s.bytes) / max((now - s.time).secondsDouble, 0.001)
                let busy = s.cpu.flatMap { a in cpu.flatMap { SystemCPU.busyFraction(from: a, to: $0) } }
                (s.bytes, s.time, s.cpu) = (bytes, now, cpu)
                return (rate, busy)
            }
            let throttled = gate.takeThrottled()
            let stalled = gate.takeStalled()
            let next = tuner.withLock { $0.observe(rate: rate, throttled: throttled, stalled: stalled, cpuBusy: busy) }
            if let next {
                gate.setTarget(next)
                writer.resize(forConnections: next, bufferBytes: Self.stagingBytes(connections: next))
                if next > peakConnections.load(ordering: .relaxed) {
                    peakConnections.store(next, ordering: .relaxed)
                    return .grow(next)
                }
            }
        }
        return .tuner
    }

    // MARK: - Deciding

    /// The next job, decided under the ledger lock so that a steal's victim learns its new end
    /// before the thief starts.
    func nextWork(speed: Double?) -> Work {
        let remote = resolver.current
        let connections = gate.allowed
        return ledger.withLock { l -> Work in
            if let a = l.assign(maxBytes: sizer.nextRequestBytes(unassigned: l.unassignedBytes, connections: connections, speed: speed)) {
                return .fetch(makeJob(a, remote: remote, hedge: false))
            }
            let active = registry.withLock { $0 }
            let positions = active.mapValues { $0.sink.publishedPosition.load(ordering: .relaxed) }
            if context.options.workStealing,
               let steal = l.steal(positions: positions, minimumBytes: Self.minimumStealBytes, alignment: Self.stealAlignment) {
                active[steal.victim]?.sink.limit.store(steal.victimEnd, ordering: .relaxed)
                return .fetch(makeJob(steal.assignment, remote: remote, hedge: false))
            }
            if l.isComplete { return .done }
            if context.options.tailHedging, let (victim, position) = hedgeCandidate(l, active: active, positions: positions),
               let hedge = l.hedge(victim, from: position) {
                return .fetch(makeJob(hedge, remote: remote, hedge: true))
            }
            return .wait
        }
    }

    private func makeJob(_ assignment: RangeLedger.Assignment, remote: RemoteFile, hedge: Bool) -> Job {
        let sink = RangeSink(requested: assignment.range, remoteOffset: remoteOffset, writer: writer, remote: remote,
                             counters: context.counters)
        let job = Job(assignment: assignment, sink: sink, handle: TransferHandle(), isHedge: hedge)
        registry.withLock { $0[assignment.id] = Active(sink: sink, handle: job.handle, started: .now, isHedge: hedge) }
        return job
    }

    /// The slowest primary request worth duplicating: its expected time to finish is more than
    /// twice what a typical connection would need for the same bytes, and above 200 ms.
    private func hedgeCandidate(_ l: RangeLedger, active: [RangeLedger.AssignmentID: Active],
                                positions: [RangeLedger.AssignmentID: Int64]) -> (RangeLedger.AssignmentID, Int64)? {
        let now = ContinuousClock.now
        var speeds: [Double] = []
        var candidates: [(id: RangeLedger.AssignmentID, remaining: Int64, speed: Double, position: Int64)] = []
        for (id, entry) in active {
            let age = (now - entry.started).secondsDouble
            let position = positions[id] ?? entry.sink.requested.start
            let speed = Double(position - entry.sink.requested.start) / max(age, 0.001)
            if speed > 0 { speeds.append(speed) }
            guard !entry.isHedge, age >= Self.hedgeMinimumAge.secondsDouble, let range = l.inFlight[id],
                  !l.hedges.values.contains(where: { $0.of == id }) else { continue }
            let remaining = range.end - position
            if remaining > 0 { candidates.append((id, remaining, speed, position)) }
        }
        speeds += recentSpeeds.withLock { $0 }
        guard !candidates.isEmpty, !speeds.isEmpty else { return nil }
        speeds.sort()
        // The median of what running and recently finished requests achieve.
        let typical = speeds[speeds.count / 2]
        var best: (id: RangeLedger.AssignmentID, eta: Double, position: Int64)?
        for c in candidates {
            let eta = Double(c.remaining) / max(c.speed, 1)
            let fresh = Double(c.remaining) / typical + 0.05
            if eta > 0.2 && eta > 2 * fresh && eta > (best?.eta ?? 0) { best = (c.id, eta, c.position) }
        }
        return best.map { ($0.id, $0.position) }
    }

    /// The written prefix of every request in flight (for the journal's progress records).
    func inFlightWritten() -> [HashedRange] {
        registry.withLock { r in r.values.compactMap { $0.sink.written } }
    }

    /// Requests that are receiving data now: what the server accepts at the moment.
    private func receivingCount() -> Int {
        registry.withLock { r in
            r.values.filter { $0.sink.publishedPosition.load(ordering: .relaxed) > $0.sink.requested.start }.count
        }
    }

    // MARK: - Working

    private func worker(_ index: Int) async throws {
        var failures = 0
        var freshConnection = false
        var speed: Double?  // this worker's last measured speed, for the request size
        while true {
            try Task.checkCancellation()
            guard await gate.admit(index) else { return }
            switch nextWork(speed: speed) {
            case .done:
                gate.finish()
                signal.notifyAll()
                return
            case .wait:
                await signal.wait(timeout: Self.idleRecheck)
            case .fetch(let job):
                let sentAtCuts = gate.cuts
                let result = try await fetch(job, fresh: freshConnection || job.isHedge)
                freshConnection = false
                switch result {
                case .progressed(let measured):
                    failures = 0
                    if let measured { speed = measured }
                    gate.succeeded()
                case .retryNow:
                    continue
                case .failed(let verdict, let madeProgress, let stalled):
                    if madeProgress { failures = 0 }
                    freshConnection = stalled
                    if stalled { gate.noteStall() }
                    if let status = verdict.error.httpStatus, status == 429 || status == 503 {
                        let decision = gate.throttled(running: receivingCount(), sentAtCuts: sentAtCuts)
                        if case .lowered(let lowered) = decision {
                            context.emit(.notice("the server is throttling (HTTP \(status)): using at most \(lowered) connections"))
                        }
                        if index >= gate.allowed {
                            // This worker is now beyond the allowance: wait in the gate, with
                            // its retries intact, instead of asking again.
                            failures = 0
                            continue
                        }
                        if let wait = decision.uncountedWait {
                            try await context.backOff(verdict, failures: max(failures, 1), counted: false, atLeast: wait)
                            continue
                        }
                    }
                    failures += 1
                    try await context.backOff(verdict, failures: failures)
                }
            }
        }
    }

    enum FetchResult {
        /// The request's bytes are done (by it or by its hedge partner), or it was abandoned;
        /// with its speed in bytes/s when it completed by itself.
        case progressed(Double?)
        /// Retry at once (the URL was resolved again).
        case retryNow
        case failed(FailureVerdict, madeProgress: Bool, stalled: Bool)
    }

    private func fetch(_ job: Job, fresh: Bool) async throws -> FetchResult {
        let remote = resolver.current
        let id = job.assignment.id
        let started = ContinuousClock.now
        let outcome: TransferOutcome
        do {
            outcome = try await context.perform(context.rangeSpec(job.assignment.range, remoteOffset: remoteOffset, remote: remote, fresh: fresh,
                                                                  bufferBytes: receiveBufferBytes),
                                                sink: job.sink, handle: job.handle)
        } catch {
            // Cancelled: the loop no longer touches the sink; let its writes land first.
            let writeError = await job.sink.flush()
            record(id, doneThrough: writeError == nil ? job.sink.position : job.assignment.range.start)
            if writeError == nil, let written = job.sink.written { journal?.record(written) }
            throw error
        }
        // Bytes count as done only once they are in the file (the digest reads them back).
        let writeError = await job.sink.flush()
        let finish = record(id, doneThrough: writeError == nil ? job.sink.position : job.assignment.range.start)
        if let writeError { throw writeError }
        if let written = job.sink.written { journal?.record(written) }

        if finish.complete || outcome.stop == .abandoned {
            let elapsed = (ContinuousClock.now - started).secondsDouble
            let bytes = job.sink.position - job.assignment.range.start
            guard finish.complete && bytes > 0 && elapsed > 0 else { return .progressed(nil) }
            let speed = Double(bytes) / elapsed
            recentSpeeds.withLock { speeds in
                speeds.append(speed)
                if speeds.count > Self.recentSpeedsKept { speeds.removeFirst() }
            }
            return .progressed(speed)
        }
        let madeProgress = job.sink.position > job.assignment.range.start
        let verdict = FailureClassifier.rangeFailure(outcome, sink: job.sink, url: remote.url)
        if let status = job.sink.errorStatus, [401, 403, 404, 410].contains(status),
           try await resolver.refresh(after: remote.url) != nil {
            return .retryNow
        }
        let stalled = FailureClassifier.isStall(outcome)
        return .failed(verdict, madeProgress: madeProgress, stalled: stalled)
    }

    /// Records a request's end in the ledger, stops requests it made unnecessary, wakes idle
    /// workers and moves the digest's watermark.
    @discardableResult
    private func record(_ id: RangeLedger.AssignmentID, doneThrough: Int64) -> RangeLedger.FinishResult {
        let (result, watermark, losers) = ledger.withLock { l -> (RangeLedger.FinishResult, Int64, [TransferHandle]) in
            let result = l.finish(id, doneThrough: doneThrough)
            let losers = registry.withLock { r -> [TransferHandle] in
                r.removeValue(forKey: id)
                return result.abandon.compactMap { r[$0]?.handle }
            }
            return (result, l.watermark, losers)
        }
        for handle in losers { context.loop.abandon(handle) }
        hasher?.advance(to: watermark)
        signal.notifyAll()
        return result
    }
}

/// The ledger behind a lock, shared by the range workers of one download.
final class SharedLedger: Sendable {
    private let mutex: Mutex<RangeLedger>
    init(_ ledger: RangeLedger) { mutex = Mutex(ledger) }
    func withLock<T>(_ body: (inout RangeLedger) -> T) -> T { mutex.withLock { body(&$0) } }
}

