import Foundation
@testable import Spate
import SpateTestContent
import SpateTestServer
import Testing

/// `spate -i FILE` and `spate URL URL...` end to end: manifests, exit codes, the summary, and
/// `--events` as a program reads it.
@Suite("CLI batches")
struct BatchCLITests {
    /// Serves `count` files of generated content at /m/N.bin; returns them.
    func serve(_ server: TestServer, count: Int, size: (Int) -> Int64) -> [GeneratedContent] {
        (0..<count).map { i in
            let content = GeneratedContent(seed: UInt64(1200 + i), size: size(i))
            server.addFile("/m/\(i).bin", TestServer.File(content: content))
            return content
        }
    }

    func write(_ text: String, to path: String) throws {
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// Every line of an NDJSON file, parsed.
    func parseEvents(at path: String) throws -> [[String: Any]] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
            guard let dict = object as? [String: Any] else { throw POSIXError(.EINVAL) }
            return dict
        }
    }

    /// A host that closes its connection after every reply makes every file a new connection:
    /// at most `ConnectGate.limitedAttempts` wait for their reply at once (a burst of
    /// connections overflows a small listen queue, and a dropped SYN costs a second). A host
    /// that keeps its connections gets the whole budget once its first reply says so.
    /// (The server counts a request until its reply is written, before it is sent.)
    @Test(arguments: [false, true])
    func newConnectionsToAHostThatClosesThemAreFew(keepsConnections: Bool) async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let contents = serve(server, count: 40, size: { Int64($0) * 100 })
            server.setHook { request in
                guard let file = server.file(at: request.path, query: request.query) else { return nil }
                var plan = TestServer.standardPlan(for: request, file: file)
                // Replies come late, so requests admitted together wait for them together.
                plan.firstByteDelay = .milliseconds(20)
                if !keepsConnections {
                    plan.setHeader("Connection", "close")
                    plan.closeAfterResponse = true
                }
                return plan
            }
            let lines = (0..<40).map { "\(server.url("/m/\($0).bin")) \($0).bin" }
            try write(lines.joined(separator: "\n") + "\n", to: dir.file("list.txt"))
            let out = try await CLIRunner.run(["-i", "list.txt", "-d", "out", "-c", "16", "--max-per-host", "16", "-q"], in: dir.path)
            #expect(out.status == 0, "stderr: \(out.stderr)")
            for (i, content) in contents.enumerated() {
                #expect(compareFile(dir.file("out/\(i).bin"), with: content) == nil)
            }
            let requests = server.requests.sorted { $0.index < $1.index }
            try #require(requests.count == 40)
            let limit = ConnectGate.limitedAttempts
            #expect(requests.prefix(limit + 1).map(\.concurrentRequestsOnHost).max() ?? 0 <= limit,
                    "until the first reply, at most \(limit) requests at a time")
            let busiest = requests.map(\.concurrentRequestsOnHost).max() ?? 0
            if keepsConnections {
                #expect(busiest > limit, "a host that keeps its connections gets the budget (\(busiest))")
            } else {
                #expect((2...limit).contains(busiest), "\(busiest) requests waited for their reply at once")
                #expect(requests.allSatisfy { $0.connectionRequestIndex == 1 }, "every file on a new connection")
            }
        }
    }

    @Test func aManifestWithEventsSavesEveryFileAndReportsEachOnce() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let contents = serve(server, count: 30, size: { $0 % 10 == 9 ? 3 << 20 : Int64($0) * 3000 })
            var lines = ["# thirty files, one missing, one with a secret header"]
            for i in 0..<30 { lines.append("\(server.url("/m/\(i).bin"))?sig=query-secret-\(i) f/\(i).bin") }
            lines.append(server.url("/missing.bin"))
            lines.append("  header=Authorization: Bearer header-secret-value")
            try write(lines.joined(separator: "\r\n") + "\r\n", to: dir.file("list.txt"))
            let out = try await CLIRunner.run(["-i", "list.txt", "-d", "out", "--events", "events.ndjson", "-c", "8",
                                         "--max-per-host", "4"], in: dir.path)
            #expect(out.status == 4, "stderr: \(out.stderr)")
            #expect(out.stderr.contains("31 files: 30 saved, 1 failed, 0 skipped"), "stderr: \(out.stderr)")
            #expect(out.stderr.contains("spate: error: out/missing.bin: "), "stderr: \(out.stderr)")
            for (i, content) in contents.enumerated() {
                #expect(compareFile(dir.file("out/f/\(i).bin"), with: content) == nil)
            }
            let text = try String(contentsOfFile: dir.file("events.ndjson"), encoding: .utf8)
            #expect(!text.contains("secret"), "a secret reached the events")
            let events = try parseEvents(at: dir.file("events.ndjson"))
            var ends: [Int: Int] = [:]
            for event in events {
                let name = event["event"] as? String
                #expect(event["time"] is Double || event["time"] is Int)
                if name == "finished" || name == "failed" { ends[event["index"] as! Int, default: 0] += 1 }
            }
            #expect(ends.count == 31)
            #expect(ends.values.allSatisfy { $0 == 1 })
            let failed = events.first { $0["event"] as? String == "failed" }
            #expect(failed?["exit_code"] as? Int == 4)
            #expect(failed?["path"] as? String == "out/missing.bin")
            let summary = events.last!
            #expect(summary["event"] as? String == "summary")
            #expect(summary["ok"] as? Int == 30)
            #expect(summary["failed"] as? Int == 1)
            #expect(summary["exit_code"] as? Int == 4)
            let started = events.filter { $0["event"] as? String == "started" }
            #expect(started.allSatisfy { $0["url"] is String && $0["size"] != nil && $0["connections"] is Int })

            // The same command again: everything saved is skipped, without a request for it.
            server.clearRequests()
            let again = try await CLIRunner.run(["-i", "list.txt", "-d", "out", "--events", "again.ndjson"], in: dir.path)
            #expect(again.status == 4)
            #expect(again.stderr.contains("31 files: 0 saved, 1 failed, 30 skipped"), "stderr: \(again.stderr)")
            #expect(server.requests.map(\.uri) == ["/missing.bin"])
            let skipped = try parseEvents(at: dir.file("again.ndjson")).filter { $0["skipped"] as? Bool == true }
            #expect(skipped.count == 30)
        }
    }

    @Test func aBadLineStopsTheBatchBeforeAnyRequest() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            _ = serve(server, count: 2, size: { _ in 100 })
            try write("\(server.url("/m/0.bin"))\n\(server.url("/m/1.bin")) ../escape.bin\n", to: dir.file("list.txt"))
            let out = try await CLIRunner.run(["-i", "list.txt", "-d", "out"], in: dir.path)
            #expect(out.status == 2)
            #expect(out.stderr.contains("spate: error: list.txt: line 2: the destination \"../escape.bin\" leaves --dir"), "stderr: \(out.stderr)")
            #expect(server.requests.isEmpty)
            #expect(dir.contents == ["list.txt"])
        }
    }

    @Test func aManifestOnStandardInput() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let contents = serve(server, count: 3, size: { Int64($0 + 1) * 1000 })
            let list = (0..<3).map { server.url("/m/\($0).bin") }.joined(separator: "\n")
            try write(list, to: dir.file("list.txt"))
            let out = try await CLIRunner.run(["-i", "-", "-d", "out"], in: dir.path, stdinPath: dir.file("list.txt"))
            #expect(out.status == 0, "stderr: \(out.stderr)")
            for (i, content) in contents.enumerated() { #expect(compareFile(dir.file("out/\(i).bin"), with: content) == nil) }
        }
    }

    /// A host that refuses every connection: the first file retries, gives up, and the files
    /// after it to that host fail on their first refusal instead of each waiting out a retry
    /// schedule; files to a host that answers are not touched. One file at a time (`-j 1`), so
    /// the counts are exact.
    @Test func filesToAHostThatIsDownFailWithoutRetryingOnceOneGaveUp() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let contents = serve(server, count: 2, size: { Int64($0 + 1) * 1000 })
            var lines: [String] = []
            for i in 0..<5 { lines.append("http://127.0.0.1:1/dead/\(i).bin dead/\(i).bin") }
            for i in 0..<2 { lines.append("\(server.url("/m/\(i).bin")) live/\(i).bin") }
            try write(lines.joined(separator: "\n") + "\n", to: dir.file("list.txt"))
            let out = try await CLIRunner.run(["-i", dir.file("list.txt"), "-d", dir.file("out"), "-j", "1", "--max-retries", "2",
                                         "--retry-max-wait", "0", "--events", dir.file("ev.ndjson"), "-q"])
            #expect(out.status == 3, "\(out.stderr)")
            let events = try parseEvents(at: dir.file("ev.ndjson"))
            let retries = events.filter { $0["event"] as? String == "retry" }
            #expect(retries.count == 2, "only the first file to the dead host retries: \(retries)")
            let failed = events.filter { $0["event"] as? String == "failed" }
            #expect(failed.count == 5)
            let fast = failed.filter { ($0["error"] as? String)?.contains("not retried: an earlier download could not connect to 127.0.0.1:1 in all its attempts") == true }
            #expect(fast.count == 4, "\(failed)")
            #expect(failed.allSatisfy { $0["exit_code"] as? Int == 3 })
            for i in 0..<2 { #expect(compareFile(dir.file("out/live/\(i).bin"), with: contents[i]) == nil) }
        }
    }

    /// A host that is up but sends nothing back (an empty reply: not a failure to connect)
    /// is never taken for down: every file gets its retries.
    @Test func aHostThatConnectsButFailsIsRetriedForEveryFile() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            server.setHook { _ in
                var plan = ResponsePlan(status: 200)
                plan.rawHead = ""
                plan.closeAfterResponse = true
                return plan
            }
            let lines = (0..<3).map { "\(server.url("/empty/\($0).bin")) empty/\($0).bin" }
            try write(lines.joined(separator: "\n") + "\n", to: dir.file("list.txt"))
            let out = try await CLIRunner.run(["-i", dir.file("list.txt"), "-d", dir.file("out"), "-j", "1", "--max-retries", "2",
                                         "--retry-max-wait", "0", "--events", dir.file("ev.ndjson"), "-q"])
            #expect(out.status == 3, "\(out.stderr)")
            let events = try parseEvents(at: dir.file("ev.ndjson"))
            #expect(events.filter { $0["event"] as? String == "retry" }.count == 6, "two retries for each of the three files")
            #expect(!out.stderr.contains("not retried"), "\(out.stderr)")
        }
    }

    @Test func severalURLsOnTheCommandLine() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let contents = serve(server, count: 2, size: { Int64($0 + 1) * 70_000 })
            let out = try await CLIRunner.run([server.url("/m/0.bin"), server.url("/m/1.bin"), "-d", "got"], in: dir.path)
            #expect(out.status == 0, "stderr: \(out.stderr)")
            #expect(compareFile(dir.file("got/0.bin"), with: contents[0]) == nil)
            #expect(compareFile(dir.file("got/1.bin"), with: contents[1]) == nil)
        }
    }

    @Test("options that do not fit the mode", arguments: [
        (["-i", "list.txt", "-o", "x"], "-o names one file"),
        (["-i", "list.txt", "--checksum", "sha256:\(String(repeating: "0", count: 64))"], "--checksum is for one file"),
        (["URL", "-d", "x"], "-d is for batches"),
        (["URL", "--shard", "0/2"], "--shard is for batches"),
        (["-i", "list.txt", "--shard", "2/2"], "invalid shard 2/2"),
        (["-i", "missing.txt"], "open the manifest missing.txt"),
        (["-i", "list.txt", "--max-per-host", "0"], "per-host connection maximum must be at least 1"),
        (["-i", "list.txt", "-j", "0"], "most files in flight must be between"),
    ] as [([String], String)])
    func modeMismatches(arguments: [String], message: String) async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            try write(server.url("/m/0.bin"), to: dir.file("list.txt"))
            let out = try await CLIRunner.run(arguments.map { $0 == "URL" ? server.url("/m/0.bin") : $0 }, in: dir.path)
            #expect(out.status == 2, "stderr: \(out.stderr)")
            #expect(out.stderr.contains(message), "stderr: \(out.stderr)")
            #expect(server.requests.isEmpty)
        }
    }

    @Test func aSingleDownloadWritesTheSameEvents() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let contents = serve(server, count: 1, size: { _ in 2 << 20 })
            let out = try await CLIRunner.run([server.url("/m/0.bin"), "-o", "one.bin", "--events", "ev.ndjson"], in: dir.path)
            #expect(out.status == 0, "stderr: \(out.stderr)")
            #expect(compareFile(dir.file("one.bin"), with: contents[0]) == nil)
            let names = try parseEvents(at: dir.file("ev.ndjson")).map { $0["event"] as! String }
            #expect(names.first == "queued")
            #expect(names.contains("started"))
            #expect(names.filter { $0 == "finished" }.count == 1)
            #expect(names.last == "summary")
        }
    }

    /// A single download that fails before it starts (its output exists) or at its first
    /// request (404) still ends its events with `failed` and `summary`, as a batch's file does.
    @Test func aSingleDownloadThatFailsEndsItsEvents() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            _ = serve(server, count: 1, size: { _ in 1000 })
            FileManager.default.createFile(atPath: dir.file("one.bin"), contents: Data("mine".utf8))
            let cases: [([String], Int32, String)] = [
                ([server.url("/m/0.bin"), "-o", "one.bin"], 6, "one.bin"),
                ([server.url("/missing.bin"), "-o", "two.bin"], 4, "two.bin"),
            ]
            for (arguments, status, name) in cases {
                try? FileManager.default.removeItem(atPath: dir.file("ev.ndjson"))
                let out = try await CLIRunner.run(arguments + ["--events", "ev.ndjson", "-q"], in: dir.path)
                #expect(out.status == status, "stderr: \(out.stderr)")
                let events = try parseEvents(at: dir.file("ev.ndjson"))
                #expect(events.first?["event"] as? String == "queued", "\(events)")
                if status == 6 { #expect(events.count == 3, "nothing started: \(events)") }
                #expect(events.filter { $0["event"] as? String == "failed" }.count == 1)
                #expect((events.first { $0["event"] as? String == "failed" }?["path"] as? String)?.hasSuffix(name) == true)
                #expect(events.last?["event"] as? String == "summary")
                #expect(events.last?["exit_code"] as? Int == Int(status))
            }
            #expect(try String(contentsOfFile: dir.file("one.bin"), encoding: .utf8) == "mine")
        }
    }

    /// A batch that cannot start (its base directory cannot be made: here a file is in the way,
    /// which stops root too) still ends its events with a summary: every file not started.
    @Test func aBatchThatCannotStartEndsItsEvents() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            FileManager.default.createFile(atPath: dir.file("blocker"), contents: Data("x".utf8))
            let out = try await CLIRunner.run([server.url("/gen/10/a"), server.url("/gen/10/b"), "-d", "blocker/out",
                                         "--events", "ev.ndjson", "-q"], in: dir.path)
            #expect(out.status == 6, "stderr: \(out.stderr)")
            let events = try parseEvents(at: dir.file("ev.ndjson"))
            #expect(events.count == 1, "\(events)")
            #expect(events.last?["event"] as? String == "summary")
            #expect(events.last?["not_started"] as? Int == 2)
            #expect(events.last?["exit_code"] as? Int == 6)
            #expect(server.requests.isEmpty)
        }
    }

    @Test func helpDocumentsTheBatchOptions() throws {
        let out = try CLIRunner.run(["--help"])
        for option in ["--input-file", "--dir", "--max-per-host", "--max-files", "--fail-fast", "--shard", "--events"] {
            #expect(out.stdout.contains(option), "\(option) missing from --help")
        }
        #expect(out.stdout.contains("the failed file that comes first in the list"))
        // What -j counts, as DownloadBatch counts it (and README says).
        let help = out.stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(help.contains("Small files already written and waiting for their flush do not count (up to 4096 more)"))
    }
}
