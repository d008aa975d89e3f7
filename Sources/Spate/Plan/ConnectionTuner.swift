/// Chooses how many connections to use, from the aggregate throughput it observes.
///
/// A pure value: the scheduler feeds it one throughput sample per window. It starts modestly
/// (`initial`), doubles while each step raises the throughput by at least `gain` (more
/// connections help when each one is limited: a per-connection cap, a long fat pipe), goes back
/// to the previous count when a step does not help (more connections then only cost CPU and
/// memory: loopback, a saturated link), and tries one more step now and then. A step that scaled
/// nearly linearly (×`linearGain`: every connection is capped) is followed by a bigger one (×4).
/// It does not step up while the machine's CPUs are saturated. It never exceeds
/// `maximum` (`-c` and the per-host cap); throttling replies are handled by `ConnectionGate`
/// and stop the growth. A stalled transfer in a window after a step up undoes that step (more
/// connections than the path or the server can carry show up as stalls first), and any stall
/// stops the growth until the next re-probe.
public struct ConnectionTuner: Sendable, Hashable {
    public enum Phase: Sendable, Hashable {
        /// No sample judged yet; the first window (connection set-up, every first reply's
        /// burst) is skipped.
        case starting(skipped: Bool)
        /// Raised from `from` connections, which achieved `baseline` bytes/s; the first sample
        /// after a change is skipped (new connections are still starting).
        case probing(from: Int, baseline: Double, skipped: Bool)
        /// Holding; `windows` samples since the last change, whose mean throughput (with the
        /// sample that settled it) is `rate`.
        case settled(rate: Double, windows: Int)
    }

    public let maximum: Int
    public private(set) var target: Int
    public private(set) var phase: Phase = .starting(skipped: false)
    /// A step must raise the throughput by this factor to count.
    public static let gain = 1.15
    /// A doubling that raised the throughput this much means every connection is capped.
    public static let linearGain = 1.7
    /// A settled window below this share of the typical rate is a stall, not a sample.
    public static let idleShare = 0.1
    /// The machine counts as CPU-bound above this busy share (all cores): no step up, even
    /// after a step that paid.
    public static let saturatedCPU = 0.7
    /// The first step and the re-probes (no evidence yet that more connections help) need the
    /// machine less busy than this. Why: with 16 connections, per-connection caps kept this
    /// machine 20–35 % busy and CPU-bound loopback 52–75 % (1/100 s ticks over a 100 ms window
    /// are noisy); a step taken from there passed the 15 % test on window noise in 2 of 3
    /// 8 GiB downloads, and the extra connections cost memory and CPU for nothing.
    public static let probeCPU = 0.5
    /// Samples between re-probes once settled.
    public static let reprobeAfter = 20

    public init(maximum: Int, initial: Int = 16) {
        precondition(maximum >= 1)
        self.maximum = maximum
        self.target = min(maximum, max(1, initial))
    }

    /// Feeds one window's aggregate throughput, whether a throttling reply (429/503) or a
    /// stalled transfer was seen in it, and how busy the machine's CPUs were (the busy share of
    /// all cores, 0...1; nil when unknown). Returns the new target when it changes.
    public mutating func observe(rate: Double, throttled: Bool, stalled: Bool = false,
                                 cpuBusy: Double? = nil) -> Int? {
        let busy = cpuBusy ?? 0
        let cpuSaturated = busy >= Self.saturatedCPU
        // A step without evidence that connections are the limit needs more room.
        let roomToProbe = busy < Self.probeCPU
        let before = target
        if throttled || stalled {
            // Back off: stop growing (the server wants fewer requests, or the path stalls);
            // a stall right after a step up also undoes that step.
            if stalled, case .probing(let from, let baseline, _) = phase {
                target = from
                phase = .settled(rate: baseline, windows: 0)
            } else {
                phase = .settled(rate: rate, windows: 0)
            }
            return target != before ? target : nil
        }
        switch phase {
        case .starting(let skipped):
            if !skipped {
                phase = .starting(skipped: true)
            } else if !roomToProbe {
                phase = .settled(rate: rate, windows: 0)
            } else {
                step(from: rate)
            }
        case .probing(let from, let baseline, let skipped):
            if !skipped {
                phase = .probing(from: from, baseline: baseline, skipped: true)
            } else if rate >= baseline * Self.gain {
                if cpuSaturated {
                    phase = .settled(rate: rate, windows: 0)
                } else {
                    step(from: rate, factor: rate >= baseline * Self.linearGain ? 4 : 2)
                }
            } else {
                // The step did not pay: back to what achieved the same throughput.
                target = from
                phase = .settled(rate: max(rate, baseline), windows: 0)
            }
        case .settled(let typical, let windows):
            if rate < typical * Self.idleShare {
                // Next to nothing moved: the disk or the whole path stalled (measured here:
                // 2 s without a byte while the file system discarded a deleted 8 GiB file).
                // No evidence about the count either way, so neither the mean nor the time to
                // the next re-probe advances; a probe made now would be judged against a stall.
                break
            }
            if windows + 1 >= Self.reprobeAfter && target < maximum && roomToProbe {
                // Judged against what this count usually achieves, not against this one window:
                // a window that dipped (a writeback stall, a slow disk flush) made any probe look
                // like a gain, and long downloads crept up to counts that did not help.
                step(from: max(rate, typical))
            } else {
                // The mean of the windows since settling (`typical` counts as the first).
                phase = .settled(rate: typical + (rate - typical) / Double(windows + 2), windows: windows + 1)
            }
        }
        return target != before ? target : nil
    }

    private mutating func step(from rate: Double, factor: Int = 2) {
        guard target < maximum else {
            phase = .settled(rate: rate, windows: 0)
            return
        }
        let from = target
        target = min(maximum, target * factor)
        phase = .probing(from: from, baseline: rate, skipped: false)
    }
}
