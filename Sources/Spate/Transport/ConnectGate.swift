/// Decides when a request may open a new connection to its host: new connection attempts to
/// one host are held back while too many are under way. Used on the transfer loop's thread.
///
/// Why: connections a server has not accepted yet wait in its listen queue; when the queue is
/// full the kernel drops the next SYN, which is sent again only after the initial
/// retransmission timeout, one second. Python's `http.server` listens with a backlog of 5,
/// accepts on one thread, and closes its connection after every reply, so every file of a
/// list is a new connection: measured here, 1,000 small files from it took 1.24 s with 17
/// overflowed SYNs at 16 connections, against curl's 0.60 s.
///
/// The rule, per host (scheme, host and port, as `HostSockets` counts them):
/// - a request that finds an idle connection to reuse always goes;
/// - until the host's first reply, one attempt at a time: the reply says whether the host
///   keeps connections open (one round trip, as the single download's probe already waits);
/// - a host that closes its connection after each reply (HTTP/1.0 without keep-alive, or
///   `Connection: close`) makes every request an attempt: `closingHostAttempts` at a time,
///   within the smallest common backlog;
/// - a host that keeps connections open: no limit beyond the budgets (it pays for its
///   connections once, at the start).
///
/// An attempt lasts until the head of its first reply comes or its request ends: not only
/// until the connection is made (libcurl's pre-request callback), because a connection made
/// but not accepted still sits in the server's queue. Measured: ending attempts at the
/// connection made, the same 1,000 files overflowed the queue 500 times and took 134 s (four
/// attempts stuck in a one-second SYN retry held everything back).
struct ConnectGate: Sendable {
    static let closingHostAttempts = 4
    /// Hosts remembered at most: beyond it, hosts with no attempt under way are forgotten
    /// (such a host starts again as one no reply has come from), so a list of many hosts
    /// does not grow the table.
    static let maxHosts = 4096

    struct Host: Sendable, Equatable {
        /// Connection attempts under way.
        var attempts = 0
        /// What the host's last reply said (nil: no reply yet).
        var keepsConnections: Bool?
    }

    private(set) var hosts: [String: Host] = [:]

    /// The most attempts `host` may have under way now.
    func attemptLimit(_ host: String) -> Int {
        switch hosts[host]?.keepsConnections {
        case nil: 1
        case false?: Self.closingHostAttempts
        case true?: Int.max
        }
    }

    /// Whether a request to `host` may start now. `idleConnections`: the open connections to
    /// it that no request uses (0 when the request must have a fresh one).
    func admits(_ host: String, idleConnections: Int) -> Bool {
        idleConnections > 0 || (hosts[host]?.attempts ?? 0) < attemptLimit(host)
    }

    /// A request started that will open a connection (no idle one was there for it).
    mutating func attemptStarted(_ host: String) {
        hosts[host, default: Host()].attempts += 1
        trim()
    }

    /// An attempt ended: its first reply came, or its request ended.
    mutating func attemptEnded(_ host: String) {
        guard var entry = hosts[host], entry.attempts > 0 else { return }
        entry.attempts -= 1
        hosts[host] = entry
    }

    /// A reply from `host` came, saying whether its connection stays open.
    mutating func replied(_ host: String, keepsConnection: Bool) {
        guard hosts[host]?.keepsConnections != keepsConnection else { return }
        hosts[host, default: Host()].keepsConnections = keepsConnection
        trim()
    }

    private mutating func trim() {
        guard hosts.count > Self.maxHosts else { return }
        hosts = hosts.filter { $0.value.attempts > 0 }
    }
}
