/// Turns manifest lines into entries, one line at a time (no I/O; `Manifest` feeds it).
///
/// Two formats, mixed freely:
/// - pget's `URL [DEST]`: a URL, optionally whitespace and a destination; aria2's mirrors of
///   one file, TAB-separated URLs on its line, may come before the destination;
/// - aria2's input file (the common subset): a URL line followed by indented `key=value` lines,
///   `out=`, `dir=`, `checksum=ALG=HEX` (`sha-256`, `sha-1`, `sha-512`, `md5`) and `header=`.
///
/// `#` comments, blank lines and CRLF line ends are allowed; anything else is an error that
/// names the line. An entry is complete when the next URL line (or the end) arrives, because
/// aria2's options follow their URL.
///
/// With a `shard`, only the shard's entries come out; the others are counted in `skipped`.
/// Their lines are checked for syntax (fields, options, destination, an http(s) URL), but
/// their URLs are not parsed by libcurl: the machine whose shard they are does that. Why: a
/// shard of a list of a million lines must start within a second or two.
public struct ManifestParser: Sendable {
    /// The entry being read (its option lines may still follow).
    private var pending: Pending?
    /// The entries to return; the others are skipped.
    public let shard: ManifestShard
    /// Entries outside `shard`, so far.
    public private(set) var skipped = 0

    private struct Pending: Sendable {
        var line: Int
        var url: String
        var parsed: RemoteURL?
        /// Checked by `RemoteURL.validate` (a first pass keeps no parsed URL).
        var checked = false
        var destination: String?
        var directory: String?
        var checksum: Checksum?
        var headers: [HTTPHeader] = []
        var mirrors: [String] = []
    }

    /// Mirrors on one line, at most (a line's memory stays bounded).
    static let maximumMirrors = 16

    /// Whether entries carry their parsed URLs (`ManifestEntry.remote`); without, URLs are only
    /// checked (`RemoteURL.validate`), as a first pass that keeps no entry needs. A first pass
    /// that keeps the entries of a short list turns it off once the list is too long to keep.
    var resolvesURLs: Bool

    public init(shard: ManifestShard = .all) {
        self.init(shard: shard, resolvesURLs: true)
    }

    init(shard: ManifestShard, resolvesURLs: Bool) {
        self.shard = shard
        self.resolvesURLs = resolvesURLs
    }

    /// Reads line `number` (1-based, without its `\n`). Returns the entry that this line
    /// completes, if any.
    public mutating func feed(_ raw: Substring, number: Int) throws(SpateError) -> ManifestEntry? {
        var raw = raw
        raw.makeContiguousUTF8()
        let result: Result<ManifestEntry?, SpateError> = raw.utf8.withContiguousStorageIfAvailable { bytes in
            do throws(SpateError) {
                return .success(try feed(bytes, number: number))
            } catch {
                return .failure(error)
            }
        }!
        return try result.get()
    }

    /// The same, on the line's bytes: offsets, not `String.Index` (slicing a string at a
    /// UTF-8 offset checks for grapheme boundaries, which dominated a million-line profile).
    private mutating func feed(_ bytes: UnsafeBufferPointer<UInt8>, number: Int) throws(SpateError) -> ManifestEntry? {
        func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 }
        func text(_ range: Range<Int>) -> String { String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self) }
        var end = bytes.count
        if end > 0, bytes[end - 1] == 0x0D { end -= 1 }
        // A byte order mark (some Windows editors write one) is not part of the first line.
        let start = number == 1 && end >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF ? 3 : 0
        var first = start
        while first < end, isSpace(bytes[first]) { first += 1 }
        if first == end || bytes[first] == UInt8(ascii: "#") { return nil }
        if first > start {
            try option(Substring(text(first..<end)), number: number)
            return nil
        }
        var fields: [Range<Int>] = []
        var i = start
        while i < end {
            while i < end, isSpace(bytes[i]) { i += 1 }
            guard i < end else { break }
            let start = i
            while i < end, !isSpace(bytes[i]) { i += 1 }
            fields.append(start..<i)
        }
        // aria2 puts mirrors of one file on one line, TAB-separated: URLs first, then maybe
        // a destination (pget's field).
        let urlCount = fields.prefix { Self.containsScheme(UnsafeBufferPointer(rebasing: bytes[$0])) }.count
        if fields.dropFirst(max(1, urlCount)).contains(where: { Self.containsScheme(UnsafeBufferPointer(rebasing: bytes[$0])) }) {
            throw Self.error(number, "a URL after the destination: put a file's mirrors right after its URL, then the destination")
        }
        guard fields.count <= max(1, urlCount) + 1 else {
            throw Self.error(number, "expected \"URL [MIRROR...] [DEST]\", found \(fields.count - max(1, urlCount)) fields after the URLs")
        }
        guard urlCount <= 1 + Self.maximumMirrors else {
            throw Self.error(number, "more than \(Self.maximumMirrors) mirrors for one file")
        }
        let url = text(fields[0])
        let hasDestination = fields.count > max(1, urlCount)
        let mirrors = fields.dropFirst().prefix(max(0, urlCount - 1)).map { text($0) }
        var parsed: RemoteURL?
        var checked = false
        if shard.count == 1 || !Self.looksLikeHTTP(UnsafeBufferPointer(rebasing: bytes[fields[0]])) {
            if resolvesURLs || !hasDestination {
                parsed = try Self.parse(url, line: number)
            } else {
                try Self.check(url, line: number)
                checked = true
            }
        }
        let completed = try finishPending()
        pending = Pending(line: number, url: url, parsed: parsed, checked: checked,
                          destination: hasDestination ? text(fields[fields.count - 1]) : nil, mirrors: mirrors)
        return completed
    }

    /// Whether `bytes` contain `://`.
    private static func containsScheme(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard bytes.count >= 3 else { return false }
        for i in 0...(bytes.count - 3) where bytes[i] == UInt8(ascii: ":") && bytes[i + 1] == UInt8(ascii: "/") && bytes[i + 2] == UInt8(ascii: "/") {
            return true
        }
        return false
    }

    /// The end of the input: returns the last entry, if one is pending.
    public mutating func finish() throws(SpateError) -> ManifestEntry? {
        try finishPending()
    }

    private mutating func option(_ text: Substring, number: Int) throws(SpateError) {
        guard pending != nil else { throw Self.error(number, "an indented option line must follow a URL line") }
        // Never echo the line: an option line may hold a secret (header=Authorization: ...).
        guard let equals = text.firstIndex(of: "=") else {
            throw Self.error(number, "expected an indented option as key=value (out=, dir=, checksum= or header=)")
        }
        let key = text[..<equals].trimmingSpaces.lowercased()
        guard key.count <= 32, key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            throw Self.error(number, "expected an indented option as key=value (out=, dir=, checksum= or header=)")
        }
        let value = String(text[text.index(after: equals)...].trimmingSpaces)
        switch key {
        case "out":
            // Two names for one file (DEST on the URL line and out=, or two out=): which one
            // was meant cannot be guessed.
            guard pending!.destination == nil else {
                throw Self.error(number, "a second destination for the file of line \(pending!.line) (out= and DEST, or two out=)")
            }
            pending!.destination = value
        case "dir":
            pending!.directory = value
        case "checksum":
            pending!.checksum = try Self.atLine(number) { () throws(SpateError) in try Self.checksum(value) }
        case "header":
            pending!.headers.append(try Self.atLine(number) { () throws(SpateError) in try HTTPHeader(parsing: value) })
        default:
            throw Self.error(number, "unsupported option \"\(key)\" (spate reads out=, dir=, checksum= and header=)")
        }
    }

    private mutating func finishPending() throws(SpateError) -> ManifestEntry? {
        guard var entry = pending else { return nil }
        pending = nil
        var name: String
        if let destination = entry.destination, !destination.hasSuffix("/") {
            name = destination
        } else {
            // No DEST, or a directory (`DEST/`, as `-o DIR/`): the URL's own name.
            let parsed: RemoteURL
            if let known = entry.parsed { parsed = known } else { parsed = try Self.parse(entry.url, line: entry.line) }
            entry.parsed = parsed
            name = (entry.destination ?? "") + FilePaths.defaultFileName(for: parsed)
        }
        if let directory = entry.directory, !directory.isEmpty { name = directory + "/" + name }
        let path = try Self.atLine(entry.line) { () throws(SpateError) in try BatchPath.normalize(name) }
        guard shard.contains(destination: path) else {
            skipped += 1
            return nil
        }
        var result = ManifestEntry(line: entry.line, url: entry.url, destination: path, checksum: entry.checksum, headers: entry.headers)
        guard resolvesURLs else {
            if entry.parsed == nil && !entry.checked { try Self.check(entry.url, line: entry.line) }
            for mirror in entry.mirrors { try Self.check(mirror, line: entry.line) }
            return result
        }
        let remote: RemoteURL
        if let parsed = entry.parsed { remote = parsed } else { remote = try Self.parse(entry.url, line: entry.line) }
        result.remote = remote
        for mirror in entry.mirrors { result.mirrors.append(try Self.parse(mirror, line: entry.line)) }
        return result
    }

    private static func check(_ url: String, line: Int) throws(SpateError) {
        try atLine(line) { () throws(SpateError) in try RemoteURL.validate(url) }
    }

    private static func parse(_ url: String, line: Int) throws(SpateError) -> RemoteURL {
        try atLine(line) { () throws(SpateError) in try RemoteURL(url) }
    }

    /// `body`'s result; its error names line `line`.
    private static func atLine<T>(_ line: Int, _ body: () throws(SpateError) -> T) throws(SpateError) -> T {
        do {
            return try body()
        } catch {
            throw Self.error(line, error.message)
        }
    }

    /// `http://X` or `https://X` (any case): the check of a line another shard parses fully.
    static func looksLikeHTTP(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        for prefix in ["http://", "https://"] where bytes.count > prefix.utf8.count {
            if zip(bytes, prefix.utf8).allSatisfy({ $0 | 0x20 == $1 }) { return true }
        }
        return false
    }

    /// aria2's `checksum=sha-256=HEX`, or spate's own `sha256:HEX`.
    static func checksum(_ value: String) throws(SpateError) -> Checksum {
        if let equals = value.firstIndex(of: "=") {
            let name = value[..<equals].lowercased().replacingDashes
            return try Checksum(parsing: name + ":" + value[value.index(after: equals)...])
        }
        return try Checksum(parsing: value)
    }

    static func error(_ line: Int, _ message: String) -> SpateError {
        SpateError(.usage, "line \(line): \(message)")
    }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var s = self.drop(while: { $0 == " " || $0 == "\t" })
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return s
    }
}

extension String {
    fileprivate var replacingDashes: String { String(self.filter { $0 != "-" }) }
}
