/// Turns readings of a download's byte counter into the `ConnectionTuner`'s samples, one per
/// window. A pure value: the caller reads the counter, the clock and the CPU every
/// `RangeSchedule.tuningWindow` and passes them in.
///
/// The first window starts with the first byte (connection set-up and slow start are not the
/// steady state), so readings before it are ignored.
struct ThroughputSampler: Sendable {
    private(set) var tuner: ConnectionTuner
    private var last: (bytes: Int64, time: ContinuousClock.Instant, cpu: SystemCPU.Sample?)?

    init(tuner: ConnectionTuner) {
        self.tuner = tuner
    }

    /// One reading. Returns the tuner's new target when it changes.
    mutating func read(bytes: Int64, now: ContinuousClock.Instant, cpu: SystemCPU.Sample?,
                       throttled: Bool, stalled: Bool) -> Int? {
        guard let previous = last else {
            if bytes > 0 { last = (bytes, now, cpu) }
            return nil
        }
        let rate = Double(bytes - previous.bytes) / max((now - previous.time).secondsDouble, 0.001)
        let busy = previous.cpu.flatMap { a in cpu.flatMap { SystemCPU.busyFraction(from: a, to: $0) } }
        last = (bytes, now, cpu)
        return tuner.observe(rate: rate, throttled: throttled, stalled: stalled, cpuBusy: busy)
    }
}
