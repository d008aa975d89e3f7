/// What a transfer that fell short means: the one place where every status and failure rule
/// lives. A pure function of the typed end (`TransferEnd`) and the request's history
/// (`RetryBudget`); the random number for the jitter is passed in.
///
/// | how the transfer ended                          | decision                                        | exit when it stops |
/// |-------------------------------------------------|-------------------------------------------------|----|
/// | stalled (watchdog), transport timeout           | retry on a fresh connection, counted            | 3  |
/// | transport failure, TLS trust or bad URL         | stop                                            | 3  |
/// | other transport failure (reset, refused, DNS)   | retry, counted                                  | 3  |
/// | 429, 503                                        | throttled: the host's budget decides (below)    | 4  |
/// | 401, 403, 404, 410                              | resolve the URL again (an expired signed URL)   | 4  |
/// | 408, 425, 500, 502, 504, 202                    | retry after `Retry-After` or the backoff, counted | 4 |
/// | any other status ≥ 300                          | stop                                            | 4  |
/// | invalid reply (wrong range, encoding, length…)  | retry, counted                                  | 8  |
/// | the remote file changed                         | stop (or start over with --restart-on-change)   | 7  |
/// | local write failure                             | stop                                            | 6  |
///
/// Counted retries are bounded by `RetryPolicy.maxRetries` consecutive failures without
/// progress (a request that moved bytes resets the count). A throttling reply does not count
/// while the host's connection budget is still coming down (`HostThrottle`): it waits out the
/// cooldown and the server's `Retry-After`, then asks again. Only a refusal of a request sent at
/// the lowest budget counts. When the URL cannot be resolved again (no redirect was involved,
/// or 16 refreshes are spent), the status stops the download.
enum FailurePolicy {
    enum Decision: Sendable, Equatable {
        /// Try again after `after`; on a new connection when `freshConnection`.
        case retry(after: Duration, freshConnection: Bool)
        /// 429/503: ask the host's budget (`ConnectionBudgets.refused`), then `afterThrottle`.
        case throttled(StatusReply)
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

    /// The decision after a transfer that ended with `end` without delivering its bytes.
    /// `madeProgress`: the request moved some bytes (the count of failures starts again).
    static func decide(_ end: TransferEnd, madeProgress: Bool, budget: inout RetryBudget, random: Double) -> Decision {
        if madeProgress { budget.progressed() }
        switch end {
        case .completed, .enough, .abandoned:
            preconditionFailure("not a failure: \(end)")
        case .stalled:
            return budget.counted(end.error, retryAfter: nil, freshConnection: true, random: random)
        case .transport(let failure):
            if failure.isPermanent { return .stop(failure.error) }
            return budget.counted(failure.error, retryAfter: nil, freshConnection: failure.isTimeout, random: random)
        case .status(let reply):
            if throttlingStatuses.contains(reply.status) { return .throttled(reply) }
            if expiredURLStatuses.contains(reply.status) { return .reResolve(reply) }
            if retryableStatuses.contains(reply.status) {
                return budget.counted(reply.error, retryAfter: reply.retryAfter, freshConnection: false, random: random)
            }
            return .stop(reply.error)
        case .invalidReply(let reply):
            return budget.counted(reply.error, retryAfter: nil, freshConnection: false, random: random)
        case .remoteChanged:
            return .stop(end.error)
        case .localFailure(let error):
            return .stop(error)
        }
    }

    /// For a request with no connection count to lower and no URL to resolve again (the probe,
    /// a single stream): a throttling reply counts like any retryable status, and an
    /// expired-URL status stops.
    static func alone(_ decision: Decision, budget: inout RetryBudget, random: Double) -> Decision {
        switch decision {
        case .throttled(let reply): budget.counted(reply.error, retryAfter: reply.retryAfter, freshConnection: false, random: random)
        case .reResolve(let reply): .stop(reply.error)
        case .retry, .stop: decision
        }
    }

    /// The decision after a throttling reply, once the host's budget has judged it: uncounted
    /// while the budget comes down (wait the rest of the cooldown, and at least what the
    /// server's `Retry-After` or the backoff asks), counted when the budget is already at its
    /// floor.
    static func afterThrottle(_ reply: StatusReply, decision: ThrottleDecision, budget: inout RetryBudget,
                              random: Double) -> Decision {
        if let floor = decision.uncountedWait {
            return .retry(after: max(floor, budget.uncountedDelay(retryAfter: reply.retryAfter, random: random)),
                          freshConnection: false)
        }
        return budget.counted(reply.error, retryAfter: reply.retryAfter, freshConnection: false, random: random)
    }
}

/// The retry history of one worker (or the probe): consecutive failures without progress,
/// against `RetryPolicy.maxRetries`.
struct RetryBudget: Sendable, Equatable {
    let policy: RetryPolicy
    private(set) var failures = 0

    init(policy: RetryPolicy) {
        self.policy = policy
    }

    /// Bytes arrived: the next failure is the first again.
    mutating func progressed() { failures = 0 }

    /// A failure that counts: wait and retry, or stop once the budget is spent (saying so).
    mutating func counted(_ error: SpateError, retryAfter: Duration?, freshConnection: Bool,
                          random: Double) -> FailurePolicy.Decision {
        failures += 1
        guard failures <= policy.maxRetries else {
            guard policy.maxRetries > 0 else { return .stop(error) }
            return .stop(SpateError(error.kind, "\(error.message) (gave up after \(policy.maxRetries) retries)",
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
