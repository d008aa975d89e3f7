@testable import Spate
import Testing

/// The session's record of hosts that stopped answering.
@Suite("Host outages")
struct HostOutagesTests {
    let a = RemoteURL.Origin(scheme: "http", host: "a", port: 80)
    let b = RemoteURL.Origin(scheme: "http", host: "b", port: 80)

    @Test func aHostIsDownFromAGiveUpUntilItAnswers() {
        let outages = HostOutages()
        #expect(!outages.isDown(a))
        let token = outages.failing(a)
        #expect(!outages.isDown(a), "failing is not down yet")
        outages.stoppedFailing(a, token: token, gaveUp: true)
        #expect(outages.isDown(a) && !outages.isDown(b), "per host")
        outages.answered(b)
        #expect(outages.isDown(a))
        outages.answered(a)
        #expect(!outages.isDown(a), "any reply clears it")
    }

    @Test func aReplyWhileAProbeFailsMeansTheHostIsNotDown() {
        let outages = HostOutages()
        let first = outages.failing(a)
        let second = outages.failing(a)
        outages.answered(a)  // e.g. another download's range
        outages.stoppedFailing(a, token: first, gaveUp: true)
        #expect(!outages.isDown(a), "it answered someone after the probe started failing")
        outages.stoppedFailing(a, token: second, gaveUp: false)
        let third = outages.failing(a)
        outages.stoppedFailing(a, token: third, gaveUp: true)
        #expect(outages.isDown(a), "no reply since this probe started failing")
    }

    @Test func atMostMaxHostsAreKeptOldestForgottenFirst() {
        let outages = HostOutages()
        let hosts = (0...HostOutages.maxHosts).map { RemoteURL.Origin(scheme: "http", host: "h\($0)", port: 80) }
        for host in hosts { outages.stoppedFailing(host, token: outages.failing(host), gaveUp: true) }
        #expect(!outages.isDown(hosts[0]))
        #expect(outages.isDown(hosts[1]) && outages.isDown(hosts[HostOutages.maxHosts]))
    }
}
