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
        let value = text.trimmingSpaces()
        guard value.count > 6, value.lowercased().hasPrefix("bytes ") else { return nil }
        let spec = value.dropFirst(6).trimmingSpaces()
        let parts = spec.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return nil }
        let rangePart = parts[0], lengthPart = parts[1]
        var complete: Int64?
        if lengthPart != "*" {
            guard let n = ContentRange.parseDecimal(lengthPart) else { return nil }
            complete = n
        }
        if rangePart == "*" {
            guard complete != nil else { return nil }
            self.init(range: nil, completeLength: complete)
            return
        }
        let bounds = rangePart.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard bounds.count == 2, let first = ContentRange.parseDecimal(bounds[0]),
              let last = ContentRange.parseDecimal(bounds[1]), first <= last, last < Int64.max else { return nil }
        if let complete, last >= complete { return nil }
        self.init(range: ByteRange(first, last + 1), completeLength: complete)
    }

    /// A non-negative decimal that fits in Int64, digits only (no sign, no spaces).
    static func parseDecimal(_ s: some StringProtocol) -> Int64? {
        guard !s.isEmpty, s.utf8.count <= 19, s.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        return Int64(s)
    }
}
