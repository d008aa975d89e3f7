import Foundation
import Spate
import SpateTestContent
import SpateTestServer
import Testing

/// `-o -`, FIFOs, character devices and `/dev/null` from the command line (issue 13): written
/// in order, never replaced, with or without `--force`.
@Suite("CLI streams", .timeLimit(.minutes(5)))
struct StreamCLITests {
    /// Runs spate with its standard output captured as bytes.
    func runCapturingStdout(_ arguments: [String], in directory: String) throws -> (status: Int32, stdout: Data, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLIRunner.executable)
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try CLIRunner.spawn(process)
        nonisolated(unsafe) var errData = Data()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { errData = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return (process.terminationStatus, data, String(decoding: errData, as: UTF8.self))
    }

    func expectSame(_ data: Data, _ content: GeneratedContent, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(Int64(data.count) == content.size, "\(data.count) bytes", sourceLocation: sourceLocation)
        let bad = data.withUnsafeBytes { content.firstMismatch($0, at: 0) }
        #expect(bad == nil, "first wrong byte at \(bad ?? -1)", sourceLocation: sourceLocation)
    }

    @Test func dashWritesTheFileToStandardOutputInOrder() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let content = GeneratedContent(seed: 9001, size: 20 << 20)
            server.addFile("/f.bin", TestServer.File(content: content))
            let checksum = sha256Checksum(of: content)
            let out = try runCapturingStdout([server.url("/f.bin"), "-o", "-", "-c", "8", "--window", "2M",
                                              "--checksum", "sha256:\(checksum.hex)"], in: dir.path)
            #expect(out.status == 0, "\(out.stderr)")
            expectSame(out.stdout, content)
            #expect(out.stderr.contains("wrote to standard output"), "\(out.stderr)")
            #expect(dir.contents.isEmpty, "nothing on disk: \(dir.contents)")
        }
    }

    /// `-o /dev/stdout` is standard output, also when it is redirected to a file (stat says
    /// "regular file" then): no .part beside it in /dev, nothing renamed over the link.
    @Test func devStdoutRedirectedToAFileIsStandardOutput() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let content = GeneratedContent(seed: 9005, size: 5 << 20)
            server.addFile("/f.bin", TestServer.File(content: content))
            let script = "'\(CLIRunner.executable)' '\(server.url("/f.bin"))' -o /dev/stdout -c 4 -q > out.bin 2>err.txt"
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/bash")
            process.arguments = ["-c", script]
            process.currentDirectoryURL = URL(fileURLWithPath: dir.path)
            try CLIRunner.spawn(process)
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "\((try? String(contentsOfFile: dir.file("err.txt"), encoding: .utf8)) ?? "")")
            #expect(compareFile(dir.file("out.bin"), with: content) == nil)
            #expect(!FileManager.default.fileExists(atPath: "/dev/stdout.part"))
        }
    }

    /// A reader that stops early: exit 141 and one line, promptly (no stack of errors).
    @Test func aClosedPipeEndsWith141AndOneLine() async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            server.addFile("/f.bin", TestServer.File(content: GeneratedContent(seed: 9002, size: 256 << 20)))
            server.setHook { request in
                var plan = server.standardPlan(for: request)
                plan.bytesPerSecond = 32 << 20
                return plan
            }
            let script = "'\(CLIRunner.executable)' '\(server.url("/f.bin"))' -o - -c 4 -q 2>err.txt | head -c 1048576 >/dev/null; echo ${PIPESTATUS[0]} > status.txt"
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/bash")
            process.arguments = ["-c", script]
            process.currentDirectoryURL = URL(fileURLWithPath: dir.path)
            try CLIRunner.spawn(process)
            process.waitUntilExit()
            let status = try String(contentsOfFile: dir.file("status.txt"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            let stderr = try String(contentsOfFile: dir.file("err.txt"), encoding: .utf8)
            #expect(status == "141", "\(stderr)")
            #expect(stderr.split(separator: "\n").count == 1 && stderr.contains("broken pipe"), "\(stderr)")
        }
    }

    /// A FIFO as `-o`: written in order, with and without --force, and still a FIFO after.
    @Test(arguments: [false, true])
    func aFIFOIsWrittenInOrderAndNeverReplaced(force: Bool) async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let content = GeneratedContent(seed: 9003, size: 6 << 20)
            server.addFile("/f.bin", TestServer.File(content: content))
            let fifo = dir.file("pipe")
            #expect(mkfifo(fifo, 0o600) == 0)
            nonisolated(unsafe) var received = Data()
            let readerDone = DispatchSemaphore(value: 0)
            let reader = Thread {
                received = FileHandle(forReadingAtPath: fifo)?.readDataToEndOfFile() ?? Data()
                readerDone.signal()
            }
            reader.start()
            let out = try await CLIRunner.run([server.url("/f.bin"), "-o", "pipe", "-c", "4", "-q"] + (force ? ["--force"] : []), in: dir.path)
            readerDone.wait()
            #expect(out.status == 0, "\(out.stderr)")
            expectSame(received, content)
            var info = stat()
            #expect(lstat(fifo, &info) == 0 && (info.st_mode & S_IFMT) == S_IFIFO, "the FIFO was replaced")
            #expect(dir.contents == ["pipe"], "\(dir.contents)")
        }
    }

    /// Character devices (copies made with mknod; needs root): a copy of /dev/null is the
    /// discard path, a copy of /dev/zero is written in order; neither is replaced, with or
    /// without --force. Before, --force replaced the device node with a regular file.
    @Test(arguments: [false, true])
    func characterDevicesAreNeverReplaced(force: Bool) async throws {
        let dir = try TemporaryDirectory()
        guard getuid() == 0 else {
            print("[character devices] skipped: mknod needs root")
            return
        }
        try await withTestServer { server in
            let content = GeneratedContent(seed: 9004, size: 3 << 20)
            server.addFile("/f.bin", TestServer.File(content: content))
            for name in ["null", "zero"] {
                var real = stat()
                #expect(stat("/dev/\(name)", &real) == 0)
                let device = real.st_rdev
                #expect(mknod(dir.file(name), S_IFCHR | 0o666, device) == 0)
                let out = try await CLIRunner.run([server.url("/f.bin"), "-o", name, "-c", "4"] + (force ? ["--force"] : []), in: dir.path)
                #expect(out.status == 0, "\(name): \(out.stderr)")
                #expect(out.stderr.contains(name == "null" ? "discarded" : "wrote to \(name)"), "\(out.stderr)")
                var info = stat()
                #expect(lstat(dir.file(name), &info) == 0 && (info.st_mode & S_IFMT) == S_IFCHR && info.st_rdev == device,
                        "\(name) is no longer the device")
            }
            // A wrong checksum to /dev/null: the bytes are hashed in order, exit 5.
            let wrong = try await CLIRunner.run([server.url("/f.bin"), "-o", "/dev/null", "--checksum", "sha256:" + String(repeating: "0", count: 64)],
                                          in: dir.path)
            #expect(wrong.status == 5, "\(wrong.stderr)")
            #expect(dir.contents.sorted() == ["null", "zero"], "\(dir.contents)")
        }
    }

    @Test("stream options are checked", arguments: [
        (["URL", "-o", "-", "--window", "10K"], "invalid --window"),
        (["URL", "-o", "x.bin", "--window", "8M"], "--window is for an ordered stream"),
        (["URL", "-o", "-", "--events", "-"], "would both write to standard output"),
        (["URL", "--discard", "-o", "x.bin"], "--discard keeps nothing"),
        (["URL", "URL", "--discard"], "--discard is for one URL"),
        (["URL", "-o", "-", "-J"], "-J names a file"),
    ] as [([String], String)])
    func streamOptionsAreChecked(arguments: [String], message: String) async throws {
        let dir = try TemporaryDirectory()
        try await withTestServer { server in
            let out = try await CLIRunner.run(arguments.map { $0 == "URL" ? server.url("/gen/1M") : $0 }, in: dir.path)
            #expect(out.status == 2, "\(out.stderr)")
            #expect(out.stderr.contains(message), "\(out.stderr)")
            #expect(server.requests.isEmpty)
        }
    }
}
