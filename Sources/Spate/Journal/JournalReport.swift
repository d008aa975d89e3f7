/// The state of an interrupted download, read from its journal (for `spate journal show`).
public struct JournalReport: Sendable {
    public let journalPath: String
    public let partPath: String
    public let partExists: Bool
    public let journalBytes: Int64
    public let contents: JournalCodec.Contents
    /// The recorded ranges, merged where adjacent.
    public let records: [HashedRange]
    public let done: RangeSet

    public var totalBytes: Int64 { contents.header.totalSize }
    public var doneBytes: Int64 { done.count }

    /// The byte ranges still to fetch.
    public var missing: [ByteRange] {
        var set = RangeSet()
        if totalBytes > 0 { set.insert(ByteRange(0, totalBytes)) }
        for r in done.ranges { set.remove(r) }
        return set.ranges
    }

    /// Reads the journal for `path`: the output path, its `.part`, or the journal itself.
    public static func read(_ path: String) throws(SpateError) -> JournalReport {
        let journalPath: String
        if path.hasSuffix(".part.journal") {
            journalPath = path
        } else if path.hasSuffix(".part") {
            journalPath = path + ".journal"
        } else {
            journalPath = Journal.path(for: path)
        }
        let partPath = String(journalPath.dropLast(".journal".count))
        guard let contents = try Journal.load(path: journalPath) else {
            throw SpateError(.localIO, "no journal at \(journalPath)")
        }
        let list = HashedRangeList(records: contents.records)
        var info = stat()
        let bytes = stat(journalPath, &info) == 0 ? Int64(info.st_size) : 0
        return JournalReport(journalPath: journalPath, partPath: partPath, partExists: FilePaths.exists(partPath),
                             journalBytes: bytes, contents: contents, records: list.records, done: list.covered)
    }
}

import Glibc
