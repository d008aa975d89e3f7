/// How many connections one host accepts now: its budget, lowered when the host answers
/// 429/503 and raised again as requests succeed. A pure value; `ConnectionBudgets` keeps one
/// per host (scheme, host and port a request really goes to), so a throttling host never
/// lowers another's budget.
///
/// Rules (times from the `now` passed in):
/// - A refusal lowers `allowed` by at least a quarter, and to no more than the host's other
///   requests in flight (receiving, or sent and not answered yet), never below 1 — at most
///   once per `cooldown`, so one burst of replies to simultaneous requests counts once.
/// - Each later refusal of a request that was in flight at that cut is one request fewer that
///   the host accepted: `allowed` follows that count down. Why: a host that refuses more than N
///   connections per client answers a burst of requests with a burst of 429s, and behind a
///   real round trip most of its 206 heads have not arrived yet when the first 429 does.
///   Counting only the requests already receiving then (the first design) cut a 16-connection
///   cap to 1–9 behind 80 ms; counting those in flight, minus the burst's refusals, lands on N.
/// - Every `recoverAfter` successes in a row raise it by one, up to `ceiling`. A refusal of a
///   request sent at a count reached that way goes back one step, and the next step up needs
///   twice as many successes (a server's fixed cap is probed ever more rarely, not hit every
///   few seconds).
///
/// | allowed | in flight | refusal at                       | decision                        |
/// |---------|-----------|----------------------------------|---------------------------------|
/// | 16      | 16        | first                            | lowered(12)                     |
/// | 12      | any       | 100 ms after the cut             | settling(remaining: 150 ms)     |
/// | 12      | 5         | 250 ms after the cut             | lowered(5)                      |
/// | 1       | any       | request sent before the last cut | settling(remaining: 0)          |
/// | 1       | any       | request sent at allowed = 1      | persisting (counts as a failure)|
struct HostThrottle: Sendable, Hashable {
    let ceiling: Int
    private(set) var allowed: Int
    /// The lowest `allowed` has been (for reports and tests).
    private(set) var lowest: Int
    /// How many times `allowed` was cut; a request remembers the count it was sent at.
    private(set) var cuts = 0
    private var lastCut: ContinuousClock.Instant?
    private var successes = 0
    /// Requests in flight at the last cut, less those refused since: what the host accepted.
    private var acceptedAtCut = 0
    /// `allowed` right after the last cut (a higher count was reached by recovering).
    private var levelAfterCut = 0
    /// Where later refusals of the last cut's burst stop taking the budget down: after a
    /// refused step up, the count that held before it (that burst was sent above it; a request
    /// it counted as in flight may have been refused already, which took one too many off).
    private var floorAfterCut = 1
    /// Successes in a row that raise `allowed` by one now.
    private(set) var successesPerStep = HostThrottle.recoverAfter

    static let recoverAfter = 8
    static let maximumSuccessesPerStep = 512
    static let cooldown: Duration = .milliseconds(250)

    init(ceiling: Int) {
        precondition(ceiling >= 1)
        self.ceiling = ceiling
        self.allowed = ceiling
        self.lowest = ceiling
    }

    /// Never cut, or fully recovered: nothing worth remembering about the host.
    var isAtCeiling: Bool { allowed == ceiling }

    /// A 429 or 503 to a request sent when `sentAtCuts` cuts had been made, while `running`
    /// other requests to the host were in flight (holding a connection slot).
    ///
    /// Why the decision matters to the retry budget: a request refused while the budget is
    /// still coming down answered a higher count than the one now allowed; counting it against
    /// the request's retries made downloads fail (with `Retry-After: 0`) while the budget was
    /// converging on what the host accepts.
    mutating func refused(running: Int, sentAtCuts: Int, now: ContinuousClock.Instant) -> ThrottleDecision {
        successes = 0
        if sentAtCuts < cuts {
            // In flight at the last cut and refused after all: one fewer was accepted.
            acceptedAtCut = max(floorAfterCut, acceptedAtCut - 1)
            if acceptedAtCut < allowed {
                allowed = acceptedAtCut
                lowest = min(lowest, allowed)
                // This is the count that holds: a later refusal above it is a step up refused.
                levelAfterCut = allowed
            }
            let since = lastCut.map { now - $0 } ?? Self.cooldown
            return .settling(remaining: since < Self.cooldown ? Self.cooldown - since : .zero)
        }
        if let lastCut, now - lastCut < Self.cooldown {
            return .settling(remaining: Self.cooldown - (now - lastCut))
        }
        let lowered: Int
        var floor = 1
        if cuts > 0 && allowed > levelAfterCut {
            // A step up was refused: back to the count that held, and probe more rarely.
            lowered = max(1, min(allowed - 1, max(running, levelAfterCut)))
            floor = min(lowered, levelAfterCut)
            successesPerStep = min(Self.maximumSuccessesPerStep, successesPerStep * 2)
        } else {
            lowered = max(1, min(allowed - max(1, allowed / 4), running))
        }
        guard lowered != allowed else { return .persisting }
        allowed = lowered
        lowest = min(lowest, lowered)
        lastCut = now
        cuts += 1
        acceptedAtCut = max(floor, running)
        levelAfterCut = lowered
        floorAfterCut = floor
        return .lowered(lowered)
    }

    /// A request to the host succeeded. Returns true when `allowed` rose.
    mutating func succeeded() -> Bool {
        guard allowed < ceiling else { return false }
        successes += 1
        guard successes >= successesPerStep else { return false }
        successes = 0
        allowed += 1
        if allowed >= ceiling {
            // Fully recovered: a new episode starts from scratch (a quarter off, and the next
            // recovery at the first pace), not as a refused step up.
            lastCut = nil
            levelAfterCut = ceiling
            successesPerStep = Self.recoverAfter
        }
        return true
    }
}

/// What a throttling reply means for the request that got it.
enum ThrottleDecision: Sendable, Equatable {
    /// The host's budget was lowered to this. The reply reported too many connections, not a
    /// failing request: it does not count against the request's retries.
    case lowered(Int)
    /// The request was sent before the latest cut, or the reply came less than `cooldown`
    /// after it: it answers a higher count than the one now allowed, so it does not count
    /// either; the request waits out the rest of the cooldown (`remaining`, maybe zero).
    case settling(remaining: Duration)
    /// Sent at the current budget, which is already as low as it goes: the host refuses even
    /// this many, and the reply counts as a failed attempt.
    case persisting

    /// How long the request waits before asking again without spending a retry; nil when the
    /// reply counts as a failed attempt.
    var uncountedWait: Duration? {
        switch self {
        case .lowered: HostThrottle.cooldown
        case .settling(let remaining): remaining
        case .persisting: nil
        }
    }
}
