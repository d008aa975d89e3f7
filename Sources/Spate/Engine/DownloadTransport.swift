/// How the parts of one download send requests through its session: a connection slot for the
/// host the request goes to first (waiting while the budgets are full), then the transfer on
/// the session's loop, then the slot back — on every path.
struct DownloadTransport: Sendable {
    let session: DownloadSession
    let counters: DownloadCounters
    let emit: @Sendable (DownloadEvent) -> Void
    /// The download's place in the session's queue for connection slots: lower first (a batch
    /// numbers its files, so the files in flight finish before later ones start).
    var priority: UInt64 = 0

    var clock: any EngineClock { session.clock }

    /// Runs `body` holding a connection slot for `origin`; the slot goes back when it returns
    /// or throws.
    func withSlot<T: Sendable>(for origin: RemoteURL.Origin, _ body: (BudgetSlot) async throws -> T) async throws -> T {
        let slot = try await session.budgets.acquire(origin, priority: priority)
        do {
            let result = try await body(slot)
            session.budgets.release(slot)
            return result
        } catch {
            session.budgets.release(slot)
            throw error
        }
    }

    /// One transfer on the session's loop (the caller holds a slot).
    func perform(_ spec: TransferSpec, sink: any ResponseSink, handle: TransferHandle? = nil) async throws -> TransferOutcome {
        counters.requests.add(1, ordering: .relaxed)
        counters.activeTransfers.add(1, ordering: .relaxed)
        defer { counters.activeTransfers.subtract(1, ordering: .relaxed) }
        let outcome = try await session.loop.perform(spec, sink: sink, handle: handle)
        if let first = outcome.timeToFirstByte {
            _ = counters.timeToFirstByteNanos.compareExchange(expected: -1, desired: first.wholeNanoseconds, ordering: .relaxed)
        }
        return outcome
    }

    /// Goes on with a transfer a probe handed over (`CurlLoop.adopt`), as `perform` (the caller
    /// holds a slot; the request was counted when the probe made it).
    /// The slot is the one the probe kept with the paused transfer (`TransferHandover.keep`),
    /// given back when the transfer ends.
    func adopt(_ handover: TransferHandover, sink: any ResponseSink) async throws -> TransferOutcome {
        let release = handover.takeRelease()
        counters.activeTransfers.add(1, ordering: .relaxed)
        defer {
            counters.activeTransfers.subtract(1, ordering: .relaxed)
            release?()
        }
        return try await session.loop.adopt(handover, sink: sink)
    }

    /// Counts a wait of `delay` before asking again, and tells the user why.
    func noteRetry(_ delay: Duration, after error: SpateError, attempt: Int) {
        counters.retries.add(1, ordering: .relaxed)
        emit(.retrying(reason: error.message, attempt: attempt, delay: delay))
        session.trace?.instant("retry", category: "retry", args: [
            ("reason", .text(error.message)), ("attempt", .integer(Int64(attempt))), ("delay_ms", .number(delay.secondsDouble * 1000)),
        ])
    }

    /// A request that is alone — no connection count to lower, no URL to resolve again (the
    /// probe, a single stream) — ended with `end`: waits before it asks again, telling the user
    /// why (`note` is added to the reason), or throws when `FailurePolicy` says stop.
    func retryAlone(after end: TransferEnd, budget: inout RetryBudget, random: Double, note: String = "") async throws {
        switch FailurePolicy.decide(end, madeProgress: false, budget: &budget, canResolveAgain: false, random: random) {
        case .retry(let delay, _):
            noteRetry(delay, after: SpateError(end.error.kind, end.error.message + note), attempt: budget.failures)
            try await clock.sleep(for: delay)
        case .stop(let error):
            throw error
        case .reResolve:
            preconditionFailure("no re-resolving without canResolveAgain")
        }
    }
}
