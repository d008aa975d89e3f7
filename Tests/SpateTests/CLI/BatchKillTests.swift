import Foundation
import Spate
import SpateTestContent
import SpateTestServer
import Testing

/// kill -9 at seeded points of a 200-file batch, and the same command again each time: every
/// file ends exact, and a file that was complete when the process died is never fetched again
/// (the server counts the bytes it sends per path).
///
/// The kill points are counted in `--events` lines read from a FIFO, so each kill lands at a
/// known place in the batch's own progress (no timing guesses).
@Suite("CLI batch kills", .timeLimit(.minutes(5)))
struct BatchKillTests {
    static let files = 200
    static let kills = 20

    @Test func killNineAtSeededPointsThenRerun() async throws {
        var rng = SeededGenerator(label: "batch kills")
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            var contents: [GeneratedContent] = []
            var lines: [String] = []
            for i in 0..<Self.files {
                let size = i % 10 == 7 ? Int64.random(in: (1 << 20)...(3 << 20), using: &rng) : Int64.random(in: 0...(64 << 10), using: &rng)
                let content = GeneratedContent(seed: UInt64(5000 + i), size: size)
                contents.append(content)
                server.addFile("/k/\(i).bin", TestServer.File(content: content))
                lines.append("\(server.url("/k/\(i).bin")) d\(i % 5)/\(i).bin")
            }
            // Paced so that kills land inside files, not only between them.
            server.setHook { request in
                var plan = server.standardPlan(for: request)
                plan.bytesPerSecond = 24 << 20
                return plan
            }
            try lines.joined(separator: "\n").write(toFile: dir.file("list.txt"), atomically: true, encoding: .utf8)
            let fifo = dir.file("events.fifo")
            #expect(mkfifo(fifo, 0o600) == 0)
            let arguments = ["-i", "list.txt", "-d", "out", "-c", "16", "--max-per-host", "16", "-q", "--events", fifo,
                             "--journal-commit-ms", "20"]
            var killed = 0
            var completedRuns = 0
            while killed < Self.kills {
                let point = Int.random(in: 1...500, using: &rng)
                let complete = completeFiles(in: dir)
                let before = server.servedBytesByPath()
                let (status, reachedPoint) = try runAndKill(arguments, in: dir.path, fifo: fifo, afterLines: point)
                let after = server.servedBytesByPath()
                for i in complete {
                    #expect(after["/k/\(i).bin"] == before["/k/\(i).bin"], "kill \(killed): file \(i) was complete and was fetched again")
                }
                if reachedPoint {
                    killed += 1
                    #expect(status == SIGKILL)
                } else {
                    // The batch ended before the kill point: every file must be exact; start over.
                    #expect(status == 0, "stderr: \((try? String(contentsOfFile: dir.file("stderr.txt"), encoding: .utf8)) ?? "")")
                    expectAllExact(contents, in: dir)
                    completedRuns += 1
                    try FileManager.default.removeItem(atPath: dir.file("out"))
                }
            }
            let complete = completeFiles(in: dir)
            let before = server.servedBytesByPath()
            let last = try await CLIRunner.run(arguments.filter { $0 != fifo && $0 != "--events" }, in: dir.path)
            #expect(last.status == 0, "stderr: \(last.stderr)")
            let after = server.servedBytesByPath()
            for i in complete { #expect(after["/k/\(i).bin"] == before["/k/\(i).bin"], "final run: file \(i) fetched again") }
            expectAllExact(contents, in: dir)
            print("[batch kills] \(killed) kills, \(completedRuns) runs finished before their kill point")
        }
    }

    /// The indexes of files saved under their final name.
    func completeFiles(in dir: TemporaryDirectory) -> [Int] {
        (0..<Self.files).filter { FileManager.default.fileExists(atPath: dir.file("out/d\($0 % 5)/\($0).bin")) }
    }

    func expectAllExact(_ contents: [GeneratedContent], in dir: TemporaryDirectory) {
        for (i, content) in contents.enumerated() {
            #expect(compareFile(dir.file("out/d\(i % 5)/\(i).bin"), with: content) == nil, "file \(i)")
        }
        let leftovers = (FileManager.default.enumerator(atPath: dir.file("out"))?.allObjects as? [String] ?? [])
            .filter { $0.hasSuffix(".part") || $0.hasSuffix(".journal") }
        #expect(leftovers.isEmpty, "left behind: \(leftovers)")
    }

    /// Runs spate and sends SIGKILL once `afterLines` event lines have been read from `fifo`.
    /// Returns the termination status (the signal when killed) and whether the kill happened.
    func runAndKill(_ arguments: [String], in directory: String, fifo: String, afterLines: Int) throws -> (Int32, Bool) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLIRunner.executable)
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.standardOutput = FileHandle.nullDevice
        _ = FileManager.default.createFile(atPath: directory + "/stderr.txt", contents: nil)
        process.standardError = FileHandle(forWritingAtPath: directory + "/stderr.txt")
        process.standardInput = FileHandle.nullDevice
        try CLIRunner.spawn(process)
        let fd = open(fifo, O_RDONLY)  // returns once spate opens its end
        #expect(fd >= 0)
        defer { close(fd) }
        var lines = 0
        var buffer = [UInt8](repeating: 0, count: 4096)
        var killed = false
        while !killed {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n <= 0 { break }
            lines += buffer[0..<n].filter { $0 == UInt8(ascii: "\n") }.count
            if lines >= afterLines {
                kill(process.processIdentifier, SIGKILL)
                killed = true
            }
        }
        process.waitUntilExit()
        return (process.terminationStatus, killed && process.terminationReason == .uncaughtSignal)
    }
}
