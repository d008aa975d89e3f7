/// What a transfer that fell short means: the one place where every status and failure rule
/// lives. A pure function of the typed end (`TransferEnd`) and the request's history
/// (`RetryBudget`); the random number for the jitter is passed in.
///
/// | how the transfer ended                          | decision                                        | exit when it stops |
/// |-------------------------------------------------|-------------------------------------------------|----|
/// | stalled (watchdog), transport timeout           | retry on a fresh connection, counted            | 3  |
/// | transport failure, TLS trust or bad URL         | stop                                            | 3  |
/// | other transport failure (reset, refused, DNS)   | retry, counted                                  | 3  |
/// | 429, 503                                        | the host's budget judges it (below)             | 4  |
/// | 403 to a range wider than any served (schedule) | ask for half the width, uncounted (`spanCap`)   | 4  |
/// | 401, 403, 404, 410                              | resolve the URL again (an expired signed URL)   | 4  |
/// | 408, 425, 500, 502, 504, 202                    | retry after `Retry-After` or the backoff, counted | 4 |
/// | any other status ≥ 300                          | stop                                            | 4  |
/// | 200 to If-Range with the probe's validator      | retry at once without If-Range, uncounted       | 8  |
/// | invalid reply (wrong range, encoding, length…)  | retry, counted                                  | 8  |
/// | the remote file changed                         | stop (or start over with --restart-on-change)   | 7  |
/// | local write failure                             | stop                                            | 6  |
///
/// Counted retries are bounded by `RetryPolicy.maxRetries` consecutive failures of the same
/// bytes without progress (a request that moved bytes resets the count, unless the watchdog
/// cut it: a trickle is not progress). A throttling reply does not count
/// while the host's connection budget is still coming down (`HostThrottle`): it waits out the
/// cooldown and the server's `Retry-After`, then asks again. Only a refusal of a request sent at
/// the lowest budget counts. When the URL cannot be resolved again (no redirect was involved,
/// or 16 refreshes are spent), the status stops the download.
enum FailurePolicy {
    enum Decision: Sendable, Equatable {
        /// Try again after `after`; on a new connection when `freshConnection`.
        case retry(after: Duration, freshConnection: Bool)
        /// Ask the original URL again (`RemoteResolver.refresh`); stop with the reply's error if
        /// that cannot help.
        case reResolve(StatusReply)
        /// Stop the download with this error (its kind gives the exit code).
        case stop(SpateError)
    }

    /// Statuses worth asking again for: the server may answer differently later. (202 comes
    /// from the probe: "accepted, not ready yet".)
    static let retryableStatuses: Set<Int> = [202, 408, 425, 500, 502, 504]
    static let throttlingStatuses: Set<Int> = [429, 503]
    /// What an expired signed URL answers (S3, GCS, Box's download URLs).
    static let expiredURLStatuses: Set<Int> = [401, 403, 404, 410]

    /// Whether the host's budget must judge this end first (`ConnectionBudgets.refused`).
    static func isThrottling(_ end: TransferEnd) -> Bool {
        if case .status(let reply) = end { return throttlingStatuses.contains(reply.status) }
        return false
    }

    /// The decision after a transfer that ended with `end` without delivering its bytes.
    ///
    /// - Parameters:
    ///   - madeProgress: the request moved some bytes (the count of failures starts again).
    ///   - budget: the retry history of the bytes the request was for.
    ///   - throttle: for a throttling reply, the host budget's judgement; nil when there is no
    ///     budget to lower (the probe, a single stream): the reply then counts.
    ///   - canResolveAgain: whether an expired-URL status may be answered by resolving the URL
    ///     again (range requests to a redirect target); else it stops.
    static func decide(_ end: TransferEnd, madeProgress: Bool, budget: inout RetryBudget, throttle: ThrottleDecision? = nil,
                       canResolveAgain: Bool = true, random: Double) -> Decision {
        // A stalled request moved too little to count as progress, however many bytes: a
        // server that trickles a byte a second would otherwise reset the budget forever.
        if madeProgress, !end.isStall { budget.progressed() }
        switch end {
        case .completed, .enough, .abandoned:
            preconditionFailure("not a failure: \(end)")
        case .stalled:
            return budget.counted(end.error, retryAfter: nil, freshConnection: true, random: random)
        case .transport(let failure):
            if failure.isPermanent { return .stop(failure.error) }
            return budget.counted(failure.error, retryAfter: nil, freshConnection: failure.isTimeout, random: random)
        case .status(let reply):
            if throttlingStatuses.contains(reply.status) {
                // Uncounted while the host's budget comes down: the rest of the cooldown, and at
                // least what the server's Retry-After or the backoff asks. Bounded too: a budget
                // that other downloads' successes keep raising could otherwise be cut again
                // and again for the same bytes.
                if let floor = throttle?.uncountedWait, budget.uncounted < budget.maxUncounted {
                    budget.uncounted += 1
                    return .retry(after: max(floor, budget.uncountedDelay(retryAfter: reply.retryAfter, random: random)),
                                  freshConnection: false)
                }
                return budget.counted(reply.error, retryAfter: reply.retryAfter, freshConnection: false, random: random)
            }
            if expiredURLStatuses.contains(reply.status) { return canResolveAgain ? .reResolve(reply) : .stop(reply.error) }
            if retryableStatuses.contains(reply.status) {
                return budget.counted(reply.error, retryAfter: reply.retryAfter, freshConnection: false, random: random)
            }
            return .stop(reply.error)
        case .invalidReply(let reply) where reply.kind == .ifRangeIgnored:
            // Asked again at once without If-Range (the download turned it off); uncounted,
            // and it cannot repeat: a request without If-Range never ends this way.
            return .retry(after: .zero, freshConnection: false)
        case .invalidReply(let reply):
            return budget.counted(reply.error, retryAfter: nil, freshConnection: false, random: random)
        case .remoteChanged:
            return .stop(end.error)
        case .localFailure(let error):
            return .stop(error)
        }
    }
}

/// The retry history of some bytes (a range's remainder, the probe, a stream): consecutive
/// failures without progress, against `RetryPolicy.maxRetries`.
///
/// Why the bytes and not the worker: workers take turns at the host's connection slots, so the
/// worker that failed on a range is rarely the one that asks for it next; the count travels
/// with the range (`RangeSchedule`), and bytes arriving reset it.
struct RetryBudget: Sendable, Equatable {
    let policy: RetryPolicy
    private(set) var failures: Int
    /// Throttling waits that did not count, in a row (bounded by `maxUncounted`).
    var uncounted = 0

    init(policy: RetryPolicy, failures: Int = 0) {
        self.policy = policy
        self.failures = failures
    }

    /// The most throttling waits in a row that do not count: after them every refusal counts.
    var maxUncounted: Int { max(32, 8 * policy.maxRetries) }

    /// Bytes arrived: the next failure is the first again.
    mutating func progressed() {
        failures = 0
        uncounted = 0
    }

    /// A failure that counts: wait and retry, or stop once the budget is spent (saying so).
    mutating func counted(_ error: SpateError, retryAfter: Duration?, freshConnection: Bool,
                          random: Double) -> FailurePolicy.Decision {
        failures += 1
        guard failures <= policy.maxRetries else {
            guard policy.maxRetries > 0 else { return .stop(error) }
            return .stop(SpateError(error.kind, "\(error.message) (gave up after \(policy.maxRetries) \(policy.maxRetries == 1 ? "retry" : "retries"))",
                                    httpStatus: error.httpStatus))
        }
        return .retry(after: policy.delay(attempt: failures, retryAfter: retryAfter, random: random),
                      freshConnection: freshConnection)
    }

    /// The wait for a failure that does not count (the backoff of the attempt now running).
    func uncountedDelay(retryAfter: Duration?, random: Double) -> Duration {
        policy.delay(attempt: max(failures, 1), retryAfter: retryAfter, random: random)
    }
}
