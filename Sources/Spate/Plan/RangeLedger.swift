/// The byte space of one download: which bytes are done, which are handed out, which wait.
///
/// A pure value: no I/O, no clocks. The engine holds it behind a lock and asks it what to fetch
/// next. Work is handed out from the lowest pending offset so that
/// - every connection stays busy until the end (no static split where one slow connection holds
///   1/N of the file), and
/// - the contiguous "done" prefix (the watermark) trails the frontier closely, which lets the
///   whole-file digest be computed while the download runs.
///
/// Invariant (checked by `checkInvariants()` and the property tests): `done`, `pending` and the
/// in-flight assignments are pairwise disjoint and together cover `0 ..< size` exactly.
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

    public let size: Int64
    public private(set) var done: RangeSet
    public private(set) var pending: RangeSet
    public private(set) var inFlight: [AssignmentID: ByteRange] = [:]
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

    /// Hands out up to `maxBytes` from the lowest pending offset, or nil when nothing is pending.
    public mutating func assign(maxBytes: Int64) -> Assignment? {
        precondition(maxBytes > 0)
        guard let first = pending.ranges.first else { return nil }
        let range = ByteRange(first.start, min(first.end, first.start + maxBytes))
        pending.remove(range)
        let id = AssignmentID(value: nextID)
        nextID += 1
        inFlight[id] = range
        return Assignment(id: id, range: range)
    }

    /// Records the end of an assignment: bytes `range.start ..< doneThrough` are on disk; the rest
    /// of the assignment goes back to pending (to be fetched again, from where it stopped).
    public mutating func finish(_ id: AssignmentID, doneThrough: Int64) {
        guard let range = inFlight.removeValue(forKey: id) else {
            preconditionFailure("finish of unknown assignment \(id)")
        }
        let through = min(max(doneThrough, range.start), range.end)
        done.insert(ByteRange(range.start, through))
        if through < range.end { pending.insert(ByteRange(through, range.end)) }
    }

    /// Pending bytes that no request holds yet.
    public var unassignedBytes: Int64 { pending.count }

    /// Throws away done bytes (they failed verification on disk): they become pending again.
    public mutating func invalidate(_ range: ByteRange) {
        let clipped = ByteRange(min(range.start, size), min(range.end, size))
        for r in inFlight.values { precondition(!r.overlaps(clipped), "invalidate of in-flight bytes") }
        done.remove(clipped)
        pending.insert(clipped)
    }

    /// Checks the covering invariant; returns a description of the first violation.
    public func invariantViolation() -> String? {
        var all: [ByteRange] = done.ranges + pending.ranges + Array(inFlight.values)
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
