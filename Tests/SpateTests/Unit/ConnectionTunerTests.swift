@testable import Spate
import Testing

@Suite("Connection tuner")
struct ConnectionTunerTests {
    /// A link where each connection is capped at `perConnection` and the total at `total`.
    static func rate(_ connections: Int, perConnection: Double, total: Double) -> Double {
        min(Double(connections) * perConnection, total)
    }

    @Test func growsWhileEachStepPaysThenHolds() {
        var tuner = ConnectionTuner(maximum: 64, initial: 4)
        var history: [Int] = [tuner.target]
        for _ in 0..<20 {
            let r = Self.rate(tuner.target, perConnection: 25, total: 800)
            if let next = tuner.observe(rate: r, throttled: false) { history.append(next) }
        }
        // 4 → 8 (linear: ×4) → 32 (800 reached) → 64 does not pay → back to 32.
        #expect(history == [4, 8, 32, 64, 32])
        #expect(tuner.target == 32)
    }

    @Test func aReprobeIsJudgedAgainstTheTypicalRateNotADip() {
        var tuner = ConnectionTuner(maximum: 64, initial: 16)
        _ = tuner.observe(rate: 1000, throttled: false, cpuBusy: 0.9)  // skipped
        _ = tuner.observe(rate: 1000, throttled: false, cpuBusy: 0.9)  // saturated: settled at 16
        for _ in 0..<(ConnectionTuner.reprobeAfter - 1) { _ = tuner.observe(rate: 1000, throttled: false) }
        #expect(tuner.observe(rate: 300, throttled: false) == 32, "re-probe, in a window that dipped")
        _ = tuner.observe(rate: 1000, throttled: false)  // skipped
        #expect(tuner.observe(rate: 1050, throttled: false) == 16,
                "32 connections do no better than 16 usually did: back, however low the last window was")
    }

    @Test func aStallIsNotASampleAndDelaysTheReprobe() {
        var tuner = ConnectionTuner(maximum: 64, initial: 16)
        _ = tuner.observe(rate: 1000, throttled: false, cpuBusy: 0.9)  // skipped
        _ = tuner.observe(rate: 1000, throttled: false, cpuBusy: 0.9)  // settled at 16
        for _ in 0..<(2 * ConnectionTuner.reprobeAfter) {
            #expect(tuner.observe(rate: 0, throttled: false) == nil, "nothing moved: no re-probe")
        }
        for _ in 0..<(ConnectionTuner.reprobeAfter - 1) {
            #expect(tuner.observe(rate: 1000, throttled: false) == nil)
        }
        #expect(tuner.observe(rate: 1000, throttled: false) == 32, "re-probe after as many real samples as usual")
        _ = tuner.observe(rate: 1000, throttled: false)  // skipped
        #expect(tuner.observe(rate: 1100, throttled: false) == 16, "judged against 1000, not a mean dragged down by the stall")
    }

    @Test func staysLowWhenMoreConnectionsDoNotHelp() {
        var tuner = ConnectionTuner(maximum: 32, initial: 8)
        for _ in 0..<8 { _ = tuner.observe(rate: 1000, throttled: false) }
        #expect(tuner.target == 8, "a saturated link keeps the modest count")
    }

    @Test func theFirstSampleAfterAStepIsNotJudged() {
        var tuner = ConnectionTuner(maximum: 64, initial: 8)
        #expect(tuner.observe(rate: 900, throttled: false) == nil, "the first window (bursts, set-up) is skipped")
        _ = tuner.observe(rate: 100, throttled: false)  // → 16
        #expect(tuner.observe(rate: 50, throttled: false) == nil, "a slow first window does not revert")
        #expect(tuner.observe(rate: 150, throttled: false) == 32)
    }

    @Test func saturatedCPUsStopTheProbing() {
        var tuner = ConnectionTuner(maximum: 64, initial: 16)
        _ = tuner.observe(rate: 1000, throttled: false, cpuBusy: 0.9)  // skipped
        #expect(tuner.observe(rate: 1000, throttled: false, cpuBusy: 0.9) == nil)
        #expect(tuner.target == 16)
    }

    @Test func aStepWithoutEvidenceNeedsMoreRoomThanOneThatPaid() {
        // Half busy at 16: no first step (connections are probably not the limit)...
        var halfBusy = ConnectionTuner(maximum: 64, initial: 16)
        _ = halfBusy.observe(rate: 1000, throttled: false, cpuBusy: 0.6)  // skipped
        #expect(halfBusy.observe(rate: 1000, throttled: false, cpuBusy: 0.6) == nil)
        for _ in 0..<(2 * ConnectionTuner.reprobeAfter) {
            #expect(halfBusy.observe(rate: 1000, throttled: false, cpuBusy: 0.6) == nil, "nor re-probes")
        }
        // ...but a step that doubled the rate is followed at the same load.
        var capped = ConnectionTuner(maximum: 64, initial: 16)
        _ = capped.observe(rate: 400, throttled: false, cpuBusy: 0.4)  // skipped
        #expect(capped.observe(rate: 400, throttled: false, cpuBusy: 0.3) == 32)
        _ = capped.observe(rate: 800, throttled: false, cpuBusy: 0.6)  // skipped
        #expect(capped.observe(rate: 800, throttled: false, cpuBusy: 0.6) == 64, "linear: ×4, busy below saturation")
    }

    @Test func neverExceedsTheMaximum() {
        var tuner = ConnectionTuner(maximum: 12, initial: 8)
        for i in 0..<30 { _ = tuner.observe(rate: Double(i + 1) * 1000, throttled: false) }
        #expect(tuner.target <= 12)
        #expect(ConnectionTuner(maximum: 3, initial: 8).target == 3)
    }

    @Test func throttlingStopsTheGrowth() {
        var tuner = ConnectionTuner(maximum: 64, initial: 4)
        _ = tuner.observe(rate: 100, throttled: false)  // skipped
        _ = tuner.observe(rate: 100, throttled: false)  // → 8
        #expect(tuner.observe(rate: 300, throttled: true) == nil)
        #expect(tuner.target == 8)
        #expect(tuner.observe(rate: 300, throttled: false) == nil, "settled: no step right away")
    }

    @Test func aStallAfterAStepUpUndoesIt() {
        var tuner = ConnectionTuner(maximum: 64, initial: 8)
        _ = tuner.observe(rate: 200, throttled: false)  // skipped
        #expect(tuner.observe(rate: 200, throttled: false) == 16)
        #expect(tuner.observe(rate: 300, throttled: false, stalled: true) == 8, "stalls after the step: back")
        for _ in 0..<(ConnectionTuner.reprobeAfter - 1) {
            #expect(tuner.observe(rate: 200, throttled: false) == nil, "settled until the next re-probe")
        }
        #expect(tuner.observe(rate: 200, throttled: false) == 16)
    }

    @Test func aStallWhileSettledOrStartingStopsTheGrowth() {
        var tuner = ConnectionTuner(maximum: 64, initial: 8)
        _ = tuner.observe(rate: 200, throttled: false)  // skipped
        #expect(tuner.observe(rate: 200, throttled: false, stalled: true) == nil)
        #expect(tuner.target == 8)
        #expect(tuner.observe(rate: 400, throttled: false) == nil, "settled: no step right away")
    }

    @Test func reprobesNowAndThen() {
        var tuner = ConnectionTuner(maximum: 64, initial: 8)
        _ = tuner.observe(rate: 100, throttled: false)  // first window: skipped
        _ = tuner.observe(rate: 100, throttled: false)  // → 16
        _ = tuner.observe(rate: 100, throttled: false)  // new connections starting: skipped
        _ = tuner.observe(rate: 100, throttled: false)  // no gain → 8, settled
        var changes = 0
        for _ in 0..<ConnectionTuner.reprobeAfter { if tuner.observe(rate: 100, throttled: false) != nil { changes += 1 } }
        #expect(changes == 1 && tuner.target == 16, "one probe after a while")
    }
}
