/// A half-open interval of byte offsets, `start ..< end`.
///
/// Why not `Range<Int64>`: a named type keeps HTTP's inclusive `first-last` form in one place
/// (`httpRangeValue`) and reads better in the ledger's arithmetic.
public struct ByteRange: Hashable, Sendable, CustomStringConvertible {
    public var start: Int64
    public var end: Int64

    public init(_ start: Int64, _ end: Int64) {
        precondition(start >= 0 && start <= end, "invalid byte range \(start)..<\(end)")
        self.start = start
        self.end = end
    }

    public var count: Int64 { end - start }
    public var isEmpty: Bool { start == end }

    /// The value of a `Range` header asking for exactly these bytes: `bytes=first-last`.
    public var httpRangeValue: String { "bytes=\(start)-\(end - 1)" }

    public func contains(_ offset: Int64) -> Bool { offset >= start && offset < end }

    public func overlaps(_ other: ByteRange) -> Bool { start < other.end && other.start < end }

    public var description: String { "[\(start), \(end))" }
}
