@testable import Spate
import Testing

/// `ConnectGate`'s rule, without sockets: one attempt at a time until a host's first reply,
/// `closingHostAttempts` for a host that closes its connections, no limit for one that keeps
/// them, and an idle connection always reused.
@Suite("Connect gate")
struct ConnectGateTests {
    let host = "http://127.0.0.1:8080"

    @Test func aHostNoReplyHasComeFromGetsOneAttemptAtATime() {
        var gate = ConnectGate()
        #expect(gate.admits(host, idleConnections: 0))
        gate.attemptStarted(host)
        #expect(!gate.admits(host, idleConnections: 0), "a second attempt waits for the first reply")
        #expect(gate.admits(host, idleConnections: 1), "an idle connection is reused at once")
        #expect(gate.admits("http://127.0.0.2:8080", idleConnections: 0), "another host has its own count")
        gate.attemptEnded(host)
        #expect(gate.admits(host, idleConnections: 0), "the attempt ended without a reply: the next one may go")
    }

    @Test func aHostThatClosesItsConnectionsGetsAFewAttempts() {
        var gate = ConnectGate()
        gate.attemptStarted(host)
        gate.replied(host, keepsConnection: false)
        gate.attemptEnded(host)
        for _ in 0..<ConnectGate.closingHostAttempts {
            #expect(gate.admits(host, idleConnections: 0))
            gate.attemptStarted(host)
        }
        #expect(!gate.admits(host, idleConnections: 0))
        gate.attemptEnded(host)
        #expect(gate.admits(host, idleConnections: 0))
    }

    @Test func aHostThatKeepsItsConnectionsHasNoLimit() {
        var gate = ConnectGate()
        gate.replied(host, keepsConnection: true)
        for _ in 0..<1000 { gate.attemptStarted(host) }
        #expect(gate.admits(host, idleConnections: 0))
        // A later reply that closes (an error page, a changed server) brings the limit back.
        gate.replied(host, keepsConnection: false)
        #expect(!gate.admits(host, idleConnections: 0))
    }

    @Test func endsNeverGoBelowZero() {
        var gate = ConnectGate()
        gate.attemptEnded(host)
        gate.attemptStarted(host)
        gate.attemptEnded(host)
        gate.attemptEnded(host)
        #expect(gate.hosts[host]?.attempts == 0)
    }

    /// The table is bounded: past `maxHosts`, hosts with nothing under way are forgotten.
    @Test func manyHostsDoNotGrowTheTable() {
        var gate = ConnectGate()
        gate.attemptStarted(host)
        for i in 0...ConnectGate.maxHosts + 10 { gate.replied("http://h\(i):80", keepsConnection: true) }
        #expect(gate.hosts.count <= ConnectGate.maxHosts)
        #expect(gate.hosts[host]?.attempts == 1, "a host with an attempt under way is kept")
    }
}
