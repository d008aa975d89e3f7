/// The connection budgets of a session, as a value: a global maximum, and per host (the
/// scheme, host and port a request really goes to) a maximum that a throttling host lowers.
/// `ConnectionBudgets` holds it behind its lock and keeps the waiting tasks.
///
/// A connection slot is taken for every request — probes included — and given back when the
/// transfer ends, so `inUse` never exceeds either budget, and a slot a finishing download gives
/// back goes to whoever waits first.
struct BudgetBook: Sendable {
    struct Host: Sendable {
        var inUse = 0
        var throttle: HostThrottle
    }

    let maxConnections: Int
    let maxPerHost: Int
    private(set) var inUse = 0
    /// Hosts with requests running, or that throttled (others are forgotten: bounded by what
    /// runs and what throttled, not by how many hosts were ever seen).
    private(set) var hosts: [RemoteURL.Origin: Host] = [:]

    init(maxConnections: Int, maxPerHost: Int) {
        precondition(maxConnections >= 1 && maxPerHost >= 1)
        self.maxConnections = maxConnections
        self.maxPerHost = min(maxPerHost, maxConnections)
    }

    /// The budget of `origin` now.
    func allowed(_ origin: RemoteURL.Origin) -> Int {
        hosts[origin]?.throttle.allowed ?? maxPerHost
    }

    func canTake(_ origin: RemoteURL.Origin) -> Bool {
        // One look-up (hashing an origin hashes two strings; a batch asks this per file).
        guard inUse < maxConnections else { return false }
        guard let host = hosts[origin] else { return maxPerHost > 0 }
        return host.inUse < host.throttle.allowed
    }

    /// Takes a slot (check `canTake` first). Returns the host's cut count now, which the
    /// request remembers (see `HostThrottle.refused`), and the host's budget.
    mutating func take(_ origin: RemoteURL.Origin) -> (cuts: Int, allowed: Int) {
        precondition(inUse < maxConnections, "no slot for \(origin.host):\(origin.port)")
        inUse += 1
        return Self.takeSlot(&hosts[origin, default: Host(throttle: HostThrottle(ceiling: maxPerHost))], origin)
    }

    /// The host's part of `take`, on the dictionary's storage in place (one look-up).
    private static func takeSlot(_ host: inout Host, _ origin: RemoteURL.Origin) -> (cuts: Int, allowed: Int) {
        precondition(host.inUse < host.throttle.allowed, "no slot for \(origin.host):\(origin.port)")
        host.inUse += 1
        return (host.throttle.cuts, host.throttle.allowed)
    }

    mutating func giveBack(_ origin: RemoteURL.Origin) {
        guard var host = hosts[origin], host.inUse > 0 else { preconditionFailure("no slot of \(origin.host) in use") }
        inUse -= 1
        host.inUse -= 1
        // A host that never throttled is forgotten when idle; one that did keeps its history.
        hosts[origin] = host.inUse == 0 && host.throttle.cuts == 0 ? nil : host
    }

    /// A throttling reply from `origin` (see `HostThrottle.refused`).
    mutating func refused(_ origin: RemoteURL.Origin, running: Int, sentAtCuts: Int,
                          now: ContinuousClock.Instant) -> ThrottleDecision {
        var host = hosts[origin, default: Host(throttle: HostThrottle(ceiling: maxPerHost))]
        let decision = host.throttle.refused(running: running, sentAtCuts: sentAtCuts, now: now)
        hosts[origin] = host
        return decision
    }

    /// A request to `origin` succeeded. Returns true when the host's budget rose.
    mutating func succeeded(_ origin: RemoteURL.Origin) -> Bool {
        guard var host = hosts[origin] else { return false }
        let rose = host.throttle.succeeded()
        hosts[origin] = host
        return rose
    }
}
