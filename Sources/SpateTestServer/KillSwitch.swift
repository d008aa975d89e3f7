import Glibc
import Synchronization

/// Kills a client process with SIGKILL when the n-th range request reaches the server: crash
/// points that depend on the download's progress, not on timers (tests and the kill soak).
public final class KillSwitch: Sendable {
    private let state = Mutex<(count: Int, at: Int?, pid: pid_t?)>((0, nil, nil))

    public init() {}

    /// Kills at the `at`-th range request from now (nil: never); forgets the previous process.
    public func arm(at: Int?) {
        state.withLock { $0 = (0, at, nil) }
    }

    /// The process to kill (set right after starting it; nil once it has exited).
    public func watch(_ pid: pid_t?) {
        state.withLock { $0.pid = pid }
    }

    /// Call from the server hook for every request; the probe (`bytes=0-0`) does not count.
    public func observe(_ request: RequestInfo) {
        guard let range = request.header("range"), range != "bytes=0-0" else { return }
        let victim = state.withLock { s -> pid_t? in
            s.count += 1
            return s.count == s.at ? s.pid : nil
        }
        if let victim { kill(victim, SIGKILL) }
    }
}
