import Synchronization

/// The connection budgets of a session, shared by its downloads: every request (probe or
/// range) takes a slot for the host it really goes to before it starts and gives it back when
/// its transfer ends. Waiting tasks are served by priority (lower first: a batch's earlier
/// files), then first come, first served, as soon as both the global and the host's budget have
/// room. One lock; the rules live in `BudgetBook`.
///
/// A waiter is a task (`acquire`) or a callback (`acquire(_:priority:then:)`, a batch's small
/// files, which run without a task); both wait in one queue, under the same rules.
final class ConnectionBudgets: Sendable {
    private enum Waiter {
        case task(CheckedContinuation<BudgetSlot, any Error>)
        case callback(@Sendable (BudgetSlot) -> Void)

        func grant(_ slot: BudgetSlot) {
            switch self {
            case .task(let continuation): continuation.resume(returning: slot)
            case .callback(let then): then(slot)
            }
        }
    }

    /// What `acquire(_:priority:then:)` did.
    enum Acquisition {
        /// A slot was free: the caller holds it now (`then` is not called).
        case granted(BudgetSlot)
        /// Queued: `then` gets the slot later, unless `withdraw(id)` takes the wait back first.
        case queued(id: UInt64)
    }

    private struct State {
        var book: BudgetBook
        var held: [UInt64: BudgetSlot] = [:]
        var waiters = SlotWaitQueue<Waiter>()
        var nextID: UInt64 = 1
    }

    private let state: Mutex<State>
    let maxConnections: Int
    let maxPerHost: Int

    init(maxConnections: Int, maxPerHost: Int) {
        let book = BudgetBook(maxConnections: maxConnections, maxPerHost: maxPerHost)
        self.maxConnections = book.maxConnections
        self.maxPerHost = book.maxPerHost
        state = Mutex(State(book: book))
    }

    /// Waits for a slot for a request to `origin`. Throws `CancellationError` when the task is
    /// cancelled while waiting.
    func acquire(_ origin: RemoteURL.Origin, priority: UInt64 = 0) async throws -> BudgetSlot {
        // Slots are handed to waiters as soon as they fit, so when one fits now nobody that
        // could use it is waiting: taking it at once is fair.
        if let slot = state.withLock({ s in s.book.canTake(origin) ? Self.take(origin, &s) : nil }) { return slot }
        let id = state.withLock { s -> UInt64 in
            defer { s.nextID += 1 }
            return s.nextID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<BudgetSlot, any Error>) in
                let now: Result<BudgetSlot, any Error>? = state.withLock { s in
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if s.book.canTake(origin) { return .success(Self.take(origin, &s)) }
                    // Behind every waiter of the same or a higher priority (stable: FIFO within one).
                    s.waiters.insert(id: id, priority: priority, origin: origin, .task(continuation))
                    return nil
                }
                if let now { continuation.resume(with: now) }
            }
        } onCancel: {
            let waiter = state.withLock { s -> Waiter? in s.waiters.remove(id: id) }
            if case .task(let continuation) = waiter { continuation.resume(throwing: CancellationError()) }
        }
    }

    /// A slot for a request to `origin` now, or a place in the queue: `then` is called with
    /// the slot when it is granted, on the thread that freed it (it must be quick).
    func acquire(_ origin: RemoteURL.Origin, priority: UInt64, then: @escaping @Sendable (BudgetSlot) -> Void) -> Acquisition {
        state.withLock { s in
            if s.book.canTake(origin) { return .granted(Self.take(origin, &s)) }
            let id = s.nextID
            s.nextID += 1
            s.waiters.insert(id: id, priority: priority, origin: origin, .callback(then))
            return .queued(id: id)
        }
    }

    /// Takes back a wait `acquire(_:priority:then:)` queued. True: it was still waiting, and
    /// its callback will never be called; false: the slot has been granted (or is being).
    func withdraw(_ id: UInt64) -> Bool {
        state.withLock { s in s.waiters.remove(id: id) != nil }
    }

    /// Takes back every wait of `ids` still queued, in one pass and one lock section; returns
    /// the ids taken back (their callbacks will never be called).
    func withdraw(_ ids: Set<UInt64>) -> Set<UInt64> {
        // (The ids found, not the ids asked: one may have been granted meanwhile.)
        state.withLock { s in s.waiters.remove(ids: ids) }
    }

    /// Gives a slot back when its request ended; the first waiters that now fit get slots.
    /// Gives `slot` back once its request's reply is read — unless the reply was handed over
    /// (`TransferOutcome.handover`): its connection stays open, so the paused transfer keeps
    /// the slot until it ends, adopted or dropped (`TransferHandover.keep`).
    func release(_ slot: BudgetSlot, unlessKeptBy handover: TransferHandover?) {
        if let handover {
            handover.keep { [self] in release(slot) }
        } else {
            release(slot)
        }
    }

    func release(_ slot: BudgetSlot) {
        let granted = state.withLock { s -> [(Waiter, BudgetSlot)] in
            guard s.held.removeValue(forKey: slot.id) != nil else { preconditionFailure("slot \(slot.id) released twice") }
            s.book.giveBack(slot.origin)
            return Self.grant(&s)
        }
        for (waiter, slot) in granted { waiter.grant(slot) }
    }

    /// A request holding `slot` got 429/503: the host's budget judges it (`HostThrottle.refused`),
    /// counting the host's other requests in flight now.
    func refused(_ slot: BudgetSlot, now: ContinuousClock.Instant) -> ThrottleDecision {
        state.withLock { s in
            // The host's other requests in flight (receiving, or waiting for their reply); the
            // refused one still holds its slot, and the host did not accept it.
            let running = s.held.values.filter { $0.origin == slot.origin && $0.id != slot.id }.count
            return s.book.refused(slot.origin, running: running, sentAtCuts: slot.sentAtCuts, now: now)
        }
    }

    /// A request that held `slot` ended with `end`: when that is a refusal (429/503), the
    /// host's budget judges it (`refused`), and says what to tell the user when it was lowered.
    /// Nil for any other end. (Probes, small files and ranges all report refusals here.)
    func judge(_ end: TransferEnd, slot: BudgetSlot, now: ContinuousClock.Instant) -> (decision: ThrottleDecision, notice: String?)? {
        guard FailurePolicy.isThrottling(end), case .status(let reply) = end else { return nil }
        let decision = refused(slot, now: now)
        guard case .lowered(let count) = decision else { return (decision, nil) }
        let origin = slot.origin
        return (decision, "the server is throttling (HTTP \(reply.status)): using at most \(count) connection\(count == 1 ? "" : "s") to \(origin.host):\(origin.port)")
    }

    /// A request to `origin` succeeded: the host's budget may rise again.
    func succeeded(_ origin: RemoteURL.Origin) {
        let granted = state.withLock { s -> [(Waiter, BudgetSlot)] in
            s.book.succeeded(origin) ? Self.grant(&s) : []
        }
        for (waiter, slot) in granted { waiter.grant(slot) }
    }

    /// The budget of one host now.
    func snapshot(_ origin: RemoteURL.Origin) -> HostBudget {
        state.withLock { s in
            let host = s.book.hosts[origin]
            return HostBudget(maximum: s.book.maxPerHost, allowed: s.book.allowed(origin),
                              lowest: host?.throttle.lowest ?? s.book.maxPerHost, inUse: host?.inUse ?? 0,
                              cuts: host?.throttle.cuts ?? 0)
        }
    }

    /// Slots in use across all hosts.
    var inUse: Int { state.withLock { $0.book.inUse } }

    /// Requests waiting for a slot.
    var waiting: Int { state.withLock { $0.waiters.count } }

    private static func take(_ origin: RemoteURL.Origin, _ s: inout State) -> BudgetSlot {
        let (cuts, allowed) = s.book.take(origin)
        let slot = BudgetSlot(id: s.nextID, origin: origin, sentAtCuts: cuts, hostAllowed: allowed)
        s.nextID += 1
        s.held[slot.id] = slot
        return slot
    }

    /// Hands slots to the waiters that fit now, in queue order (priority, then arrival).
    private static func grant(_ s: inout State) -> [(Waiter, BudgetSlot)] {
        var granted: [(Waiter, BudgetSlot)] = []
        while !s.waiters.isEmpty && s.book.inUse < s.book.maxConnections {
            guard let (origin, waiter) = popFitting(&s) else { break }
            granted.append((waiter, take(origin, &s)))
        }
        return granted
    }

    /// The first waiter whose host has room. (Its own function so the copy of the book it
    /// reads is gone before `take` changes the book: no copy of the hosts' dictionary.)
    private static func popFitting(_ s: inout State) -> (RemoteURL.Origin, Waiter)? {
        let book = s.book
        return s.waiters.popFirst(where: { book.canTake($0) }).map { ($0.origin, $0.payload) }
    }
}

/// Permission for one request to `origin` to run; given back with `ConnectionBudgets.release`.
final class BudgetSlot: Sendable {
    let id: UInt64
    let origin: RemoteURL.Origin
    /// The host's cut count when the slot was taken (see `HostThrottle.refused`).
    let sentAtCuts: Int
    /// The host's budget when the slot was taken: a request that finds more connections open to
    /// the host closes its own afterwards (see `HostSockets`).
    let hostAllowed: Int

    init(id: UInt64, origin: RemoteURL.Origin, sentAtCuts: Int, hostAllowed: Int) {
        self.id = id
        self.origin = origin
        self.sentAtCuts = sentAtCuts
        self.hostAllowed = hostAllowed
    }
}

/// A host's connection budget, as a session reports it.
public struct HostBudget: Sendable, Hashable {
    /// The per-host maximum of the session.
    public let maximum: Int
    /// What the host is allowed now (lowered while it throttles).
    public let allowed: Int
    /// The lowest `allowed` has been.
    public let lowest: Int
    /// Requests running to the host now.
    public let inUse: Int
    /// How many times throttling lowered the budget.
    public let cuts: Int
}
