/// The requests waiting for a connection slot, as a value: served by priority (lower first),
/// then in arrival order, skipping hosts that have no room. `ConnectionBudgets` keeps one
/// behind its lock.
///
/// One lane per host, each sorted by (priority, arrival). Why: a batch queues hundreds of
/// requests to one host; a single list made every freed slot walk past all of them (and shift
/// the array), which was a twentieth of a small file's instructions. Now a grant looks at one
/// head per host.
struct SlotWaitQueue<Payload> {
    struct Entry {
        let id: UInt64
        let priority: UInt64
        /// Arrival order (ties of priority are first come, first served).
        let sequence: UInt64
        let payload: Payload
    }

    /// One host's waiters, sorted; `items[..<head]` are served (dropped now and then).
    private struct Lane {
        var items: [Entry] = []
        var head = 0
        var isEmpty: Bool { head == items.count }
        var first: Entry? { isEmpty ? nil : items[head] }

        mutating func insert(_ entry: Entry) {
            // Mostly at the end (a batch's later files have higher priority values): check that
            // first, else binary search for the first waiter served after `entry`.
            if let last = items.last, last.priority > entry.priority, items.count > head {
                var low = head, high = items.count
                while low < high {
                    let mid = (low + high) / 2
                    if items[mid].priority > entry.priority { high = mid } else { low = mid + 1 }
                }
                items.insert(entry, at: low)
            } else {
                items.append(entry)
            }
        }

        mutating func popFirst() {
            head += 1
            if head == items.count {
                items.removeAll(keepingCapacity: true)
                head = 0
            } else if head >= 64 && head * 2 >= items.count {
                items.removeFirst(head)
                head = 0
            }
        }
    }

    private var lanes: [RemoteURL.Origin: Lane] = [:]
    private var nextSequence: UInt64 = 0
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    /// Queues `payload` behind every waiter of the same or a lower priority value.
    mutating func insert(id: UInt64, priority: UInt64, origin: RemoteURL.Origin, _ payload: Payload) {
        let entry = Entry(id: id, priority: priority, sequence: nextSequence, payload: payload)
        nextSequence += 1
        count += 1
        lanes[origin, default: Lane()].insert(entry)
    }

    /// Takes the waiter with `id` out of the queue (a cancelled wait).
    mutating func remove(id: UInt64) -> Payload? {
        for origin in lanes.keys {
            let lane = lanes[origin]!
            guard let i = lane.items[lane.head...].firstIndex(where: { $0.id == id }) else { continue }
            // In place: a copy of the lane would copy its array.
            let entry = lanes[origin]!.items.remove(at: i)
            count -= 1
            if lanes[origin]!.isEmpty { lanes[origin] = nil }
            return entry.payload
        }
        return nil
    }

    /// Takes every waiter whose id is in `ids` out of the queue, in one pass over each lane
    /// (a batch cancelling thousands of waits); returns the ids it found.
    mutating func remove(ids: Set<UInt64>) -> Set<UInt64> {
        guard !ids.isEmpty else { return [] }
        var removed: Set<UInt64> = []
        for origin in Array(lanes.keys) {
            var lane = lanes.removeValue(forKey: origin)!
            var kept: [Entry] = []
            kept.reserveCapacity(lane.items.count - lane.head)
            for entry in lane.items[lane.head...] {
                if ids.contains(entry.id) { removed.insert(entry.id) } else { kept.append(entry) }
            }
            lane.items = kept
            lane.head = 0
            if !lane.isEmpty { lanes[origin] = lane }
        }
        count -= removed.count
        return removed
    }

    /// The first waiter, in queue order, whose host `fits`; nil when none does.
    mutating func popFirst(where fits: (RemoteURL.Origin) -> Bool) -> (origin: RemoteURL.Origin, payload: Payload)? {
        var best: (origin: RemoteURL.Origin, entry: Entry)?
        for (origin, lane) in lanes {
            guard let first = lane.first else { continue }
            if let chosen = best?.entry,
               (chosen.priority, chosen.sequence) < (first.priority, first.sequence) { continue }
            guard fits(origin) else { continue }
            best = (origin, first)
        }
        guard let best else { return nil }
        lanes[best.origin]!.popFirst()
        if lanes[best.origin]!.isEmpty { lanes[best.origin] = nil }
        count -= 1
        return (best.origin, best.entry.payload)
    }
}
