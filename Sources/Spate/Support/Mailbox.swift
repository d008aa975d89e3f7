import Synchronization

/// Items posted from any thread, taken in bulk by one task: `next` returns everything posted
/// since the last call, waiting until there are enough (or an urgent one).
///
/// Why not an `AsyncStream`: its iterator ends for good when the task is cancelled, and a
/// cancelled batch must still hear from every file in flight (each ends, as cancelled). And one
/// wake-up of the taking task for many items is cheaper than one per item: a wake-up is a
/// futex and a thread switch, which for 10,000 small files cost more than their accounting.
final class Mailbox<Item: Sendable>: Sendable {
    private struct State {
        var items: [Item] = []
        var waiter: CheckedContinuation<[Item], Never>?
        /// How many items wake the waiter.
        var wakeAt = 1
        /// An urgent item is among `items`.
        var urgent = false

        mutating func take() -> [Item] {
            defer {
                items = []
                urgent = false
            }
            return items
        }
    }

    private let state = Mutex(State())

    init() {}

    /// Whether a task waits in `next` now.
    var hasWaiter: Bool { state.withLock { $0.waiter != nil } }

    /// - Parameter urgent: wakes the waiter however few items there are.
    func post(_ item: Item, urgent: Bool = false) {
        let woken = state.withLock { s -> (CheckedContinuation<[Item], Never>, [Item])? in
            s.items.append(item)
            s.urgent = s.urgent || urgent
            guard let waiter = s.waiter, s.urgent || s.items.count >= s.wakeAt else { return nil }
            s.waiter = nil
            return (waiter, s.take())
        }
        if let (waiter, items) = woken { waiter.resume(returning: items) }
    }

    /// What was posted: at least `atLeast` items, or fewer with an urgent one — or, with
    /// `wakingOnCancel`, what is there (maybe nothing) when the task is cancelled. One caller
    /// at a time.
    ///
    /// The caller must know that `atLeast` items will come (it waits for nothing else).
    func next(atLeast: Int = 1, wakingOnCancel: Bool) async -> [Item] {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<[Item], Never>) in
                let now = state.withLock { s -> [Item]? in
                    precondition(s.waiter == nil, "Mailbox.next called by two tasks at once")
                    if !s.items.isEmpty && (s.urgent || s.items.count >= atLeast) { return s.take() }
                    if wakingOnCancel && Task.isCancelled { return s.take() }
                    s.waiter = continuation
                    s.wakeAt = max(1, atLeast)
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            guard wakingOnCancel else { return }
            let woken = state.withLock { s -> (CheckedContinuation<[Item], Never>, [Item])? in
                guard let waiter = s.waiter else { return nil }
                s.waiter = nil
                return (waiter, s.take())
            }
            if let (waiter, items) = woken { waiter.resume(returning: items) }
        }
    }
}
