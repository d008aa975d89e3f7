import CSpateSystem
import Glibc

/// A dedicated OS thread for blocking work (the curl poll loop, the digest reader).
///
/// Why not a Swift task: `curl_multi_poll` and large `pread`+hash steps block, and a blocked task
/// would take one of the two cooperative-pool threads on this machine away from everything else.
final class LoopThread: @unchecked Sendable {
    private var thread = pthread_t()
    private let body: @Sendable () -> Void
    private let name: String
    private var joined = false

    /// Starts `body` on a new thread named `name`. Call `join()` before dropping the last reference.
    init(name: String, _ body: @escaping @Sendable () -> Void) {
        self.body = body
        self.name = name
        let box = Unmanaged.passRetained(self)
        let rc = pthread_create(&thread, nil, { raw in
            let me = Unmanaged<LoopThread>.fromOpaque(raw!).takeRetainedValue()
            spate_set_thread_name(me.name)
            me.body()
            return nil
        }, box.toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
    }

    func join() {
        guard !joined else { return }
        joined = true
        pthread_join(thread, nil)
    }
}
