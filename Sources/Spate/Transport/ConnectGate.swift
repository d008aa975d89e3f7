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
/// - a host that keeps its connections open (known from its replies) has no limit beyond the
///   budgets: it pays for its connections once, at the start;
/// - until the host's first reply, and for a host that closes its connection after each
///   reply (HTTP/1.0 without keep-alive, or `Connection: close`: every request is then a new
///   connection), at most `limitedAttempts` requests at a time wait for their reply.
///
/// An attempt lasts until the head of its reply comes or its request ends — not only until
/// the connection is made, because a connection made but not accepted still sits in the
/// server's queue (measured: ending attempts at libcurl's pre-request callback, the same 1,000
/// files overflowed the queue 500 times and took 134 s) — and at most `maxAttemptDuration`:
/// a host slow to answer (or a SYN being sent again) then holds the others back no longer.
struct ConnectGate: Sendable {
    /// Within the smallest listen backlog in common use (Python's 5).
    static let limitedAttempts = 4
    /// After this long without a reply an attempt no longer counts, so a host that is slow to
    /// answer gets `limitedAttempts` more requests per this time (16 in 4 s; before the gate,
    /// all at once). A dropped SYN is sent again after about this long anyway.
    static let maxAttemptDuration: Duration = .seconds(1)
    /// Hosts remembered at most: beyond it, hosts with no attempt under way are forgotten
    /// (such a host starts again as one no reply has come from), so a list of many hosts
    /// does not grow the table.
    static let maxHosts = 4096

    struct Host: Sendable, Equatable {
        /// The requests whose attempt is under way.
        var attempts: Set<UInt64> = []
        /// What the host's last reply said (nil: no reply yet).
        var keepsConnections: Bool?
    }

    private(set) var hosts: [String: Host] = [:]
    /// Attempts in the order they started, to end them after `maxAttemptDuration` (entries of
    /// attempts that ended earlier are skipped then).
    private var started: [(deadline: ContinuousClock.Instant, host: String, id: UInt64)] = []
    private var startedHead = 0

    /// Whether requests to `host` are counted as attempts (no limit: not counted).
    func limits(_ host: String) -> Bool {
        hosts[host]?.keepsConnections != true
    }

    /// Whether a request to `host` may start now.
    func admits(_ host: String) -> Bool {
        !limits(host) || (hosts[host]?.attempts.count ?? 0) < Self.limitedAttempts
    }

    /// Request `id` to `host` started (admitted); it counts as an attempt if the host limits.
    mutating func started(_ id: UInt64, to host: String, now: ContinuousClock.Instant) {
        guard limits(host) else { return }
        hosts[host, default: Host()].attempts.insert(id)
        started.append((now + Self.maxAttemptDuration, host, id))
        // `expire` runs only while requests are held: without holds (many hosts, a few
        // requests each), ended attempts are dropped here, so the list stays bounded by the
        // attempts under way (at most the session's connections).
        if trackedAttempts > 2 * Self.maxHosts {
            started = started[startedHead...].filter { hosts[$0.host]?.attempts.contains($0.id) == true }
            startedHead = 0
        }
        trim()
    }

    /// Attempts in the expiry list (some may have ended already).
    var trackedAttempts: Int { started.count - startedHead }

    /// Request `id`'s attempt ended: its reply came, or it ended (nothing if it did not count).
    mutating func ended(_ id: UInt64, to host: String) {
        guard hosts[host]?.attempts.remove(id) != nil else { return }
    }

    /// A reply from `host` came, saying whether its connection stays open.
    mutating func replied(_ host: String, keepsConnection: Bool) {
        guard hosts[host]?.keepsConnections != keepsConnection else { return }
        hosts[host, default: Host()].keepsConnections = keepsConnection
        trim()
    }

    /// Ends the attempts that started `maxAttemptDuration` ago or more; returns whether any did.
    /// Afterwards `nextExpiry` is the deadline of the oldest attempt still counted.
    mutating func expire(now: ContinuousClock.Instant) -> Bool {
        var any = false
        while startedHead < started.count {
            let (deadline, host, id) = started[startedHead]
            let counted = hosts[host]?.attempts.contains(id) == true
            if counted && deadline > now { break }
            if counted {
                hosts[host]?.attempts.remove(id)
                any = true
            }
            startedHead += 1
        }
        if startedHead > 64 && startedHead * 2 > started.count {
            started.removeFirst(startedHead)
            startedHead = 0
        }
        return any
    }

    /// When the oldest attempt under way stops counting, as of the last `expire` (nil: none).
    var nextExpiry: ContinuousClock.Instant? {
        startedHead < started.count ? started[startedHead].deadline : nil
    }

    private mutating func trim() {
        guard hosts.count > Self.maxHosts else { return }
        hosts = hosts.filter { !$0.value.attempts.isEmpty }
    }
}
