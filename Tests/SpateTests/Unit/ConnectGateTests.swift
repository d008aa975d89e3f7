@testable import Spate
import Testing

/// `ConnectGate`'s rule, without sockets: `limitedAttempts` requests waiting for their reply
/// until a host's first reply and for a host that closes its connections, no limit for one
/// that keeps them, and no attempt counted longer than `maxAttemptDuration`.
@Suite("Connect gate")
struct ConnectGateTests {
    let host = "http://127.0.0.1:8080"
    let t0 = ContinuousClock.now

    /// Starts requests to `host` while the gate admits them; returns their ids.
    func fill(_ gate: inout ConnectGate, from first: UInt64, now: ContinuousClock.Instant) -> [UInt64] {
        var ids: [UInt64] = []
        var id = first
        while gate.admits(host), ids.count < 100 {
            gate.started(id, to: host, now: now)
            ids.append(id)
            id += 1
        }
        return ids
    }

    @Test func aHostNoReplyHasComeFromGetsAFewAttempts() {
        var gate = ConnectGate()
        let ids = fill(&gate, from: 1, now: t0)
        #expect(ids.count == ConnectGate.limitedAttempts)
        #expect(gate.admits("http://127.0.0.2:8080"), "another host has its own count")
        gate.ended(ids[0], to: host)
        #expect(gate.admits(host), "a request that ended frees its place")
        gate.ended(ids[0], to: host)
        #expect(gate.hosts[host]?.attempts.count == ConnectGate.limitedAttempts - 1, "ending twice counts once")
    }

    @Test func aHostThatClosesItsConnectionsStaysLimitedAndOneThatKeepsThemIsNot() {
        var gate = ConnectGate()
        let first = fill(&gate, from: 1, now: t0)
        gate.ended(first[0], to: host)
        gate.replied(host, keepsConnection: false)
        let closing = fill(&gate, from: 100, now: t0)
        #expect(closing.count == 1, "still at most \(ConnectGate.limitedAttempts) under way")
        gate.replied(host, keepsConnection: true)
        let keeping = fill(&gate, from: 200, now: t0)
        #expect(keeping.count == 100, "no limit once the host keeps its connections")
        // A later reply that closes (an error page, a changed server) brings the limit back;
        // the requests started meanwhile were not counted.
        gate.replied(host, keepsConnection: false)
        #expect(gate.admits(host) == (gate.hosts[host]!.attempts.count < ConnectGate.limitedAttempts))
    }

    /// An attempt that waits for its reply longer than `maxAttemptDuration` stops counting: a
    /// host slow to answer holds the others back for that long at most.
    @Test func attemptsExpire() {
        var gate = ConnectGate()
        let early = fill(&gate, from: 1, now: t0)
        gate.ended(early[0], to: host)
        let later = fill(&gate, from: 10, now: t0 + .milliseconds(300))
        #expect(later.count == 1)
        let tooEarly = gate.expire(now: t0 + .milliseconds(999))
        #expect(!tooEarly)
        #expect(gate.nextExpiry == t0 + ConnectGate.maxAttemptDuration, "the oldest attempt still counted")
        let due = gate.expire(now: t0 + ConnectGate.maxAttemptDuration)
        #expect(due)
        #expect(gate.hosts[host]?.attempts == [10], "the three older attempts stopped counting")
        #expect(gate.nextExpiry == t0 + .milliseconds(300) + ConnectGate.maxAttemptDuration)
        gate.ended(10, to: host)
        let afterEnd = gate.expire(now: t0 + .seconds(5))
        #expect(!afterEnd, "an attempt that ended does not expire")
        #expect(gate.nextExpiry == nil)
    }

    /// Without holds `expire` never runs (a list of many hosts, a request or two each): the
    /// expiry list still stays bounded by the attempts under way.
    @Test func theExpiryListIsBoundedWithoutExpiring() {
        var gate = ConnectGate()
        for i in 0..<UInt64(50_000) {
            let host = "http://h\(i % 10_000):80"
            gate.started(i, to: host, now: t0)
            gate.ended(i, to: host)
        }
        #expect(gate.trackedAttempts <= 2 * ConnectGate.maxHosts + 1)
        #expect(gate.hosts.count <= ConnectGate.maxHosts)
    }

    /// The table is bounded: past `maxHosts`, hosts with nothing under way are forgotten.
    @Test func manyHostsDoNotGrowTheTable() {
        var gate = ConnectGate()
        gate.started(1, to: host, now: t0)
        for i in 0...ConnectGate.maxHosts + 10 { gate.replied("http://h\(i):80", keepsConnection: true) }
        #expect(gate.hosts.count <= ConnectGate.maxHosts)
        #expect(gate.hosts[host]?.attempts == [1], "a host with an attempt under way is kept")
    }
}
