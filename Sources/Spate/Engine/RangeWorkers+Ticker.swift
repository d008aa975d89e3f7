/// The ticker: throughput samples for the tuner, progress for the journal.
extension RangeWorkers {
    /// Every `tuningWindow` (when tuning) a throughput sample for the tuner; every journal
    /// commit interval the running requests' progress for the journal (whose status comes
    /// back as a value: a notice on the first failed commit, an error when they keep failing).
    /// Returns `.grow` when the tuner wants more workers than ever started.
    func ticker() async throws -> ChildEnd {
        let tuning = core.withLock { $0.schedule.isTuning }
        let journalInterval = parts.journal?.commitInterval
        var nextSample = tuning ? clock.now + RangeSchedule.tuningWindow : nil
        var nextReport = journalInterval.map { clock.now + $0 }
        while let wake = [nextSample, nextReport].compactMap({ $0 }).min() {
            do { try await clock.sleep(until: wake) } catch { return .ticker }
            let now = clock.now
            if let due = nextSample, now >= due {
                nextSample = now + RangeSchedule.tuningWindow
                let bytes = parts.transport.counters.bytesWritten.load(ordering: .relaxed)
                let cpu = SystemCPU.sample()
                let (complete, peak, target) = core.withLock { c in
                    let peak = c.schedule.peakWorkers
                    return (c.schedule.isComplete, peak, c.schedule.tick(bytes: bytes, now: now, cpu: cpu))
                }
                if complete { return .ticker }
                if let target {
                    session.trace?.instant("tuner", category: "tuner", args: [("connections", .integer(Int64(target)))])
                    admitUpTo(target)
                    session.setConnections(target, for: parts.identity)
                    if target > peak { return .grow(target) }
                }
            }
            if let journal = parts.journal, let journalInterval, let due = nextReport, now >= due {
                nextReport = now + journalInterval
                try reportProgress(to: journal)
            }
        }
        return .ticker
    }

    private func admitUpTo(_ allowed: Int) {
        let wake = core.withLock { c -> [CheckedContinuation<Bool, Never>] in
            let keys = c.admission.filter { $0.value.worker < allowed }.map(\.key)
            return keys.compactMap { c.admission.removeValue(forKey: $0)?.continuation }
        }
        for waiter in wake { waiter.resume(returning: true) }
    }

    /// Hands the journal how far the running requests got, and acts on its status.
    private func reportProgress(to journal: Journal) throws {
        let sinks = core.withLock { c in c.running.values.map(\.sink) }
        let status = journal.noteInFlight(sinks.compactMap(\.written))
        let reported = core.withLock { $0.journalFailuresReported }
        switch status.verdict(path: journal.path, reportedFailures: reported) {
        case .fine:
            break
        case .notice(let text):
            parts.transport.emit(.notice(text))
        case .stop(let error):
            throw error
        }
        core.withLock { $0.journalFailuresReported = status.totalFailures }
    }
}
