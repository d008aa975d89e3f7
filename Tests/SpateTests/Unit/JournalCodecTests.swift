@testable import Spate
import Testing

@Suite("Journal codec")
struct JournalCodecTests {
    static let header = JournalCodec.Header(totalSize: 10_000_000, fingerprint: [UInt8](repeating: 7, count: 32),
                                            validator: .strongETag("\"v1\""))
    static let first = [HashedRange(range: ByteRange(0, 1000), crc: 1), HashedRange(range: ByteRange(5000, 9000), crc: 2)]
    static let second = [HashedRange(range: ByteRange(1000, 5000), crc: 3), HashedRange(range: ByteRange(9_999_000, 10_000_000), crc: 4)]

    static func journal() -> (bytes: [UInt8], firstEnd: Int) {
        var bytes = JournalCodec.encodeHeader(header)
        bytes += JournalCodec.encodeFrame(.snapshot, first)
        let firstEnd = bytes.count
        bytes += JournalCodec.encodeFrame(.append, second)
        return (bytes, firstEnd)
    }

    static func decode(_ bytes: [UInt8]) throws -> JournalCodec.Contents {
        try bytes.withUnsafeBytes { raw in try JournalCodec.decode(raw) }
    }

    @Test func roundTrip() throws {
        let contents = try Self.decode(Self.journal().bytes)
        #expect(contents.header == Self.header)
        #expect(contents.records == Self.first + Self.second)
        #expect(contents.frames == 2 && contents.droppedBytes == 0)
    }

    @Test func aSnapshotReplacesEarlierRecords() throws {
        var bytes = Self.journal().bytes
        bytes += JournalCodec.encodeFrame(.snapshot, [HashedRange(range: ByteRange(0, 10), crc: 9)])
        #expect(try Self.decode(bytes).records == [HashedRange(range: ByteRange(0, 10), crc: 9)])
    }

    @Test func validatorsOfEveryKindRoundTrip() throws {
        for validator in [JournalCodec.Validator.none, .strongETag("\"é\""), .lastModified("Sat, 21 Nov 2026 10:00:00 GMT")] {
            var h = Self.header
            h.validator = validator
            let bytes = JournalCodec.encodeHeader(h)
            let (decoded, length) = try bytes.withUnsafeBytes { try JournalCodec.decodeHeader($0) }
            #expect(decoded == h && length == bytes.count)
        }
    }

    /// A crash can cut the last frame anywhere: every cut keeps the intact frames.
    @Test func truncationAtEveryByteOfTheLastFrame() throws {
        let (bytes, firstEnd) = Self.journal()
        for cut in firstEnd..<bytes.count {
            let contents = try Self.decode(Array(bytes[0..<cut]))
            #expect(contents.records == Self.first, "cut at \(cut)")
            #expect(contents.frames == 1 && contents.droppedBytes == cut - firstEnd)
        }
    }

    @Test func aTruncatedHeaderIsAnError() {
        let bytes = JournalCodec.encodeHeader(Self.header)
        for cut in 0..<bytes.count {
            #expect(throws: JournalCodec.DecodeError.self) { try Self.decode(Array(bytes[0..<cut])) }
        }
    }

    /// Random bit flips anywhere: decoding throws (header) or returns only records that were
    /// written (frames carry a content checksum); it never crashes or invents a record.
    @Test func bitFlipsNeverInventRecords() throws {
        var rng = SeededGenerator(label: "journal bit flips")
        let (bytes, _) = Self.journal()
        let valid = Set(Self.first + Self.second)
        for _ in 0..<3000 {
            var damaged = bytes
            for _ in 0...Int.random(in: 0...2, using: &rng) {
                let bit = Int.random(in: 0..<(damaged.count * 8), using: &rng)
                damaged[bit / 8] ^= UInt8(1 << (bit % 8))
            }
            if let contents = try? Self.decode(damaged) {
                #expect(Set(contents.records).isSubset(of: valid))
            }
        }
    }

    /// Fuzz: arbitrary bytes, and valid headers followed by arbitrary bytes, give a value or an
    /// error, never a crash or an out-of-bounds record.
    @Test func arbitraryBytesNeverCrash() {
        var rng = SeededGenerator(label: "journal fuzz")
        let header = JournalCodec.encodeHeader(Self.header)
        let frame = JournalCodec.encodeFrame(.append, Self.first)
        for i in 0..<4000 {
            var bytes: [UInt8]
            switch i % 3 {
            case 0: bytes = (0..<Int.random(in: 0...600, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            case 1: bytes = header + (0..<Int.random(in: 0...600, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            default:
                // A valid frame with random bytes spliced in.
                bytes = header + frame
                let at = Int.random(in: header.count..<bytes.count, using: &rng)
                bytes.insert(contentsOf: (0..<Int.random(in: 1...8, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }, at: at)
            }
            if let contents = try? Self.decode(bytes) {
                for r in contents.records { #expect(r.range.end <= Self.header.totalSize && !r.range.isEmpty) }
            }
        }
    }

    @Test func batchesOutOfBoundsAreRejected() {
        var batch: [UInt8] = [1]
        batch.appendVarint(1)
        batch.appendVarint(9_999_999)  // start
        batch.appendVarint(2)          // length past the end of a 10,000,000-byte file
        batch.appendLittleEndian(UInt32(0))
        #expect(JournalCodec.parseBatch(batch, totalSize: 10_000_000) == nil)
        var overflow: [UInt8] = [1, 1]
        overflow += [UInt8](repeating: 0xFF, count: 10) + [0x7F]  // a varint longer than 64 bits
        #expect(JournalCodec.parseBatch(overflow, totalSize: 10_000_000) == nil)
        #expect(JournalCodec.parseBatch([1, 0xFF, 0xFF, 0xFF, 0x7F], totalSize: 100) == nil, "a count larger than the batch")
    }
}

@Suite("Range hashes")
struct RangeHashTests {
    /// The journal's CRC comes from ISA-L; journals written before (zlib) and resume checks
    /// depend on the values being zlib's exactly, for every length and split.
    @Test func isalCRCEqualsZlibCRC() {
        #expect(Array("123456789".utf8).withUnsafeBytes { CRC32.checksum($0) } == 0xCBF4_3926, "the CRC-32 check value")
        var rng = SeededGenerator(label: "isal vs zlib")
        let lengths = [0, 1, 15, 16, 17, 63, 64, 65, 255, 256, 257, 4095, 4096, 4097, 65_536, 65_537, 200_003]
        for length in lengths + (0..<40).map({ _ in Int.random(in: 1...100_000, using: &rng) }) {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let split = length == 0 ? 0 : Int.random(in: 0...length, using: &rng)
            bytes.withUnsafeBytes { raw in
                let reference = CRC32.zlibChecksum(raw)
                #expect(CRC32.checksum(raw) == reference, "length \(length)")
                let head = CRC32.checksum(UnsafeRawBufferPointer(rebasing: raw[..<split]))
                #expect(CRC32.checksum(UnsafeRawBufferPointer(rebasing: raw[split...]), continuing: head) == reference,
                        "length \(length) continued at \(split)")
            }
        }
    }

    @Test func combinedCRCsEqualTheCRCOfTheConcatenation() {
        var rng = SeededGenerator(label: "crc combine")
        for _ in 0..<50 {
            let a = (0..<Int.random(in: 1...3000, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let b = (0..<Int.random(in: 1...3000, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let ra = HashedRange(range: ByteRange(0, Int64(a.count)), crc: a.withUnsafeBytes { CRC32.checksum($0) })
            let rb = HashedRange(range: ByteRange(Int64(a.count), Int64(a.count + b.count)), crc: b.withUnsafeBytes { CRC32.checksum($0) })
            let whole = (a + b).withUnsafeBytes { CRC32.checksum($0) }
            #expect(ra.appending(rb).crc == whole)
        }
    }

    @Test func listsMergeAdjacentAndKeepOverlapsApart() {
        let a = HashedRange(range: ByteRange(0, 10), crc: 1)
        let b = HashedRange(range: ByteRange(10, 20), crc: 2)
        let c = HashedRange(range: ByteRange(15, 30), crc: 3)
        let list = HashedRangeList(records: [c, b, a])
        #expect(list.records.count == 2)
        #expect(list.records[0].range == ByteRange(0, 20))
        #expect(list.covered.ranges == [ByteRange(0, 30)])
        let progress = HashedRangeList(records: [HashedRange(range: ByteRange(40, 45), crc: 5), HashedRange(range: ByteRange(40, 50), crc: 6)])
        #expect(progress.records == [HashedRange(range: ByteRange(40, 50), crc: 6)], "the same request's longer progress wins")
    }
}

@Suite("Resume planner")
struct ResumePlannerTests {
    static let url = try! RemoteURL("http://h/file.bin")
    static let header = JournalCodec.Header(totalSize: 100, fingerprint: JournalCodec.fingerprint(of: url), validator: .strongETag("\"a\""))
    static let records = [HashedRange(range: ByteRange(0, 50), crc: 1)]

    func decide(part: Bool, journal: JournalCodec.Header?, error: SpateError? = nil, expected: JournalCodec.Header? = header,
                overwrite: Bool = false, restart: Bool = false) -> ResumePlanner.Decision {
        let contents = journal.map { JournalCodec.Contents(header: $0, records: Self.records, frames: 1, droppedBytes: 0, dropReason: nil) }
        return ResumePlanner.decide(found: .init(partExists: part, journal: contents, journalError: error), expected: expected,
                                    partPath: "f.part", journalPath: "f.part.journal", overwrite: overwrite, restartOnChange: restart)
    }

    @Test func decisions() throws {
        #expect(decide(part: false, journal: nil) == .fresh)
        #expect(decide(part: false, journal: Self.header) == .fresh, "a journal without data is stale")
        #expect(decide(part: true, journal: Self.header) == .resume(Self.records))
        #expect(decide(part: true, journal: Self.header, overwrite: true) == .fresh)
        guard case .refuse(let noJournal) = decide(part: true, journal: nil) else { Issue.record("must refuse"); return }
        #expect(noJournal.kind == .localIO)
        guard case .refuse(let corrupt) = decide(part: true, journal: nil, error: SpateError(.journal, "bad")) else { Issue.record("must refuse"); return }
        #expect(corrupt.kind == .journal && corrupt.message.contains("--force"))

        var other = Self.header
        other.fingerprint = JournalCodec.fingerprint(of: try RemoteURL("http://h/other.bin"))
        guard case .refuse(let foreign) = decide(part: true, journal: other) else { Issue.record("must refuse"); return }
        #expect(foreign.kind == .journal && foreign.message.contains("another URL"))

        var changed = Self.header
        changed.validator = .strongETag("\"b\"")
        guard case .refuse(let remote) = decide(part: true, journal: changed) else { Issue.record("must refuse"); return }
        #expect(remote.kind == .remoteChanged)
        guard case .restart = decide(part: true, journal: changed, restart: true) else { Issue.record("must restart"); return }
        var resized = Self.header
        resized.totalSize = 99
        guard case .refuse(let size) = decide(part: true, journal: resized) else { Issue.record("must refuse"); return }
        #expect(size.message.contains("size was 99"))
        guard case .restart = decide(part: true, journal: Self.header, expected: nil) else { Issue.record("no ranges now: restart"); return }
    }

    @Test func noValidatorMeansNoJournal() throws {
        let remote = RemoteFile(url: Self.url, size: 100, acceptsRanges: true, strongETag: nil, lastModified: nil)
        #expect(ResumePlanner.header(url: Self.url, remote: remote, size: 100) == nil)
        let dated = RemoteFile(url: Self.url, size: 100, acceptsRanges: true, strongETag: nil, lastModified: "d")
        #expect(ResumePlanner.header(url: Self.url, remote: dated, size: 100)?.validator == .lastModified("d"))
    }

    @Test func fingerprintsIgnoreQueryAndUserinfo() throws {
        let signed = try RemoteURL("http://u:p@h/file.bin?X-Amz-Signature=abc")
        #expect(JournalCodec.fingerprint(of: signed) == JournalCodec.fingerprint(of: Self.url))
        #expect(JournalCodec.fingerprint(of: try RemoteURL("http://h:81/file.bin")) != JournalCodec.fingerprint(of: Self.url))
    }

    /// Journals and saved marks written by earlier builds hold this digest: its input text is
    /// fixed (pinned here against the SHA-256 of the literal text, with and without a range).
    @Test func theFingerprintsTextNeverChanges() throws {
        func sha256(_ text: String) -> [UInt8] { Array(text.utf8).withUnsafeBytes { Digest.hash(.sha256, $0) } }
        let url = try RemoteURL("HTTPS://Example.COM:8443/a/b%20c.bin?q=1")
        #expect(JournalCodec.fingerprint(of: url) == sha256("spate-journal-v1\nhttps://example.com:8443/a/b%20c.bin"))
        let range = try PartialByteRange(parsing: "10-19")
        #expect(JournalCodec.fingerprint(of: Self.url, range: range) == sha256("spate-journal-v1\nhttp://h:80/file.bin\nrange=\(range)"))
    }
}
