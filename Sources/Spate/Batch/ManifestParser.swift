/// Turns manifest lines into entries, one line at a time (no I/O; `Manifest` feeds it).
///
/// Two formats, mixed freely:
/// - pget's `URL [DEST]`: a URL, optionally whitespace and a destination;
/// - aria2's input file (the common subset): a URL line followed by indented `key=value` lines,
///   `out=`, `dir=`, `checksum=ALG=HEX` (`sha-256`, `sha-1`, `sha-512`, `md5`) and `header=`.
///
/// `#` comments, blank lines and CRLF line ends are allowed; anything else is an error that
/// names the line. An entry is complete when the next URL line (or the end) arrives, because
/// aria2's options follow their URL.
public struct ManifestParser: Sendable {
    /// The entry being read (its option lines may still follow).
    private var pending: Pending?

    private struct Pending: Sendable {
        var line: Int
        var url: String
        var destination: String?
        var directory: String?
        var checksum: Checksum?
        var headers: [HTTPHeader] = []
    }

    public init() {}

    /// Reads line `number` (1-based, without its `\n`). Returns the entry that this line
    /// completes, if any.
    public mutating func feed(_ raw: Substring, number: Int) throws(SpateError) -> ManifestEntry? {
        var text = raw
        if text.hasSuffix("\r") { text = text.dropLast() }
        let trimmed = text.drop(while: { $0 == " " || $0 == "\t" })
        if trimmed.isEmpty || trimmed.hasPrefix("#") { return nil }
        if trimmed.startIndex != text.startIndex {
            try option(trimmed, number: number)
            return nil
        }
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\t" })
        // aria2 puts mirrors of one file on one line, TAB-separated: not a destination.
        if fields.dropFirst().contains(where: { $0.contains("://") }) {
            throw Self.error(number, "several URLs on one line (mirrors) are not supported; use one URL, then optionally a destination")
        }
        guard fields.count <= 2 else {
            throw Self.error(number, "expected \"URL [DEST]\", found \(fields.count) fields")
        }
        let url = String(fields[0])
        do {
            _ = try RemoteURL(url)
        } catch {
            throw Self.error(number, error.message)
        }
        let completed = try finishPending()
        pending = Pending(line: number, url: url, destination: fields.count == 2 ? String(fields[1]) : nil)
        return completed
    }

    /// The end of the input: returns the last entry, if one is pending.
    public mutating func finish() throws(SpateError) -> ManifestEntry? {
        try finishPending()
    }

    private mutating func option(_ text: Substring, number: Int) throws(SpateError) {
        guard pending != nil else { throw Self.error(number, "an indented option line must follow a URL line") }
        guard let equals = text.firstIndex(of: "=") else {
            throw Self.error(number, "expected an option as key=value, found \(BatchPath.quoted(String(text.prefix(40))))")
        }
        let key = text[..<equals].trimmingSpaces.lowercased()
        let value = String(text[text.index(after: equals)...].trimmingSpaces)
        switch key {
        case "out":
            pending!.destination = value
        case "dir":
            pending!.directory = value
        case "checksum":
            do {
                pending!.checksum = try Self.checksum(value)
            } catch {
                throw Self.error(number, error.message)
            }
        case "header":
            do {
                pending!.headers.append(try HTTPHeader(parsing: value))
            } catch {
                throw Self.error(number, error.message)
            }
        default:
            throw Self.error(number, "unsupported option \"\(key)\" (spate reads out=, dir=, checksum= and header=)")
        }
    }

    private mutating func finishPending() throws(SpateError) -> ManifestEntry? {
        guard let entry = pending else { return nil }
        pending = nil
        var name: String
        if let destination = entry.destination {
            name = destination
        } else {
            // The URL was checked when its line was read.
            name = FilePaths.defaultFileName(for: try! RemoteURL(entry.url))
        }
        if let directory = entry.directory, !directory.isEmpty { name = directory + "/" + name }
        let path: String
        do {
            path = try BatchPath.normalize(name)
        } catch {
            throw Self.error(entry.line, error.message)
        }
        return ManifestEntry(line: entry.line, url: entry.url, destination: path, checksum: entry.checksum, headers: entry.headers)
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
