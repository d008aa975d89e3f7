/// Entry points for the fuzz targets (`Sources/SpateFuzz`, run by `scripts/fuzz`): each feeds
/// untrusted bytes to one parser and checks what the parser promises about its result. A trap
/// anywhere (an overflow, an index out of range, a failed check here) is a finding.
///
/// `@_spi(Fuzzing)`: not API. The parsers are internal; this keeps them so while letting a
/// separate executable reach them in any build configuration (`@testable` needs a debug build).
@_spi(Fuzzing) public enum FuzzTargets {
    /// The target names `scripts/fuzz` accepts.
    public static let names = [
        "journal", "content-range", "content-disposition", "retry-after", "response-head", "header-line",
        "url", "size", "byte-range", "checksum", "manifest", "batch-path", "server-digest", "error-body",
    ]

    /// Runs target `name` on `data`. Returns false for an unknown name.
    public static func run(_ name: String, _ data: UnsafeRawBufferPointer) -> Bool {
        let text = String(decoding: data, as: UTF8.self)
        switch name {
        case "journal": journal(data)
        case "content-range": contentRange(text)
        case "content-disposition": contentDisposition(text)
        case "retry-after": _ = RetryAfter.parse(text, now: 1_796_000_000)
        case "response-head": responseHead(data)
        case "header-line": _ = try? HTTPHeader(parsing: text)
        case "url": url(text)
        case "size": _ = ByteSize.parse(text)
        case "byte-range": byteRange(text)
        case "checksum": _ = try? Checksum(parsing: text)
        case "manifest": manifest(text)
        case "batch-path": batchPath(text)
        case "server-digest": serverDigest(text)
        case "error-body": errorBody(data)
        default: return false
        }
        return true
    }

    private static func check(_ condition: Bool, _ what: @autoclosure () -> String) {
        if !condition { fatalError("fuzz check failed: \(what())") }
    }

    /// A decoded journal's records stay inside its size, and a header re-encodes to itself.
    private static func journal(_ data: UnsafeRawBufferPointer) {
        if let (header, _) = try? JournalCodec.decodeHeader(data) {
            check(header.totalSize >= 0, "negative journal size")
            let again = JournalCodec.encodeHeader(header)
            let decoded = again.withUnsafeBytes { try? JournalCodec.decodeHeader($0) }
            check(decoded?.0 == header, "journal header does not round-trip")
        }
        guard let contents = try? JournalCodec.decode(data) else { return }
        for record in contents.records {
            check(record.range.start >= 0 && record.range.end <= contents.header.totalSize, "record \(record.range) outside the file")
        }
    }

    /// An error reply's body becomes one line of printable text, at most the limit (and its
    /// ellipsis) long, whatever the bytes; an HTML page's title comes from inside the page.
    private static func errorBody(_ data: UnsafeRawBufferPointer) {
        var body = ErrorBody()
        // In pieces, as libcurl hands a body over.
        var offset = 0
        while offset < data.count {
            let n = min(data.count - offset, 1 + Int(data[offset] % 97))
            guard body.append(UnsafeRawBufferPointer(rebasing: data[offset..<(offset + n)])) else { break }
            offset += n
        }
        let line = body.summary(limit: 80)
        check(line.count <= 81, "summary longer than its limit")
        check(!line.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }, "control character in the summary")
        // (Invalid UTF-8 decodes to U+FFFD, three bytes for one: count scalars, not bytes.)
        if let title = body.htmlTitle { check(title.unicodeScalars.count <= body.bytes.count, "title longer than the body") }
    }

    private static func contentRange(_ text: String) {
        guard let parsed = ContentRange(parsing: text) else { return }
        if let range = parsed.range {
            check(range.start >= 0 && range.start < range.end, "empty or negative range")
            check(range.end <= ByteSize.largest + 1, "range beyond the size limit")
            if let length = parsed.completeLength { check(range.end <= length, "range beyond the complete length") }
        }
        if let length = parsed.completeLength { check(length >= 0 && length <= ByteSize.largest, "bad complete length") }
    }

    /// A name from a server never leaves the directory or hides.
    private static func contentDisposition(_ text: String) {
        let name = FilePaths.sanitizedFileName(ContentDisposition.fileName(from: text) ?? text)
        check(!name.isEmpty && name.utf8.count <= 255, "bad name length")
        check(!name.contains("/") && !name.contains("\\") && !name.hasPrefix("."), "unsafe name \(name)")
        check(!name.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }, "control character in a name")
        let part = OutputFile.partPath(for: "d/" + name)
        check(part.utf8.count - 2 + ".journal.tmp".utf8.count <= 255, "temporary name too long")
    }

    /// Header lines in any order and shape: the builder never exceeds its bounds.
    private static func responseHead(_ data: UnsafeRawBufferPointer) {
        var builder = ResponseHeadBuilder()
        var start = 0
        for i in 0..<data.count where data[i] == 0x0A || i == data.count - 1 {
            let line = UnsafeRawBufferPointer(rebasing: data[start...i])
            start = i + 1
            switch builder.feed(line) {
            case .tooLarge, .malformed: return
            case .headComplete, .more: break
            }
            check(builder.fields.count <= ResponseHeadBuilder.maxFields, "too many fields kept")
        }
    }

    private static func url(_ text: String) {
        let parts = text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
        guard let url = try? RemoteURL(String(parts[0])) else { return }
        check(url.scheme == "http" || url.scheme == "https", "scheme \(url.scheme) accepted")
        if parts.count == 2, let next = try? url.resolving(String(parts[1])) {
            check(next.scheme == "http" || next.scheme == "https", "redirect to \(next.scheme) accepted")
        }
    }

    /// `START-END` against a size taken from the text's length: never traps, stays inside.
    private static func byteRange(_ text: String) {
        guard let range = try? PartialByteRange(parsing: text) else { return }
        for size in [Int64(1), Int64(text.utf8.count), ByteSize.largest] {
            guard let selected = try? range.clamped(toSize: size) else { continue }
            check(selected.start >= 0 && selected.end <= size && selected.start < selected.end, "range outside the file")
        }
    }

    /// Every entry a manifest yields has a safe destination.
    private static func manifest(_ text: String) {
        var parser = ManifestParser()
        var number = 0
        func checkEntry(_ entry: ManifestEntry?) {
            guard let entry else { return }
            check(!entry.destination.hasPrefix("/") && !entry.destination.split(separator: "/").contains(".."),
                  "destination leaves --dir: \(entry.destination)")
        }
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            number += 1
            do { checkEntry(try parser.feed(line, number: number)) } catch { return }
        }
        do { checkEntry(try parser.finish()) } catch {}
    }

    /// "Name: value" lines as a reply head: every digest found has its algorithm's length.
    private static func serverDigest(_ text: String) {
        var fields: [(name: String, value: String)] = []
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields.append((line[..<colon].lowercased(), line[line.index(after: colon)...].trimmingSpaces()))
        }
        for whole in [false, true] {
            for digest in ServerDigests.parse(ResponseHead(status: 200, fields: fields), wholeBody: whole).digests {
                check(digest.checksum.digest.count == digest.checksum.algorithm.byteCount, "digest of the wrong length")
            }
        }
    }

    private static func batchPath(_ text: String) {
        guard let normal = try? BatchPath.normalize(text) else { return }
        check(!normal.hasPrefix("/") && !normal.split(separator: "/").contains(".."), "normalised path leaves --dir: \(normal)")
        check((try? BatchPath.normalize(normal)) == normal, "normalising is not idempotent: \(normal)")
    }
}
