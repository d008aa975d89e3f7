import Synchronization

/// Items posted from any thread, taken in bulk by one task: `next` returns everything posted
/// since the last call, waiting while there is nothing.
///
/// Why not an `AsyncStream`: its iterator ends for good when the task is cancelled, and a
/// cancelled batch must still hear from every file in flight (each ends, as cancelled). And one
/// wake-up of the taking task for many items is cheaper than one per item.
final class Mailbox<Item: Sendable>: Sendable {
    private struct State {
        var items: [Item] = []
        var waiter: CheckedContinuation<[Item], Never>?
    }

    private let state = Mutex(State())

    init() {}

    func post(_ item: Item) {
        let woken = state.withLock { s -> (CheckedContinuation<[Item], Never>, [Item])? in
            s.items.append(item)
            guard let waiter = s.waiter else { return nil }
            s.waiter = nil
            defer { s.items = [] }
            return (waiter, s.items)
        }
        if let (waiter, items) = woken { waiter.resume(returning: items) }
    }

    /// What was posted, at least one item — or, with `wakingOnCancel`, nothing when the task is
    /// cancelled. One caller at a time.
    func next(wakingOnCancel: Bool) async -> [Item] {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<[Item], Never>) in
                let now = state.withLock { s -> [Item]? in
                    precondition(s.waiter == nil, "Mailbox.next called by two tasks at once")
                    if !s.items.isEmpty {
                        defer { s.items = [] }
                        return s.items
                    }
                    if wakingOnCancel && Task.isCancelled { return [] }
                    s.waiter = continuation
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            guard wakingOnCancel else { return }
            let waiter = state.withLock { s -> CheckedContinuation<[Item], Never>? in
                defer { s.waiter = nil }
                return s.waiter
            }
            waiter?.resume(returning: [])
        }
    }
}
