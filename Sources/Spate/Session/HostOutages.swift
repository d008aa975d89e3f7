import Synchronization

/// Hosts that stopped answering, as a session learns them: a host is *down* once a download
/// gave up on it — every one of its probe's attempts failed to reach it
/// (`TransportFailure.isUnreachable`: refused, unreachable, no DNS answer) — and no request to
/// the host had a reply meanwhile or has had one since (the loop reports every reply's head).
///
/// Why: in a batch every file retries on its own. 10,000 files to a host that refuses
/// connections took 230 s here (each file's retry schedule, 256 files at a time) to fail what
/// the first schedule had already shown. A probe to a down host still tries once (the host
/// may be back: any reply clears it), but a failure to connect is final at once instead of
/// starting a new schedule of waits.
///
/// A probe that starts failing registers (`failing`) and gets a token: the host's reply count
/// then. It gives up on the host (`stoppedFailing(gaveUp: true)`) only counts if no reply came
/// from the host since (another download's, a range's): a host that answers someone is not
/// down.
///
/// Bounded: hosts with a probe failing now (at most the probes running), and at most
/// `maxHosts` down hosts (the oldest are forgotten first).
final class HostOutages: Sendable {
    private struct Suspect {
        /// Probes to the host failing now.
        var probes = 0
        /// Replies from the host since it became a suspect.
        var replies: UInt64 = 0
    }

    private struct State {
        var suspects: [RemoteURL.Origin: Suspect] = [:]
        /// Down hosts, in the order they went down.
        var down: [RemoteURL.Origin] = []

        var tracked: Int { suspects.count + down.count }
    }

    private let state = Mutex(State())
    /// Hosts tracked (suspects and down), read without the lock on the path every reply takes.
    private let tracked = Atomic<Int>(0)
    static let maxHosts = 1024

    /// A probe to `origin` failed to connect for the first time in a row. Returns the token
    /// `stoppedFailing` takes.
    func failing(_ origin: RemoteURL.Origin) -> UInt64 {
        state.withLock { s in
            s.suspects[origin, default: Suspect()].probes += 1
            tracked.store(s.tracked, ordering: .relaxed)
            return s.suspects[origin]!.replies
        }
    }

    /// The probe registered with `failing` stopped failing to connect: it gave up (its retries
    /// all failed to connect), or something else happened (a reply, another error, an end).
    func stoppedFailing(_ origin: RemoteURL.Origin, token: UInt64, gaveUp: Bool) {
        state.withLock { s in
            guard var suspect = s.suspects[origin] else { return }
            if gaveUp && suspect.replies == token && !s.down.contains(origin) {
                if s.down.count >= Self.maxHosts { s.down.removeFirst() }
                s.down.append(origin)
            }
            suspect.probes -= 1
            s.suspects[origin] = suspect.probes > 0 ? suspect : nil
            tracked.store(s.tracked, ordering: .relaxed)
        }
    }

    /// A request to `origin` had a reply (any status): it is not down.
    func answered(_ origin: RemoteURL.Origin) {
        // Unlocked: a reply racing with a probe's first failure may be missed, which only
        // means they were concurrent; every reply after a registration is seen.
        guard tracked.load(ordering: .relaxed) > 0 else { return }
        state.withLock { s in
            s.suspects[origin]?.replies &+= 1
            s.down.removeAll { $0 == origin }
            tracked.store(s.tracked, ordering: .relaxed)
        }
    }

    func isDown(_ origin: RemoteURL.Origin) -> Bool {
        guard tracked.load(ordering: .relaxed) > 0 else { return false }
        return state.withLock { $0.down.contains(origin) }
    }
}
