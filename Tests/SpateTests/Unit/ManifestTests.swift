import Foundation
@testable import Spate
import Testing

/// Manifest lines (pget's and aria2's formats), destination rules, shards, and the two passes.
@Suite("Manifests")
struct ManifestTests {
    /// Parses `text` as a whole manifest; returns the entries or throws the first error.
    func parse(_ text: String) throws(SpateError) -> [ManifestEntry] {
        var parser = ManifestParser()
        var entries: [ManifestEntry] = []
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if let entry = try parser.feed(line, number: i + 1) { entries.append(entry) }
        }
        if let entry = try parser.finish() { entries.append(entry) }
        return entries
    }

    func error(_ text: String) -> String? {
        do {
            _ = try parse(text)
            return nil
        } catch {
            #expect(error.kind == .usage)
            return error.message
        }
    }

    @Test func pgetLinesWithAndWithoutADestination() throws {
        let entries = try parse("""
            # a comment
            https://example.com/data/a%20b.bin   sub/dir/a.bin

            http://example.com:8080/x/y.tar.gz\r
            """)
        #expect(entries == [
            ManifestEntry(line: 2, url: "https://example.com/data/a%20b.bin", destination: "sub/dir/a.bin"),
            ManifestEntry(line: 4, url: "http://example.com:8080/x/y.tar.gz", destination: "y.tar.gz"),
        ])
    }

    @Test func defaultNamesAreTheURLsSanitizedLastSegment() throws {
        let entries = try parse("https://example.com/files/..%2F..%2Fetc%2Fpasswd\nhttps://example.com/dir/%2Ehidden")
        #expect(entries.map(\.destination) == ["passwd", "hidden"])
    }

    @Test func aria2InputFileOptions() throws {
        let hex = String(repeating: "ab", count: 32)
        let entries = try parse("""
            https://example.com/a.bin
              out=renamed.bin
              dir=models/v1
              checksum=sha-256=\(hex)
              header=X-Token: abc
            https://example.com/b.bin
            \tdir=other
            """)
        #expect(entries.count == 2)
        #expect(entries[0].destination == "models/v1/renamed.bin")
        #expect(entries[0].checksum == (try Checksum(parsing: "sha256:\(hex)")))
        #expect(entries[0].headers == [try HTTPHeader(parsing: "X-Token: abc")])
        #expect(entries[1].destination == "other/b.bin")
        #expect(entries[1].line == 6)
    }

    /// aria2's mirrors: the URLs after the first on a line (TAB-separated), then maybe a
    /// destination.
    @Test func mirrorsFollowTheURLOnItsLine() throws {
        let entries = try parse("https://e.com/a.bin\thttps://m1.org/a.bin\thttps://m2.org/x/a.bin\nhttps://e.com/b.bin\thttps://m1.org/b.bin\tb/out.bin\n")
        #expect(entries.count == 2)
        #expect(entries[0].mirrors.map(\.string) == ["https://m1.org/a.bin", "https://m2.org/x/a.bin"] && entries[0].destination == "a.bin")
        #expect(entries[1].mirrors.map(\.string) == ["https://m1.org/b.bin"] && entries[1].destination == "b/out.bin")
        let many = "https://e.com/a" + String(repeating: "\thttps://m.org/a", count: ManifestParser.maximumMirrors + 1)
        #expect(throws: SpateError.self) { try parse(many) }
    }

    @Test(arguments: [
        ("https://e.com/a b c", "line 1: expected \"URL [MIRROR...] [DEST]\", found 2 fields after the URLs"),
        ("https://e.com/a b https://m.com/a", "line 1: a URL after the destination"),
        ("ftp://e.com/a", "line 1: "),
        ("  out=x", "line 1: an indented option line must follow a URL line"),
        ("https://e.com/a\n  split=4", "line 2: unsupported option \"split\""),
        ("https://e.com/a\n  out", "line 2: expected an indented option as key=value"),
        ("https://e.com/a\n  header:Authorization: Basic c2VjcmV0=", "line 2: expected an indented option as key=value (out="),
        ("https://e.com/a x.part.journal.tmp", "line 1: the destination \"x.part.journal.tmp\" ends in .part"),
        ("https://e.com/a d/" + String(repeating: "n", count: 256), "line 1: a component of the destination"),
        ("https://e.com/a\n  checksum=sha-256=abc", "line 2: "),
        ("https://e.com/a\n  header=Range: bytes=0-1", "line 2: "),
        ("https://e.com/a /etc/passwd", "line 1: the destination \"/etc/passwd\" is an absolute path"),
        ("https://e.com/a ../x", "line 1: the destination \"../x\" leaves --dir"),
        ("https://e.com/a a/../../x", "line 1: the destination \"a/../../x\" leaves --dir"),
        ("https://e.com/a\n  dir=..\n  out=x", "line 1: the destination \"../x\" leaves --dir"),
        ("https://e.com/a x.bin.part", "line 1: the destination \"x.bin.part\" ends in .part"),
        ("https://e.com/a .", "line 1: the destination \".\" names no file"),
    ] as [(String, String)])
    func badLinesNameTheirLine(text: String, expected: String) {
        let message = error(text)
        #expect(message?.hasPrefix(expected) == true, "\(String(describing: message)) should start with \(expected)")
    }

    @Test func destinationsAreNormalised() throws {
        #expect(try BatchPath.normalize("a//b/./c.bin") == "a/b/c.bin")
        #expect(try BatchPath.normalize("./x") == "x")
        #expect(throws: SpateError.self) { try BatchPath.normalize("a/\u{1}b") }
        #expect(throws: SpateError.self) { try BatchPath.normalize(String(repeating: "n", count: 256)) }
    }

    /// FNV-1a 64: the published test vectors. A shard is this hash modulo N, so it must never
    /// change between versions (machines of one job may run different builds).
    @Test func theShardHashIsFNV1a64() {
        #expect(BatchPath.stableHash("") == 0xcbf2_9ce4_8422_2325)
        #expect(BatchPath.stableHash("a") == 0xaf63_dc4c_8601_ec8c)
        #expect(BatchPath.stableHash("foobar") == 0x8594_4171_f739_67e8)
    }

    @Test func shardsPartitionTheList() throws {
        let names = (0..<1000).map { "dir\($0 % 7)/file-\($0).bin" }
        var owners = [String: Int]()
        for k in 0..<5 {
            let shard = try ManifestShard(index: k, count: 5)
            for name in names where shard.contains(destination: name) {
                #expect(owners[name] == nil, "\(name) in two shards")
                owners[name] = k
            }
        }
        #expect(owners.count == names.count)
        // Each shard gets a fair share (a hash, not a bug, decides: 200 ± 60 of 1000).
        for k in 0..<5 { #expect((140...260).contains(owners.values.filter { $0 == k }.count)) }
        #expect(throws: SpateError.self) { try ManifestShard(parsing: "5/5") }
        #expect(throws: SpateError.self) { try ManifestShard(parsing: "-1/5") }
        #expect(throws: SpateError.self) { try ManifestShard(parsing: "1") }
        #expect(try ManifestShard(parsing: "3/8") == (try ManifestShard(index: 3, count: 8)))
    }

    func manifest(_ text: String, shard: ManifestShard = .all) throws -> Manifest {
        let dir = try TemporaryDirectory()
        let path = dir.file("m.txt")
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return try Manifest(path: path, shard: shard)  // the descriptor stays open after the directory goes
    }

    @Test func theSecondPassYieldsTheSelectedEntriesOnce() throws {
        let m = try manifest("""
            https://e.com/a a.bin
            https://e.com/b b.bin
            https://e.com/a a.bin
            https://e.com/c
            """)
        try m.validate()
        #expect(m.totalCount == 4)
        #expect(m.selectedCount == 3)
        var entries = try m.entries()
        var got: [String] = []
        while let entry = entries.next() { got.append(entry.destination) }
        #expect(got == ["a.bin", "b.bin", "c"])
    }

    @Test func oneDestinationForTwoURLsIsAnError() throws {
        let m = try manifest("https://e.com/a x.bin\n# comment\nhttps://e.com/b x.bin\n")
        #expect {
            try m.validate()
        } throws: { error in
            (error as? SpateError)?.message.contains("line 3: the destination x.bin is already taken by another URL (line 1)") == true
        }
    }

    @Test func anErrorOnTheLastLineStopsTheBatchBeforeItStarts() throws {
        let lines = (0..<5000).map { "https://e.com/f\($0)" } + ["not a url"]
        let m = try manifest(lines.joined(separator: "\n"))
        #expect {
            try m.validate()
        } throws: { error in
            (error as? SpateError)?.message.contains("line 5001:") == true
        }
    }

    @Test func aShardSelectsByDestination() throws {
        let text = (0..<300).map { "https://e.com/f\($0).bin d/f\($0).bin" }.joined(separator: "\n")
        var seen = Set<String>()
        for k in 0..<3 {
            let m = try manifest(text, shard: try ManifestShard(index: k, count: 3))
            try m.validate()
            var entries = try m.entries()
            var count = 0
            while let entry = entries.next() {
                #expect(seen.insert(entry.destination).inserted)
                count += 1
            }
            #expect(count == m.selectedCount)
        }
        #expect(seen.count == 300)
    }

    @Test func linesLongerThanTheLimitAreRefused() throws {
        let m = try manifest("https://e.com/" + String(repeating: "a", count: LineReader.maxLineBytes + 10))
        #expect(throws: SpateError.self) { try m.validate() }
    }

    /// In a shard, every line's syntax is checked, but only the shard's own URLs go through
    /// libcurl's parser (the shard that owns a line reports what only that parser finds).
    @Test func aShardChecksEveryLineAndParsesItsOwnURLs() throws {
        let destination = "own.bin"
        let owner = Int(BatchPath.stableHash(destination) % 4)
        let other = (owner + 1) % 4
        let text = "https://example.com:99999999/x \(destination)\n"
        var ownParser = ManifestParser(shard: try ManifestShard(index: owner, count: 4))
        #expect(throws: SpateError.self) {
            _ = try ownParser.feed(Substring(text.dropLast()), number: 1)
            _ = try ownParser.finish()
        }
        var otherParser = ManifestParser(shard: try ManifestShard(index: other, count: 4))
        _ = try otherParser.feed(Substring(text.dropLast()), number: 1)
        #expect(try otherParser.finish() == nil)
        #expect(otherParser.skipped == 1)
        var syntax = ManifestParser(shard: try ManifestShard(index: other, count: 4))
        #expect(throws: SpateError.self) { _ = try syntax.feed("ftp://example.com/x \(destination)", number: 1) }
    }
}

extension ManifestTests {
    /// Lines appended after the check are never read (they were not checked), and a command
    /// line URL and a manifest line may not share a destination with different URLs.
    @Test func theSecondPassReadsOnlyWhatWasChecked() throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("m.txt")
        try "https://e.com/a a.bin\nhttps://e.com/b b.bin\n".write(toFile: path, atomically: false, encoding: .utf8)
        let m = try Manifest(path: path)
        try m.validate()
        let handle = try #require(FileHandle(forWritingAtPath: path))
        handle.seekToEndOfFile()
        handle.write(Data("https://e.com/c c.bin\nnot a url\n".utf8))
        try handle.close()
        var entries = try m.entries()
        var got: [String] = []
        while let entry = entries.next() { got.append(entry.destination) }
        #expect(got == ["a.bin", "b.bin"])
        #expect(m.failure == nil)
    }

    @Test func commandLineURLsShareTheDuplicateCheck() throws {
        let m = try manifest("https://e.com/a x.bin\nhttps://e.com/b y.bin\n")
        #expect {
            try m.validate(alongside: [ManifestEntry(line: 0, url: "https://other.com/x", destination: "x.bin")])
        } throws: { error in
            (error as? SpateError)?.message.contains("line 1: the destination x.bin is already taken by another URL (a URL on the command line)") == true
        }
        let same = try manifest("https://e.com/a x.bin\nhttps://e.com/b y.bin\n")
        try same.validate(alongside: [ManifestEntry(line: 0, url: "https://e.com/a", destination: "x.bin")])
        var entries = try same.entries()
        #expect(entries.next()?.destination == "y.bin")
        #expect(entries.next() == nil)
    }
}

extension ManifestTests {
    /// Every entry of a checked list, in order.
    func entries(of text: String) throws -> [ManifestEntry] {
        let m = try manifest(text)
        try m.validate()
        var entries = try m.entries()
        var all: [ManifestEntry] = []
        while let entry = entries.next() { all.append(entry) }
        return all
    }

    @Test func aDestinationEndingInASlashIsADirectory() throws {
        let all = try entries(of: "https://e.com/x/a.bin sub/\nhttps://e.com/b.bin\n  out=o/\n  dir=d\n")
        #expect(all.map(\.destination) == ["sub/a.bin", "d/o/b.bin"])
    }

    /// One entry's file is never another's directory, in either order.
    @Test(arguments: ["https://e.com/a f\nhttps://e.com/b f/g\n", "https://e.com/b d/f/g\nhttps://e.com/a d/f\n"])
    func aFileIsNeverAnotherEntrysDirectory(text: String) throws {
        #expect {
            try self.manifest(text).validate()
        } throws: { error in
            (error as? SpateError)?.message.contains("line 2: the destination") == true
        }
        try manifest("https://e.com/a d/f\nhttps://e.com/b d/g\nhttps://e.com/c d2/f\n").validate()  // siblings are fine
    }

    @Test func twoDestinationsForOneFileAreAnError() throws {
        for text in ["https://e.com/a a.bin\n  out=b.bin\n", "https://e.com/a\n  out=a.bin\n  out=b.bin\n"] {
            #expect {
                try self.manifest(text).validate()
            } throws: { error in
                (error as? SpateError)?.message.contains("a second destination for the file of line 1") == true
            }
        }
    }

    /// The kept entries are bounded by their text too, not only by their count.
    @Test func aListWithLongLinesIsNotKept() throws {
        let header = "  header=X-Long: " + String(repeating: "v", count: 60_000)
        let text = (0..<200).map { "https://e.com/f\($0) f\($0).bin\n\(header)" }.joined(separator: "\n")
        let m = try manifest(text)
        try m.validate()
        #expect(!m.keepsEntries)
        var entries = try m.entries()
        var count = 0
        while entries.next() != nil { count += 1 }
        #expect(count == 200)
    }

    @Test func aByteOrderMarkBeforeTheFirstLineIsSkipped() throws {
        let all = try entries(of: "\u{FEFF}https://e.com/a a.bin\r\nhttps://e.com/b\r\n")
        #expect(all.first?.url == "https://e.com/a")
        #expect(all.last?.destination == "b")
        // Only at the very start: elsewhere it is an error, as any stray character would be.
        #expect(throws: SpateError.self) { try self.manifest("https://e.com/a a.bin\n\u{FEFF}https://e.com/b\n").validate() }
    }

    /// A short list is kept by the first pass (URLs parsed once) and a long one is read again:
    /// both hand out the same entries, with their URLs parsed.
    @Test(arguments: [3, Manifest.keptEntriesMax + 3])
    func keptAndRereadListsYieldTheSameEntries(count: Int) throws {
        let lines = (0..<count).map { i in
            i % 3 == 0 ? "https://e.com/f\(i)\n  out=o\(i).bin" : i % 3 == 1 ? "https://e.com/f\(i) d/f\(i).bin" : "https://e.com/f\(i).bin"
        }
        // A repeated line (same URL and destination) comes out once.
        let text = (lines + [lines[1]]).joined(separator: "\r\n")
        let m = try manifest(text)
        try m.validate()
        #expect(m.selectedCount == count)
        #expect(m.keepsEntries == (count <= Manifest.keptEntriesMax))
        var entries = try m.entries()
        var parser = ManifestParser()  // the reference: the lines parsed one by one
        var expected: [ManifestEntry] = []
        // Split on the bytes ("\r\n" is one Character, which a split on "\n" would not see).
        for (n, line) in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            if let entry = try parser.feed(Substring(decoding: line, as: UTF8.self), number: n + 1) { expected.append(entry) }
        }
        if let last = try parser.finish() { expected.append(last) }
        var i = 0
        while let entry = entries.next() {
            #expect(entry == expected[i])
            #expect(entry.remote != nil && entry.remote == expected[i].remote)
            i += 1
        }
        #expect(i == count)
        #expect(m.failure == nil)
    }
}
