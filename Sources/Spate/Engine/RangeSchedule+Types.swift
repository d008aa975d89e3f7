/// The inputs and answers of `RangeSchedule`.
extension RangeSchedule {
    struct Settings: Sendable {
        var workStealing = true
        var tailHedging = true
        var sizer: RequestSizer
        var retry: RetryPolicy
        /// The most workers (connections) this download may use.
        var maximumWorkers: Int
        /// Whether the tuner sets the worker count (else it is `maximumWorkers`).
        var selfTuning: Bool
        var initialWorkers: Int
        /// An ordered stream's reorder window: no byte at or beyond `streamed + window` is
        /// handed out (`RangeSchedule.moveWindow`), and requests are at most a share of it so
        /// every connection has work inside it. Nil for a file.
        var windowBytes: Int64? = nil
        /// The probe's wait for its reply: the round trip, before any range has measured it.
        var initialReplyWait: Duration? = nil
    }

    /// What a worker does next.
    enum Work: Sendable, Equatable {
        case fetch(Job)
        /// Nothing to fetch now: wait for a change (a request ended) or until this time (slow
        /// requests become hedge candidates as they age).
        case wait(until: ContinuousClock.Instant)
        /// Every byte is done.
        case done
    }

    struct Job: Sendable, Equatable {
        let assignment: RangeLedger.Assignment
        let isHedge: Bool
        /// Open a new connection (a hedge, a retry after a stall or a timeout).
        let freshConnection: Bool
        /// A steal: the victim must stop at this offset before the thief starts.
        let shorten: Shorten?
    }

    struct Shorten: Sendable, Equatable {
        let victim: RangeLedger.AssignmentID
        let end: Int64
    }

    /// What a request's end asks for.
    struct Ended: Sendable, Equatable {
        /// Requests whose bytes are now done by someone else: stop them.
        var abandon: [RangeLedger.AssignmentID]
        /// The end of the done prefix (for the running digest).
        var watermark: Int64
        /// Whether the request's bytes are done (by it or by its hedge partner).
        var complete: Bool
        var next: Next
        /// A throttled thief gave its bytes back: the victim's sink stops at this end again.
        var extend: Shorten? = nil
        /// The server refused the range for its width (`RangeSchedule.spanCap`): no failure of
        /// the source, its bytes are pending again.
        var refusedForWidth = false
        /// With `refusedForWidth`, when this refusal lowered the cap: requests now ask for at
        /// most this many bytes (one notice per new cap).
        var spanCapped: Int64? = nil
    }

    enum Next: Sendable, Equatable {
        /// Ask for the next work.
        case proceed
        /// Wait this long before asking again (the request's rest went back to pending);
        /// `attempt` is its count of failures in a row (0 for a wait that does not count).
        case wait(Duration, attempt: Int)
        /// The URL may have expired: resolve it again, or stop with this reply's error.
        case reResolve(StatusReply)
        case stop(SpateError)
    }
}
