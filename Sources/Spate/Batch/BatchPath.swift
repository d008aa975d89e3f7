/// The rules for a destination inside a batch's base directory (`-d DIR`).
///
/// Why so strict: a manifest is often produced by someone else (a dataset index, a script), and
/// a line like `URL ../../.bashrc` or `URL /etc/cron.d/x` must never write outside the base
/// directory. Symbolic links on the way are refused when the directories are created
/// (`BatchDirectories`); here the text alone is checked.
public enum BatchPath {
    /// The longest destination accepted, in bytes (Linux's PATH_MAX minus room for the base).
    public static let maxBytes = 3072
    /// The longest file name (last component): what the file system takes. Longer names get
    /// shortened temporary names (`OutputFile.partPath`).
    public static let maxFileNameBytes = 255

    /// Normalises a relative destination: `a//b/./c` → `a/b/c`. Throws a one-line reason for an
    /// absolute path, a `..` component, a control character, a component over 255 bytes, a name that is spate's own temporary file (`.part`,
    /// `.part.journal`, `.part.journal.tmp`), or an empty path.
    public static func normalize(_ raw: String) throws(SpateError) -> String {
        var raw = raw
        raw.makeContiguousUTF8()
        // On bytes: a manifest of a million lines normalises a million destinations, and most
        // are already normal (returned as they are, without a copy).
        let result: Result<[Range<Int>]?, SpateError> = raw.utf8.withContiguousStorageIfAvailable { bytes in
            scan(bytes, raw)
        }!
        guard let components = try result.get() else { return raw }
        let utf8 = Array(raw.utf8)
        return components.map { String(decoding: utf8[$0], as: UTF8.self) }.joined(separator: "/")
    }

    /// Checks `bytes`; returns nil when they are already normal, else the ranges of the
    /// components to keep.
    private static func scan(_ bytes: UnsafeBufferPointer<UInt8>, _ raw: String) -> Result<[Range<Int>]?, SpateError> {
        let slash = UInt8(ascii: "/"), dot = UInt8(ascii: ".")
        if bytes.first == slash { return .failure(.usage("the destination \(quoted(raw)) is an absolute path; destinations are relative to --dir")) }
        if bytes.contains(where: { $0 < 0x20 || $0 == 0x7F }) {
            return .failure(.usage("the destination \(quoted(raw)) contains a control character"))
        }
        if bytes.count > maxBytes { return .failure(.usage("the destination \(quoted(String(raw.prefix(60))))… is longer than \(maxBytes) bytes")) }
        // The components to keep are listed only for a path that changes (rare): a normal one
        // costs no allocation.
        var kept: [Range<Int>]?
        var last: Range<Int>?
        var start = 0
        for i in 0...bytes.count where i == bytes.count || bytes[i] == slash {
            let length = i - start
            if length == 0 || (length == 1 && bytes[start] == dot) {
                if kept == nil { kept = Self.components(bytes, before: start) }
            } else if length == 2 && bytes[start] == dot && bytes[start + 1] == dot {
                return .failure(.usage("the destination \(quoted(raw)) leaves --dir (\"..\")"))
            } else if length > 255 {
                return .failure(.usage("a component of the destination \(quoted(raw)) is longer than 255 bytes"))
            } else {
                last = start..<i
                kept?.append(start..<i)
            }
            start = i + 1
        }
        guard let last else { return .failure(.usage("the destination \(quoted(raw)) names no file")) }
        let name = UnsafeBufferPointer(rebasing: bytes[last])
        if name.ends(with: ".part") || name.ends(with: ".part.journal") || name.ends(with: ".part.journal.tmp") {
            return .failure(.usage("the destination \(quoted(raw)) ends in .part, .part.journal or .part.journal.tmp, the names spate gives its partial files"))
        }
        return .success(kept)
    }

    /// The components of `bytes[..<end]` (all normal: scanned already), for a path that
    /// turned out to need normalising at `end`.
    private static func components(_ bytes: UnsafeBufferPointer<UInt8>, before end: Int) -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        var start = 0
        for i in 0..<end where bytes[i] == UInt8(ascii: "/") {
            if i > start { ranges.append(start..<i) }
            start = i + 1
        }
        return ranges
    }

    /// A stable 64-bit hash of a normalised destination (FNV-1a over its UTF-8 bytes): the
    /// shard key and the duplicate key. Stable across runs, machines and versions, so adding
    /// lines to a manifest never moves the others to another shard.
    public static func stableHash(_ text: some StringProtocol) -> UInt64 {
        text.utf8.reduce(fnvOffsetBasis, fnvStep)
    }

    /// The `stableHash` of each directory above `destination` (`a`, `a/b` for `a/b/c`),
    /// computed in one pass.
    static func parentHashes(_ destination: String) -> [UInt64] {
        var parents: [UInt64] = []
        var hash = fnvOffsetBasis
        for byte in destination.utf8 {
            if byte == UInt8(ascii: "/") { parents.append(hash) }
            hash = fnvStep(hash, byte)
        }
        return parents
    }

    private static let fnvOffsetBasis: UInt64 = 0xcbf2_9ce4_8422_2325

    @inline(__always)
    private static func fnvStep(_ hash: UInt64, _ byte: UInt8) -> UInt64 {
        (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
    }

    static func quoted(_ s: String) -> String {
        "\"\(s.count > 80 ? String(s.prefix(80)) + "…" : s)\""
    }
}

/// `--shard K/N`: the entries whose destination hashes to K modulo N.
public struct ManifestShard: Sendable, Hashable, CustomStringConvertible {
    public let index: Int
    public let count: Int

    public init(index: Int, count: Int) throws(SpateError) {
        guard count >= 1, count <= 1_000_000, index >= 0, index < count else {
            throw .usage("invalid shard \(index)/\(count): use K/N with 0 <= K < N <= 1000000")
        }
        self.index = index
        self.count = count
    }

    /// Parses `K/N`.
    public init(parsing text: String) throws(SpateError) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let k = Int(parts[0]), let n = Int(parts[1]) else {
            throw .usage("invalid --shard \"\(text)\": use K/N, e.g. 0/4")
        }
        try self.init(index: k, count: n)
    }

    /// The whole list.
    public static let all = try! ManifestShard(index: 0, count: 1)

    public func contains(destination: String) -> Bool {
        count == 1 || BatchPath.stableHash(destination) % UInt64(count) == UInt64(index)
    }

    public var description: String { "\(index)/\(count)" }
}

extension UnsafeBufferPointer<UInt8> {
    fileprivate func ends(with suffix: StaticString) -> Bool {
        let n = suffix.utf8CodeUnitCount
        guard count >= n else { return false }
        return suffix.withUTF8Buffer { tail in (0..<n).allSatisfy { self[count - n + $0] == tail[$0] } }
    }
}
