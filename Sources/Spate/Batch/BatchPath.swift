/// The rules for a destination inside a batch's base directory (`-d DIR`).
///
/// Why so strict: a manifest is often produced by someone else (a dataset index, a script), and
/// a line like `URL ../../.bashrc` or `URL /etc/cron.d/x` must never write outside the base
/// directory. Symbolic links on the way are refused when the directories are created
/// (`BatchDirectories`); here the text alone is checked.
public enum BatchPath {
    /// The longest destination accepted, in bytes (Linux's PATH_MAX minus room for the base).
    public static let maxBytes = 3072

    /// Normalises a relative destination: `a//b/./c` → `a/b/c`. Throws a one-line reason for an
    /// absolute path, a `..` component, a control character, a component over 255 bytes, a
    /// name that is spate's own temporary file (`.part`, `.part.journal`), or an empty path.
    public static func normalize(_ raw: String) throws(SpateError) -> String {
        if raw.hasPrefix("/") { throw .usage("the destination \(quoted(raw)) is an absolute path; destinations are relative to --dir") }
        if raw.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
            throw .usage("the destination \(quoted(raw)) contains a control character")
        }
        var parts: [Substring] = []
        for part in raw.split(separator: "/", omittingEmptySubsequences: true) where part != "." {
            if part == ".." { throw .usage("the destination \(quoted(raw)) leaves --dir (\"..\")") }
            if part.utf8.count > 255 { throw .usage("a component of the destination \(quoted(raw)) is longer than 255 bytes") }
            parts.append(part)
        }
        guard let last = parts.last else { throw .usage("the destination \(quoted(raw)) names no file") }
        if last.hasSuffix(".part") || last.hasSuffix(".part.journal") {
            throw .usage("the destination \(quoted(raw)) ends in .part or .part.journal, the names spate gives its partial files")
        }
        let path = parts.joined(separator: "/")
        if path.utf8.count > maxBytes { throw .usage("the destination \(quoted(String(raw.prefix(60))))… is longer than \(maxBytes) bytes") }
        return path
    }

    /// A stable 64-bit hash of a normalised destination (FNV-1a over its UTF-8 bytes): the
    /// shard key and the duplicate key. Stable across runs, machines and versions, so adding
    /// lines to a manifest never moves the others to another shard.
    public static func stableHash(_ text: some StringProtocol) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return hash
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
