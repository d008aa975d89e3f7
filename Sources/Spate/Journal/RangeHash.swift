import CISAL
import CZlib

/// A byte range with the CRC-32 of its content: one journal record.
///
/// CRC-32 (zlib) guards against torn or corrupted data on disk, not against an attacker; the
/// whole-file `--checksum` is the cryptographic check.
public struct HashedRange: Hashable, Sendable, CustomStringConvertible {
    public var range: ByteRange
    public var crc: UInt32

    public init(range: ByteRange, crc: UInt32) {
        self.range = range
        self.crc = crc
    }

    /// The record for `self` followed directly by `next` (adjacent), without reading data.
    public func appending(_ next: HashedRange) -> HashedRange {
        precondition(range.end == next.range.start, "appending a non-adjacent range")
        return HashedRange(range: ByteRange(range.start, next.range.end),
                           crc: CRC32.combine(crc, next.crc, length: next.range.count))
    }

    public var description: String { "\(range) crc \(String(crc, radix: 16))" }
}

/// CRC-32 as zlib defines it (ISO-HDLC polynomial, reflected, the gzip trailer's CRC).
///
/// `checksum` runs on ISA-L (PCLMULQDQ folding, about 10× zlib's table code here) because it is
/// computed over every byte written; `combine` stays on zlib, which ISA-L does not offer. The
/// values are identical (a unit test checks them against zlib), so journals do not change.
public enum CRC32 {
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        return crc32_gzip_refl(crc, base.assumingMemoryBound(to: UInt8.self), UInt64(bytes.count))
    }

    /// zlib's own CRC-32 of `bytes`: the reference `checksum` is tested against.
    static func zlibChecksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        var c = UInt(crc)
        var offset = 0
        while offset < bytes.count {
            let n = min(bytes.count - offset, Int(UInt32.max))
            c = crc32(c, base.assumingMemoryBound(to: UInt8.self) + offset, UInt32(n))
            offset += n
        }
        return UInt32(truncatingIfNeeded: c)
    }

    /// The CRC of A‖B from CRC(A), CRC(B) and the length of B.
    public static func combine(_ a: UInt32, _ b: UInt32, length: Int64) -> UInt32 {
        UInt32(truncatingIfNeeded: crc32_combine(UInt(a), UInt(b), Int(length)))
    }
}

/// Journal records, sorted by start; adjacent records merge (their CRCs combined), overlapping
/// ones stay separate (a request that ran past a steal point wrote valid bytes twice).
///
/// Built in O(n log n) from any number of records (`init(records:)` sorts, then merges in one
/// pass), so loading a journal of a million records stays fast.
public struct HashedRangeList: Hashable, Sendable {
    public private(set) var records: [HashedRange] = []

    public init() {}

    public init(records: [HashedRange]) {
        for r in records.sorted(by: { ($0.range.start, $0.range.end) < ($1.range.start, $1.range.end) }) {
            appendSorted(r)
        }
    }

    /// Adds a record (any order).
    public mutating func insert(_ record: HashedRange) {
        guard !record.range.isEmpty else { return }
        if let last = records.last, record.range.start >= last.range.start {
            appendSorted(record)
            return
        }
        // Out of order: insert at its place, then merge with neighbours where adjacent.
        var i = records.partitionPoint { $0.range.start > record.range.start }
        records.insert(record, at: i)
        if i > 0, records[i - 1].range.end == records[i].range.start {
            records[i - 1] = records[i - 1].appending(records[i])
            records.remove(at: i)
            i -= 1
        }
        if i + 1 < records.count, records[i].range.end == records[i + 1].range.start {
            records[i] = records[i].appending(records[i + 1])
            records.remove(at: i + 1)
        }
    }

    private mutating func appendSorted(_ record: HashedRange) {
        guard !record.range.isEmpty else { return }
        if let last = records.last, last.range.end == record.range.start {
            records[records.count - 1] = last.appending(record)
        } else if let last = records.last, last.range.start == record.range.start {
            // The same request reported again (in-flight progress): keep the longer record.
            if record.range.end > last.range.end { records[records.count - 1] = record }
        } else {
            records.append(record)
        }
    }

    /// Whether a record covers all of `record`'s bytes (its hash is then redundant).
    public func contains(_ record: HashedRange) -> Bool {
        let i = records.partitionPoint { $0.range.start > record.range.start }
        return i > 0 && records[i - 1].range.end >= record.range.end
            || records.contains { $0.range.start <= record.range.start && $0.range.end >= record.range.end }
    }

    /// The bytes covered (overlaps counted once).
    public var covered: RangeSet {
        var set = RangeSet()
        for r in records { set.insert(r.range) }
        return set
    }

    public var isEmpty: Bool { records.isEmpty }
}

extension Array {
    /// The first index whose element satisfies `predicate` (which must be false, then true).
    func partitionPoint(_ predicate: (Element) -> Bool) -> Int {
        var lo = 0, hi = count
        while lo < hi {
            let mid = (lo + hi) / 2
            if predicate(self[mid]) { hi = mid } else { lo = mid + 1 }
        }
        return lo
    }
}
