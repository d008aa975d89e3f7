@testable import Spate
import Testing

/// `--max-rate`'s shared bucket, driven by explicit instants.
@Suite("Rate budget")
struct RateBudgetTests {
    let start = ContinuousClock.now

    /// Transfers that spend whenever they are not paused, as the loop lets them: over any
    /// stretch the total stays within rate × t + burst + one callback per transfer.
    @Test(arguments: [Int64(1 << 20), 40 << 20])
    func theLongRunRateIsTheLimit(rate: Int64) {
        var budget = RateBudget(bytesPerSecond: rate, now: start)
        var rng = SeededGenerator(label: "rate budget \(rate)")
        let chunk = RateBudget.receiveBufferBytes(rate: rate, connections: 16, preferred: 256 << 10)
        var now = start
        var total: Int64 = 0
        var pausedUntil = start
        let end = start + .seconds(5)
        while now < end {
            now += .microseconds(Int64.random(in: 50...2000, using: &rng))
            guard now >= pausedUntil else { continue }
            let bytes = Int.random(in: 1...chunk, using: &rng)
            total += Int64(bytes)
            if budget.spend(bytes, now: now) { pausedUntil = now + budget.wait(now: now) }
        }
        let allowed = Double(rate) * 5 + budget.burst + Double(chunk)
        #expect(Double(total) <= allowed, "\(total) bytes in 5 s at \(rate) B/s")
        #expect(Double(total) >= Double(rate) * 5 * 0.95, "\(total) bytes: the budget held back more than 5 %")
    }

    @Test func debtIsRepaidAtTheRate() {
        var budget = RateBudget(bytesPerSecond: 1 << 20, now: start)
        let withinBurst = budget.spend(Int(budget.burst), now: start)
        #expect(!withinBurst)
        let inDebt = budget.spend(1 << 19, now: start)  // half a second of debt
        #expect(inDebt)
        var wait = budget.wait(now: start)
        #expect(wait == .nanoseconds(500_000_000))
        wait = budget.wait(now: start + .milliseconds(250))
        #expect(wait == .nanoseconds(250_000_000))
        wait = budget.wait(now: start + .milliseconds(500))
        #expect(wait == .zero)
        // Idle time saves up no more than the burst.
        _ = budget.wait(now: start + .seconds(60))
        #expect(budget.tokens == budget.burst)
    }

    @Test func receiveBuffersShrinkWithTheRate() {
        // 64 connections at 1 MiB/s: libcurl's smallest buffer; 4 at 40 MiB/s: 512 KiB,
        // capped by the preferred size.
        #expect(RateBudget.receiveBufferBytes(rate: 1 << 20, connections: 64, preferred: 256 << 10) == 1024)
        #expect(RateBudget.receiveBufferBytes(rate: 1 << 20, connections: 1, preferred: 256 << 10) == 52428)
        #expect(RateBudget.receiveBufferBytes(rate: 40 << 20, connections: 4, preferred: 256 << 10) == 256 << 10)
    }
}
