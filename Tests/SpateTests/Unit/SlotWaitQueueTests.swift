@testable import Spate
import Testing

/// The queue of requests waiting for connection slots (one lane per host), against the
/// simplest model of its rule: one list in (priority, arrival) order, served by the first
/// entry whose host fits.
@Suite("Slot wait queue")
struct SlotWaitQueueTests {
    let hosts = ["a", "b", "c"].map { RemoteURL.Origin(scheme: "http", host: $0, port: 80) }

    @Test func servesByPriorityThenArrivalSkippingFullHosts() {
        var queue = SlotWaitQueue<String>()
        queue.insert(id: 1, priority: 5, origin: hosts[0], "a5")
        queue.insert(id: 2, priority: 3, origin: hosts[1], "b3")
        queue.insert(id: 3, priority: 5, origin: hosts[1], "b5")
        queue.insert(id: 4, priority: 1, origin: hosts[0], "a1")
        queue.insert(id: 5, priority: 5, origin: hosts[0], "a5'")
        #expect(queue.count == 5)
        #expect(queue.popFirst(where: { _ in true })?.payload == "a1")
        #expect(queue.popFirst(where: { $0.host != "b" })?.payload == "a5", "b is full: b3 waits, a5 goes")
        #expect(queue.popFirst(where: { _ in true })?.payload == "b3")
        #expect(queue.remove(id: 5) == "a5'")
        #expect(queue.remove(id: 5) == nil, "removed once")
        #expect(queue.popFirst(where: { $0.host == "a" }) == nil, "nothing of a is left")
        #expect(queue.popFirst(where: { _ in true })?.payload == "b5")
        #expect(queue.isEmpty && queue.popFirst(where: { _ in true }) == nil)
    }

    /// Seeded random inserts, grants and cancellations, compared step by step with the model.
    @Test(arguments: [UInt64(1), 2, 3, 20_261_201])
    func matchesTheSingleListModel(seed: UInt64) {
        print("SlotWaitQueue model test, seed \(seed)")
        var random = SplitMix64(seed: seed)
        var queue = SlotWaitQueue<UInt64>()
        var model: [(id: UInt64, priority: UInt64, origin: RemoteURL.Origin)] = []
        var nextID: UInt64 = 1
        for step in 0..<5_000 {
            let action = random.next() % 10
            if action < 5 {
                // Mostly rising priorities (a batch's files in order), sometimes an earlier one.
                let priority = random.next() % 4 == 0 ? random.next() % UInt64(nextID) : UInt64(nextID)
                let origin = hosts[Int(random.next() % 3)]
                queue.insert(id: nextID, priority: priority, origin: origin, nextID)
                let at = model.firstIndex(where: { $0.priority > priority }) ?? model.count
                model.insert((nextID, priority, origin), at: at)
                nextID += 1
            } else if action < 9 {
                let open = hosts.filter { _ in random.next() % 3 != 0 }
                let got = queue.popFirst(where: { open.contains($0) })
                let expected = model.firstIndex(where: { open.contains($0.origin) })
                #expect(got?.payload == expected.map { model[$0].id }, "seed \(seed), step \(step)")
                #expect(got?.origin == expected.map { model[$0].origin }, "seed \(seed), step \(step)")
                if let expected { model.remove(at: expected) }
            } else if random.next() % 4 != 0 {
                let id = random.next() % nextID
                let got = queue.remove(id: id)
                let expected = model.firstIndex(where: { $0.id == id })
                #expect(got == expected.map { model[$0].id }, "seed \(seed), step \(step)")
                if let expected { model.remove(at: expected) }
            } else {
                // Many at once (a batch cancelling its waits), some of them no longer waiting.
                let ids = Set((0..<(random.next() % 12)).map { _ in random.next() % nextID })
                let got = queue.remove(ids: ids)
                let expected = Set(model.map(\.id)).intersection(ids)
                #expect(got == expected, "seed \(seed), step \(step)")
                model.removeAll { ids.contains($0.id) }
            }
            #expect(queue.count == model.count, "seed \(seed), step \(step)")
        }
    }
}
