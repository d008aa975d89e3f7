@testable import Spate
import Testing

/// The per-host throttling rule and the session's budgets, driven by explicit times: no
/// server, no sleeps.
@Suite("Host budgets")
struct HostThrottleTests {
    let t0 = ContinuousClock.now

    @Test func throttlingCutsAQuarterOncePerCooldownAndSuccessesRecover() {
        var throttle = HostThrottle(ceiling: 16)
        let got14 = throttle.refused(running: 16, sentAtCuts: 0, now: t0)
        #expect(got14 == .lowered(12), "a quarter fewer")
        let got15 = throttle.refused(running: 16, sentAtCuts: 0, now: t0 + .milliseconds(100))
        #expect(got15 == .settling(remaining: .milliseconds(150)),
                "one burst counts once; the rest of the cooldown is waited out")
        let got16 = throttle.refused(running: 5, sentAtCuts: 1, now: t0 + HostThrottle.cooldown)
        #expect(got16 == .lowered(5), "no more than were running")
        #expect(throttle.cuts == 2 && throttle.lowest == 5)
        for _ in 0..<(HostThrottle.recoverAfter - 1) {
            let rose = throttle.succeeded()
            #expect(!rose)
        }
        let got18 = throttle.succeeded()
        #expect(got18, "the eighth success in a row raises it")
        #expect(throttle.allowed == 6 && throttle.lowest == 5)
    }

    @Test func throttlingAtTheFloorPersistsOnlyForRequestsSentThere() {
        var throttle = HostThrottle(ceiling: 4)
        let got19 = throttle.refused(running: 0, sentAtCuts: 0, now: t0)
        #expect(got19 == .lowered(1), "nothing was receiving: down to one")
        let later = t0 + HostThrottle.cooldown
        let got20 = throttle.refused(running: 0, sentAtCuts: 0, now: later)
        #expect(got20 == .settling(remaining: .zero),
                "sent when 4 were allowed (a slow reply of the first burst): does not count")
        let got21 = throttle.refused(running: 0, sentAtCuts: 1, now: later)
        #expect(got21 == .persisting,
                "sent with one connection allowed and still refused: counts against the retries")
        #expect(throttle.allowed == 1)
    }

    @Test func aRefusalResetsTheRunOfSuccesses() {
        var throttle = HostThrottle(ceiling: 8)
        _ = throttle.refused(running: 2, sentAtCuts: 0, now: t0)
        for _ in 0..<(HostThrottle.recoverAfter - 1) { _ = throttle.succeeded() }
        _ = throttle.refused(running: 2, sentAtCuts: 1, now: t0 + .milliseconds(10))  // within the cooldown
        let got22 = throttle.succeeded()
        #expect(!got22, "the count of successes started again")
        #expect(throttle.allowed == 2)
    }

    /// A host that serves 16 requests per client gets 32 at once (the tuner doubled): the first
    /// 429 arrives while most 206 heads are still on their way (a real round trip), so the cut
    /// counts every request in flight, and each later 429 of that burst takes one off.
    @Test func aBurstOfRefusalsLandsOnWhatTheHostAccepted() {
        var throttle = HostThrottle(ceiling: 64)
        let first = throttle.refused(running: 31, sentAtCuts: 0, now: t0)
        #expect(first == .lowered(31), "no more than the other requests in flight")
        for i in 1..<16 {
            let got = throttle.refused(running: 31 - i, sentAtCuts: 0, now: t0 + .milliseconds(i))
            #expect(got == .settling(remaining: HostThrottle.cooldown - .milliseconds(i)), "sent before the cut: uncounted")
        }
        #expect(throttle.allowed == 16 && throttle.lowest == 16, "31 in flight, 15 of them refused after the cut")
        #expect(throttle.cuts == 1)
        // Two steps up (16 successes), and the step to 18 is refused: back one, not a quarter
        // off the 18 (16 is what held after the burst, not the 31 of the first cut).
        for _ in 0..<(2 * HostThrottle.recoverAfter) { _ = throttle.succeeded() }
        #expect(throttle.allowed == 18)
        let stepRefused = throttle.refused(running: 17, sentAtCuts: 1, now: t0 + .seconds(3))
        #expect(stepRefused == .lowered(17) && throttle.successesPerStep == 2 * HostThrottle.recoverAfter)
        // The rest of that burst takes it back to 16, the count that held, and no lower.
        for i in 1...3 { _ = throttle.refused(running: 17 - i, sentAtCuts: 1, now: t0 + .seconds(3) + .milliseconds(i)) }
        #expect(throttle.allowed == 16 && throttle.lowest == 16)
    }

    /// Recovering one step at a time above a fixed cap: the refused step goes back one, and the
    /// next step needs twice the successes.
    @Test func aRefusedStepUpGoesBackOneAndProbesMoreRarely() {
        var throttle = HostThrottle(ceiling: 32)
        _ = throttle.refused(running: 16, sentAtCuts: 0, now: t0)
        #expect(throttle.allowed == 16)
        for _ in 0..<HostThrottle.recoverAfter { _ = throttle.succeeded() }
        #expect(throttle.allowed == 17)
        let refused = throttle.refused(running: 16, sentAtCuts: 1, now: t0 + .seconds(1))
        #expect(refused == .lowered(16), "back to the count that held, not a quarter off")
        #expect(throttle.successesPerStep == 2 * HostThrottle.recoverAfter)
        for _ in 0..<(2 * HostThrottle.recoverAfter - 1) { _ = throttle.succeeded() }
        #expect(throttle.allowed == 16)
        let rose = throttle.succeeded()
        #expect(rose && throttle.allowed == 17)
    }

    @Test func aHostThatThrottlesLowersOnlyItsOwnBudget() throws {
        let a = try RemoteURL("http://127.0.0.1:8080/x").origin
        let b = try RemoteURL("http://127.0.0.2:8080/x").origin
        var book = BudgetBook(maxConnections: 8, maxPerHost: 4)
        for _ in 0..<4 { _ = book.take(a) }
        #expect(!book.canTake(a), "the per-host maximum")
        for _ in 0..<4 { _ = book.take(b) }
        #expect(!book.canTake(b) && book.inUse == 8)
        book.giveBack(a)
        #expect(!book.canTake(b) && book.canTake(a), "a slot of host a does not lift host b's maximum")
        _ = book.take(a)
        let got23 = book.refused(b, running: 2, sentAtCuts: 0, now: t0)
        #expect(got23 == .lowered(2))
        #expect(book.allowed(b) == 2 && book.allowed(a) == 4, "only the throttling host is cut")
        book.giveBack(a)
        #expect(book.canTake(a))
        book.giveBack(b)
        #expect(!book.canTake(b), "host b still runs 3 against its budget of 2")
        book.giveBack(b)
        book.giveBack(b)
        #expect(book.canTake(b))
    }

    @Test func theGlobalMaximumHoldsAcrossHosts() throws {
        let hosts = try (1...5).map { try RemoteURL("http://127.0.0.\($0):80/").origin }
        var book = BudgetBook(maxConnections: 3, maxPerHost: 16)
        #expect(book.maxPerHost == 3, "a host can never have more than the global maximum")
        for host in hosts.prefix(3) { _ = book.take(host) }
        #expect(hosts.allSatisfy { !book.canTake($0) })
        book.giveBack(hosts[0])
        #expect(book.hosts[hosts[0]] == nil, "an idle host that never throttled is forgotten")
        #expect(book.canTake(hosts[4]))
    }

    /// A host that throttled, then took everything again: the next episode is a first one.
    @Test func aFullRecoveryForgetsTheLastEpisode() {
        var throttle = HostThrottle(ceiling: 8)
        #expect(throttle.refused(running: 7, sentAtCuts: 0, now: t0) == .lowered(6))
        for _ in 0..<HostThrottle.recoverAfter { _ = throttle.succeeded() }  // 6 -> 7
        let stepRefused = throttle.refused(running: 6, sentAtCuts: 1, now: t0 + .seconds(1))
        #expect(stepRefused == .lowered(6) && throttle.successesPerStep == 2 * HostThrottle.recoverAfter, "a refused step up")
        for _ in 0..<(4 * HostThrottle.recoverAfter) { _ = throttle.succeeded() }  // 6 -> 7 -> 8
        #expect(throttle.isAtCeiling && throttle.successesPerStep == HostThrottle.recoverAfter)
        let fresh = throttle.refused(running: 7, sentAtCuts: throttle.cuts, now: t0 + .seconds(2))
        #expect(fresh == .lowered(6), "a quarter off the ceiling, not one step back")
        #expect(throttle.successesPerStep == HostThrottle.recoverAfter)
    }

    @Test func waitersAreServedInOrderAsSlotsComeBack() async throws {
        let a = try RemoteURL("http://127.0.0.1:1/").origin
        let b = try RemoteURL("http://127.0.0.2:1/").origin
        let budgets = ConnectionBudgets(maxConnections: 2, maxPerHost: 1)
        let first = try await budgets.acquire(a)
        let second = try await budgets.acquire(b)
        #expect(budgets.inUse == 2)
        // Host a is full and so is the session: both waiters queue, a's first.
        let waitingForA = Task { try await budgets.acquire(a) }
        let waitingForB = Task { try await budgets.acquire(b) }
        // Giving back b's slot can only serve the waiter for b (a is still at its maximum).
        while budgets.waiting < 2 { await Task.yield() }  // both tasks have queued
        budgets.release(second)
        let slotB = try await waitingForB.value
        #expect(slotB.origin == b)
        budgets.release(first)
        let slotA = try await waitingForA.value
        #expect(slotA.origin == a && budgets.inUse == 2)
        // A cancelled waiter leaves the queue and gets nothing.
        let cancelled = Task { try await budgets.acquire(a) }
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        budgets.release(slotA)
        budgets.release(slotB)
        #expect(budgets.inUse == 0)
    }

    /// The refused request still holds its slot when the budget judges it: the host accepted
    /// only the others. 6 in flight, a host that takes 2: the four 429s land the budget on 2.
    @Test func aRefusedRequestIsNotCountedAmongTheAccepted() async throws {
        let a = try RemoteURL("http://127.0.0.1:1/").origin
        let budgets = ConnectionBudgets(maxConnections: 6, maxPerHost: 6)
        var slots: [BudgetSlot] = []
        for _ in 0..<6 { slots.append(try await budgets.acquire(a)) }
        let t0 = ContinuousClock.now
        #expect(budgets.refused(slots[2], now: t0) == .lowered(5))
        budgets.release(slots[2])
        for (i, slot) in slots[3...].enumerated() {
            _ = budgets.refused(slot, now: t0 + .milliseconds(i + 1))
            budgets.release(slot)
        }
        #expect(budgets.snapshot(a).allowed == 2)
        budgets.release(slots[0])
        budgets.release(slots[1])
    }
}
