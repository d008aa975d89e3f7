extension String {
    /// Whether any UTF-8 byte satisfies `predicate`, read from the string's contiguous storage.
    /// Why: `utf8.contains(where:)` walks `String.UTF8View` indices, about 30 instructions a
    /// byte; on the buffer it is a plain loop. Per-file checks of URLs and header names showed
    /// in small-file profiles.
    @inline(__always)
    func containsByte(where predicate: (UInt8) -> Bool) -> Bool {
        utf8.withContiguousStorageIfAvailable { $0.contains(where: predicate) } ?? utf8.contains(where: predicate)
    }
}
