import CCurl
@testable import Spate
import Testing

/// The failure policy as a table: each typed end of a transfer, with a history, gives one
/// decision. No message text is parsed anywhere.
@Suite("Failure policy")
struct FailurePolicyTests {
    let policy = RetryPolicy(maxRetries: 2, baseDelay: .milliseconds(100), maxDelay: .seconds(10))

    func status(_ code: Int, retryAfter: Duration? = nil) -> TransferEnd {
        .status(StatusReply(status: code, retryAfter: retryAfter, message: "HTTP \(code) from http://h/x"))
    }

    func decide(_ end: TransferEnd, progress: Bool = false, throttle: ThrottleDecision? = nil,
                canResolveAgain: Bool = true, random: Double = 1) -> FailurePolicy.Decision {
        var budget = RetryBudget(policy: policy)
        return FailurePolicy.decide(end, madeProgress: progress, budget: &budget, throttle: throttle,
                                    canResolveAgain: canResolveAgain, random: random)
    }

    @Test func eachEndHasItsDecision() {
        let limit = StallWatchdog.Limit(bytesPerSecond: 1024, window: .seconds(10))
        let reset = TransportFailure(code: CURLE_RECV_ERROR.rawValue, message: "h:1: reset")
        let timeout = TransportFailure(code: CURLE_OPERATION_TIMEDOUT.rawValue, message: "h:1: timed out")
        let untrusted = TransportFailure(code: CURLE_PEER_FAILED_VERIFICATION.rawValue, message: "h:1: bad certificate")
        let first = policy.delay(attempt: 1, retryAfter: nil, random: 1)
        #expect(decide(.stalled(limit)) == .retry(after: first, freshConnection: true))
        #expect(decide(.transport(timeout)) == .retry(after: first, freshConnection: true))
        #expect(decide(.transport(reset)) == .retry(after: first, freshConnection: false))
        #expect(decide(.transport(untrusted)) == .stop(untrusted.error))
        for code in [429, 503] {
            #expect(FailurePolicy.isThrottling(status(code)), "\(code) goes to the host's budget first")
            #expect(decide(status(code)) == .retry(after: first, freshConnection: false), "with no budget to judge it, it counts")
        }
        #expect(!FailurePolicy.isThrottling(status(500)))
        for code in [401, 403, 404, 410] {
            guard case .reResolve = decide(status(code)) else { Issue.record("\(code) may be an expired URL"); continue }
            guard case .stop(let error) = decide(status(code), canResolveAgain: false) else {
                Issue.record("\(code) stops when nothing can be resolved again"); continue
            }
            #expect(error.httpStatus == code)
        }
        for code in [202, 408, 425, 500, 502, 504] {
            #expect(decide(status(code)) == .retry(after: first, freshConnection: false), "\(code)")
        }
        #expect(decide(status(500, retryAfter: .seconds(3))) == .retry(after: .seconds(3), freshConnection: false),
                "Retry-After replaces the backoff")
        for code in [400, 405, 451, 501] {
            guard case .stop(let error) = decide(status(code)) else { Issue.record("\(code) stops"); continue }
            #expect(error.kind == .http && error.httpStatus == code && error.kind.exitCode == 4)
        }
        let invalid = InvalidReply(.wrongRange, "asked for bytes=0-9, the server sent bytes 5-14")
        #expect(decide(.invalidReply(invalid)) == .retry(after: first, freshConnection: false))
        guard case .stop(let changed) = decide(.remoteChanged("ETag changed")) else { Issue.record("a change stops"); return }
        #expect(changed.kind == .remoteChanged && changed.kind.exitCode == 7 && changed.message.contains("ETag changed"))
        let full = SpateError(.localIO, "write x.part: No space left on device")
        #expect(decide(.localFailure(full)) == .stop(full))
    }

    @Test func theBudgetCountsFailuresWithoutProgress() {
        var budget = RetryBudget(policy: policy)
        let end = TransferEnd.invalidReply(InvalidReply(.shortReply, "the reply ended after 5 of 10 bytes"))
        func next(progress: Bool) -> FailurePolicy.Decision {
            FailurePolicy.decide(end, madeProgress: progress, budget: &budget, random: 0)
        }
        #expect(next(progress: false) == .retry(after: .milliseconds(50), freshConnection: false))
        #expect(next(progress: false) == .retry(after: .milliseconds(100), freshConnection: false))
        #expect(next(progress: true) == .retry(after: .milliseconds(50), freshConnection: false),
                "a failure that moved bytes starts the count again")
        _ = next(progress: false)
        guard case .stop(let error) = next(progress: false) else { Issue.record("the third failure in a row stops"); return }
        #expect(error.kind == .invalidResponse && error.message.hasSuffix("(gave up after 2 retries)"))
    }

    @Test func throttlingCountsOnlyAtTheFloor() {
        let reply = TransferEnd.status(StatusReply(status: 503, retryAfter: .seconds(2), message: "HTTP 503"))
        var budget = RetryBudget(policy: policy)
        func next(_ throttle: ThrottleDecision) -> FailurePolicy.Decision {
            FailurePolicy.decide(reply, madeProgress: false, budget: &budget, throttle: throttle, random: 0)
        }
        #expect(next(.lowered(4)) == .retry(after: .seconds(2), freshConnection: false),
                "the server's Retry-After, longer than the cooldown")
        #expect(next(.settling(remaining: .seconds(5))) == .retry(after: .seconds(5), freshConnection: false),
                "the rest of the cooldown, when longer")
        #expect(budget.failures == 0, "neither counted")
        _ = next(.persisting)
        _ = next(.persisting)
        guard case .stop(let error) = next(.persisting) else { Issue.record("refusals at the floor count"); return }
        #expect(error.httpStatus == 503 && error.kind.exitCode == 4)
    }

    /// A budget that other downloads' successes keep raising is cut again and again; the same
    /// bytes are not retried uncounted for ever.
    @Test func uncountedThrottlingWaitsAreBounded() {
        let reply = TransferEnd.status(StatusReply(status: 429, retryAfter: nil, message: "HTTP 429"))
        var budget = RetryBudget(policy: policy)
        for _ in 0..<budget.maxUncounted {
            _ = FailurePolicy.decide(reply, madeProgress: false, budget: &budget, throttle: .lowered(3), random: 0)
        }
        #expect(budget.failures == 0 && budget.uncounted == budget.maxUncounted)
        _ = FailurePolicy.decide(reply, madeProgress: false, budget: &budget, throttle: .lowered(3), random: 0)
        #expect(budget.failures == 1, "past the bound, a cut counts like any refusal")
        _ = FailurePolicy.decide(reply, madeProgress: true, budget: &budget, throttle: .lowered(3), random: 0)
        #expect(budget.failures == 0 && budget.uncounted == 1, "bytes arrived: both counts start again")
    }
}

/// Pure values fed with explicit times.
@Suite("Watchdog, sampler and journal status")
struct ClockDrivenRuleTests {
    let t0 = ContinuousClock.now

    @Test func theWatchdogJudgesWholeWindows() {
        let limit = StallWatchdog.Limit(bytesPerSecond: 1000, window: .seconds(2))
        var dog = StallWatchdog(limit: limit, now: t0)
        let got30 = dog.isStalled(bodyBytes: 0, now: t0 + .milliseconds(1999))
        #expect(!got30, "not before a whole window")
        let got31 = dog.isStalled(bodyBytes: 2000, now: t0 + .seconds(2))
        #expect(!got31, "2000 bytes in 2 s is enough")
        let got32 = dog.isStalled(bodyBytes: 3999, now: t0 + .seconds(3))
        #expect(!got32, "the next window has just begun")
        let got33 = dog.isStalled(bodyBytes: 3999, now: t0 + .seconds(4))
        #expect(got33, "1999 bytes in the second window: a stall")
    }

    @Test func theSamplerStartsAtTheFirstByteAndFeedsTheTuner() {
        var sampler = ThroughputSampler(tuner: ConnectionTuner(maximum: 64, initial: 16))
        let got34 = sampler.read(bytes: 0, now: t0, cpu: nil, throttled: false, stalled: false)
        #expect(got34 == nil)
        let got35 = sampler.read(bytes: 1 << 20, now: t0 + .milliseconds(100), cpu: nil, throttled: false, stalled: false)
        #expect(got35 == nil,
                "the first byte starts the first window")
        let got36 = sampler.read(bytes: 2 << 20, now: t0 + .milliseconds(200), cpu: nil, throttled: false, stalled: false)
        #expect(got36 == nil,
                "the first window is skipped (connection set-up)")
        let got37 = sampler.read(bytes: 3 << 20, now: t0 + .milliseconds(300), cpu: nil, throttled: false, stalled: false)
        #expect(got37 == 32,
                "then a step up")
        let got38 = sampler.read(bytes: 4 << 20, now: t0 + .milliseconds(400), cpu: nil, throttled: true, stalled: false)
        #expect(got38 == nil,
                "throttling stops the growth")
        #expect(sampler.tuner.target == 32)
    }

    @Test func aFailingJournalIsANoticeThenAnError() {
        var status = JournalStatus()
        #expect(status.verdict(path: "f.part.journal", reportedFailures: 0) == .fine)
        status.failed(SpateError(.localIO, "write f.part.journal: No space left on device"))
        guard case .notice(let text) = status.verdict(path: "f.part.journal", reportedFailures: 0) else {
            Issue.record("the first failure is told"); return
        }
        #expect(text.contains("No space left on device"))
        #expect(status.verdict(path: "f.part.journal", reportedFailures: 1) == .fine, "once")
        status.succeeded()
        status.failed(SpateError(.localIO, "x"))
        status.failed(SpateError(.localIO, "x"))
        #expect(status.verdict(path: "f.part.journal", reportedFailures: 1) == .fine, "two in a row")
        status.failed(SpateError(.localIO, "x"))
        guard case .stop(let error) = status.verdict(path: "f.part.journal", reportedFailures: 3) else {
            Issue.record("three in a row stop"); return
        }
        #expect(error.kind == .localIO && error.message.contains("--no-journal"))
    }
}
