import Foundation
import Glibc
import Spate
import SpateTestContent
import SpateTestServer

/// The kill -9 soak: `spate` (the CLI, beside this executable) downloads a paced file, is killed
/// with SIGKILL when a seeded range request arrives at the server, resumes, maybe is killed
/// again, and finally finishes. The result must be byte-exact every time.
struct KillResumeSoak {
    let seed: UInt64
    let server: TestServer
    let directory: String

    struct Report {
        var killPoints = 0
        var wrong: String?
    }

    static var spateExecutable: String {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("spate").path
    }

    func run() throws -> Report {
        var rng = SplitMix64(seed: seed)
        func draw(_ n: UInt64) -> UInt64 { rng.next() % n }
        let size = Int64(draw(10 << 20)) + (2 << 20)
        let file = TestServer.File(content: GeneratedContent(seed: seed, size: size))
        let chunk = Int64(draw(768 << 10)) + (256 << 10)
        let requests = Int((size + chunk - 1) / chunk)
        let path = "/kill-\(seed).bin"
        let killer = KillSwitch()
        server.addFile(path, file)
        server.setHook { request in
            guard request.path == path else { return nil }
            killer.observe(request)
            var plan = TestServer.standardPlan(for: request, file: file)
            plan.bytesPerSecond = 8_000_000
            return plan
        }
        defer {
            server.setHook(nil)
            server.removeFile(path)
        }
        let output = directory + "/kill-\(seed).bin"
        let arguments = [server.url(path), "-o", output, "-c", "4", "--chunk-size", String(chunk), "--journal-commit-ms", "50", "-q"]
        var report = Report()
        let kills = Int(draw(3)) + 1
        for round in 0...kills {
            // Kill within the requests still to come (a resumed run makes fewer requests).
            let at: Int? = round < kills ? Int(draw(UInt64(max(1, requests / (round + 1))))) + 1 : nil
            killer.arm(at: at)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Self.spateExecutable)
            process.arguments = arguments
            process.standardOutput = FileHandle.nullDevice
            let err = Pipe()
            process.standardError = err
            try process.run()
            killer.watch(process.processIdentifier)
            let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            killer.watch(nil)
            if process.terminationReason == .uncaughtSignal {
                report.killPoints += 1
                continue
            }
            guard process.terminationStatus == 0 else {
                report.wrong = "exit \(process.terminationStatus): \(stderr)"
                break
            }
            if let difference = file.content.differences(inFileAt: output) { report.wrong = difference }
            break
        }
        for leftover in [output, output + ".part", output + ".part.journal"] { unlink(leftover) }
        return report
    }
}
