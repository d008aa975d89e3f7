/// A set of byte offsets kept as sorted, disjoint, non-adjacent ranges.
///
/// Used for "done" and "pending" bookkeeping. Operations are O(log n) to find and O(n) to
/// insert in the worst case; n stays small because adjacent ranges coalesce.
public struct RangeSet: Hashable, Sendable, CustomStringConvertible {
    public private(set) var ranges: [ByteRange] = []

    public init() {}

    public init(_ ranges: [ByteRange]) {
        for r in ranges { insert(r) }
    }

    public var isEmpty: Bool { ranges.isEmpty }

    /// Total bytes covered.
    public var count: Int64 { ranges.reduce(0) { $0 + $1.count } }

    /// Index of the first range whose end is >= offset.
    private func firstIndex(endingAtOrAfter offset: Int64) -> Int {
        var lo = 0, hi = ranges.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ranges[mid].end < offset { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// Adds `range`, merging with overlapping or adjacent ranges.
    public mutating func insert(_ range: ByteRange) {
        guard !range.isEmpty else { return }
        let i = firstIndex(endingAtOrAfter: range.start)
        var merged = range
        while i < ranges.count, ranges[i].start <= merged.end {
            merged = ByteRange(min(merged.start, ranges[i].start), max(merged.end, ranges[i].end))
            ranges.remove(at: i)
        }
        ranges.insert(merged, at: i)
    }

    /// Removes `range` from the set.
    public mutating func remove(_ range: ByteRange) {
        guard !range.isEmpty else { return }
        var i = firstIndex(endingAtOrAfter: range.start)
        if i < ranges.count, ranges[i].end == range.start { i += 1 }
        var replacement: [ByteRange] = []
        var j = i
        while j < ranges.count, ranges[j].start < range.end {
            let r = ranges[j]
            if r.start < range.start { replacement.append(ByteRange(r.start, range.start)) }
            if r.end > range.end { replacement.append(ByteRange(range.end, r.end)) }
            j += 1
        }
        ranges.replaceSubrange(i..<j, with: replacement)
    }

    public func contains(_ offset: Int64) -> Bool {
        let i = firstIndex(endingAtOrAfter: offset + 1)
        return i < ranges.count && ranges[i].contains(offset)
    }

    /// Whether every byte of `range` is in the set.
    public func contains(_ range: ByteRange) -> Bool {
        if range.isEmpty { return true }
        let i = firstIndex(endingAtOrAfter: range.start + 1)
        return i < ranges.count && ranges[i].start <= range.start && ranges[i].end >= range.end
    }

    /// Whether any byte of `range` is in the set.
    public func intersects(_ range: ByteRange) -> Bool {
        let i = firstIndex(endingAtOrAfter: range.start + 1)
        return i < ranges.count && ranges[i].start < range.end
    }

    /// The end of the run that starts at `offset` (== offset when `offset` is not in the set).
    public func contiguousEnd(from offset: Int64) -> Int64 {
        let i = firstIndex(endingAtOrAfter: offset + 1)
        guard i < ranges.count, ranges[i].start <= offset else { return offset }
        return ranges[i].end
    }

    public var description: String { ranges.map(\.description).joined(separator: " ") }
}
