@testable import Spate
import Testing

/// The session's record of hosts that stopped answering.
@Suite("Host outages")
struct HostOutagesTests {
    let a = RemoteURL.Origin(scheme: "http", host: "a", port: 80)
    let b = RemoteURL.Origin(scheme: "http", host: "b", port: 80)

    @Test func aHostIsDownFromGivingUpUntilItAnswers() {
        let outages = HostOutages()
        #expect(!outages.isDown(a))
        outages.gaveUp(on: a)
        outages.gaveUp(on: a)
        #expect(outages.isDown(a) && !outages.isDown(b), "per host")
        outages.answered(b)
        #expect(outages.isDown(a))
        outages.answered(a)
        #expect(!outages.isDown(a), "any reply clears it")
    }

    @Test func atMostMaxHostsAreKeptOldestForgottenFirst() {
        let outages = HostOutages()
        let hosts = (0...HostOutages.maxHosts).map { RemoteURL.Origin(scheme: "http", host: "h\($0)", port: 80) }
        for host in hosts { outages.gaveUp(on: host) }
        #expect(!outages.isDown(hosts[0]))
        #expect(outages.isDown(hosts[1]) && outages.isDown(hosts[HostOutages.maxHosts]))
    }
}
