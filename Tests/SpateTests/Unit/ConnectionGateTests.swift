@testable import Spate
import Testing

@Suite("Connection gate")
struct ConnectionGateTests {
    @Test func throttlingCutsAQuarterOncePerCooldownAndSuccessesRecover() {
        let gate = ConnectionGate(maximum: 16)
        let t0 = ContinuousClock.now
        #expect(gate.throttled(running: 16, sentAtCuts: 0, now: t0) == .lowered(12), "a quarter fewer")
        #expect(gate.throttled(running: 16, sentAtCuts: 0, now: t0 + .milliseconds(100)) == .settling(remaining: .milliseconds(150)),
                "one burst counts once; the rest of the cooldown is waited out")
        #expect(gate.throttled(running: 5, sentAtCuts: 1, now: t0 + ConnectionGate.cooldown) == .lowered(5), "no more than were running")
        #expect(gate.cuts == 2)
        #expect(gate.takeThrottled())
        #expect(!gate.takeThrottled(), "taken once")
        for _ in 0..<ConnectionGate.recoverAfter { gate.succeeded() }
        #expect(gate.allowed == 6)
    }

    @Test func throttlingAtTheFloorPersistsOnlyForRequestsSentThere() {
        let gate = ConnectionGate(maximum: 4)
        let t0 = ContinuousClock.now
        #expect(gate.throttled(running: 0, sentAtCuts: 0, now: t0) == .lowered(1), "nothing was receiving: down to one")
        let later = t0 + ConnectionGate.cooldown
        #expect(gate.throttled(running: 0, sentAtCuts: 0, now: later) == .settling(remaining: .zero),
                "sent when 4 were allowed (a slow reply of the first burst): does not count")
        #expect(gate.throttled(running: 0, sentAtCuts: 1, now: later) == .persisting,
                "sent with one connection allowed and still refused: counts against the retries")
        #expect(gate.allowed == 1)
    }

    @Test func stallsAreReportedToTheTunerOnce() {
        let gate = ConnectionGate(maximum: 16)
        #expect(!gate.takeStalled())
        gate.noteStall()
        gate.noteStall()
        #expect(gate.takeStalled())
        #expect(!gate.takeStalled())
        #expect(gate.allowed == 16, "a stall alone does not cut the allowance")
    }

    @Test func aLowerTargetLowersTheAllowanceAtOnce() {
        let gate = ConnectionGate(maximum: 64, initial: 16)
        gate.setTarget(8)
        #expect(gate.allowed == 8)
        gate.setTarget(128)
        #expect(gate.allowed == 64, "never above the maximum")
    }
}
