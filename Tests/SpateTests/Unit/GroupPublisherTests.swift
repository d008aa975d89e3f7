import Foundation
@testable import Spate
import Synchronization
import Testing

/// The publisher's two ways in for callers that are not tasks (a batch's small files): bytes it
/// writes itself (`save`, within its bound), and files the caller wrote (`publish`). Either way
/// the file appears under its name, marked, only once its round's flushes are done, and the
/// completion hears of it.
@Suite("Group publisher")
struct GroupPublisherTests {
    /// Waits for a completion called on the publisher's thread.
    func completion() -> (AsyncStream<Result<Void, SpateError>>, @Sendable (Result<Void, SpateError>) -> Void) {
        let (stream, continuation) = AsyncStream.makeStream(of: Result<Void, SpateError>.self)
        return (stream, { result in continuation.yield(result); continuation.finish() })
    }

    func expectSaved(_ path: String, _ body: [UInt8], url: RemoteURL) {
        #expect(FileManager.default.contents(atPath: path).map(Array.init) == body)
        let found = SavedMark.lookup(path: path)
        #expect(found == .marked(SavedMark(size: Int64(body.count), url: url)) || found == .unsupported, "\(found)")
    }

    @Test func bytesWithinTheBoundAreWrittenByThePublisher() async throws {
        let dir = try TemporaryDirectory()
        let publisher = GroupPublisher()
        defer { publisher.stop() }
        let url = try RemoteURL("http://example.com/a")
        let body = Array("small file".utf8)
        let (done, complete) = completion()
        let taken = publisher.save(body, to: dir.file("a"), from: url, verifying: nil, mode: 0o644, completion: complete)
        #expect(taken)
        for await result in done { #expect((try? result.get()) != nil, "\(result)") }
        expectSaved(dir.file("a"), body, url: url)
    }

    @Test func beyondTheBoundTheCallerWritesAndPublishes() async throws {
        let dir = try TemporaryDirectory()
        let publisher = GroupPublisher(maxUnwrittenBytes: 4)
        defer { publisher.stop() }
        let url = try RemoteURL("http://example.com/b")
        let body = Array("more than four bytes".utf8)
        let refused: @Sendable (Result<Void, SpateError>) -> Void = { _ in Issue.record("a refused body is never written") }
        let taken = publisher.save(body, to: dir.file("b"), from: url, verifying: nil, mode: 0o644, completion: refused)
        #expect(!taken)
        #expect(!FileManager.default.fileExists(atPath: dir.file("b")))
        let file = try OutputFile.smallFile(body, for: dir.file("b"), from: url, verifying: nil, mode: 0o644)
        let (done, complete) = completion()
        publisher.publish(file, mode: 0o644, completion: complete)
        for await result in done { #expect((try? result.get()) != nil, "\(result)") }
        expectSaved(dir.file("b"), body, url: url)
    }

    @Test func bytesThatDoNotMatchTheirChecksumAreNeverWritten() async throws {
        let dir = try TemporaryDirectory()
        let publisher = GroupPublisher()
        defer { publisher.stop() }
        let body = Array("not what was promised".utf8)
        let promised = try Checksum(parsing: "sha256:" + String(repeating: "ab", count: 32))
        let (done, complete) = completion()
        _ = publisher.save(body, to: dir.file("d"), from: try RemoteURL("http://example.com/d"), verifying: promised,
                           mode: 0o644, completion: complete)
        for await result in done {
            guard case .failure(let error) = result else { Issue.record("saved bytes that do not match"); continue }
            #expect(error.kind == .checksumMismatch, "\(error)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty, "nothing written")
    }

    @Test func aNameThatIsTakenIsNeverReplaced() async throws {
        let dir = try TemporaryDirectory()
        let publisher = GroupPublisher()
        defer { publisher.stop() }
        try Data("theirs".utf8).write(to: URL(fileURLWithPath: dir.file("c")))
        let url = try RemoteURL("http://example.com/c")
        let body = Array("ours".utf8)
        let (done, complete) = completion()
        _ = publisher.save(body, to: dir.file("c"), from: url, verifying: nil, mode: 0o644, completion: complete)
        for await result in done {
            guard case .failure(let error) = result else { Issue.record("replaced a file"); continue }
            #expect(error.kind == .localIO && error.message.contains("already exists"), "\(error)")
        }
        #expect(try String(contentsOfFile: dir.file("c"), encoding: .utf8) == "theirs")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["c"], "nothing left behind")
    }
}
