import Foundation
@testable import Spate
import Testing

/// A batch replaces a partial file left without a journal only when it is spate's and no
/// process holds it; anything else is refused.
@Suite("Leftover partial files")
struct LeftoverTests {
    @Test func onlyAnUnlockedPartialFileOfSpatesIsReplaced() throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("f.bin")
        // Someone else's file named like a partial one: refused.
        try Data("theirs".utf8).write(to: URL(fileURLWithPath: path + ".part"))
        #expect(throws: SpateError.self) { try OutputFile(creatingFor: path, replacing: .leftover) }
        #expect(try String(contentsOfFile: path + ".part", encoding: .utf8) == "theirs")
        try FileManager.default.removeItem(atPath: path + ".part")
        // An empty one (a run killed between creating and marking it) loses nothing: replaced.
        FileManager.default.createFile(atPath: path + ".part", contents: nil)
        try OutputFile(creatingFor: path, replacing: .leftover).discard()
        // A live download's partial file (held open, so locked): refused.
        let live = try OutputFile(creatingFor: path, replacing: .never)
        #expect {
            try OutputFile(creatingFor: path, replacing: .leftover)
        } throws: { error in
            (error as? SpateError)?.message.contains("is locked by another spate process (pid \(getpid()))") == true
        }
        // Not even with --force, and not to resume: the live file is left as it is.
        #expect(throws: SpateError.self) { try OutputFile(creatingFor: path, replacing: .always) }
        #expect(throws: SpateError.self) { try OutputFile(resumingFor: path, size: 0) }
        #expect(OutputLock.conflict(at: path + ".part")?.kind == .localIO)
        #expect(OutputLock.isSameFile(live.fd, path: path + ".part"))
        // The same file once its writer is gone (a kill): replaced.
        live.close()
        #expect(OutputLock.conflict(at: path + ".part") == nil)
        let again = try OutputFile(creatingFor: path, replacing: .leftover)
        again.discard()
    }

    /// A small file of a batch that found nothing there has no name until it is published:
    /// nothing appears beside it while it is written or after it is discarded, its mark and
    /// mode are set, and publishing never replaces a file that appeared meanwhile.
    @Test func anUnnamedFileAppearsOnlyWhenPublished() throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("f.bin")
        let mark = SavedMark(size: 5, url: try RemoteURL("http://h/f.bin"))
        // (The test directory's file system must have O_TMPFILE: tmpfs, ext4, xfs, btrfs do.)
        let file = try #require(OutputFile(unnamedFor: path, mode: 0o640, mark: mark))
        #expect(Array("hello".utf8).withUnsafeBytes { file.write($0, at: 0) } == 0)
        #expect(dir.contents.isEmpty, "no name while it is written")
        try file.publish(mode: 0o640, replaceExisting: false)
        #expect(dir.contents == ["f.bin"])
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "hello")
        #expect(SavedMark.lookup(path: path) == .marked(mark) || SavedMark.lookup(path: path) == .unsupported)
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & 0o777 == 0o640 & ~Self.umaskNow)

        // A name that appeared meanwhile is never replaced.
        let other = try #require(OutputFile(unnamedFor: path, mode: 0o644, mark: mark))
        #expect(Array("other".utf8).withUnsafeBytes { other.write($0, at: 0) } == 0)
        #expect {
            try other.publish(mode: 0o644, replaceExisting: false)
        } throws: { error in
            (error as? SpateError)?.message.contains("already exists; use --force") == true
        }
        other.discard()
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "hello")
        #expect(dir.contents == ["f.bin"], "a discarded unnamed file leaves nothing")
    }

    /// What a batch finds at a destination decides the path: nothing at all → a small file may
    /// have no name (`.fetchNew`); a leftover partial file → the partial-file path, which
    /// replaces it (`.fetch`); a journal → resume; spate's complete file → skipped; a file
    /// spate did not save → refused.
    @Test func theSkipCheckTellsNothingFromALeftover() throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("f.bin")
        let url = try RemoteURL("http://h/f.bin")
        func verdict() -> BatchSkipCheck.Verdict { BatchSkipCheck.check(path: path, url: url, checksum: nil, overwrite: false) }
        #expect(verdict() == .fetchNew)
        FileManager.default.createFile(atPath: path + ".part", contents: nil)
        #expect(verdict() == .fetch)
        FileManager.default.createFile(atPath: path + ".part.journal", contents: nil)
        #expect(verdict() == .resume)
        try FileManager.default.removeItem(atPath: path + ".part")
        #expect(verdict() == .resume, "a journal alone: the engine decides (and removes it)")
        try FileManager.default.removeItem(atPath: path + ".part.journal")
        FileManager.default.createFile(atPath: path, contents: Data("theirs".utf8))
        // (Where the file system keeps no user attributes, nothing tells spate's files from
        // others: the name is trusted, as `BatchSkipCheck` says.)
        if case .unsupported = SavedMark.lookup(path: path) { return }
        guard case .refuse = verdict() else {
            Issue.record("a file spate did not save must be refused, got \(verdict())")
            return
        }
        let fd = open(path, O_RDWR)
        SavedMark(size: 6, url: url).write(to: fd)
        close(fd)
        #expect(verdict() == .complete(bytes: 6, note: nil))
    }

    static var umaskNow: mode_t {
        let mask = umask(0o022)
        umask(mask)
        return mask
    }

    @Test func procLocksLinesNameTheHolder() {
        // Device 8:1 (0x801), inode 1234; a waiter ("->") and a POSIX lock are not holders.
        let text = """
            1: POSIX  ADVISORY  WRITE 77 08:01:1234 0 EOF
            2: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF
            2: -> FLOCK  ADVISORY  WRITE 5151 08:01:1234 0 EOF
            3: FLOCK  ADVISORY  WRITE 99 08:01:999 0 EOF
            """
        #expect(OutputLock.holder(in: text, device: 0x801, inode: 1234) == .held(4242))
        #expect(OutputLock.holder(in: text, device: 0x801, inode: 5) == .free)
        // The inode under another device number (btrfs, overlayfs show another one than stat):
        // not proof either way, so the lock itself is asked.
        #expect(OutputLock.holder(in: text, device: 0x802, inode: 1234) == .unknown)
        #expect(OutputLock.holder(in: text, device: 0x802, inode: 4321) == .free)
    }

    @Test func longNamesGetShortTemporaryNames() throws {
        let dir = try TemporaryDirectory()
        // 238 bytes: ".part.journal.tmp" still fits in 255, so the names are as always.
        let fits = dir.file(String(repeating: "a", count: 238))
        #expect(OutputFile.partPath(for: fits) == fits + ".part")
        // 255 bytes (124 two-byte characters and an extension): a prefix cut on a character
        // boundary, a hash of the whole name, and every temporary name within 255 bytes.
        let long = dir.file(String(repeating: "é", count: 124) + ".tar.gz")
        let part = OutputFile.partPath(for: long)
        let name = String(part.split(separator: "/").last!)
        #expect(name.utf8.count + ".journal.tmp".utf8.count <= 255)
        #expect(name.hasSuffix(".part") && name.hasPrefix("éé") && name.contains("~"))
        #expect(!name.contains("\u{FFFD}"))
        #expect(OutputFile.partPath(for: long) == part)
        #expect(OutputFile.partPath(for: long + "x") != part)
        // Created, journaled and published under its own name.
        let file = try OutputFile(creatingFor: long, replacing: .never)
        try file.publish(mode: 0o644, replaceExisting: false)
        #expect(FileManager.default.fileExists(atPath: long))
        #expect(!FileManager.default.fileExists(atPath: part))
    }
}
