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
            (error as? SpateError)?.message.contains("being written by another spate process") == true
        }
        #expect(throws: SpateError.self) { try OutputFile(resumingFor: path, size: 0) }
        // The same file once its writer is gone (a kill): replaced.
        live.close()
        let again = try OutputFile(creatingFor: path, replacing: .leftover)
        again.discard()
    }
}
