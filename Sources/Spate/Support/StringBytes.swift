extension String {
    /// Whether any UTF-8 byte satisfies `predicate`, read from the string's contiguous storage.
    /// Why: `utf8.contains(where:)` walks `String.UTF8View` indices, about 30 instructions a
    /// byte; on the buffer it is a plain loop. Per-file checks of URLs and header names showed
    /// in small-file profiles.
    @inline(__always)
    func containsByte(where predicate: (UInt8) -> Bool) -> Bool {
        utf8.withContiguousStorageIfAvailable { $0.contains(where: predicate) } ?? utf8.contains(where: predicate)
    }

    /// The index of the last UTF-8 byte equal to `byte` (an ASCII byte, which is never part of
    /// another scalar, so the index is on a scalar boundary), searched in the contiguous
    /// storage. Why: `utf8.lastIndex(of:)` costs about 700 instructions per call on a path
    /// (index machinery per byte); paths are split several times per file of a batch.
    func lastIndex(ofASCII byte: UInt8) -> String.Index? {
        precondition(byte < 0x80)
        if let found = utf8.withContiguousStorageIfAvailable({ $0.lastIndex(of: byte) }) {
            return found.map { utf8.index(utf8.startIndex, offsetBy: $0) }
        }
        return utf8.lastIndex(of: byte)
    }
}
