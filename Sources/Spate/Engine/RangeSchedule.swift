/// The decisions of one segmented download, as a value: which bytes a worker fetches next,
/// when an idle worker steals or hedges, what the end of a request means (done, retry after a
/// wait, throttled, resolve the URL again, stop), and how many workers may run.
///
/// No I/O, no clock reads, no locks: every event is a `mutating func` that takes `now` and
/// returns what to do, so the rules are tested by feeding events and reading actions
/// (`RangeScheduleTests`). `RangeWorkers` holds it behind one lock, computes an action, releases
/// the lock and performs the action (async-http-client's state-machine pattern).
///
/// Events, in the order a worker sees them:
/// 1. `nextWork` — fetch an assignment (maybe a steal, which shortens a running request, or a
///    hedge), wait until a time, or stop (everything is done);
/// 2. `requestStarted` — the transfer got a connection slot and starts now;
/// 3. `requestEnded` — what the transfer wrote, how it ended (`TransferEnd`), and for a
///    throttling reply the host budget's judgement of it.
/// The ticker adds `tick` (throughput samples for the tuner).
///
/// Retries are counted per range, not per worker: a failed request's remainder goes back to
/// pending with its count of failures in a row (and whether it stalled), and whichever worker
/// takes it next continues that count — but not before its backoff has passed (other pending
/// bytes go out meanwhile). Workers take turns at the host's connection slots, so a count kept
/// per worker would charge one worker for failures of several ranges, and let a range that
/// always fails be retried by every worker in turn without any backoff. A failed hedge costs
/// nothing: its primary still holds the bytes.
struct RangeSchedule: Sendable {
    /// Neither side of a steal is smaller than this: a steal costs the victim its connection.
    static let minimumStealBytes: Int64 = 256 * 1024
    static let stealAlignment: Int64 = 64 * 1024
    /// A request is judged for hedging only after running this long.
    static let hedgeMinimumAge: Duration = .milliseconds(300)
    /// Idle workers look again at least this often (slow transfers become hedge candidates).
    static let idleRecheck: Duration = .milliseconds(100)
    /// How often the tuner samples the throughput.
    static let tuningWindow: Duration = .milliseconds(100)
    static let recentSpeedsKept = 16
    /// A reply the server cut short on purpose (`RangeSink.shortenedByServer`) that carried
    /// at least this much is progress, not a failure: its rest is asked for again at once.
    /// Fewer bytes count as a failure (without resetting the count), so a server that
    /// answers a byte at a time runs out of retries instead of being asked forever.
    static let minimumShortenedReply: Int64 = 64 * 1024
    /// Requests are never capped below this (`spanCap`): a server that refuses even such a
    /// range refuses for another reason.
    static let minimumSpanCap: Int64 = 64 * 1024

    private struct Running: Sendable {
        let start: Int64
        /// How many bytes its Range header asked for (a steal shortens the assignment later,
        /// not the request the server saw).
        let asked: Int64
        let isHedge: Bool
        /// The retry history of the bytes it was given.
        let budget: RetryBudget
        /// When the transfer started (nil while it waits for a connection slot).
        var started: ContinuousClock.Instant?
        /// A steal: the request it took its bytes from.
        var stoleFrom: RangeLedger.AssignmentID? = nil
        /// A thief gave bytes back to it: its sink may have stopped at the old end (`enough`)
        /// before it learned the new one, which is not a short reply.
        var extended = false
    }

    /// The history a failed request leaves with its remainder, keyed by the remainder's start.
    private struct Retry: Sendable {
        var budget: RetryBudget
        /// The next request for these bytes opens a new connection (after a stall or timeout).
        var freshConnection: Bool
        /// The remainder as it went back to pending, and when it may be asked for again (its
        /// backoff); nil: at once.
        var range: ByteRange
        var notBefore: ContinuousClock.Instant?
    }

    let settings: Settings
    private(set) var ledger: RangeLedger
    private var running: [RangeLedger.AssignmentID: Running] = [:]
    /// Failed remainders waiting in pending (a few at most: one per failed request).
    private var retries: [Int64: Retry] = [:]
    /// Each worker's last measured speed (bytes/s), for its request size.
    private var speeds: [Int: Double] = [:]
    /// Speeds (bytes/s) of recently completed requests: what a healthy connection achieves.
    private var recentSpeeds: [Double] = []
    /// Recent waits (seconds) between a request and its first byte (the probe's first): the
    /// round trip every request pays, which sets the least time a request should last.
    private var recentReplyWaits: [Double] = []
    private var random: SplitMix64
    private var sampler: ThroughputSampler?
    private var throttledSinceSample = false
    private var stalledSinceSample = false
    /// An ordered stream's window end: nothing at or beyond it is handed out (nil: a file).
    private(set) var windowEnd: Int64?
    /// The most bytes one request asks for, once the server refused a wider range with 403
    /// while it serves narrower ones (RELIABILITY A.29: hosts that cap a range's span, such
    /// as 5 MiB); nil until then.
    private(set) var spanCap: Int64?
    /// A range no wider than `spanCap` was served since it was set: the guess was right. An
    /// unconfirmed cap is lifted at a 403 that width cannot explain (an expired URL refuses
    /// every width: the halving was wrong, and the refreshed URL must not inherit it).
    private var spanCapConfirmed = false
    /// The widest range the server answered with bytes: a 403 to a range no wider is not
    /// about the span (an expired URL, a revoked grant) and follows `FailurePolicy`.
    private var widestServed: Int64 = 0
    /// How many workers may run now (the tuner's target, or the fixed count).
    private(set) var allowedWorkers: Int
    /// The most workers allowed at once so far.
    private(set) var peakWorkers: Int

    init(size: Int64, alreadyDone: RangeSet = RangeSet(), settings: Settings, seed: UInt64) {
        self.settings = settings
        self.ledger = RangeLedger(size: size, alreadyDone: alreadyDone)
        self.random = SplitMix64(seed: seed)
        if settings.selfTuning && settings.maximumWorkers > 1 {
            let tuner = ConnectionTuner(maximum: settings.maximumWorkers, initial: settings.initialWorkers)
            sampler = ThroughputSampler(tuner: tuner)
            allowedWorkers = tuner.target
        } else {
            allowedWorkers = settings.maximumWorkers
        }
        peakWorkers = allowedWorkers
        windowEnd = settings.windowBytes
        if let wait = settings.initialReplyWait { recentReplyWaits = [wait.secondsDouble] }
    }

    /// The stream has written `streamed` bytes: the window now ends `windowBytes` after them.
    /// Returns whether it moved.
    mutating func moveWindow(streamed: Int64) -> Bool {
        guard let window = settings.windowBytes else { return false }
        let end = streamed + window
        guard end > (windowEnd ?? 0) else { return false }
        windowEnd = end
        return true
    }

    var isComplete: Bool { ledger.isComplete }
    var watermark: Int64 { ledger.watermark }
    /// Whether a ticker must sample the throughput for the tuner.
    var isTuning: Bool { sampler != nil }

    // MARK: - Events

    /// The next work for `worker`, which holds a connection slot. `positions`: how far each
    /// running request has written (read from the sinks).
    mutating func nextWork(worker: Int, positions: [RangeLedger.AssignmentID: Int64], now: ContinuousClock.Instant) -> Work {
        // Near the end requests shrink to share what is left among the connections this
        // download really has (in a shared session, fewer than its workers).
        let connections = max(1, min(allowedWorkers, running.count + 1))
        var bytes = settings.sizer.nextRequestBytes(unassigned: ledger.unassignedBytes, connections: connections,
                                                    speed: speeds[worker] ?? typicalSpeed, replyWait: typicalReplyWait,
                                                    outstanding: outstandingBytes(positions), allowed: allowedWorkers)
        if let window = settings.windowBytes {
            // Every connection can hold a request inside the window, with room for a second.
            bytes = min(bytes, max(RequestSizer.alignment, window / Int64(2 * max(1, settings.maximumWorkers))))
        }
        if let spanCap { bytes = min(bytes, spanCap) }
        let waiting = retries.values.filter { ($0.notBefore ?? now) > now }
        if let assignment = ledger.assign(maxBytes: bytes, avoiding: waiting.map(\.range), below: windowEnd ?? .max) {
            return .fetch(begin(assignment, hedge: false, shorten: nil))
        }
        if settings.workStealing,
           let steal = ledger.steal(positions: positions, minimumBytes: Self.minimumStealBytes, alignment: Self.stealAlignment,
                                    headFirst: settings.windowBytes != nil) {
            return .fetch(begin(steal.assignment, hedge: false, shorten: Shorten(victim: steal.victim, end: steal.victimEnd)))
        }
        if ledger.isComplete { return .done }
        if settings.tailHedging, let (victim, position) = hedgeCandidate(positions: positions, now: now),
           let hedge = ledger.hedge(victim, from: position) {
            return .fetch(begin(hedge, hedge: true, shorten: nil))
        }
        let due = waiting.compactMap(\.notBefore).min()
        return .wait(until: min(now + Self.idleRecheck, due ?? now + Self.idleRecheck))
    }

    /// What `nextWork` would answer now, without changing anything (a worker asks before it
    /// takes a connection slot: it holds one only to fetch).
    func preview(worker: Int, positions: [RangeLedger.AssignmentID: Int64], now: ContinuousClock.Instant) -> Work {
        var copy = self
        return copy.nextWork(worker: worker, positions: positions, now: now)
    }

    /// The median speed of recently completed requests: a worker's size before it has its own.
    private var typicalSpeed: Double? {
        guard !recentSpeeds.isEmpty else { return nil }
        return recentSpeeds.sorted()[recentSpeeds.count / 2]
    }

    /// The bytes the running primary requests have still to receive.
    private func outstandingBytes(_ positions: [RangeLedger.AssignmentID: Int64]) -> Int64 {
        ledger.inFlight.reduce(0) { sum, entry in
            sum + max(0, entry.value.end - max(positions[entry.key] ?? entry.value.start, entry.value.start))
        }
    }

    /// The median of the recent reply waits (seconds).
    var typicalReplyWait: Double? {
        guard !recentReplyWaits.isEmpty else { return nil }
        return recentReplyWaits.sorted()[recentReplyWaits.count / 2]
    }

    /// The transfer for `id` starts now.
    mutating func requestStarted(_ id: RangeLedger.AssignmentID, now: ContinuousClock.Instant) {
        running[id]?.started = now
    }

    /// The request `id` of `worker` ended: bytes up to `doneThrough` are in the file, and the
    /// transfer ended with `end`; `throttle` is the host budget's judgement of a throttling
    /// reply (`FailurePolicy.isThrottling`).
    /// - Parameter replyWait: how long the request waited for its first byte, when a reply came.
    ///   - shortenedByServer: the reply was the first part of the range only, announced by its
    ///     Content-Range, and all of it came (`RangeSink.shortenedByServer`; `end` is then
    ///     `.completed`).
    mutating func requestEnded(_ id: RangeLedger.AssignmentID, worker: Int, doneThrough: Int64, end: TransferEnd,
                               throttle: ThrottleDecision? = nil, replyWait: Duration? = nil, shortenedByServer: Bool = false,
                               now: ContinuousClock.Instant) -> Ended {
        guard let request = running.removeValue(forKey: id) else {
            preconditionFailure("end of request \(id), which is not running")
        }
        if let replyWait {
            recentReplyWaits.append(replyWait.secondsDouble)
            if recentReplyWaits.count > Self.recentSpeedsKept { recentReplyWaits.removeFirst() }
        }
        let range = ledger.range(of: id)
        let wasHedge = ledger.isHedge(id)
        if let victim = request.stoleFrom, doneThrough <= request.start, FailurePolicy.isThrottling(end),
           running[victim] != nil, let victimEnd = ledger.giveBack(id, to: victim) {
            return givenBack(request, victim: victim, end: victimEnd, reply: end, throttle: throttle, now: now)
        }
        let finish = ledger.finish(id, doneThrough: doneThrough)
        var ended = Ended(abandon: finish.abandon, watermark: ledger.watermark, complete: finish.complete, next: .proceed)
        let moved = doneThrough - request.start
        if moved > 0 {
            widestServed = max(widestServed, request.asked)
            if let spanCap, request.asked <= spanCap { spanCapConfirmed = true }
        }
        if finish.complete || end == .abandoned {
            if finish.complete, moved > 0, let started = request.started, now > started {
                let speed = Double(moved) / (now - started).secondsDouble
                speeds[worker] = speed
                recentSpeeds.append(speed)
                if recentSpeeds.count > Self.recentSpeedsKept { recentSpeeds.removeFirst() }
            }
            return ended
        }
        if wasHedge {
            // The primary still holds these bytes (or has them done): a failed hedge only
            // stops, unless what it saw concerns the whole download.
            switch end {
            case .remoteChanged, .localFailure: ended.next = .stop(end.error)
            default: break
            }
            return ended
        }
        if end == .enough && request.extended {
            // It stopped at the end a steal gave it just before the thief gave the bytes back:
            // the rest is pending again, nothing failed.
            return ended
        }
        if case .status(let reply) = end, reply.status == 403, moved <= 0 {
            if request.asked > max(widestServed, Self.minimumSpanCap) {
                // Refused, and wider than any range the server served: ask for half as much
                // (the bytes are pending again; uncounted, as the halving ends at
                // `minimumSpanCap` or at the widest range served, where a 403 follows the
                // failure policy).
                let half = max(Self.minimumSpanCap, request.asked / 2 / RequestSizer.alignment * RequestSizer.alignment)
                ended.refusedForWidth = true
                if half < spanCap ?? .max {
                    spanCap = half
                    spanCapConfirmed = false
                    ended.spanCapped = half
                }
                return ended
            }
            if !spanCapConfirmed { spanCap = nil }
        }
        var end = end
        var progressed = moved > 0
        if end == .completed && shortenedByServer {
            // The server sends at most so much per reply: the rest is pending again.
            if moved >= Self.minimumShortenedReply { return ended }
            progressed = false
            end = .invalidReply(InvalidReply(.shortReply, "the server answered \(max(0, moved)) bytes of a range (a 206 for the first part only)"))
        } else if end == .completed || end == .enough {
            // The transfer ended well but its bytes are not all done (a sink's check missed it):
            // a short reply, never a crash or a silent gap.
            end = .invalidReply(InvalidReply(.shortReply, "a reply ended \(max(0, moved)) bytes into its range"))
        }
        if case .stalled = end { stalledSinceSample = true }
        if FailurePolicy.isThrottling(end) { throttledSinceSample = true }
        var budget = request.budget
        switch FailurePolicy.decide(end, madeProgress: progressed, budget: &budget, throttle: throttle,
                                    canResolveAgain: true, random: random.nextUnitInterval()) {
        case .retry(let after, let fresh):
            ended.next = .wait(after, attempt: budget.failures)
            // The remainder (pending again from where the request stopped) keeps the count,
            // and waits out the backoff of a counted failure (a throttling wait that does not
            // count is the host budget's business: other workers may ask at once).
            if let range {
                let rest = min(max(doneThrough, range.start), range.end)
                retries = retries.filter { ledger.pending.contains($0.key) }
                if ledger.pending.contains(rest) {
                    let counted = budget.failures > (moved > 0 ? 0 : request.budget.failures)
                    retries[rest] = Retry(budget: budget, freshConnection: fresh, range: ByteRange(rest, range.end),
                                          notBefore: counted && after > .zero ? now + after : nil)
                }
            }
        case .reResolve(let reply):
            ended.next = .reResolve(reply)
        case .stop(let error):
            ended.next = .stop(error)
        }
        return ended
    }

    /// A thief refused by the host before any byte (a 429 to a connection the host does not
    /// accept) gave its bytes back to its victim, which still runs: the victim fetches them as
    /// asked at first, and no request pays a round trip for the split. Why: the tuner adds
    /// connections by splitting running requests; behind a round trip with a per-client cap,
    /// each refused thief otherwise left its victim stopping half way and its half to a new
    /// request later (measured: 16 lanes cut in half, 86 % of the link instead of 97 %).
    /// The thief waits what the host budget says, as after any throttling reply, and a thief
    /// refused at the host's floor with its retries spent stops like any request.
    private mutating func givenBack(_ request: Running, victim: RangeLedger.AssignmentID, end victimEnd: Int64,
                                    reply: TransferEnd, throttle: ThrottleDecision?, now: ContinuousClock.Instant) -> Ended {
        running[victim]?.extended = true
        throttledSinceSample = true
        var ended = Ended(abandon: [], watermark: ledger.watermark, complete: false, next: .proceed,
                          extend: Shorten(victim: victim, end: victimEnd))
        var budget = request.budget
        switch FailurePolicy.decide(reply, madeProgress: false, budget: &budget, throttle: throttle,
                                    canResolveAgain: true, random: random.nextUnitInterval()) {
        case .retry(let after, _):
            ended.next = .wait(after, attempt: budget.failures)
        case .stop(let error):
            // Refused at the host's floor with its retries spent: as for any request (a thief
            // that went on at once would only steal and be refused again).
            ended.next = .stop(error)
        case .reResolve:
            break
        }
        return ended
    }

    /// One sampling window passed: `bytes` is the download's byte counter now. Returns the new
    /// worker count when the tuner changes it.
    mutating func tick(bytes: Int64, now: ContinuousClock.Instant, cpu: SystemCPU.Sample?) -> Int? {
        guard var sampler else { return nil }
        defer {
            self.sampler = sampler
            throttledSinceSample = false
            stalledSinceSample = false
        }
        guard let target = sampler.read(bytes: bytes, now: now, cpu: cpu, throttled: throttledSinceSample,
                                        stalled: stalledSinceSample) else { return nil }
        allowedWorkers = target
        peakWorkers = max(peakWorkers, target)
        return target
    }

    // MARK: - Rules

    /// Registers an assignment as running; it inherits the retry history of the failed
    /// remainders it covers.
    private mutating func begin(_ assignment: RangeLedger.Assignment, hedge: Bool, shorten: Shorten?) -> Job {
        var budget = RetryBudget(policy: settings.retry)
        var fresh = false
        if !retries.isEmpty {
            for (offset, retry) in retries where assignment.range.contains(offset) {
                if retry.budget.failures >= budget.failures { budget = retry.budget }
                fresh = fresh || retry.freshConnection
                retries.removeValue(forKey: offset)
            }
        }
        running[assignment.id] = Running(start: assignment.range.start, asked: assignment.range.count, isHedge: hedge,
                                         budget: budget, stoleFrom: shorten?.victim)
        // A hedge opens a new connection: an idle one may be as slow as the request it races
        // (a server that caps one connection, or a bad path); measured with nginx's straggler
        // scenario, hedges on reused connections made the default 7 % slower.
        return Job(assignment: assignment, isHedge: hedge, freshConnection: fresh || hedge, shorten: shorten)
    }

    /// The slowest primary request worth duplicating: running for at least `hedgeMinimumAge`,
    /// and its expected time to finish is above 200 ms and more than twice what a typical
    /// connection would need for the same bytes (plus 50 ms to open one). "Typical" is the
    /// median speed of the running and recently finished requests.
    private func hedgeCandidate(positions: [RangeLedger.AssignmentID: Int64],
                                now: ContinuousClock.Instant) -> (RangeLedger.AssignmentID, Int64)? {
        var speeds: [Double] = []
        var candidates: [(id: RangeLedger.AssignmentID, remaining: Int64, speed: Double, position: Int64)] = []
        for (id, request) in running {
            guard let started = request.started else { continue }
            let age = (now - started).secondsDouble
            let position = positions[id] ?? request.start
            let speed = Double(position - request.start) / max(age, 0.001)
            if speed > 0 { speeds.append(speed) }
            guard !request.isHedge, age >= Self.hedgeMinimumAge.secondsDouble, let range = ledger.inFlight[id],
                  !ledger.isHedged(id) else { continue }
            let remaining = range.end - position
            if remaining > 0 { candidates.append((id, remaining, speed, position)) }
        }
        speeds += recentSpeeds
        guard !candidates.isEmpty, !speeds.isEmpty else { return nil }
        speeds.sort()
        let typical = speeds[speeds.count / 2]
        var best: (id: RangeLedger.AssignmentID, eta: Double, position: Int64)?
        for c in candidates {
            let eta = Double(c.remaining) / max(c.speed, 1)
            let fresh = Double(c.remaining) / typical + 0.05
            guard eta > 0.2 && eta > 2 * fresh else { continue }
            // The longest wait wins (an ordered stream: the lowest offset, which holds up the
            // window); a tie goes to the lower offset (dictionary order is random).
            if let b = best {
                if settings.windowBytes != nil {
                    if c.position > b.position { continue }
                } else if eta < b.eta || (eta == b.eta && c.position > b.position) {
                    continue
                }
            }
            best = (c.id, eta, c.position)
        }
        return best.map { ($0.id, $0.position) }
    }
}
