@testable import Spate
import Synchronization
import Testing

/// The two hand-overs the small-file path uses instead of tasks: connection slots granted to a
/// callback (`ConnectionBudgets.acquire(_:priority:then:)`), in one queue with the tasks, and
/// endings posted from any thread (`Mailbox`).
@Suite("Callback waiters")
struct CallbackWaiterTests {
    let origin = RemoteURL.Origin(scheme: "http", host: "example.com", port: 80)

    @Test func callbacksAndTasksWaitInOneQueueByPriority() async throws {
        let origin = self.origin
        let budgets = ConnectionBudgets(maxConnections: 1, maxPerHost: 1)
        guard case .granted(let first) = budgets.acquire(origin, priority: 0, then: { _ in Issue.record("granted twice") }) else {
            Issue.record("a free slot was not granted at once")
            return
        }
        let order = Shared<[String]>([])
        let slots = Shared<[String: BudgetSlot]>([:])
        func queue(_ name: String, _ priority: UInt64) -> UInt64? {
            switch budgets.acquire(origin, priority: priority, then: { slot in
                order.withLock { $0.append(name) }
                slots.withLock { $0[name] = slot }
            }) {
            case .granted: Issue.record("\(name) got a slot that is held"); return nil
            case .queued(let id): return id
            }
        }
        _ = queue("late", 9)
        let task = Task {
            let slot = try await budgets.acquire(origin, priority: 5)
            order.withLock { $0.append("task") }
            return slot
        }
        while budgets.waiting < 2 { await Task.yield() }
        _ = queue("early", 1)
        let withdrawn = try #require(queue("withdrawn", 0))
        #expect(budgets.withdraw(withdrawn), "a waiting callback can be taken back")
        #expect(!budgets.withdraw(withdrawn), "only once")

        budgets.release(first)
        #expect(order.withLock { $0 } == ["early"], "the callback is called by the release, in priority order")
        budgets.release(try #require(slots.withLock { $0["early"] }))
        let taskSlot = try await task.value
        #expect(order.withLock { $0 } == ["early", "task"])
        budgets.release(taskSlot)
        #expect(order.withLock { $0 } == ["early", "task", "late"])
        #expect(budgets.inUse == 1 && budgets.waiting == 0)
    }

    @Test func aMailboxHandsOverEveryItemOnce() async {
        let mailbox = Mailbox<Int>()
        let posters = 4, each = 500
        // Plain threads: posts come from outside the concurrency pool, as the loop's do.
        let threads = (0..<posters).map { t in
            LoopThread(name: "test-poster") { for i in 0..<each { mailbox.post(t * each + i) } }
        }
        defer { threads.forEach { $0.join() } }
        var seen: [Int] = []
        while seen.count < posters * each {
            let items = await mailbox.next(wakingOnCancel: false)
            #expect(!items.isEmpty)
            seen += items
        }
        #expect(seen.sorted() == Array(0..<(posters * each)))
    }

    @Test func theTakerWakesWhenEnoughHaveComeOrAnUrgentOne() async {
        let mailbox = Mailbox<Int>()
        let three = Task { await mailbox.next(atLeast: 3, wakingOnCancel: false) }
        while !mailbox.hasWaiter { await Task.yield() }
        mailbox.post(1)
        mailbox.post(2)
        #expect(mailbox.hasWaiter, "two of three do not wake it")
        mailbox.post(3)
        #expect(await three.value == [1, 2, 3])

        let urgent = Task { await mailbox.next(atLeast: 10, wakingOnCancel: false) }
        while !mailbox.hasWaiter { await Task.yield() }
        mailbox.post(4)
        mailbox.post(5, urgent: true)
        #expect(await urgent.value == [4, 5])
        // An urgent item posted before the taker came: taken at once, whatever it asks for.
        mailbox.post(6, urgent: true)
        #expect(await mailbox.next(atLeast: 10, wakingOnCancel: false) == [6])
    }

    @Test func aCancelledTakerWakesOnlyWhenAsked() async {
        let mailbox = Mailbox<Int>()
        let woken = Task { await mailbox.next(wakingOnCancel: true) }
        woken.cancel()
        #expect(await woken.value == [])
        // Not woken by the cancellation: it waits for what is posted.
        let waiting = Task { await mailbox.next(wakingOnCancel: false) }
        waiting.cancel()
        mailbox.post(7)
        #expect(await waiting.value == [7])
    }
}

/// A value behind a lock that escaping closures can capture.
private final class Shared<Value: Sendable>: Sendable {
    private let value: Mutex<Value>
    init(_ value: Value) { self.value = Mutex(value) }
    func withLock<T>(_ body: (inout Value) -> T) -> T { value.withLock { body(&$0) } }
}
