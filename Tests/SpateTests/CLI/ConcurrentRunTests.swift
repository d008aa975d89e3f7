import Foundation
import Spate
import SpateTestContent
import SpateTestServer
import Testing

/// Two `spate` processes on one output (issue 15): run A downloads; run B starts on the same
/// `-o` at a seeded point of A's progress (counted in A's `--events` lines, plus a seeded
/// delay), with or without `--force`, for the same URL or another. Whatever the timing: the
/// final file is exactly the content of a run that said it saved it, never a mix and never the
/// loser's; a loser fails with exit 6 and the lock message, unless it started after the
/// winner had finished (then it meets the finished file like any later run).
@Suite("CLI concurrent runs", .timeLimit(.minutes(5)))
struct ConcurrentRunTests {
    static let trials = 50

    @Test func twoRunsOnOneOutputNeverLeaveAWrongFile() async throws {
        var rng = SeededGenerator(label: "concurrent runs")
        try await withTestServer { server in
            let a = GeneratedContent(seed: 6001, size: 1 << 20)
            let b = GeneratedContent(seed: 6002, size: 1 << 20)
            server.addFile("/a.bin", TestServer.File(content: a))
            server.addFile("/b.bin", TestServer.File(content: b))
            // Paced, so that a run lasts long enough for the other to meet it.
            server.setHook { request in
                var plan = server.standardPlan(for: request)
                plan.bytesPerSecond = 3 << 20
                return plan
            }
            var overlapped = 0
            for trial in 0..<Self.trials {
                let dir = try TemporaryDirectory()
                let force = Bool.random(using: &rng)
                let sameURL = Bool.random(using: &rng)
                let afterLines = Int.random(in: 0...2, using: &rng)
                let delay = UInt32.random(in: 0...100_000, using: &rng)
                let what = "trial \(trial): force \(force), same URL \(sameURL), after \(afterLines) lines + \(delay) µs"
                let common = ["-o", "out.bin", "-c", "2", "--no-tuning", "-q", "--journal-commit-ms", "20"]
                let fifo = dir.file("events.fifo")
                #expect(mkfifo(fifo, 0o600) == 0)
                let runA = Process()
                runA.executableURL = URL(fileURLWithPath: CLIRunner.executable)
                runA.arguments = [server.url("/a.bin")] + common + ["--events", fifo]
                runA.currentDirectoryURL = URL(fileURLWithPath: dir.path)
                runA.standardOutput = FileHandle.nullDevice
                _ = FileManager.default.createFile(atPath: dir.file("a.err"), contents: nil)
                runA.standardError = FileHandle(forWritingAtPath: dir.file("a.err"))
                runA.standardInput = FileHandle.nullDevice
                try CLIRunner.spawn(runA)
                let fd = open(fifo, O_RDONLY)  // returns once A opens its end
                #expect(fd >= 0)
                var lines = 0
                var buffer = [UInt8](repeating: 0, count: 4096)
                while lines < afterLines {
                    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
                    if n <= 0 { break }
                    lines += buffer[0..<n].filter { $0 == UInt8(ascii: "\n") }.count
                }
                // Not synchronisation: a seeded spread of B's start within A's run, so the trials
                // meet A at different stages. Every assertion below holds for any timing.
                usleep(delay)
                let runB = try await CLIRunner.run([server.url(sameURL ? "/a.bin" : "/b.bin")] + common + (force ? ["--force"] : []),
                                             in: dir.path)
                while buffer.withUnsafeMutableBytes({ read(fd, $0.baseAddress!, $0.count) }) > 0 {}
                close(fd)
                runA.waitUntilExit()
                let statusA = runA.terminationStatus
                let stderrA = (try? String(contentsOfFile: dir.file("a.err"), encoding: .utf8)) ?? ""
                let contentB = sameURL ? a : b
                let lockMessage = "is locked by another spate process"

                #expect(statusA == 0 || runB.status == 0, "\(what): nobody saved the file\nA: \(stderrA)\nB: \(runB.stderr)")
                switch (statusA, runB.status) {
                case (0, 0):
                    // Only in turn: B started after A had finished (with --force it replaced A's
                    // file). Without --force B would have refused A's finished file.
                    #expect(force, "\(what): both saved without --force\nB: \(runB.stderr)")
                    #expect(compareFile(dir.file("out.bin"), with: contentB) == nil, "\(what)")
                case (0, _):
                    #expect(compareFile(dir.file("out.bin"), with: a) == nil, "\(what): A saved, the file is not A's")
                    #expect(runB.status == 6, "\(what): B \(runB.status): \(runB.stderr)")
                    if runB.stderr.contains(lockMessage) {
                        overlapped += 1
                    } else {
                        // B met A's finished file.
                        #expect(!force && runB.stderr.contains("already exists; use --force"), "\(what): B: \(runB.stderr)")
                    }
                default:
                    #expect(compareFile(dir.file("out.bin"), with: contentB) == nil, "\(what): B saved, the file is not B's")
                    #expect(statusA == 6 && stderrA.contains(lockMessage), "\(what): A \(statusA): \(stderrA)")
                    overlapped += 1
                }
                let leftovers = dir.contents.filter { $0.hasPrefix("out.bin.") }
                #expect(leftovers.isEmpty, "\(what): left behind \(leftovers)")
            }
            print("[concurrent runs] \(overlapped) of \(Self.trials) trials overlapped (the loser met the lock)")
            #expect(overlapped >= Self.trials / 5, "too few trials overlapped to test the lock: \(overlapped)")
        }
    }
}
