/// The one thread that commits every journal of a session: it sleeps until a download hands a
/// journal its progress, until records have waited `commitInterval`, or until many wait, and
/// commits those journals.
///
/// Why one thread for all: a session may run many downloads at once, each with a journal; a
/// thread apiece would cost a stack and wake-ups each for work that takes microseconds.
/// Commits go through `Journal.commitNow`, which is serialised per journal with its final
/// commit in `close`.
final class JournalCommitter: @unchecked Sendable {
    private let lock = ConditionLock()
    private var journals: [ObjectIdentifier: Journal] = [:]  // guarded by `lock`
    private var early = false  // guarded by `lock`
    private var stopping = false  // guarded by `lock`
    private var thread: LoopThread?
    private let trace: TraceRecorder?

    init(trace: TraceRecorder? = nil) {
        self.trace = trace
        thread = LoopThread(name: "spate-journal") { [self] in self.run() }
    }

    func register(_ journal: Journal) {
        journal.attach(to: self)
        lock.withLock {
            journals[ObjectIdentifier(journal)] = journal
            lock.broadcast()
        }
    }

    /// The committer no longer commits `journal` (a commit already running finishes first:
    /// the journal's own lock orders it before the caller's `close`).
    func unregister(_ journal: Journal) {
        lock.withLock { _ = journals.removeValue(forKey: ObjectIdentifier(journal)) }
    }

    /// A journal has news (progress handed over, many records): look now.
    func commitSoon() {
        lock.withLock {
            early = true
            lock.broadcast()
        }
    }

    /// Stops the thread (after every journal is unregistered). Waits for it.
    func stop() {
        lock.withLock {
            stopping = true
            lock.broadcast()
        }
        thread?.join()
        thread = nil
    }

    private func run() {
        while true {
            let due: [Journal]? = lock.withLock {
                while true {
                    if stopping { return nil }
                    let now = ContinuousClock.now
                    early = false
                    let ready = journals.values.filter { $0.wantsCommit(now: now) }
                    if !ready.isEmpty { return ready }
                    guard let next = journals.values.compactMap(\.commitDue).min() else {
                        if !early { lock.wait() }
                        continue
                    }
                    if !early {
                        _ = lock.wait(until: ConditionLock.deadline(afterMilliseconds: max(1, (next - now).milliseconds)))
                    }
                }
            }
            guard let due else { return }
            for journal in due {
                journal.commitNow()
                trace?.instant("journal commit", category: "journal")
            }
        }
    }
}
