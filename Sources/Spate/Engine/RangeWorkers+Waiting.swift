/// Admission (the tuner's worker count) and idle waits, under the workers' one lock.
extension RangeWorkers {
    /// Waits until worker `index` may run (the tuner's count); false once the download needs
    /// no more workers.
    func admit(_ index: Int) async -> Bool {
        let ready: Bool? = core.withLock { c in
            if c.finished { return false }
            return index < c.schedule.allowedWorkers ? true : nil
        }
        if let ready { return ready }
        let key = core.withLock { c -> Int in
            defer { c.nextWaiter += 1 }
            return c.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let immediate: Bool? = core.withLock { c in
                    if c.finished || Task.isCancelled { return false }
                    if index < c.schedule.allowedWorkers { return true }
                    c.admission[key] = (index, continuation)
                    return nil
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            core.withLock { $0.admission.removeValue(forKey: key) }?.continuation.resume(returning: false)
        }
    }

    /// Every byte is done: waiting workers end, idle and pausing ones look again (and end).
    func finishAll() {
        let (admitted, woken) = core.withLock { c in
            c.finished = true
            defer {
                c.admission.removeAll()
                c.changes.removeAll()
                c.pauses.removeAll()
            }
            return (c.admission.values.map(\.continuation), Array(c.changes.values) + Array(c.pauses.values))
        }
        for waiter in admitted { waiter.resume(returning: false) }
        for waiter in woken { waiter.resume() }
    }

    /// Returns when a request ends (or has ended since `generation`), at `deadline`, when the
    /// download is done, or on cancellation (an idle worker looking for work).
    func waitForChange(until deadline: ContinuousClock.Instant, since generation: Int) async {
        await wait(until: deadline, kind: .change, since: generation)
    }

    /// Returns at `deadline`, when the download is done, or on cancellation (a worker waiting
    /// before a retry: once every byte is done, nothing is left to retry, and the download
    /// must not wait out a backoff or a throttling cooldown to finish).
    func pause(until deadline: ContinuousClock.Instant) async {
        await wait(until: deadline, kind: .pause, since: nil)
    }

    private func wait(until deadline: ContinuousClock.Instant, kind: Core.WaitKind, since generation: Int?) async {
        let key = core.withLock { c -> Int in
            defer { c.nextWaiter += 1 }
            return c.nextWaiter
        }
        let timer = Task { [clock] in
            try? await clock.sleep(until: deadline)
            self.core.withLock { $0.takeWaiter(kind, key) }?.resume()
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                // The timer may have fired already (a zero wait): it found no waiter to resume,
                // and the deadline has passed, so do not register one (a lost wake-up hung a
                // download waiting `Retry-After: 0`).
                let now = core.withLock { c -> Bool in
                    if c.finished || c.outputFailure != nil || Task.isCancelled || clock.now >= deadline { return true }
                    if let generation, c.generation != generation { return true }
                    c.addWaiter(kind, key, continuation)
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            core.withLock { $0.takeWaiter(kind, key) }?.resume()
        }
        timer.cancel()
    }
}
