import Foundation
import Spate
import SpateTestContent
import SpateTestServer
import Testing

/// Issue 15's cases that only the command shows: signals, what a refusal suggests, names as
/// long as the file system allows.
@Suite("CLI hardening", .timeLimit(.minutes(5)))
struct HardeningCLITests {
    /// SIGINT, SIGTERM and SIGHUP (a closed terminal) all take the clean interrupted path:
    /// exit 130, one line, the partial file and journal kept; the same command resumes.
    @Test(arguments: [SIGINT, SIGTERM, SIGHUP])
    func signalsInterruptCleanlyAndTheRerunResumes(signal: Int32) async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let content = GeneratedContent(seed: 7001, size: 4 << 20)
            server.addFile("/f.bin", TestServer.File(content: content))
            server.setHook { request in
                var plan = server.standardPlan(for: request)
                plan.bytesPerSecond = 2 << 20
                return plan
            }
            let fifo = dir.file("events.fifo")
            #expect(mkfifo(fifo, 0o600) == 0)
            let arguments = [server.url("/f.bin"), "-o", "f.bin", "-c", "2", "--no-tuning", "-q", "--journal-commit-ms", "20"]
            let process = Process()
            process.executableURL = URL(fileURLWithPath: CLIRunner.executable)
            process.arguments = arguments + ["--events", fifo]
            process.currentDirectoryURL = URL(fileURLWithPath: dir.path)
            process.standardOutput = FileHandle.nullDevice
            _ = FileManager.default.createFile(atPath: dir.file("err.txt"), contents: nil)
            process.standardError = FileHandle(forWritingAtPath: dir.file("err.txt"))
            process.standardInput = FileHandle.nullDevice
            try CLIRunner.spawn(process)
            let fd = open(fifo, O_RDONLY)
            #expect(fd >= 0)
            // The first progress line: bytes are on their way.
            var text = ""
            var buffer = [UInt8](repeating: 0, count: 4096)
            var sent = false
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
                if n <= 0 { break }
                text += String(decoding: buffer[0..<n], as: UTF8.self)
                if !sent && text.contains("\"event\":\"progress\"") {
                    kill(process.processIdentifier, signal)
                    sent = true
                }
            }
            close(fd)
            process.waitUntilExit()
            let stderr = (try? String(contentsOfFile: dir.file("err.txt"), encoding: .utf8)) ?? ""
            #expect(sent)
            #expect(process.terminationReason == .exit && process.terminationStatus == 130, "\(process.terminationStatus): \(stderr)")
            #expect(stderr.contains("interrupted"), "\(stderr)")
            #expect(text.contains("\"exit_code\":130"), "the events end with the interruption: \(text.suffix(300))")
            #expect(FileManager.default.fileExists(atPath: dir.file("f.bin.part")))
            #expect(FileManager.default.fileExists(atPath: dir.file("f.bin.part.journal")))
            let again = try await CLIRunner.run(arguments, in: dir.path)
            #expect(again.status == 0, "\(again.stderr)")
            #expect(compareFile(dir.file("f.bin"), with: content) == nil)
            #expect(again.stderr.contains("resumed from before"), "the summary's rate is this run's: \(again.stderr)")
        }
    }

    /// A refusal that the same command would meet again does not suggest running it again.
    @Test func aJournalRefusalDoesNotSuggestARerun() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            server.addFile("/f.bin", TestServer.File(content: GeneratedContent(seed: 7002, size: 2 << 20)))
            try Data(repeating: 1, count: 1000).write(to: URL(fileURLWithPath: dir.file("f.bin.part")))
            try Data("not a journal".utf8).write(to: URL(fileURLWithPath: dir.file("f.bin.part.journal")))
            let out = try await CLIRunner.run([server.url("/f.bin"), "-o", "f.bin", "-q"], in: dir.path)
            #expect(out.status == 9, "\(out.stderr)")
            #expect(out.stderr.contains("--force"), "\(out.stderr)")
            #expect(!out.stderr.contains("run the same command again"), "\(out.stderr)")
            #expect(out.stderr.split(separator: "\n").count == 1, "one line: \(out.stderr)")
        }
    }

    /// Any name the file system takes can be saved, though `NAME.part.journal.tmp` would not
    /// fit in 255 bytes: the temporary names are shortened; a rerun after an interruption
    /// finds them.
    @Test func aNameOf255BytesIsSaved() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let content = GeneratedContent(seed: 7003, size: 3 << 20)
            server.addFile("/f.bin", TestServer.File(content: content))
            let name = String(repeating: "n", count: 251) + ".bin"
            let out = try await CLIRunner.run([server.url("/f.bin"), "-o", name, "-c", "4", "-q"], in: dir.path)
            #expect(out.status == 0, "\(out.stderr)")
            #expect(compareFile(dir.file(name), with: content) == nil)
            #expect(dir.contents == [name])
        }
    }
}
