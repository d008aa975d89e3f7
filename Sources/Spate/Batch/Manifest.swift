import Glibc

/// A list of files to download (`-i FILE`), read twice and never held in memory whole:
///
/// 1. `validate()` reads every line — a syntax error anywhere stops the batch before its first
///    request — selects the shard's entries and finds duplicate destinations;
/// 2. `entries()` reads it again, lazily, handing out the selected entries one at a time as the
///    batch has room for them.
///
/// A short selection (at most `keptEntriesMax` entries and `keptBytesMax` of text) is kept by
/// the first pass, its URLs parsed, and `entries()` hands those out instead of reading and
/// parsing every line again: each URL then goes through libcurl's parser once, not twice
/// (about 5 % of a batch of small files' instructions). The bound keeps memory independent of
/// the list's length.
///
/// Memory: the duplicate check keeps 16 bytes per selected entry (a hash of the destination
/// and of the URL), so a shard of a list costs only its share; a long list's lines are never
/// kept. Standard input (`-`) is copied to an unlinked temporary file first, so it can be read
/// twice.
public final class Manifest: @unchecked Sendable {
    /// How the input is named in messages.
    public let name: String
    public let shard: ManifestShard
    private let fd: Int32
    /// Destination hash → URL hash, for the selected entries (filled by `validate`).
    private var seen: [UInt64: UInt64] = [:]
    /// Lines that repeat an earlier line's destination and URL: skipped.
    private var repeated: Set<Int> = []
    /// The selected entries (after `validate`).
    public private(set) var selectedCount = 0
    /// Every entry of the list (after `validate`).
    public private(set) var totalCount = 0
    /// The bytes `validate` read: the second pass reads no further (lines appended meanwhile
    /// were never checked).
    private var validatedBytes: Int64 = 0
    /// Why the second pass stopped early, if it did (the file changed after `validate`).
    public private(set) var failure: SpateError?
    /// The selected entries, parsed, when they are few enough to keep (filled by a `validate`
    /// that succeeded; nil: `entries()` reads the list again).
    private var kept: [ManifestEntry]?
    /// Whether `entries()` will hand out kept entries rather than read the list again.
    var keepsEntries: Bool { kept != nil }
    /// The most entries `validate` keeps for `entries()`: about 380 bytes each for a
    /// typical line (`URL DEST`), and at most `keptBytesMax` in all.
    static let keptEntriesMax = 16_384
    /// The most text (URLs, destinations, headers, mirrors) the kept entries may hold: a line
    /// may be 64 KiB and carry many `header=` lines, so the count alone does not bound memory.
    static let keptBytesMax = 8 << 20

    /// Opens `path` (`-`: standard input).
    public init(path: String, shard: ManifestShard = .all) throws(SpateError) {
        self.shard = shard
        if path == "-" {
            name = "standard input"
            fd = try Self.spool(from: STDIN_FILENO)
        } else {
            name = path
            let fd = Syscall.retryingEINTR { open(path, O_RDONLY | O_CLOEXEC) }
            guard fd >= 0 else { throw SpateError(.usage, Syscall.errorMessage("open the manifest", path: path, errno: errno)) }
            var info = stat()
            let kind = fstat(fd, &info) == 0 ? info.st_mode & S_IFMT : 0
            if kind == S_IFDIR {
                _ = close(fd)
                throw SpateError(.usage, "the manifest \(path) is a directory")
            }
            if kind == S_IFREG {
                self.fd = fd
            } else {
                // A pipe (`-i <(generate)`) or a device: read once, so copy it first.
                defer { _ = close(fd) }
                self.fd = try Self.spool(from: fd)
            }
        }
    }

    deinit { _ = close(fd) }

    /// Pass 1: checks every line; selects the shard; refuses two entries with one destination
    /// and different URLs — also against `alongside`, entries that run in the same batch (the
    /// command line's URLs). Throws `.usage` naming the line.
    public func validate(alongside: [ManifestEntry] = []) throws(SpateError) {
        seen = [:]
        repeated = []
        selectedCount = 0
        totalCount = 0
        var first: [UInt64: Int] = [:]  // only while validating: destination hash → line, for messages
        // Only while validating: the directories above the destinations so far (`a` and `a/b`
        // for `a/b/c`), so that one entry's file is never another's directory (`f` and `f/g`
        // cannot both be saved). Bounded like `first`; past it, the run reports such a clash.
        var directories = Set<UInt64>()
        for entry in alongside {
            seen[BatchPath.stableHash(entry.destination)] = BatchPath.stableHash(entry.url)
            first[BatchPath.stableHash(entry.destination)] = 0
            directories.formUnion(BatchPath.parentHashes(entry.destination))
        }
        kept = nil
        var keeping: [ManifestEntry]? = []  // becomes `kept` only when the whole list checks
        var keptBytes = 0
        let skipped = try forEachEntry(resolvingURLs: { keeping != nil }) { entry throws(SpateError) in
            totalCount += 1
            let key = BatchPath.stableHash(entry.destination)
            let url = BatchPath.stableHash(entry.url)
            if let other = seen[key] {
                guard other == url else {
                    let earlier = first[key].map { $0 == 0 ? " (a URL on the command line)" : " (line \($0))" } ?? ""
                    throw SpateError(.usage, "\(name): line \(entry.line): the destination \(entry.destination) is already taken by another URL\(earlier)")
                }
                repeated.insert(entry.line)
                return
            }
            let parents = BatchPath.parentHashes(entry.destination)
            if directories.contains(key) {
                throw SpateError(.usage, "\(name): line \(entry.line): the destination \(entry.destination) is a directory of another entry's destination")
            }
            if let file = parents.first(where: { seen[$0] != nil }) {
                let earlier = first[file].map { $0 == 0 ? " (a URL on the command line)" : " (line \($0))" } ?? ""
                throw SpateError(.usage, "\(name): line \(entry.line): the destination \(entry.destination) is inside a path another entry saves as a file\(earlier)")
            }
            if directories.count < 1_000_000 { directories.formUnion(parents) }
            seen[key] = url
            if first.count < 1_000_000 { first[key] = entry.line }
            selectedCount += 1
            if keeping != nil {
                keptBytes += 2 * entry.url.utf8.count + entry.destination.utf8.count + 256
                    + entry.headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 64 }
                    + entry.mirrors.reduce(0) { $0 + 2 * $1.string.utf8.count + 256 }
                if keeping!.count < Self.keptEntriesMax && keptBytes <= Self.keptBytesMax { keeping!.append(entry) } else { keeping = nil }
            }
        }
        kept = keeping
        totalCount += skipped
        validatedBytes = Int64(lseek(fd, 0, SEEK_CUR))
    }

    /// Pass 2: the selected entries, in order, read lazily. Call after `validate()`.
    public func entries() throws(SpateError) -> Entries {
        guard lseek(fd, 0, SEEK_SET) == 0 else { throw Syscall.fail("rewind", path: name) }
        return Entries(manifest: self)
    }

    /// The selected entries, read one at a time.
    public struct Entries: IteratorProtocol {
        fileprivate let manifest: Manifest
        private var reader: LineReader
        private var parser: ManifestParser
        /// The entries `validate` kept, if it did: the list is not read again.
        private var kept: IndexingIterator<[ManifestEntry]>?
        private var done = false

        fileprivate init(manifest: Manifest) {
            self.manifest = manifest
            reader = LineReader(fd: manifest.fd, limit: manifest.validatedBytes)
            parser = ManifestParser(shard: manifest.shard)
            kept = manifest.kept?.makeIterator()
        }

        /// The next selected entry, or nil at the end (errors were found by `validate`).
        public mutating func next() -> ManifestEntry? {
            if kept != nil { return kept!.next() }
            while !done {
                let entry: ManifestEntry?
                do {
                    if let line = try reader.next() {
                        entry = try parser.feed(line, number: reader.lineNumber)
                    } else {
                        done = true
                        entry = try parser.finish()
                    }
                } catch {
                    // The file changed since `validate`: stop, and say so (the batch fails).
                    done = true
                    manifest.failure = SpateError(.usage, "\(manifest.name) changed while the batch ran (\(error.message)); the rest of it was not read")
                    return nil
                }
                if let entry, manifest.selects(entry) { return entry }
            }
            return nil
        }
    }

    private func selects(_ entry: ManifestEntry) -> Bool {
        !repeated.contains(entry.line)
    }

    /// Calls `body` with each of the shard's entries; returns how many were outside it. URLs
    /// are parsed (`ManifestEntry.remote`) while `resolvingURLs` says so, else only checked.
    private func forEachEntry(resolvingURLs: () -> Bool,
                              _ body: (ManifestEntry) throws(SpateError) -> Void) throws(SpateError) -> Int {
        guard lseek(fd, 0, SEEK_SET) == 0 else { throw Syscall.fail("rewind", path: name) }
        var reader = LineReader(fd: fd)
        var parser = ManifestParser(shard: shard, resolvesURLs: false)
        do {
            while let line = try reader.next() {
                parser.resolvesURLs = resolvingURLs()
                if let entry = try parser.feed(line, number: reader.lineNumber) { try body(entry) }
            }
            if let entry = try parser.finish() { try body(entry) }
        } catch where error.kind == .usage && !error.message.hasPrefix(name + ":") {
            throw SpateError(.usage, "\(name): \(error.message)")
        }
        return parser.skipped
    }

    /// Copies `source` to an unlinked temporary file and returns it, open for reading.
    private static func spool(from source: Int32) throws(SpateError) -> Int32 {
        let directory = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
        var template = Array((directory + "/spate-manifest-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw Syscall.fail("create a temporary file in", path: directory) }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
        defer { buffer.deallocate() }
        var offset: Int64 = 0
        while true {
            let n = Syscall.retryingEINTR { read(source, buffer.baseAddress!, buffer.count) }
            if n < 0 { _ = close(fd); throw Syscall.fail("read", path: "standard input") }
            if n == 0 { break }
            let code = Syscall.pwriteAll(fd, UnsafeRawBufferPointer(rebasing: buffer[0..<n]), at: offset)
            guard code == 0 else {
                _ = close(fd)
                throw Syscall.fail("write a temporary file in", path: directory, errno: code)
            }
            offset += Int64(n)
        }
        return fd
    }
}
