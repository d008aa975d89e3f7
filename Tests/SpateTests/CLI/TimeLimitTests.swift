import Foundation
@testable import Spate
import SpateTestContent
import SpateTestServer
import Testing

/// `-m/--max-time`: the run stops at the limit as an interrupt stops it (partial file and
/// journal kept), and exits 3 saying so. The server is paced so the downloads would take many
/// times the limit; nothing here depends on when exactly the limit falls.
@Suite("Time limit")
struct TimeLimitTests {
    static let size: Int64 = 8 << 20

    /// Every request paced at `pace` bytes per second: the file takes `size / (pace × connections)`.
    func slowServer(pace: Int, _ body: (TestServer, GeneratedContent) async throws -> Void) async throws {
        try await withTestServer { server in
            let content = GeneratedContent(seed: 190, size: Self.size)
            server.addFile("/f.bin", TestServer.File(content: content))
            server.addFile("/g.bin", TestServer.File(content: content))
            server.setHook { request in
                var plan = server.standardPlan(for: request)
                plan.bytesPerSecond = pace
                return plan
            }
            try await body(server, content)
        }
    }

    @Test func theLimitStopsTheDownloadAndTheRerunResumes() async throws {
        try await slowServer(pace: 512 << 10) { server, content in  // 2 connections: 8 s
            let dir = try TemporaryDirectory()
            let arguments = [server.url("/f.bin"), "-o", "f.bin", "-c", "2", "--no-tuning", "-q", "--journal-commit-ms", "20",
                             "--events", "events.ndjson"]
            let stopped = try await CLIRunner.run(arguments + ["-m", "3"], in: dir.path)
            #expect(stopped.status == 3, "\(stopped.stderr)")
            #expect(stopped.stderr.contains("stopped at --max-time 3 s"), "\(stopped.stderr)")
            #expect(stopped.stderr.contains("the partial file and its journal are kept"), "\(stopped.stderr)")
            #expect(!stopped.stderr.contains("interrupted"), "\(stopped.stderr)")
            let events = try String(contentsOfFile: dir.file("events.ndjson"), encoding: .utf8).split(separator: "\n")
            let failed = try #require(events.first { $0.contains("\"event\":\"failed\"") }, "\(events.suffix(3))")
            #expect(failed.contains("\"exit_code\":3") && failed.contains("stopped at --max-time 3 s"), "\(failed)")
            let summary = try #require(events.last)
            #expect(summary.contains("\"event\":\"summary\"") && summary.contains("\"exit_code\":3")
                    && summary.contains("\"cancelled\":1"), "stopped in flight, as a batch's files: \(summary)")
            #expect(!FileManager.default.fileExists(atPath: dir.file("f.bin")))
            #expect(FileManager.default.fileExists(atPath: dir.file("f.bin.part.journal")))

            server.setHook(nil)  // full speed for the rerun
            let again = try await CLIRunner.run(arguments, in: dir.path)
            #expect(again.status == 0, "\(again.stderr)")
            #expect(compareFile(dir.file("f.bin"), with: content) == nil)
            #expect(again.stderr.contains("resumed from before"), "\(again.stderr)")
        }
    }

    @Test func theLimitStopsABatch() async throws {
        try await slowServer(pace: 32 << 10) { server, _ in  // 16 connections per file: 16 s
            let dir = try TemporaryDirectory()
            let out = try await CLIRunner.run([server.url("/f.bin"), server.url("/g.bin"), "-d", "out", "-m", "2",
                                               "--events", "events.ndjson"], in: dir.path)
            #expect(out.status == 3, "\(out.stderr)")
            #expect(out.stderr.contains("stopped at --max-time 2 s; run the same command again to resume"), "\(out.stderr)")
            let events = try String(contentsOfFile: dir.file("events.ndjson"), encoding: .utf8)
            let lines = events.split(separator: "\n")
            let summary = try #require(lines.last)
            #expect(summary.contains("\"event\":\"summary\"") && summary.contains("\"exit_code\":3"), "\(summary)")
            let failed = lines.filter { $0.contains("\"event\":\"failed\"") }
            #expect(failed.count == 2 && failed.allSatisfy { $0.contains("\"exit_code\":3") && $0.contains("stopped at --max-time 2 s") },
                    "each file in flight says why it stopped: \(failed)")
            #expect(!FileManager.default.fileExists(atPath: dir.file("out/f.bin")))
        }
    }

    @Test(arguments: ["-1", "abc", "40000000", "nan"])
    func aBadLimitIsAUsageError(value: String) async throws {
        let out = try await CLIRunner.run(["http://127.0.0.1:9/f", "-m", value, "-o", "/dev/null"])
        #expect(out.status == 2, "\(value): \(out.stderr)")
        #expect(out.stderr.split(separator: "\n").count == 1, "\(out.stderr)")
    }

    /// `-m 0` is no limit, as curl's.
    @Test func zeroIsNoLimit() async throws {
        try await withTestServer { server in
            let content = GeneratedContent(seed: 191, size: 1 << 20)
            server.addFile("/f.bin", TestServer.File(content: content))
            let dir = try TemporaryDirectory()
            let out = try await CLIRunner.run([server.url("/f.bin"), "-o", dir.file("f.bin"), "-m", "0"])
            #expect(out.status == 0, "\(out.stderr)")
            #expect(compareFile(dir.file("f.bin"), with: content) == nil)
        }
    }

    @Test func helpAndReadmeDescribeIt() throws {
        let help = try CLITests.helpText()
        #expect(help.contains("-m, --max-time <SECONDS> Stop the whole run after SECONDS"), "\(help)")
        #expect(help.contains("3 network failure (connect, TLS, timeout, stall), after retries; or --max-time reached"), "\(help)")
        let readme = try CLITests.readme()
        #expect(readme.contains("| `-m, --max-time SECONDS` |"))
    }
}
