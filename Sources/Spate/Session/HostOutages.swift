import Synchronization

/// Hosts that stopped answering, as a session learns them: a host is *down* once a download
/// gave up on it — its probe's retries all ended without any reply (refused, unreachable, no
/// DNS answer, connect timeout) — and no request to it has had a reply since.
///
/// Why: in a batch every file retries on its own. 10,000 files to a host that refuses
/// connections took 230 s here (each file's retry schedule, 256 files at a time) to fail what
/// the first schedule had already shown. A probe to a down host still tries once (the host
/// may be back: any reply clears it), but a failure is final at once instead of starting a
/// new schedule of waits.
///
/// Bounded: only down hosts are kept, at most `maxHosts` (the oldest are forgotten first).
final class HostOutages: Sendable {
    private struct State {
        /// Down hosts, in the order they went down.
        var down: [RemoteURL.Origin] = []
    }

    private let state = Mutex(State())
    /// How many hosts are down (read without the lock on the path every reply takes).
    private let count = Atomic<Int>(0)
    static let maxHosts = 1024

    /// A download's retries to `origin` all failed without a reply.
    func gaveUp(on origin: RemoteURL.Origin) {
        state.withLock { s in
            guard !s.down.contains(origin) else { return }
            if s.down.count >= Self.maxHosts { s.down.removeFirst() }
            s.down.append(origin)
            count.store(s.down.count, ordering: .relaxed)
        }
    }

    /// A request to `origin` had a reply (any status): it is not down.
    func answered(_ origin: RemoteURL.Origin) {
        guard count.load(ordering: .relaxed) > 0 else { return }
        state.withLock { s in
            s.down.removeAll { $0 == origin }
            count.store(s.down.count, ordering: .relaxed)
        }
    }

    func isDown(_ origin: RemoteURL.Origin) -> Bool {
        guard count.load(ordering: .relaxed) > 0 else { return false }
        return state.withLock { $0.down.contains(origin) }
    }
}
