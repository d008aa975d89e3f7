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
