@testable import Spate
import Testing

/// The download's decisions fed as events with explicit times: which bytes go where, when to
/// steal and hedge, what each kind of failure leads to, and how the tuner's samples change the
/// worker count. No server, no clock, no sleeps.
@Suite("Range schedule")
struct RangeScheduleTests {
    let t0 = ContinuousClock.now
    static let mib: Int64 = 1 << 20
    static let retry = RetryPolicy(maxRetries: 2, baseDelay: .milliseconds(100), maxDelay: .seconds(10))

    func schedule(size: Int64, chunk: Int64, workers: Int = 4, tuning: Bool = false, stealing: Bool = true,
                  hedging: Bool = true, seed: UInt64 = 7) -> RangeSchedule {
        let settings = RangeSchedule.Settings(
            workStealing: stealing, tailHedging: hedging, sizer: RequestSizer(fileSize: size, connections: workers, fixedBytes: chunk), retry: Self.retry,
            maximumWorkers: workers, selfTuning: tuning, initialWorkers: 16)
        return RangeSchedule(size: size, settings: settings, seed: seed)
    }

    func job(_ work: RangeSchedule.Work, sourceLocation: SourceLocation = #_sourceLocation) throws -> RangeSchedule.Job {
        guard case .fetch(let job) = work else {
            Issue.record("expected a fetch, got \(work)", sourceLocation: sourceLocation)
            throw CancellationError()
        }
        return job
    }

    /// The probe's reply wait sets the first requests: a wait of 1 ms (loopback, a LAN) gives
    /// the sizer's usual requests; 40 ms (40 waits would outlast `targetSeconds`) gives each of
    /// the 4 connections a quarter of the file at once.
    @Test(arguments: [(1, false), (40, true)])
    func theProbesReplyWaitSetsTheFirstRequests(waitMilliseconds: Int, roundTripIsDear: Bool) throws {
        let size: Int64 = 8 * Self.mib
        let sizer = RequestSizer(fileSize: size, connections: 4, fixedBytes: nil)
        let settings = RangeSchedule.Settings(
            sizer: sizer, retry: Self.retry, maximumWorkers: 4, selfTuning: false, initialWorkers: 4,
            initialReplyWait: .milliseconds(waitMilliseconds))
        var s = RangeSchedule(size: size, settings: settings, seed: 7)
        var sizes: [Int64] = []
        for worker in 0..<4 {
            let next = try job(s.nextWork(worker: worker, positions: [:], now: t0))
            s.requestStarted(next.assignment.id, now: t0)
            sizes.append(next.assignment.range.count)
        }
        let expected = roundTripIsDear ? size / 4 : sizer.baseBytes
        #expect(sizer.baseBytes < size / 4, "the two cases differ")
        #expect(sizes == Array(repeating: expected, count: 4), "\(sizes)")
    }

    @Test func workGoesOutFromTheLowestOffsetUntilEverythingIsDone() throws {
        var s = schedule(size: 3 * Self.mib, chunk: Self.mib, stealing: false)
        let a = try job(s.nextWork(worker: 0, positions: [:], now: t0))
        let b = try job(s.nextWork(worker: 1, positions: [:], now: t0))
        #expect(a.assignment.range == ByteRange(0, Self.mib) && b.assignment.range == ByteRange(Self.mib, 2 * Self.mib))
        s.requestStarted(a.assignment.id, now: t0)
        s.requestStarted(b.assignment.id, now: t0)
        let endB = s.requestEnded(b.assignment.id, worker: 1, doneThrough: 2 * Self.mib, end: .completed, now: t0 + .seconds(1))
        #expect(endB.complete && endB.next == .proceed && endB.watermark == 0, "done out of order: the watermark waits")
        let endA = s.requestEnded(a.assignment.id, worker: 0, doneThrough: Self.mib, end: .completed, now: t0 + .seconds(1))
        #expect(endA.watermark == 2 * Self.mib)
        let c = try job(s.nextWork(worker: 0, positions: [:], now: t0 + .seconds(1)))
        #expect(c.assignment.range == ByteRange(2 * Self.mib, 3 * Self.mib))
        let got1 = s.nextWork(worker: 1, positions: [c.assignment.id: 2 * Self.mib], now: t0 + .seconds(1))
        #expect(got1 == .wait(until: t0 + .seconds(1) + RangeSchedule.idleRecheck), "nothing pending, stealing off, nothing slow: wait")
        s.requestStarted(c.assignment.id, now: t0 + .seconds(1))
        _ = s.requestEnded(c.assignment.id, worker: 0, doneThrough: 3 * Self.mib, end: .completed, now: t0 + .seconds(2))
        let got2 = s.nextWork(worker: 1, positions: [:], now: t0 + .seconds(2))
        #expect(got2 == .done)
        #expect(s.isComplete && s.watermark == 3 * Self.mib)
    }

    @Test func anIdleWorkerStealsTheFarHalfAndTheVictimIsShortened() throws {
        var s = schedule(size: 4 * Self.mib, chunk: 4 * Self.mib)
        let a = try job(s.nextWork(worker: 0, positions: [:], now: t0))
        s.requestStarted(a.assignment.id, now: t0)
        let thief = try job(s.nextWork(worker: 1, positions: [a.assignment.id: Self.mib / 2], now: t0))
        let split = (Self.mib / 2 + (4 * Self.mib - Self.mib / 2) / 2) / RangeSchedule.stealAlignment * RangeSchedule.stealAlignment
        #expect(thief.shorten == RangeSchedule.Shorten(victim: a.assignment.id, end: split))
        #expect(thief.assignment.range == ByteRange(split, 4 * Self.mib))
        // The victim ran past the split before it saw its new end: only its range counts.
        let end = s.requestEnded(a.assignment.id, worker: 0, doneThrough: split + 1000, end: .enough, now: t0 + .seconds(1))
        #expect(end.complete && end.watermark == split)
    }

    /// A thief the host refuses before any byte gives its half back: the victim fetches it as
    /// first asked (its sink's end goes back up), no remainder waits in pending, and a victim
    /// that had already stopped at the split is not a short reply.
    @Test func aThrottledThiefGivesItsBytesBackToItsVictim() throws {
        var s = schedule(size: 4 * Self.mib, chunk: 4 * Self.mib)
        let a = try job(s.nextWork(worker: 0, positions: [:], now: t0))
        s.requestStarted(a.assignment.id, now: t0)
        let thief = try job(s.nextWork(worker: 1, positions: [a.assignment.id: Self.mib / 2], now: t0))
        let split = try #require(thief.shorten).end
        s.requestStarted(thief.assignment.id, now: t0)
        let reply = StatusReply(status: 429, retryAfter: .zero, message: "HTTP 429 Too Many Requests from http://h/f")
        let ended = s.requestEnded(thief.assignment.id, worker: 1, doneThrough: split, end: .status(reply),
                                   throttle: .lowered(1), now: t0 + .milliseconds(80))
        #expect(ended.extend == RangeSchedule.Shorten(victim: a.assignment.id, end: 4 * Self.mib))
        #expect(ended.next == .wait(HostThrottle.cooldown, attempt: 0) && !ended.complete)
        #expect(s.ledger.range(of: a.assignment.id) == ByteRange(0, 4 * Self.mib) && s.ledger.pendingBytes == 0)
        #expect(s.ledger.invariantViolation() == nil)
        // The victim had stopped at the split before it learned the new end: the rest is
        // pending again, without a failure.
        let victimEnd = s.requestEnded(a.assignment.id, worker: 0, doneThrough: split, end: .enough, now: t0 + .seconds(1))
        #expect(victimEnd.next == .proceed && !victimEnd.complete)
        #expect(s.ledger.pending.ranges == [ByteRange(split, 4 * Self.mib)])
        // A thief that fails otherwise (not throttled) leaves its bytes to be fetched again.
        var t = schedule(size: 4 * Self.mib, chunk: 4 * Self.mib)
        let b = try job(t.nextWork(worker: 0, positions: [:], now: t0))
        t.requestStarted(b.assignment.id, now: t0)
        let other = try job(t.nextWork(worker: 1, positions: [b.assignment.id: 0], now: t0))
        t.requestStarted(other.assignment.id, now: t0)
        let reset = t.requestEnded(other.assignment.id, worker: 1, doneThrough: other.assignment.range.start,
                                   end: .invalidReply(InvalidReply(.shortReply, "ended early")), now: t0 + .milliseconds(80))
        #expect(reset.extend == nil && t.ledger.pendingBytes == other.assignment.range.count)
    }

    @Test func aSlowRequestIsHedgedOnlyOnceItRunsAndTheWinnerStopsTheLoser() throws {
        var s = schedule(size: 2 * Self.mib, chunk: Self.mib, stealing: false)
        let slow = try job(s.nextWork(worker: 0, positions: [:], now: t0))
        let fast = try job(s.nextWork(worker: 1, positions: [:], now: t0))
        s.requestStarted(fast.assignment.id, now: t0)
        _ = s.requestEnded(fast.assignment.id, worker: 1, doneThrough: 2 * Self.mib, end: .completed, now: t0 + .milliseconds(100))
        let later = t0 + .seconds(1)
        let got3 = s.nextWork(worker: 1, positions: [slow.assignment.id: 0], now: later)
        #expect(got3 == .wait(until: later + RangeSchedule.idleRecheck),
                "a request still waiting for its connection slot is not judged")
        s.requestStarted(slow.assignment.id, now: t0 + .milliseconds(900))
        let got4 = s.nextWork(worker: 1, positions: [slow.assignment.id: 0], now: later)
        #expect(got4 == .wait(until: later + RangeSchedule.idleRecheck),
                "too young to judge (100 ms)")
        let evenLater = t0 + .seconds(2)
        let hedge = try job(s.nextWork(worker: 1, positions: [slow.assignment.id: 64 * 1024], now: evenLater))
        #expect(hedge.isHedge && hedge.freshConnection, "a hedge opens its own connection")
        #expect(hedge.assignment.range == ByteRange(64 * 1024, Self.mib), "the slow request's tail")
        s.requestStarted(hedge.assignment.id, now: evenLater)
        let won = s.requestEnded(hedge.assignment.id, worker: 1, doneThrough: Self.mib, end: .completed, now: evenLater + .milliseconds(100))
        #expect(won.complete && won.abandon == [slow.assignment.id], "the winner stops the loser")
        let lost = s.requestEnded(slow.assignment.id, worker: 0, doneThrough: 64 * 1024, end: .abandoned, now: evenLater + .milliseconds(100))
        #expect(lost.complete && lost.next == .proceed)
        let got5 = s.nextWork(worker: 0, positions: [:], now: evenLater)
        #expect(got5 == .done)
    }

    @Test func aFailureWaitsAndTheRestIsFetchedFromWhereItStopped() throws {
        var s = schedule(size: 2 * Self.mib, chunk: 2 * Self.mib, workers: 1)
        let a = try job(s.nextWork(worker: 0, positions: [:], now: t0))
        s.requestStarted(a.assignment.id, now: t0)
        let failedAt = t0 + .seconds(1)
        let cut = s.requestEnded(a.assignment.id, worker: 0, doneThrough: 300_000,
                                 end: .invalidReply(InvalidReply(.shortReply, "ended early")), now: failedAt)
        guard case .wait(let delay, let attempt) = cut.next else { Issue.record("retry expected: \(cut.next)"); return }
        #expect(delay >= .milliseconds(50) && delay <= .milliseconds(100) && attempt == 1, "first backoff: 50–100 ms")
        #expect(s.nextWork(worker: 0, positions: [:], now: failedAt) == .wait(until: failedAt + delay),
                "the rest waits out its backoff, whoever asks")
        let again = try job(s.nextWork(worker: 0, positions: [:], now: failedAt + delay))
        #expect(again.assignment.range.start == 300_000 && !again.freshConnection)
    }

    /// A failed range waits out its backoff while other pending bytes go out.
    @Test func otherBytesGoOutWhileAFailedRangeWaits() throws {
        var s = schedule(size: 3 * Self.mib, chunk: Self.mib, workers: 2, stealing: false)
        let a = try job(s.nextWork(worker: 0, positions: [:], now: t0))
        s.requestStarted(a.assignment.id, now: t0)
        let failed = s.requestEnded(a.assignment.id, worker: 0, doneThrough: 0,
                                    end: .transport(TransportFailure(code: 7, message: "refused")), now: t0)
        guard case .wait(let delay, _) = failed.next else { Issue.record("retry expected"); return }
        let b = try job(s.nextWork(worker: 1, positions: [:], now: t0))
        #expect(b.assignment.range == ByteRange(Self.mib, 2 * Self.mib), "the next pending bytes, not the failed ones")
        let c = try job(s.nextWork(worker: 1, positions: [b.assignment.id: Self.mib], now: t0 + delay))
        #expect(c.assignment.range == ByteRange(0, Self.mib), "once the backoff has passed, the lowest again")
    }

    /// A hedge that fails costs nothing: its primary still has the bytes.
    @Test func aFailedHedgeNeitherCountsNorStops() throws {
        var s = schedule(size: 2 * Self.mib, chunk: Self.mib, workers: 2, stealing: false)
        let slow = try job(s.nextWork(worker: 0, positions: [:], now: t0))
        let fast = try job(s.nextWork(worker: 1, positions: [:], now: t0))
        s.requestStarted(slow.assignment.id, now: t0)
        s.requestStarted(fast.assignment.id, now: t0)
        _ = s.requestEnded(fast.assignment.id, worker: 1, doneThrough: 2 * Self.mib, end: .completed, now: t0 + .milliseconds(100))
        let hedge = try job(s.nextWork(worker: 1, positions: [slow.assignment.id: 1000], now: t0 + .seconds(1)))
        #expect(hedge.isHedge)
        s.requestStarted(hedge.assignment.id, now: t0 + .seconds(1))
        let refused = StatusReply(status: 400, retryAfter: nil, message: "HTTP 400 from a second edge")
        let ended = s.requestEnded(hedge.assignment.id, worker: 1, doneThrough: hedge.assignment.range.start, end: .status(refused),
                                   now: t0 + .seconds(1))
        #expect(ended.next == .proceed && !ended.complete, "not a reason to stop the download")
        let done = s.requestEnded(slow.assignment.id, worker: 0, doneThrough: Self.mib, end: .completed, now: t0 + .seconds(2))
        #expect(done.complete && s.isComplete)
    }

    /// Asking what the next work would be changes nothing.
    @Test func aPreviewLeavesTheScheduleAsItWas() throws {
        var s = schedule(size: 2 * Self.mib, chunk: Self.mib, workers: 2)
        guard case .fetch(let peek) = s.preview(worker: 0, positions: [:], now: t0) else { Issue.record("work expected"); return }
        let real = try job(s.nextWork(worker: 0, positions: [:], now: t0))
        #expect(peek.assignment.range == real.assignment.range && peek.assignment.id == real.assignment.id)
    }

    @Test func aStallMovesTheRestToAFreshConnection() throws {
        var s = schedule(size: Self.mib, chunk: Self.mib, workers: 1)
        let a = try job(s.nextWork(worker: 0, positions: [:], now: t0))
        s.requestStarted(a.assignment.id, now: t0)
        let limit = StallWatchdog.Limit(bytesPerSecond: 1024, window: .seconds(10))
        let stalled = s.requestEnded(a.assignment.id, worker: 0, doneThrough: 5000, end: .stalled(limit), now: t0 + .seconds(11))
        guard case .wait = stalled.next else { Issue.record("retry expected"); return }
        let again = try job(s.nextWork(worker: 0, positions: [:], now: t0 + .seconds(12)))
        #expect(again.freshConnection && again.assignment.range.start == 5000)
        s.requestStarted(again.assignment.id, now: t0 + .seconds(12))
        _ = s.requestEnded(again.assignment.id, worker: 0, doneThrough: 6000, end: .transport(TransportFailure(code: 56, message: "reset")),
                           now: t0 + .seconds(13))
        let third = try job(s.nextWork(worker: 0, positions: [:], now: t0 + .seconds(14)))
        #expect(!third.freshConnection, "only the attempt after a stall")
    }

    @Test func retriesWithoutProgressRunOutAndSayHowMany() throws {
        var s = schedule(size: Self.mib, chunk: Self.mib, workers: 1)
        var next = RangeSchedule.Next.proceed
        for attempt in 1...3 {
            let now = t0 + .seconds(attempt)  // each after the previous backoff
            let a = try job(s.nextWork(worker: 0, positions: [:], now: now))
            s.requestStarted(a.assignment.id, now: now)
            let reply = StatusReply(status: 500, retryAfter: nil, message: "HTTP 500 Internal Server Error from http://h/f")
            next = s.requestEnded(a.assignment.id, worker: 0, doneThrough: 0, end: .status(reply), now: now).next
            if attempt < 3, case .wait(_, let n) = next { #expect(n == attempt) }
        }
        guard case .stop(let error) = next else { Issue.record("gives up: \(next)"); return }
        #expect(error.httpStatus == 500 && error.message.hasSuffix("(gave up after 2 retries)"))
    }

    @Test func throttlingWaitsUncountedUntilTheHostIsAtItsFloor() throws {
        var s = schedule(size: Self.mib, chunk: Self.mib, workers: 1)
        let reply = StatusReply(status: 503, retryAfter: .zero, message: "HTTP 503 Service Unavailable from http://h/f")
        func refused(_ decision: ThrottleDecision) throws -> RangeSchedule.Next {
            let a = try job(s.nextWork(worker: 0, positions: [:], now: t0))
            s.requestStarted(a.assignment.id, now: t0)
            return s.requestEnded(a.assignment.id, worker: 0, doneThrough: 0, end: .status(reply), throttle: decision, now: t0).next
        }
        for _ in 0..<5 {
            #expect(try refused(.lowered(1)) == .wait(HostThrottle.cooldown, attempt: 0), "a cut never spends a retry, however often")
        }
        #expect(try refused(.settling(remaining: .milliseconds(40))) == .wait(.milliseconds(40), attempt: 0))
        for attempt in 1...2 {
            #expect(try refused(.persisting) == .wait(.zero, attempt: attempt))
        }
        guard case .stop(let error) = try refused(.persisting) else { Issue.record("stops"); return }
        #expect(error.httpStatus == 503)
    }

    /// Workers take turns at the connection slots: the count of failures stays with the bytes,
    /// whoever asks for them next, and a worker's own history does not follow it elsewhere.
    @Test func theRetryCountTravelsWithTheRangeNotTheWorker() throws {
        var s = schedule(size: 2 * Self.mib, chunk: Self.mib, workers: 2, stealing: false, hedging: false)
        let reply = StatusReply(status: 500, retryAfter: nil, message: "HTTP 500 from http://h/f")
        let first = try job(s.nextWork(worker: 0, positions: [:], now: t0))  // [0, 1 MiB)
        let other = try job(s.nextWork(worker: 1, positions: [:], now: t0))  // [1 MiB, 2 MiB), running all along
        s.requestStarted(first.assignment.id, now: t0)
        var attempts = [s.requestEnded(first.assignment.id, worker: 0, doneThrough: 0, end: .status(reply), now: t0).next.attempt]
        for (turn, worker) in [1, 0].enumerated() {
            let now = t0 + .seconds(turn + 1)  // past each backoff
            let a = try job(s.nextWork(worker: worker, positions: [other.assignment.id: Self.mib], now: now))
            #expect(a.assignment.range.start == 0, "the failed range, for worker \(worker)")
            s.requestStarted(a.assignment.id, now: now)
            attempts.append(s.requestEnded(a.assignment.id, worker: worker, doneThrough: 0, end: .status(reply), now: now).next.attempt)
        }
        #expect(attempts == [1, 2, nil], "the third failure of the same bytes stops, whichever worker had it")
        // A range that moved bytes starts the count again.
        var fresh = schedule(size: 2 * Self.mib, chunk: Self.mib, workers: 2, stealing: false)
        let x = try job(fresh.nextWork(worker: 0, positions: [:], now: t0))
        #expect(fresh.requestEnded(x.assignment.id, worker: 0, doneThrough: 100, end: .status(reply), now: t0).next.attempt == 1)
        let z = try job(fresh.nextWork(worker: 1, positions: [:], now: t0 + .seconds(1)))
        #expect(z.assignment.range.start == 100, "the failed remainder, from where it stopped")
        #expect(fresh.requestEnded(z.assignment.id, worker: 1, doneThrough: 200, end: .status(reply), now: t0 + .seconds(1)).next.attempt == 1,
                "it moved bytes: the count starts again")
    }

    @Test func expiredURLsAndChangedFilesAreForTheDriver() throws {
        var s = schedule(size: 3 * Self.mib, chunk: Self.mib, workers: 3)
        let a = try job(s.nextWork(worker: 0, positions: [:], now: t0))
        let b = try job(s.nextWork(worker: 1, positions: [:], now: t0))
        let c = try job(s.nextWork(worker: 2, positions: [:], now: t0))
        // A range as wide as a served one: the 403 is not about its width.
        _ = s.requestEnded(c.assignment.id, worker: 2, doneThrough: c.assignment.range.end, end: .completed, now: t0)
        let expired = StatusReply(status: 403, retryAfter: nil, message: "HTTP 403 Forbidden from https://cdn/…")
        let got9 = s.requestEnded(a.assignment.id, worker: 0, doneThrough: 0, end: .status(expired), now: t0).next
        #expect(got9 == .reResolve(expired))
        guard case .stop(let error) = s.requestEnded(b.assignment.id, worker: 1, doneThrough: Self.mib,
                                                     end: .remoteChanged("ETag changed from \"a\" to \"b\""), now: t0).next else {
            Issue.record("a changed file stops"); return
        }
        #expect(error.kind == .remoteChanged)
    }

    /// A host that refuses wide ranges with 403 (RELIABILITY A.29): each refusal wider than
    /// any range served halves the requests, uncounted; a 403 to a width already served
    /// follows the failure policy, and the confirmed cap stays.
    @Test func aRangeRefusedForItsWidthIsAskedForInHalves() throws {
        var s = schedule(size: 8 * Self.mib, chunk: 2 * Self.mib, workers: 1)
        let refused = StatusReply(status: 403, retryAfter: nil, message: "HTTP 403 Forbidden")
        let a = try job(s.nextWork(worker: 0, positions: [:], now: t0))
        #expect(a.assignment.range == ByteRange(0, 2 * Self.mib))
        let first = s.requestEnded(a.assignment.id, worker: 0, doneThrough: 0, end: .status(refused), now: t0)
        #expect(first.next == .proceed && first.refusedForWidth && first.spanCapped == Self.mib && s.spanCap == Self.mib)
        let b = try job(s.nextWork(worker: 0, positions: [:], now: t0))
        #expect(b.assignment.range == ByteRange(0, Self.mib), "the same bytes, half as wide")
        _ = s.requestEnded(b.assignment.id, worker: 0, doneThrough: Self.mib, end: .completed, now: t0)
        let c = try job(s.nextWork(worker: 0, positions: [:], now: t0))
        #expect(c.assignment.range == ByteRange(Self.mib, 2 * Self.mib), "the fixed chunk is capped too")
        let later = s.requestEnded(c.assignment.id, worker: 0, doneThrough: Self.mib, end: .status(refused), now: t0)
        #expect(later.next == .reResolve(refused) && !later.refusedForWidth && later.spanCapped == nil)
        #expect(s.spanCap == Self.mib, "a cap that was served stays")
    }

    /// Two wide requests refused together: the first lowers the cap, the second is refused
    /// for its width too (no failure, no second notice).
    @Test func wideRequestsRefusedTogetherLowerTheCapOnce() throws {
        var s = schedule(size: 8 * Self.mib, chunk: 2 * Self.mib, workers: 2)
        let refused = StatusReply(status: 403, retryAfter: nil, message: "HTTP 403 Forbidden")
        let a = try job(s.nextWork(worker: 0, positions: [:], now: t0))
        let b = try job(s.nextWork(worker: 1, positions: [:], now: t0))
        let first = s.requestEnded(a.assignment.id, worker: 0, doneThrough: 0, end: .status(refused), now: t0)
        let second = s.requestEnded(b.assignment.id, worker: 1, doneThrough: b.assignment.range.start, end: .status(refused), now: t0)
        #expect(first.refusedForWidth && first.spanCapped == Self.mib)
        #expect(second.refusedForWidth && second.spanCapped == nil && second.next == .proceed)
        #expect(s.spanCap == Self.mib)
    }

    /// A host that refuses every width (an expired URL): the halving stops at
    /// `minimumSpanCap`, that 403 follows the failure policy, and the cap that never helped is
    /// lifted (the refreshed URL gets wide requests again).
    @Test func aCapThatNeverHelpsIsLifted() throws {
        var s = schedule(size: 4 * Self.mib, chunk: Self.mib, workers: 1)
        let refused = StatusReply(status: 403, retryAfter: nil, message: "HTTP 403 Forbidden")
        var widths: [Int64] = []
        var next = RangeSchedule.Next.proceed
        for _ in 0..<10 {
            let a = try job(s.nextWork(worker: 0, positions: [:], now: t0))
            widths.append(a.assignment.range.count)
            next = s.requestEnded(a.assignment.id, worker: 0, doneThrough: 0, end: .status(refused), now: t0).next
            if next != .proceed { break }
        }
        #expect(widths == [Self.mib, Self.mib / 2, Self.mib / 4, Self.mib / 8, Self.mib / 16])
        #expect(RangeSchedule.minimumSpanCap == Self.mib / 16)
        #expect(next == .reResolve(refused))
        #expect(s.spanCap == nil)
        #expect(try job(s.nextWork(worker: 0, positions: [:], now: t0)).assignment.range.count == Self.mib)
    }

    @Test func theTunerRaisesTheWorkerCountFromSamples() {
        var s = schedule(size: 1 << 30, chunk: Self.mib, workers: 64, tuning: true)
        #expect(s.allowedWorkers == 16 && s.isTuning)
        let got10 = s.tick(bytes: 0, now: t0, cpu: nil)
        #expect(got10 == nil)
        let got11 = s.tick(bytes: 10 << 20, now: t0 + .milliseconds(100), cpu: nil)
        #expect(got11 == nil)
        let got12 = s.tick(bytes: 20 << 20, now: t0 + .milliseconds(200), cpu: nil)
        #expect(got12 == nil)
        let got13 = s.tick(bytes: 30 << 20, now: t0 + .milliseconds(300), cpu: nil)
        #expect(got13 == 32)
        #expect(s.allowedWorkers == 32 && s.peakWorkers == 32)
        #expect(schedule(size: 1 << 30, chunk: Self.mib, workers: 8).allowedWorkers == 8, "without tuning: the maximum")
    }

    @Test func theSameSeedGivesTheSameWaits() throws {
        func waits(seed: UInt64) throws -> [Duration] {
            var s = schedule(size: Self.mib, chunk: Self.mib, workers: 1, seed: seed)
            var result: [Duration] = []
            for turn in 0..<2 {
                let now = t0 + .seconds(turn)
                let a = try job(s.nextWork(worker: 0, positions: [:], now: now))
                let end = s.requestEnded(a.assignment.id, worker: 0, doneThrough: 0,
                                         end: .transport(TransportFailure(code: 7, message: "refused")), now: now)
                if case .wait(let d, _) = end.next { result.append(d) }
            }
            return result
        }
        #expect(try waits(seed: 1) == waits(seed: 1))
        #expect(try waits(seed: 1) != waits(seed: 2))
    }

}

extension RangeSchedule.Next {
    /// The attempt of a wait (nil for anything else).
    var attempt: Int? {
        if case .wait(_, let attempt) = self { return attempt }
        return nil
    }
}
