import Foundation
@testable import Spate
import Testing

/// A batch's directories: created on demand, and a destination is in a new directory only
/// when this run created that directory just now (so nothing of an earlier run can be there,
/// and the batch skips its look for leftovers).
@Suite("Batch directories")
struct BatchDirectoryTests {
    @Test func aDestinationIsInANewDirectoryOnlyWhenThisRunCreatedIt() throws {
        let dir = try TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir.file("old/sub"), withIntermediateDirectories: true)
        let directory = try BatchDirectory(base: dir.path)
        func prepared(_ destination: String) throws -> BatchDirectory.Prepared { try directory.prepare(destination) }

        #expect(try prepared("top.bin") == .init(path: dir.file("top.bin"), inNewDirectory: false), "the base was there")
        #expect(try prepared("a/b/1.bin") == .init(path: dir.file("a/b/1.bin"), inNewDirectory: true))
        #expect(try prepared("a/b/2.bin").inNewDirectory, "the same directory, still only this run's")
        #expect(try !prepared("old/sub/1.bin").inNewDirectory, "an earlier run's directory")
        #expect(try prepared("old/sub/new/1.bin").inNewDirectory, "created below an old one")
        #expect(try !prepared("a/b/3.bin").inNewDirectory, "seen again later: looked into as usual")
        #expect(try !prepared("a/1.bin").inNewDirectory, "a/ was created, but files of a/b came first")
        #expect(FileManager.default.fileExists(atPath: dir.file("old/sub/new")))
    }

    /// A second run over the same list finds every directory: every destination is looked
    /// into (a rerun must see what the first left).
    @Test func aRerunLooksIntoEveryDirectory() throws {
        let dir = try TemporaryDirectory()
        let first = try BatchDirectory(base: dir.path)
        #expect(try first.prepare("x/1.bin").inNewDirectory)
        let second = try BatchDirectory(base: dir.path)
        #expect(try !second.prepare("x/1.bin").inNewDirectory)
        #expect(try !second.prepare("x/2.bin").inNewDirectory)
    }
}
