/// A parsed `Content-Range` header (RFC 9110 §14.4): `bytes first-last/complete`,
/// `bytes first-last/*`, or `bytes */complete` (on a 416).
///
/// Parsing is strict and overflow-checked (aria2#509, CVE-2023-40547): anything else is nil.
public struct ContentRange: Hashable, Sendable {
    /// The bytes in this message, if it carries any.
    public let range: ByteRange?
    /// The full representation's length, when the server knows it.
    public let completeLength: Int64?

    public init(range: ByteRange?, completeLength: Int64?) {
        self.range = range
        self.completeLength = completeLength
    }

    public init?(parsing text: String) {
        var text = text
        // On bytes: every reply's header is parsed at least once (a batch of small files
        // parses one per file, and a Character-based version showed in its profile).
        guard let parsed = text.withUTF8({ ContentRange.parse($0) }) else { return nil }
        self = parsed
    }

    private static func parse(_ b: UnsafeBufferPointer<UInt8>) -> ContentRange? {
        func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 }
        var i = 0, end = b.count
        while i < end, isSpace(b[i]) { i += 1 }
        while end > i, isSpace(b[end - 1]) { end -= 1 }
        guard end - i > 6 else { return nil }
        for (k, c) in "bytes ".utf8.enumerated() where (k < 5 ? b[i + k] | 0x20 : b[i + k]) != c { return nil }
        i += 6
        while i < end, isSpace(b[i]) { i += 1 }
        guard let slash = (i..<end).first(where: { b[$0] == UInt8(ascii: "/") }) else { return nil }
        let star = UInt8(ascii: "*")
        var complete: Int64?
        if !(end - slash == 2 && b[slash + 1] == star) {
            guard let n = decimal(b, slash + 1, end) else { return nil }
            complete = n
        }
        if slash - i == 1 && b[i] == star {
            guard complete != nil else { return nil }
            return ContentRange(range: nil, completeLength: complete)
        }
        guard let dash = (i..<slash).first(where: { b[$0] == UInt8(ascii: "-") }),
              let first = decimal(b, i, dash), let last = decimal(b, dash + 1, slash),
              first <= last, last < Int64.max else { return nil }
        if let complete, last >= complete { return nil }
        return ContentRange(range: ByteRange(first, last + 1), completeLength: complete)
    }

    /// Digits only in `b[from..<to]`, at most 19, no more than `ByteSize.largest`.
    private static func decimal(_ b: UnsafeBufferPointer<UInt8>, _ from: Int, _ to: Int) -> Int64? {
        guard from < to, to - from <= 19 else { return nil }
        var value: Int64 = 0
        for k in from..<to {
            let d = b[k] &- 48
            guard d <= 9 else { return nil }
            let (times, o1) = value.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times.addingReportingOverflow(Int64(d))
            guard !o1, !o2 else { return nil }
            value = sum
        }
        return value <= ByteSize.largest ? value : nil
    }

    /// A non-negative decimal up to `ByteSize.largest`, digits only (no sign, no spaces).
    static func parseDecimal(_ s: some StringProtocol) -> Int64? {
        guard !s.isEmpty, s.utf8.count <= 19, s.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
              let value = Int64(s), value <= ByteSize.largest else { return nil }
        return value
    }
}
