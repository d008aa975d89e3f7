/// The byte space of one download: which bytes are done, which are handed out, which wait.
///
/// A pure value: no I/O, no clocks. The engine holds it behind a lock and asks it what to fetch
/// next. Work is handed out from the lowest pending offset so that
/// - every connection stays busy until the end (no static split where one slow connection holds
///   1/N of the file), and
/// - the contiguous "done" prefix (the watermark) trails the frontier closely, which lets the
///   whole-file digest be computed while the download runs.
///
/// At the end it also decides work stealing (an idle connection takes the far half of the
/// largest in-flight remainder) and tail hedging (a duplicate request for the tail of the
/// slowest assignment; the first to finish wins).
///
/// Invariant (checked by `invariantViolation()` and the property tests): `done`, `pending` and
/// the primary in-flight assignments are pairwise disjoint and together cover `0 ..< size`
/// exactly; every hedge covers the tail of one primary assignment.
public struct RangeLedger: Sendable {
    /// Identifies one hand-out of bytes to one request.
    public struct AssignmentID: Hashable, Sendable, CustomStringConvertible {
        let value: Int
        public var description: String { "#\(value)" }
    }

    /// Bytes handed to one request.
    public struct Assignment: Hashable, Sendable {
        public let id: AssignmentID
        public let range: ByteRange
    }

    /// A duplicate request for the tail of a primary assignment.
    public struct Hedge: Hashable, Sendable {
        public let of: AssignmentID
        public let range: ByteRange
    }

    /// A split decided by `steal`: the victim now ends at `victimEnd`; the thief fetches the rest.
    public struct Steal: Hashable, Sendable {
        public let victim: AssignmentID
        public let victimEnd: Int64
        public let assignment: Assignment
    }

    /// What `finish` asks the engine to do.
    public struct FinishResult: Hashable, Sendable {
        /// The assignment's bytes are all done (possibly by its hedge partner).
        public var complete: Bool
        /// Requests whose work is now done by someone else: stop them.
        public var abandon: [AssignmentID]
    }

    public let size: Int64
    public private(set) var done: RangeSet
    public private(set) var pending: RangeSet
    public private(set) var inFlight: [AssignmentID: ByteRange] = [:]
    public private(set) var hedges: [AssignmentID: Hedge] = [:]
    private var nextID = 0

    /// - Parameter alreadyDone: bytes known to be on disk and correct (from a resume journal).
    public init(size: Int64, alreadyDone: RangeSet = RangeSet()) {
        precondition(size >= 0)
        self.size = size
        self.done = RangeSet()
        for r in alreadyDone.ranges where r.start < size {
            self.done.insert(ByteRange(r.start, min(r.end, size)))
        }
        var pending = RangeSet()
        if size > 0 { pending.insert(ByteRange(0, size)) }
        for r in done.ranges { pending.remove(r) }
        self.pending = pending
    }

    /// Every byte done.
    public var isComplete: Bool { done.count == size }

    /// End of the done prefix that starts at byte 0.
    public var watermark: Int64 { done.contiguousEnd(from: 0) }

    public var doneBytes: Int64 { done.count }
    public var pendingBytes: Int64 { pending.count }

    /// Hands out up to `maxBytes` from the lowest pending offset outside `avoiding` (bytes that
    /// must not be asked for yet: a failed request's rest during its backoff), or nil when no
    /// such byte is pending.
    /// - Parameter below: hand out nothing at or beyond this offset (an ordered stream's window).
    public mutating func assign(maxBytes: Int64, avoiding: [ByteRange] = [], below limit: Int64 = .max) -> Assignment? {
        precondition(maxBytes > 0)
        var first = pending.ranges.first
        if !avoiding.isEmpty {
            var free = pending
            for blocked in avoiding { free.remove(blocked) }
            first = free.ranges.first
        }
        guard let first, first.start < limit else { return nil }
        let range = ByteRange(first.start, min(first.end, first.start + maxBytes, limit))
        pending.remove(range)
        let id = AssignmentID(value: nextID)
        nextID += 1
        inFlight[id] = range
        return Assignment(id: id, range: range)
    }

    /// Records the end of a request: bytes `range.start ..< doneThrough` are in the file.
    ///
    /// For a primary assignment, the rest goes back to pending (to be fetched again from where it
    /// stopped) — unless a hedge covers it, which then becomes the primary. For a hedge, its
    /// bytes count once its primary is gone; when a hedge completes, its primary is done too and
    /// is abandoned (and vice versa).
    @discardableResult
    public mutating func finish(_ id: AssignmentID, doneThrough: Int64) -> FinishResult {
        if let hedge = hedges.removeValue(forKey: id) {
            let through = min(max(doneThrough, hedge.range.start), hedge.range.end)
            guard let primary = inFlight[hedge.of] else {
                // The primary already ended; whatever the hedge wrote is valid and now counts.
                done.insert(ByteRange(hedge.range.start, through))
                return FinishResult(complete: through == hedge.range.end, abandon: [])
            }
            if through == hedge.range.end {
                // The hedge won: the primary only has to cover what precedes the hedge.
                inFlight[hedge.of] = ByteRange(primary.start, hedge.range.start)
                done.insert(hedge.range)
                return FinishResult(complete: true, abandon: [hedge.of])
            }
            return FinishResult(complete: false, abandon: [])
        }
        guard let range = inFlight.removeValue(forKey: id) else {
            preconditionFailure("finish of unknown assignment \(id)")
        }
        let through = min(max(doneThrough, range.start), range.end)
        done.insert(ByteRange(range.start, through))
        let partner = hedges.first(where: { $0.value.of == id })
        if through == range.end {
            // Complete. A hedge still running for this range is no longer needed; it stays
            // recorded until it reports, and then adds nothing new.
            return FinishResult(complete: true, abandon: partner.map { [$0.key] } ?? [])
        }
        if let partner {
            // The hedge becomes the primary for its range; anything before it is fetched again.
            hedges.removeValue(forKey: partner.key)
            let hedgeStart = max(partner.value.range.start, through)
            inFlight[partner.key] = ByteRange(hedgeStart, range.end)
            if through < hedgeStart { pending.insert(ByteRange(through, hedgeStart)) }
            return FinishResult(complete: false, abandon: [])
        }
        pending.insert(ByteRange(through, range.end))
        return FinishResult(complete: false, abandon: [])
    }

    /// Splits the largest in-flight remainder for an idle connection.
    ///
    /// - Parameters:
    ///   - positions: each in-flight assignment's current write position.
    ///   - minimumBytes: neither side of a split is smaller than this.
    ///   - alignment: the split point is a multiple of this (keeps requests tidy).
    /// - Returns: nil when no remainder is at least twice `minimumBytes`.
    /// - Parameter headFirst: take from the remainder at the lowest offset that is big enough,
    ///   not the largest (an ordered stream: the head of its window holds everything up).
    public mutating func steal(positions: [AssignmentID: Int64], minimumBytes: Int64, alignment: Int64 = 1,
                               headFirst: Bool = false) -> Steal? {
        var best: (id: AssignmentID, range: ByteRange, position: Int64)?
        for (id, range) in inFlight where !hedges.values.contains(where: { $0.of == id }) {
            let position = min(max(positions[id] ?? range.start, range.start), range.end)
            let remaining = range.end - position
            guard remaining >= 2 * minimumBytes else { continue }
            let better = headFirst ? position < (best?.position ?? .max) : remaining > (best.map { $0.range.end - $0.position } ?? 0)
            if better { best = (id, range, position) }
        }
        guard let best else { return nil }
        var split = best.position + (best.range.end - best.position) / 2
        if alignment > 1 { split = split / alignment * alignment }
        guard split - best.position >= minimumBytes, best.range.end - split >= minimumBytes else { return nil }
        inFlight[best.id] = ByteRange(best.range.start, split)
        let id = AssignmentID(value: nextID)
        nextID += 1
        let taken = ByteRange(split, best.range.end)
        inFlight[id] = taken
        return Steal(victim: best.id, victimEnd: split, assignment: Assignment(id: id, range: taken))
    }

    /// Undoes a steal whose thief got nothing: the thief's bytes go back to the end of
    /// `victim`, which still runs and still ends where the steal cut it. Returns the victim's
    /// new end, or nil (and changes nothing) when that no longer holds, or either is hedged.
    public mutating func giveBack(_ thief: AssignmentID, to victim: AssignmentID) -> Int64? {
        guard let taken = inFlight[thief], let kept = inFlight[victim], kept.end == taken.start, !taken.isEmpty,
              !hedges.values.contains(where: { $0.of == victim || $0.of == thief }) else { return nil }
        inFlight.removeValue(forKey: thief)
        inFlight[victim] = ByteRange(kept.start, taken.end)
        return taken.end
    }

    /// Starts a hedge: a second request for `victim`'s bytes from `position` to its end.
    /// Nil when the victim is gone, already hedged, or has nothing left.
    public mutating func hedge(_ victim: AssignmentID, from position: Int64) -> Assignment? {
        guard let range = inFlight[victim], !hedges.values.contains(where: { $0.of == victim }) else { return nil }
        let start = min(max(position, range.start), range.end)
        guard start < range.end else { return nil }
        let id = AssignmentID(value: nextID)
        nextID += 1
        let tail = ByteRange(start, range.end)
        hedges[id] = Hedge(of: victim, range: tail)
        return Assignment(id: id, range: tail)
    }

    /// The current range of an in-flight request (primary or hedge).
    public func range(of id: AssignmentID) -> ByteRange? {
        inFlight[id] ?? hedges[id]?.range
    }

    /// Whether `id` is a hedge.
    public func isHedge(_ id: AssignmentID) -> Bool { hedges[id] != nil }

    /// Pending bytes that no request holds yet.
    public var unassignedBytes: Int64 { pending.count }

    /// Whether a hedge runs for the primary assignment `id`.
    public func isHedged(_ id: AssignmentID) -> Bool { hedges.values.contains { $0.of == id } }

    /// Checks the covering invariant; returns a description of the first violation.
    public func invariantViolation() -> String? {
        for (id, hedge) in hedges {
            // A hedge whose primary finished stays until it reports; otherwise it covers the
            // primary's tail.
            if let primary = inFlight[hedge.of], !(hedge.range.end == primary.end || primary.end <= hedge.range.start) {
                return "hedge \(id) \(hedge.range) is not the tail of \(hedge.of) \(primary)"
            }
        }
        // An in-flight range can be empty: its hedge won and it waits to be abandoned.
        var all: [ByteRange] = done.ranges + pending.ranges + inFlight.values.filter { !$0.isEmpty }
        all.sort { $0.start < $1.start }
        var cursor: Int64 = 0
        for r in all {
            if r.start != cursor { return "gap or overlap at \(cursor): next range \(r)" }
            cursor = r.end
        }
        if cursor != size { return "coverage ends at \(cursor), size \(size)" }
        return nil
    }
}
