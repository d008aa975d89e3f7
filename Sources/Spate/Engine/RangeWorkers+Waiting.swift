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

    /// Every byte is done: waiting workers end, idle ones look again.
    func finishAll() {
        let (admitted, changed) = core.withLock { c in
            c.finished = true
            defer {
                c.admission.removeAll()
                c.changes.removeAll()
            }
            return (c.admission.values.map(\.continuation), Array(c.changes.values))
        }
        for waiter in admitted { waiter.resume(returning: false) }
        for waiter in changed { waiter.resume() }
    }

    /// Returns when a request ends, at `deadline`, or on cancellation.
    func waitForChange(until deadline: ContinuousClock.Instant) async {
        let key = core.withLock { c -> Int in
            defer { c.nextWaiter += 1 }
            return c.nextWaiter
        }
        let timer = Task { [clock] in
            try? await clock.sleep(until: deadline)
            self.core.withLock { $0.changes.removeValue(forKey: key) }?.resume()
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now = core.withLock { c -> Bool in
                    if c.finished || Task.isCancelled { return true }
                    c.changes[key] = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            core.withLock { $0.changes.removeValue(forKey: key) }?.resume()
        }
        timer.cancel()
    }
}
